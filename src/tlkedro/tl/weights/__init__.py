"""Pretrained weights from a file in a published layout, mapped onto a ``TLModel``'s encoder with a report.

Users download weights themselves; ``load_source_weights(model, path, format)`` reads them offline and
returns a source checkpoint that every strategy consumes as it consumes a tlkedro source model
(``strategy.prepare(model, source["state_dict"])``), plus a ``LoadReport``: the matched, missing and
unexpected keys, the source's own head layers that were dropped, shape mismatches, how the input
channels were adapted, the share of the encoder's parameters that came from the file, and the file's
sha256. A load that fills less than ``min_match`` of the encoder's parameters fails with that report,
rather than training from a silent partial load.

Each format is declared once in ``SOURCE_FORMATS``: where the state dict sits in the file, regex rules
that rename its keys into the model's (``encoder.layer1.0.conv1.weight``), which keys are the source's
head, and which architectures it fits. The 2D timm and torchvision formats are loaded by timm's own
pretrained-config mechanism (``timm.models.load_pretrained`` with ``pretrained_cfg["file"]``, what
``timm.create_model(pretrained=True, pretrained_cfg_overlay=dict(file=path))`` runs), so timm's per-model
checkpoint filters (torchvision key names, position-embedding resampling) and its input-convolution
adaptation apply. Files are read with ``torch.load(weights_only=True)`` or safetensors: never code.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm.models
from torch import Tensor

from tlkedro.errors import ConfigurationError
from tlkedro.tl.architectures import TLModel
from tlkedro.tl.weights.files import (
    WeightsFileError,
    read_state_dict,
    resolve_weights_file,
    sha256_of,
)
from tlkedro.tl.weights.formats import (
    SOURCE_FORMATS,
    TIMM_FILTERS,
    SourceFormat,
    fits,
    list_source_formats,
)

__all__ = [
    "DEFAULT_MIN_MATCH",
    "SOURCE_FORMATS",
    "LoadReport",
    "SourceFormat",
    "WeightsFileError",
    "WeightsMismatchError",
    "list_source_formats",
    "load_source_weights",
]

DEFAULT_MIN_MATCH = 0.9
_LISTED = 10


class WeightsMismatchError(ConfigurationError, ValueError):
    """Raised when a file fills too little of the encoder; ``report`` says what matched and what did not."""

    def __init__(self, message: str, report: LoadReport) -> None:
        super().__init__(message)
        self.report = report


@dataclasses.dataclass
class LoadReport:
    """What a load took from a weights file and what it left.

    Attributes:
        file: The file read.
        sha256: Its SHA-256, so a run records exactly which weights it started from.
        format: The ``SOURCE_FORMATS`` name.
        architecture: The target model's architecture name.
        matched: Encoder keys filled from the file.
        missing: Encoder keys the file did not fill; they keep the model's initialisation.
        unexpected: Keys of the file that are not in the encoder (after renaming).
        dropped: Keys of the source's own head or task layers, left out on purpose.
        shape_mismatches: ``key: file (...) model (...)`` for keys whose shapes differ.
        adapted: How tensors were changed to fit: the input convolution's channels, timm's resampling.
        matched_fraction: Share of the encoder's parameter elements filled from the file.
        min_match: The share below which the load fails.
    """

    file: str
    sha256: str
    format: str
    architecture: str
    matched: list[str]
    missing: list[str]
    unexpected: list[str]
    dropped: list[str]
    shape_mismatches: list[str]
    adapted: list[str]
    matched_fraction: float
    min_match: float

    def as_dict(self) -> dict[str, Any]:
        """Plain types, for a checkpoint's meta or a run record."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """A few lines for a log or an error: the counts, and the first keys of each list."""
        lines = [
            f"{self.file} (format {self.format}, sha256 {self.sha256[:12]}) into {self.architecture!r}: "
            f"{self.matched_fraction:.1%} of the encoder's parameters matched (at least "
            f"{self.min_match:.0%} needed)"
        ]
        for what in ("missing", "unexpected", "dropped", "shape_mismatches", "adapted"):
            keys = getattr(self, what)
            if keys:
                more = f", ... ({len(keys) - _LISTED} more)" if len(keys) > _LISTED else ""
                lines.append(
                    f"  {len(keys)} {what.replace('_', ' ')}: {', '.join(keys[:_LISTED])}{more}"
                )
        return "\n".join(lines)


def load_source_weights(
    model: TLModel, path: str | Path, format: str, min_match: float = DEFAULT_MIN_MATCH
) -> tuple[dict[str, Any], LoadReport]:
    """Map a weights file onto ``model``'s encoder: a source checkpoint for the strategies, and its report.

    Args:
        model: A model built as the one to train will be (same architecture, keyword arguments, input
            channels and size); it is not changed.
        path: The weights file, or a versioned Kedro dataset's folder (its latest version is read).
        format: A ``SOURCE_FORMATS`` name (``list_source_formats()``).
        min_match: The least share of the encoder's parameter elements the file must fill, in (0, 1].

    Returns:
        ``({"config": model.config, "state_dict": {encoder key: tensor}, "meta": {"source_weights":
        report.as_dict()}}, report)``. The state dict holds every encoder key: those the file filled and,
        for the ``missing`` ones, the model's own initialisation, so strategies load it as they load a
        tlkedro source model's.

    Raises:
        UnknownComponentError: If ``format`` is not a format; the message lists them.
        ValueError: If the format does not fit the architecture, or ``min_match`` is out of range.
        MissingFileError: If ``path`` is neither a file nor a versioned dataset's folder (a
            ``FileNotFoundError``).
        WeightsFileError: If the file is not a readable state dict in that format.
        WeightsMismatchError: If less than ``min_match`` of the encoder was filled; it carries the report.
    """
    source_format = SOURCE_FORMATS.get(format)
    if not 0 < min_match <= 1:
        raise ValueError(f"min_match must be in (0, 1], got {min_match}")
    architecture = str(model.config.get("name", type(model).__name__))
    if source_format.fits is not None and not re.search(source_format.fits, architecture):
        fitting = [n for n in list_source_formats() if fits(SOURCE_FORMATS.get(n), architecture)]
        raise ValueError(
            f"weights format {format!r} is for {source_format.description}; it does not fit "
            f"architecture {architecture!r}. Formats that do: {', '.join(fitting)}"
        )
    path = resolve_weights_file(path)
    sha256 = sha256_of(path)
    if source_format.by_timm:
        state, lists = _through_timm(model, path, source_format)
    else:
        state, lists = _by_rules(model, read_state_dict(path, source_format), source_format)
    encoder_state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    lists["missing"] = sorted(encoder_state.keys() - state.keys())
    parameters = {f"encoder.{k}": p.numel() for k, p in model.encoder.named_parameters()}
    filled = sum(n for key, n in parameters.items() if key in state)
    report = LoadReport(
        file=str(path),
        sha256=sha256,
        format=format,
        architecture=architecture,
        matched=sorted(state),
        matched_fraction=filled / max(1, sum(parameters.values())),
        min_match=min_match,
        **{what: lists.get(what, []) for what in _LISTS},
    )
    if report.matched_fraction < min_match:
        raise WeightsMismatchError(
            f"The weights file {str(path)!r} does not fit the encoder of {architecture!r} as format "
            f"{format!r}: {report.matched_fraction:.1%} of its parameters matched, {min_match:.0%} "
            f"needed. {source_format.hint}\n{report.describe()}",
            report,
        )
    source_state = {
        key: (state[key] if key in state else value.detach().clone())
        for key, value in encoder_state.items()
    }
    checkpoint = {
        "config": copy.deepcopy(model.config),
        "state_dict": source_state,
        "meta": {"source_weights": report.as_dict()},
    }
    return checkpoint, report


_LISTS = ("missing", "unexpected", "dropped", "shape_mismatches", "adapted")


def _by_rules(
    model: TLModel, file_state: Mapping[str, Tensor], source_format: SourceFormat
) -> tuple[dict[str, Tensor], dict[str, list[str]]]:
    """The file's tensors renamed into the model's keys, with the stem's input channels adapted."""
    wanted = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    stem = _input_convolution(model)
    state: dict[str, Tensor] = {}
    lists: dict[str, list[str]] = {what: [] for what in _LISTS}
    sources: dict[str, str] = {}
    for source_key, tensor in file_state.items():
        key = source_key
        for pattern, replacement in source_format.rename:
            key = re.sub(pattern, replacement, key, count=1)
        if key in sources:
            raise WeightsFileError(
                f"format {source_format.name!r} maps both {sources[key]!r} and {source_key!r} of the "
                f"weights file to {key!r}"
            )
        sources[key] = source_key
        if any(re.search(pattern, key) for pattern in source_format.head):
            lists["dropped"].append(source_key)
        elif key not in wanted:
            lists["unexpected"].append(source_key)
        elif tensor.shape == wanted[key].shape:
            state[key] = tensor.to(wanted[key].dtype)
        elif key == stem and _only_channels_differ(tensor, wanted[key]):
            state[key] = _adapt_input_channels(tensor, wanted[key].shape[1]).to(wanted[key].dtype)
            lists["adapted"].append(_adaptation(key, tensor.shape[1], wanted[key].shape[1]))
        else:
            lists["shape_mismatches"].append(
                f"{key}: file {tuple(tensor.shape)}, model {tuple(wanted[key].shape)}"
            )
    return state, {what: sorted(keys) for what, keys in lists.items()}


def _input_convolution(model: TLModel) -> str | None:
    """Key of the encoder's first convolution-like weight (the stem or patch embedding), if any."""
    for name, param in model.encoder.named_parameters():
        if param.ndim >= 3:
            return f"encoder.{name}"
    return None


def _only_channels_differ(source: Tensor, target: Tensor) -> bool:
    return source.ndim == target.ndim and source.shape[:1] + source.shape[2:] == (
        target.shape[:1] + target.shape[2:]
    )


def _adapt_input_channels(weight: Tensor, in_channels: int) -> Tensor:
    """timm's ``adapt_input_conv`` (one channel: the sum over the source channels; more: the source
    channels repeated and rescaled), for 2D and, through a 4D view, 3D convolutions."""
    out, source_channels, *kernel = weight.shape
    flat = weight.reshape(out, source_channels, kernel[0], -1)
    adapted = timm.models.adapt_input_conv(in_channels, flat, base_chans=source_channels)
    return adapted.reshape(out, in_channels, *kernel)


def _adaptation(key: str, source_channels: int, in_channels: int) -> str:
    how = (
        "summed over the file's channels"
        if in_channels == 1
        else f"the file's channels repeated and scaled by {source_channels}/{in_channels}"
    )
    return (
        f"{key}: {source_channels} -> {in_channels} input channels, {how} (timm adapt_input_conv)"
    )


def _through_timm(
    model: TLModel, path: Path, source_format: SourceFormat
) -> tuple[dict[str, Tensor], dict[str, list[str]]]:
    """Load the file with timm's pretrained-config mechanism into a copy of the timm encoder."""
    encoder = model.encoder
    pretrained_cfg = getattr(encoder, "pretrained_cfg", None)
    if not pretrained_cfg:
        raise ValueError(
            f"weights format {source_format.name!r} needs a timm encoder; {type(encoder).__name__} is not"
        )
    file_state = read_state_dict(path, source_format)  # for the report: what timm is given
    target = copy.deepcopy(encoder)
    result: list[Any] = []
    target.register_load_state_dict_post_hook(lambda _, keys: result.append(keys))
    cfg = {**pretrained_cfg, "file": str(path), "state_dict": None, "custom_load": False}
    try:
        timm.models.load_pretrained(
            target,
            pretrained_cfg=cfg,
            num_classes=0,  # the encoders are built without a classifier: timm drops the file's
            in_chans=model.in_channels,
            filter_fn=TIMM_FILTERS.get(type(encoder).__module__),
            strict=False,
        )
    except RuntimeError as error:  # size mismatches raise even with strict=False
        wanted = encoder.state_dict()
        mismatches = [
            f"encoder.{k}: file {tuple(v.shape)}, model {tuple(wanted[k].shape)}"
            for k, v in file_state.items()
            if k in wanted and v.shape != wanted[k].shape
        ]
        raise WeightsFileError(
            f"timm could not load the weights file {str(path)!r} into {model.config.get('name')!r} as "
            f"format {source_format.name!r}: {error}. {source_format.hint}"
            + (f" Shape mismatches: {', '.join(mismatches[:_LISTED])}" if mismatches else "")
        ) from None
    keys = result[-1]
    loaded = target.state_dict()
    missing = set(keys.missing_keys)
    state = {f"encoder.{k}": v for k, v in loaded.items() if k not in missing}
    classifier = pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    head = tuple(f"{name}." for name in classifier)
    lists = {
        "unexpected": sorted(keys.unexpected_keys),
        "dropped": sorted(k for k in file_state if k.startswith(head)),
        "adapted": sorted(
            _timm_adaptation(k, file_state[k], v, model)
            for k, v in loaded.items()
            if k not in missing and k in file_state and file_state[k].shape != v.shape
        ),
    }
    return state, lists


def _timm_adaptation(key: str, source: Tensor, loaded: Tensor, model: TLModel) -> str:
    if f"encoder.{key}" == _input_convolution(model) and _only_channels_differ(source, loaded):
        return _adaptation(f"encoder.{key}", source.shape[1], model.in_channels)
    return (
        f"encoder.{key}: {tuple(source.shape)} -> {tuple(loaded.shape)}, resampled by timm's "
        "checkpoint filter"
    )
