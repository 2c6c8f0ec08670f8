"""SVCCA similarity per encoder stage between a source model and a model fine-tuned from it.

SVCCA (Raghu, Gilmer, Yosinski and Sohl-Dickstein, "SVCCA: Singular Vector Canonical Correlation
Analysis for Deep Learning Dynamics and Interpretability", NeurIPS 2017) compares two representations of
the same data points: each is centred and reduced by an SVD to the directions that explain 99% of its
variance, then CCA finds the pairs of directions, one in each reduced space, that are most correlated;
the similarity is the mean of those canonical correlations (1: the same subspace; near 0: unrelated).
Peng et al. (TruncatedTL, BMVC 2023) use it to see which stages fine-tuning leaves close to the source
(features that are reused) and where it moves away from it, which argues for cutting the encoder there.

Data points of a stage: a convolutional stage's output ``(B, C, *spatial)`` gives one data point per
(image, position) with its ``C`` channels as neurons, as Raghu et al. (2017, Section 2) treat
convolutional layers; a transformer stage's ``(B, tokens, C)`` one per (image, token). Both models see
the same images, and the same (image, position) pairs are drawn from both, so the data points match.
Positions are subsampled per image (seeded) to bound the memory and the SVD's cost; at a deep stage with
few positions all of them are used.

Why written here rather than taken from a library: scikit-learn's ``CCA`` is an iterative PLS fit, slow for hundreds of
neurons and without the SVD step; the registry's SVCCA packages (``repsim``, ``deep-reps``) are young
single-author packages, ``repsim`` with a C++ build and a summary statistic (Yanai's GCD, Pillai's trace)
that is not the mean correlation. After the SVD step the canonical correlations are exactly the singular
values of ``Ux^T Uy`` for the orthonormal bases ``Ux``, ``Uy`` of the two reduced spaces (Björck and
Golub 1973), three SVDs in all. They run in torch (float64, CPU), so they use the threads torch is set
to; numpy's OpenBLAS starts one thread per core, which on a shared machine made them 30x slower.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor

from tlkedro.tl.architectures.base import TLModel, eval_mode

logger = logging.getLogger(__name__)

SVCCA_COLUMNS = ("stage", "similarity", "samples", "source_dims", "finetuned_dims", "note")
CUTOFF_RULES = ("largest_drop", "threshold")


def svcca(x: np.ndarray | Tensor, y: np.ndarray | Tensor, variance_kept: float = 0.99) -> float:
    """SVCCA similarity of two representations of the same data points.

    Args:
        x: ``(samples, neurons)`` activations of one representation.
        y: ``(samples, neurons)`` activations of the other, row ``i`` of the same data point as in ``x``.
        variance_kept: Fraction of each representation's variance that the kept SVD directions explain
            (0.99 in Raghu et al. 2017); 1.0 keeps every direction of non-zero variance (plain CCA).

    Returns:
        The mean canonical correlation of the reduced representations, in [0, 1].

    Raises:
        ValueError: If the shapes do not match, a representation has no variance, or there are not more
            samples than the kept directions of both together (then some correlations are 1 whatever the
            data, as two subspaces of more than ``samples`` dimensions in all must intersect).
    """
    x, y = _as_float64(x), _as_float64(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"svcca needs two (samples, neurons) arrays with the same samples, got {x.shape} and {y.shape}"
        )
    if not 0.0 < variance_kept <= 1.0:
        raise ValueError(f"variance_kept must be in (0, 1], got {variance_kept}")
    return _mean_canonical_correlation(
        _principal_basis(x, variance_kept, "x"), _principal_basis(y, variance_kept, "y")
    )


def _as_float64(x: np.ndarray | Tensor) -> Tensor:
    return torch.as_tensor(x).detach().to(device="cpu", dtype=torch.float64)


def _mean_canonical_correlation(basis_x: Tensor, basis_y: Tensor) -> float:
    samples, dims_x, dims_y = basis_x.shape[0], basis_x.shape[1], basis_y.shape[1]
    if samples <= dims_x + dims_y:
        raise ValueError(
            f"{samples} samples are too few for {dims_x} + {dims_y} kept directions; SVCCA needs more "
            "samples than directions (use more images or more positions per image)"
        )
    correlations = torch.linalg.svdvals(basis_x.T @ basis_y)
    return float(correlations.clamp(0.0, 1.0).mean())


def _principal_basis(x: Tensor, variance_kept: float, name: str) -> Tensor:
    """Orthonormal basis ``(samples, k)`` of the ``k`` leading principal directions of the centred ``x``."""
    centred = x - x.mean(dim=0)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    energy = s**2
    total = float(energy.sum())
    # Relative to the data's scale: the float64 SVD of a constant array leaves ~1e-30 of it.
    if total <= 1e-24 * max(float((x**2).sum()), 1e-300):
        raise ValueError(f"representation {name} has no variance (constant activations)")
    explained = torch.cumsum(energy, 0) / total
    kept = int((explained < variance_kept - 1e-12).sum()) + 1
    return u[:, : min(kept, len(s))]


def svcca_by_stage(
    source_model: TLModel,
    finetuned_model: TLModel,
    images: Tensor | np.ndarray,
    max_samples: int = 4096,
    seed: int = 0,
    *,
    batch_size: int = 16,
    variance_kept: float = 0.99,
) -> pd.DataFrame:
    """SVCCA similarity of each encoder stage of ``finetuned_model`` to the same stage of ``source_model``.

    The stages compared are those of the fine-tuned model that the source also has, input side first (a
    truncated model has a prefix of them). Both models run in eval mode, without gradients, each on its
    own device; their training flags are restored afterwards.

    Args:
        source_model: The model the fine-tuned one started from.
        finetuned_model: The fine-tuned model.
        images: ``(N, C, *spatial)`` inputs both models accept.
        max_samples: Data points wanted per stage: ``ceil(max_samples / N)`` positions are drawn per image
            (all of them where a stage has fewer), the same ones in both models.
        seed: Seed of the position draws.
        batch_size: Images per forward pass.
        variance_kept: See ``svcca``.

    Returns:
        One row per stage: ``stage``, ``similarity``, ``samples`` (data points), ``source_dims`` and
        ``finetuned_dims`` (kept SVD directions), ``note`` (empty, or why ``similarity`` is NaN: too
        few samples for the kept directions, or a constant stage; also logged as a warning).

    Raises:
        ValueError: If the models share no stage, ``images`` is empty, or a stage's outputs have
            different numbers of positions in the two models.
    """
    if not isinstance(images, Tensor):  # a copy: a memory-mapped split is read-only
        images = torch.tensor(np.asarray(images), dtype=torch.float32)
    images = images.float()
    if images.ndim < 3 or len(images) == 0:
        raise ValueError(
            f"images must be a non-empty (N, C, *spatial) batch, got {tuple(images.shape)}"
        )
    stages = [s for s in finetuned_model.stage_names if s in source_model.stage_names]
    if not stages:
        raise ValueError(
            f"the models share no stage: source {source_model.stage_names}, "
            f"fine-tuned {finetuned_model.stage_names}"
        )
    per_image = math.ceil(max_samples / len(images))
    rng = np.random.default_rng(seed)
    # stage -> (positions per image, (B, k) drawn indices) of the current batch
    positions: dict[str, tuple[int, np.ndarray]] = {}
    collected = {model: {s: [] for s in stages} for model in ("source", "finetuned")}
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        positions.clear()
        for key, model in (("source", source_model), ("finetuned", finetuned_model)):
            for stage, samples in _stage_samples(model, stages, batch, positions, per_image, rng):
                collected[key][stage].append(samples)
    rows = []
    for stage in stages:
        x = torch.cat(collected["source"][stage])
        y = torch.cat(collected["finetuned"][stage])
        rows.append(_stage_row(stage, x, y, variance_kept))
    return pd.DataFrame(rows, columns=list(SVCCA_COLUMNS))


def _stage_row(stage: str, x: Tensor, y: Tensor, variance_kept: float) -> dict:
    row = {"stage": stage, "samples": len(x), "source_dims": 0, "finetuned_dims": 0, "note": ""}
    try:
        basis_x = _principal_basis(x, variance_kept, "of the source")
        basis_y = _principal_basis(y, variance_kept, "of the fine-tuned model")
        row["source_dims"], row["finetuned_dims"] = basis_x.shape[1], basis_y.shape[1]
        row["similarity"] = _mean_canonical_correlation(basis_x, basis_y)
    except ValueError as error:
        row["similarity"] = float("nan")
        row["note"] = str(error)
        logger.warning("SVCCA of stage %s not computed: %s", stage, error)
    return row


def _stage_samples(
    model: TLModel,
    stages: Sequence[str],
    batch: Tensor,
    positions: dict[str, tuple[int, np.ndarray]],
    per_image: int,
    rng: np.random.Generator,
) -> list[tuple[str, Tensor]]:
    """``(stage, (B * k, C) float64 samples)`` of one batch; positions are drawn on the first model's pass."""
    channels_last = getattr(model.encoder, "output_fmt", "NCHW") == "NHWC"  # timm Swin
    outputs: list[tuple[str, Tensor]] = []

    def hook(stage: str):
        def record(_module: torch.nn.Module, _inputs: object, output: Tensor | tuple) -> None:
            tokens = _as_positions(
                output[0] if isinstance(output, tuple) else output, channels_last
            )
            b, p, _ = tokens.shape
            if stage not in positions:
                k = min(per_image, p)
                positions[stage] = (
                    p,
                    np.stack([rng.choice(p, k, replace=False) for _ in range(b)]),
                )
            drawn_from, index = positions[stage]
            if p != drawn_from:
                raise ValueError(
                    f"stage {stage} has {drawn_from} positions per image in the source model and {p} "
                    "in the fine-tuned one; SVCCA needs the same positions in both"
                )
            picked = tokens[torch.arange(b)[:, None], torch.as_tensor(index, device=tokens.device)]
            # A copy, in float64: an in-place activation after the stage would overwrite the output.
            outputs.append((stage, _as_float64(picked.reshape(-1, tokens.shape[2]))))

        return record

    handles = [model.encoder.get_submodule(s).register_forward_hook(hook(s)) for s in stages]
    device = next(model.parameters()).device
    try:
        with eval_mode(model), torch.no_grad():
            model.forward_features(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _as_positions(activation: Tensor, channels_last: bool) -> Tensor:
    """``(B, positions, C)`` view of a stage output: ``(B, C, *spatial)``, ``(B, *spatial, C)`` when
    ``channels_last``, ``(B, tokens, C)`` or ``(B, C)``."""
    if activation.ndim == 2:
        return activation[:, None, :]
    if activation.ndim == 3:  # transformer tokens
        return activation
    if channels_last:
        return activation.flatten(1, -2)
    return activation.flatten(2).transpose(1, 2)


def suggest_cutoff(
    table: pd.DataFrame, rule: str = "largest_drop", threshold: float | None = None
) -> str:
    """The stage after which to truncate the encoder, from an ``svcca_by_stage`` table.

    Rules, on the stages in table order (input side first):

    - ``largest_drop`` (default): the stage just before the largest fall of similarity between two
      consecutive stages, i.e. the last stage fine-tuning still leaves close to the source before the
      representation moves away from it; the last stage if similarity never falls.
    - ``threshold``: the last stage of the leading run of stages with similarity at least ``threshold``;
      the first stage if even it is below.

    The returned name is a stage name, which ``truncated`` accepts as its cutoff.

    Raises:
        ValueError: If the table is empty, has NaN similarities (their notes say why), the rule is
            unknown, or ``threshold`` is missing for the ``threshold`` rule.
    """
    if table.empty:
        raise ValueError("the SVCCA table has no stages")
    if rule not in CUTOFF_RULES:
        raise ValueError(f"unknown cutoff rule {rule!r}; the rules are {', '.join(CUTOFF_RULES)}")
    missing = table[table["similarity"].isna()]
    if not missing.empty:
        raise ValueError(
            "SVCCA similarity is missing for stages "
            + "; ".join(f"{r.stage} ({r.note})" for r in missing.itertuples())
        )
    stages = list(table["stage"])
    similarity = table["similarity"].to_numpy(dtype=float)
    if rule == "threshold":
        if threshold is None:
            raise ValueError("the threshold rule needs a threshold")
        below = np.flatnonzero(similarity < threshold)
        last = len(stages) - 1 if below.size == 0 else max(int(below[0]) - 1, 0)
        return stages[last]
    drops = similarity[:-1] - similarity[1:]
    # Stages left unchanged (a frozen encoder) give 1 up to rounding: such a "drop" is no fall.
    if drops.size == 0 or drops.max() <= 1e-9:
        return stages[-1]
    return stages[int(np.argmax(drops))]


def auto_cut_at(
    source_model: TLModel,
    probe_model: TLModel,
    images: Tensor | np.ndarray,
    *,
    rule: str = "largest_drop",
    threshold: float | None = None,
    max_images: int = 256,
    max_samples: int = 4096,
    seed: int = 0,
) -> tuple[str, pd.DataFrame]:
    """TruncatedTL's cut point from a probe fine-tune: ``suggest_cutoff`` of its SVCCA profile.

    The probe is a model fine-tuned from ``source_model`` (full fine-tuning shows where the target task
    moves the representation away from the source); the returned stage is the cut point for a
    ``truncated`` model of the same architecture and source.

    Args:
        source_model: The source model.
        probe_model: The probe fine-tuned from it.
        images: ``(N, C, *spatial)`` images, e.g. the target's training images (labels are not used).
        rule: ``suggest_cutoff``'s rule.
        threshold: Its threshold, for ``rule="threshold"``.
        max_images: At most this many of ``images`` are used, evenly spaced over them.
        max_samples: See ``svcca_by_stage``.
        seed: Seed of the position draws.

    Returns:
        The stage, and the ``svcca_by_stage`` table it was chosen from.

    Raises:
        ValueError: As ``svcca_by_stage`` and ``suggest_cutoff`` (e.g. a stage with too few samples for
            its kept directions: use more images).
    """
    if len(images) > max_images:
        images = images[np.unique(np.linspace(0, len(images) - 1, max_images).round().astype(int))]
    table = svcca_by_stage(source_model, probe_model, images, max_samples=max_samples, seed=seed)
    return suggest_cutoff(table, rule, threshold), table


def plot_svcca_by_stage(table: pd.DataFrame, cutoffs: dict[str, str] | None = None) -> Figure:
    """Similarity per stage, one line per fine-tuned variant.

    Args:
        table: ``svcca_by_stage`` tables stacked, with a ``variant`` column naming each (a table without
            it is one unnamed variant). Stages are placed in order of first appearance.
        cutoffs: ``variant -> suggested cutoff``, marked on each line.
    """
    if "variant" not in table.columns:
        table = table.assign(variant="")
    stages = list(dict.fromkeys(table["stage"]))
    figure = Figure(figsize=(max(5.0, 0.5 * len(stages) + 2), 3.6), layout="constrained")
    axes = figure.subplots()
    for variant, rows in table.groupby("variant", sort=False):
        x = [stages.index(s) for s in rows["stage"]]
        (line,) = axes.plot(x, rows["similarity"], marker="o", label=variant or None)
        cutoff = (cutoffs or {}).get(variant)
        if cutoff in list(rows["stage"]):
            y = rows.loc[rows["stage"] == cutoff, "similarity"].iloc[0]
            axes.plot(stages.index(cutoff), y, marker="*", markersize=14, color=line.get_color())
    axes.set_xticks(range(len(stages)), stages, rotation=45, ha="right")
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("encoder stage (input side first)")
    axes.set_ylabel("SVCCA similarity to the source")
    axes.grid(alpha=0.3)
    if table["variant"].ne("").any():
        axes.legend(fontsize="small", title="star: suggested cutoff" if cutoffs else None)
    return figure
