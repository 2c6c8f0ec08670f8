"""Spatial normalisation of raw T1 scans to the MNI152 2009 template, with quality control.

Raw scans are whole-head images in each scanner's own space, so a fixed voxel index cuts different anatomy
in different subjects. ``normalise_scan`` brings one scan into template space, as ClinicaDL's
``t1-linear`` and UK Biobank's ``T1_brain_to_MNI`` do, using ANTs (antspyx):

1. N4 bias-field correction.
2. A crude skull strip (threshold at the mean, erode, largest component, dilate, fill holes): the
   template is brain-only, and a whole-head-to-brain affine squeezes the head into the brain (a scale
   of about 1.6 on IXI).
3. Stage 1: ``AffineFast`` (``Rigid`` for ``method: rigid``) of the stripped scan to the template. While
   the correlation with the template inside the template mask stays below ``retry_below``, the strip is
   redone with a larger erosion (the face can stay attached); if even the best stays below, stage 1 is
   rerun with the full ``Affine``.
4. Stage 2: the template mask carried back into the scan through the inverse of stage 1 replaces the
   crude one, and a full ``Affine`` (``Rigid``) refines stage 1 on the scan masked by it.
5. The bias-corrected scan is resampled onto the template grid at the target spacing, and the template
   mask, refined by intensity (dark voxels at its rim: background and CSF outside the brain), is
   applied: voxels outside the brain are zero, so intensity normalisation (``zscore_brain``) takes its
   statistics over the brain rather than head and noise.

Quality control per scan (:class:`RegistrationQC`): the Pearson correlation with the template inside the
template mask, and the determinant of the linear part of the affine, a head-size proxy (native volume per
template volume) that a model or baseline may use or must be kept from.

``method: none`` declares the data already in MNI space (the synthetic cohort, UKB ``T1_brain_to_MNI``):
nothing is registered and the scans reach extraction unchanged.

The template is the one nilearn's wheel ships (``nilearn.datasets.load_mni152_template``), so nothing is
downloaded. ANTs runs one thread per process (``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``); scans are
parallelised over processes by :mod:`tlkedro.parallel`. antspyx is imported inside the functions that need
it (about 1 s), so processes that only validate parameters do not pay for it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

import nibabel as nib
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tlkedro.errors import ConfigurationError

if TYPE_CHECKING:
    import ants
    from matplotlib.figure import Figure

TEMPLATE_NAME = "MNI152NLin2009aSym"
"""What the outputs are registered to (BIDS ``space`` label): nilearn's copy of ICBM 2009a symmetric."""

# Bump when the algorithm changes in a way that changes its outputs: cached scans are then recomputed.
ALGORITHM_VERSION = 2
# A scan's voxels above its mean form the crude head mask; eroding it cuts the brain loose from scalp,
# eyes and neck. 6 mm suffices for most IXI scans, but in about one in ten the face stays attached (the
# crude "brain" then exceeds 2 l and stage 1 fails): the larger radii are tried in turn while stage 1
# stays below `retry_below`, and the best is kept (measured on IXI).
_STRIP_RADII_MM = (6.0, 8.0, 10.0)
# Voxels of the carried-back template mask darker than this fraction of the brain's median intensity
# are dropped (background and CSF at the rim), and holes filled again (ventricles stay).
_RIM_DARK_FRACTION = 0.15
_ITK_THREADS = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


class SpatialNormalisationConfig(BaseModel):
    """How scans are brought into template space (the ``preprocessing.spatial_normalisation`` key).

    Attributes:
        method: ``none`` (already in MNI space: scans pass unchanged), ``rigid`` (6 degrees of freedom:
            keeps head size) or ``affine`` (12: also scales and shears onto the template).
        fast: Cheaper setting: ``AffineFast``/``Rigid`` without the full-affine retry and refinement,
            and fewer N4 iterations (about half the time; more scans fall below ``min_similarity``).
        bias_correction: Run N4 first.
        retry_below: Stage-1 correlation below which stage 1 is rerun with the full transform.
        min_similarity: Correlation with the template below which a scan is quarantined as
            ``registration_failed``. Not part of the cached result: changing it needs no recomputation.
        seed: ANTs' random seed (its metric samples voxels at random).
        mosaic_scans: Scans shown in the QC mosaic (the first ones of the manifest).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["none", "rigid", "affine"] = "none"
    fast: bool = False
    bias_correction: bool = True
    retry_below: float = Field(default=0.45, ge=-1.0, le=1.0)
    min_similarity: float = Field(default=0.4, ge=-1.0, le=1.0)
    seed: int = 42
    mosaic_scans: int = Field(default=12, ge=1)

    def fingerprint(self, spacing_mm: tuple[float, float, float]) -> str:
        """Hash of everything that shapes a normalised scan: these options (but the QC threshold and the
        mosaic), the target spacing, the algorithm's version and the versions of antspyx and nilearn
        (its template)."""
        options = self.model_dump(exclude={"min_similarity", "mosaic_scans"})
        payload = {
            "options": options,
            "spacing_mm": [float(s) for s in spacing_mm],
            "algorithm": ALGORITHM_VERSION,
            "template": TEMPLATE_NAME,
            "antspyx": importlib.metadata.version("antspyx"),
            "nilearn": importlib.metadata.version("nilearn"),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RegistrationQC:
    """Quality figures of one normalised scan.

    Attributes:
        similarity: Pearson correlation of the registered scan with the template inside the template
            mask (NaN when nothing was registered).
        head_scale: Determinant of the linear part of the template-to-scan affine: the scan's head
            volume per template volume (1 for ``rigid``; NaN when nothing was registered).
        stage1_similarity: Correlation after stage 1, before any retry.
        retried: Whether stage 1 was rerun with the full transform.
        brain_ml: Volume of the final brain mask in millilitres.
        transform: The fitted template-to-scan transform (ITK ``type``, ``parameters``,
            ``fixed_parameters``), kept so that the scan's label map can be carried into template
            space by the same transform (:func:`normalise_label_map`).
    """

    similarity: float
    head_scale: float
    stage1_similarity: float
    retried: bool
    brain_ml: float
    transform: dict | None = None


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (a cached result is tied to its input's content, not to its path)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(functools.partial(handle.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _ants():
    # ITK reads the variable when its thread pool starts: set it before antspyx is first used.
    os.environ.setdefault(_ITK_THREADS, "1")
    try:
        import ants
    except ImportError as exc:
        raise ImportError(
            "spatial normalisation needs antspyx: pip install --no-deps -r requirements-nodeps.txt "
            "(see the comment there), or set preprocessing.spatial_normalisation.method: none"
        ) from exc
    return ants


@functools.lru_cache(maxsize=2)
def template_image(spacing_mm: tuple[float, float, float]) -> nib.Nifti1Image:
    """nilearn's MNI152 2009 template resampled to ``spacing_mm`` (RAS, brain only, values in [0, 1])."""
    from nilearn.datasets import load_mni152_template

    ants = _ants()
    template = _to_ants(load_mni152_template(resolution=1))
    resampled = ants.resample_image(template, tuple(spacing_mm), use_voxels=False, interp_type=0)
    return ants.to_nibabel_nifti(resampled.astype("float32"))


def template_mask(spacing_mm: tuple[float, float, float]) -> nib.Nifti1Image:
    """The template's brain mask: the template thresholded (it is zero outside the brain)."""
    template = template_image(tuple(spacing_mm))
    mask = (np.asanyarray(template.dataobj) > 0.05).astype(np.uint8)
    return nib.Nifti1Image(mask, template.affine)


def _to_ants(image: nib.Nifti1Image) -> ants.ANTsImage:
    converted = nib.Nifti1Image(np.asanyarray(image.dataobj, dtype=np.float32), image.affine)
    # The affine is in mm whatever the file says; without units ITK warns on every conversion.
    converted.header.set_xyzt_units("mm", "sec")
    return _ants().from_nibabel_nifti(converted)


def _crude_brain_mask(image: ants.ANTsImage, radius_mm: float) -> ants.ANTsImage:
    """Threshold at the mean, erode, keep the largest component, dilate, fill holes."""
    ants = _ants()
    array = image.numpy()
    radius = max(1, round(radius_mm / min(image.spacing)))
    head = image.new_image_like((array > array.mean()).astype(np.float32))
    mask = ants.iMath(head, "ME", radius)
    mask = ants.iMath(mask, "GetLargestComponent")
    mask = ants.iMath(mask, "MD", radius)
    return ants.iMath(mask, "FillHoles")


def _correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _register(
    fixed, moving, transform: str, seed: int, workdir: str, initial: str | None = None
) -> str:
    """Run one ANTs registration; return the path of its affine (template -> scan points)."""
    ants = _ants()
    ants.config.set_ants_deterministic(True, seed)
    result = ants.registration(
        fixed,
        moving,
        type_of_transform=transform,
        initial_transform=initial,
        outprefix=tempfile.mkdtemp(dir=workdir) + "/",
        verbose=False,
    )
    return result["fwdtransforms"][0]


def _linear_determinant(transform_path: str) -> float:
    parameters = np.asarray(_ants().read_transform(transform_path).parameters, dtype=np.float64)
    return float(np.linalg.det(parameters[:9].reshape(3, 3)))


def normalise_scan(
    image: nib.Nifti1Image,
    config: SpatialNormalisationConfig,
    spacing_mm: tuple[float, float, float],
) -> tuple[nib.Nifti1Image, RegistrationQC]:
    """Register one scan to the template and skull-strip it (see the module docstring).

    Args:
        image: The raw scan (any orientation).
        config: How to register; ``method`` must not be ``none``.
        spacing_mm: Voxel size of the output grid (the template's grid at that spacing).

    Returns:
        The bias-corrected, registered, brain-masked scan (float32, zero outside the brain, on the
        template grid), and its quality figures.

    Raises:
        ValueError: ``config.method`` is ``none``.
    """
    if config.method == "none":
        raise ValueError("spatial_normalisation.method is 'none': there is nothing to register")
    ants = _ants()
    spacing = tuple(float(s) for s in spacing_mm)
    fixed = _to_ants(template_image(spacing))
    fixed_mask = template_mask(spacing).get_fdata() > 0
    full = "Affine" if config.method == "affine" else "Rigid"
    quick = "AffineFast" if config.method == "affine" else "Rigid"

    moving = _to_ants(image)
    if config.bias_correction:
        # N4 fitted inside the (dilated) crude mask: a third of the time of the whole field of view,
        # and the background noise does not pull the bias field.
        iterations = [20, 20, 20] if config.fast else [50, 50, 50, 50]
        moving = ants.n4_bias_field_correction(
            moving,
            mask=ants.iMath(_crude_brain_mask(moving, _STRIP_RADII_MM[0]), "MD", 2),
            convergence={"iters": iterations, "tol": 1e-7},
        )
    with tempfile.TemporaryDirectory(prefix="tlkedro-ants-") as workdir:
        # antspyx writes its transforms under `outprefix`: here, deleted with the folder.

        def similarity(transform: str, source) -> float:
            warped = ants.apply_transforms(fixed, source, [transform], interpolator="linear")
            return _correlation(warped.numpy(), fixed.numpy(), fixed_mask)

        stage1, transform, crude = -np.inf, "", moving
        for radius_mm in _STRIP_RADII_MM:
            candidate = moving * _crude_brain_mask(moving, radius_mm)
            candidate_transform = _register(fixed, candidate, quick, config.seed, workdir)
            candidate_similarity = similarity(candidate_transform, candidate)
            if candidate_similarity > stage1:
                stage1, transform, crude = candidate_similarity, candidate_transform, candidate
            if stage1 >= config.retry_below:
                break
        retried = not config.fast and quick != full and stage1 < config.retry_below
        if retried:
            transform = _register(fixed, crude, full, config.seed, workdir)
        if not config.fast:
            carried_back = ants.apply_transforms(
                moving,
                fixed.new_image_like(fixed_mask.astype(np.float32)),
                [transform],
                whichtoinvert=[True],
                interpolator="nearestNeighbor",
            )
            transform = _register(
                fixed, moving * carried_back, full, config.seed, workdir, initial=transform
            )
        registered = ants.apply_transforms(fixed, moving, [transform], interpolator="linear")
        head_scale = _linear_determinant(transform)
        fitted = ants.read_transform(transform)
        kept_transform = {
            "type": fitted.transform_type,
            "parameters": np.asarray(fitted.parameters, dtype=np.float64).tolist(),
            "fixed_parameters": np.asarray(fitted.fixed_parameters, dtype=np.float64).tolist(),
        }

    data = registered.numpy().astype(np.float32)
    brain = _refined_mask(data, fixed_mask)
    final = similarity_in_mask(data, fixed.numpy(), fixed_mask)
    output = ants.to_nibabel_nifti(registered.new_image_like(np.where(brain, data, 0)))
    output = nib.Nifti1Image(np.asanyarray(output.dataobj, dtype=np.float32), output.affine)
    output.header.set_xyzt_units("mm", "sec")
    qc = RegistrationQC(
        similarity=final,
        head_scale=head_scale,
        stage1_similarity=stage1,
        retried=retried,
        brain_ml=float(brain.sum() * np.prod(spacing) / 1000.0),
        transform=kept_transform,
    )
    return output, qc


def normalise_label_map(
    label_map: nib.Nifti1Image, transform: dict, spacing_mm: tuple[float, float, float]
) -> nib.Nifti1Image:
    """Carry a scan's label map into template space by its scan's fitted transform.

    ``genericLabel`` interpolation (ANTs' label-preserving Gaussian interpolation: each output voxel
    gets one of the input labels, never a mixture), onto the grid of the normalised scans.

    Args:
        label_map: The integer label map, on the grid of its raw scan.
        transform: ``RegistrationQC.transform`` of the scan (from the normalised scan's sidecar).
        spacing_mm: Voxel size of the template grid, as for the scan.

    Returns:
        A uint8 image on the template grid, aligned with the normalised scan.
    """
    ants = _ants()
    fixed = _to_ants(template_image(tuple(float(s) for s in spacing_mm)))
    fitted = ants.create_ants_transform(
        transform_type=transform["type"],
        dimension=3,
        parameters=transform["parameters"],
        fixed_parameters=transform["fixed_parameters"],
    )
    with tempfile.TemporaryDirectory(prefix="tlkedro-ants-") as workdir:
        path = f"{workdir}/transform.mat"
        ants.write_transform(fitted, path)
        warped = ants.apply_transforms(
            fixed, _to_ants(label_map), [path], interpolator="genericLabel"
        )
    output = ants.to_nibabel_nifti(warped)
    labels = np.rint(np.asanyarray(output.dataobj)).astype(np.uint8)
    image = nib.Nifti1Image(labels, output.affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_intent("label")
    return image


def similarity_in_mask(image: np.ndarray, template: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of two arrays on the same grid over ``mask`` (0 when either is constant)."""
    return _correlation(image, template, mask.astype(bool))


def _refined_mask(data: np.ndarray, template_brain: np.ndarray) -> np.ndarray:
    """The template mask less its dark rim (voxels below a fraction of the brain's median), holes filled."""
    from scipy import ndimage

    inside = data[template_brain]
    threshold = _RIM_DARK_FRACTION * float(np.median(inside[inside > 0])) if inside.any() else 0.0
    bright = template_brain & (data > threshold)
    return ndimage.binary_fill_holes(bright) & template_brain


@dataclass(frozen=True)
class NormalisationRecipe:
    """A picklable recipe: normalise the scan at ``source`` when called (in a worker process).

    ``fingerprint`` (the configuration's hash and the source file's digest) lets the collection that
    stores the result skip the work when a file with the same fingerprint is already there.
    """

    source: Path
    config: SpatialNormalisationConfig
    spacing_mm: tuple[float, float, float]
    fingerprint: str

    def __call__(self) -> tuple[nib.Nifti1Image, dict]:
        from tlkedro.imaging.transforms import read_nifti

        # One ANTs thread per worker process: the pool parallelises over scans.
        os.environ[_ITK_THREADS] = "1"
        image, qc = normalise_scan(read_nifti(self.source), self.config, self.spacing_mm)
        sidecar = {"SpatialReference": TEMPLATE_NAME, **asdict(qc)}
        return image, sidecar


class LabelNormalisationError(ConfigurationError, RuntimeError):
    """A label map cannot be normalised: its scan's normalised file lacks the transform."""


@dataclass(frozen=True)
class LabelNormalisationRecipe:
    """A picklable recipe: carry the label map at ``source`` into template space when called.

    ``transform`` comes from the normalised scan's sidecar; ``fingerprint`` (the normalised scan's
    fingerprint and the label map's digest) lets the collection skip a label map already carried.
    """

    source: Path
    transform: dict
    spacing_mm: tuple[float, float, float]
    fingerprint: str

    def __call__(self) -> tuple[nib.Nifti1Image, dict]:
        from tlkedro.imaging.transforms import read_nifti

        os.environ[_ITK_THREADS] = "1"
        image = normalise_label_map(read_nifti(self.source), self.transform, self.spacing_mm)
        return image, {"SpatialReference": TEMPLATE_NAME}


def label_normalisation_recipe(
    source: str | os.PathLike[str],
    scan_id: str,
    scan_sidecar: dict,
    spacing_mm: tuple[float, float, float],
) -> LabelNormalisationRecipe:
    """The recipe carrying one label map into template space by the transform of its scan.

    Args:
        source: The label map.
        scan_id: Its scan, for the error message.
        scan_sidecar: The sidecar of the scan's normalised file (its QC figures, the transform and the
            fingerprint).
        spacing_mm: Voxel size of the template grid.

    Raises:
        LabelNormalisationError: The sidecar has no transform (the scan was normalised by a version
            of tlkedro before label maps).
    """
    transform = scan_sidecar.get("transform")
    if not transform:
        raise LabelNormalisationError(
            f"the normalised scan {scan_id} has no transform in its sidecar (it was normalised before "
            "label maps were supported): delete it from normalised_scans and rerun normalise_scans"
        )
    fingerprint = f"{scan_sidecar.get('fingerprint', '')}-{file_digest(source)}"
    spacing = tuple(float(s) for s in spacing_mm)
    return LabelNormalisationRecipe(Path(source), transform, spacing, fingerprint)


def normalisation_recipe(
    source: str | os.PathLike[str],
    config: SpatialNormalisationConfig,
    spacing_mm: tuple[float, float, float],
) -> NormalisationRecipe:
    """The recipe normalising one scan, fingerprinted by the configuration and the file's content."""
    spacing = tuple(float(s) for s in spacing_mm)
    fingerprint = f"{config.fingerprint(spacing)}-{file_digest(source)}"
    return NormalisationRecipe(Path(source), config, spacing, fingerprint)


def qc_mosaic(
    images: dict[str, nib.Nifti1Image],
    spacing_mm: tuple[float, float, float],
    *,
    similarities: dict[str, float] | None = None,
    columns: int = 6,
) -> Figure:
    """Registered mid-slices (axial, coronal, sagittal through MNI 0, 0, 0) with the template's outline.

    Each image is resampled onto the template grid first (a no-op for normalised scans), so the
    ``method: none`` data can be checked the same way.

    Args:
        images: Scan id -> image, in display order.
        spacing_mm: Grid spacing of the template outline.
        similarities: Scan id -> correlation, printed under each scan.
        columns: Scans per row (each scan takes three panels).
    """
    from matplotlib.figure import Figure
    from nilearn.image import resample_to_img

    template = template_image(tuple(float(s) for s in spacing_mm))
    mask = template_mask(tuple(float(s) for s in spacing_mm)).get_fdata() > 0
    origin = np.rint(np.linalg.inv(template.affine) @ [0.0, 0.0, 0.0, 1.0])[:3].astype(int)
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(columns * 3 * 1.3, rows * 1.6), layout="constrained")
    axes = figure.subplots(rows, columns * 3, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for index, (scan_id, image) in enumerate(images.items()):
        on_grid = resample_to_img(
            image, template, interpolation="linear", force_resample=True, copy_header=True
        ).get_fdata()
        planes = [
            (on_grid[:, :, origin[2]], mask[:, :, origin[2]]),
            (on_grid[:, origin[1], :], mask[:, origin[1], :]),
            (on_grid[origin[0], :, :], mask[origin[0], :, :]),
        ]
        for panel, (plane, outline) in enumerate(planes):
            ax = axes[index // columns, (index % columns) * 3 + panel]
            ax.imshow(plane.T, origin="lower", cmap="gray")
            ax.contour(outline.T.astype(float), levels=[0.5], colors="r", linewidths=0.5)
        label = PurePosixPath(scan_id).parts[0]  # the subject, in both layouts
        if similarities is not None and scan_id in similarities:
            label += f"  r={similarities[scan_id]:.2f}"
        axes[index // columns, (index % columns) * 3 + 1].set_title(label, fontsize=7)
    figure.suptitle(
        f"Slices through MNI (0, 0, 0) on the {TEMPLATE_NAME} grid; template brain outline in red"
    )
    return figure


QC_COLUMNS: dict[str, str] = {
    "scan_id": "str",
    "subject_id": "str",
    "similarity": "float64",
    "head_scale": "float64",
    "stage1_similarity": "float64",
    "retried": "bool",
    "brain_ml": "float64",
    "passed": "bool",
}
"""Columns of the registration QC table (one row per manifest scan; docs/data.md)."""

REGISTRATION_FAILED = "registration_failed"
"""Quarantine reason code of a scan whose registration fell below ``min_similarity``."""


class StaleNormalisationError(ConfigurationError, RuntimeError):
    """A normalised scan was computed with other options or from another file than the current ones."""


def assess_registration(
    manifest: pd.DataFrame,
    sidecars: dict[str, dict],
    config: SpatialNormalisationConfig,
    spacing_mm: tuple[float, float, float],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The QC table of the normalised scans, and the quarantine rows of those below ``min_similarity``.

    Args:
        manifest: One row per scan (``scan_id``, ``subject_id``).
        sidecars: Scan id -> the sidecar of its normalised file (``fingerprint`` and the
            :class:`RegistrationQC` fields); unused when ``config.method`` is ``none``.
        config: The spatial normalisation options.
        spacing_mm: The target spacing.

    Returns:
        The QC table (``QC_COLUMNS``; NaN figures and ``passed`` for every scan with ``method: none``)
        and the quarantine rows (``source``, ``subject_id``, ``reason_code``, ``reason``).

    Raises:
        StaleNormalisationError: A scan has no normalised file, or one computed with other options:
            the message names it (a result is never silently reused).
    """
    rows, rejected = [], []
    current = config.fingerprint(tuple(float(s) for s in spacing_mm))
    for scan_id, subject_id in zip(manifest["scan_id"], manifest["subject_id"], strict=True):
        if config.method == "none":
            nan = float("nan")
            rows.append((scan_id, subject_id, nan, nan, nan, False, nan, True))
            continue
        sidecar = sidecars.get(scan_id)
        if sidecar is None or str(sidecar.get("fingerprint", "")).split("-")[0] != current:
            state = "missing" if sidecar is None else "computed with other options"
            raise StaleNormalisationError(
                f"the normalised scan {scan_id} is {state}: run the normalise_scans node (kedro run "
                "--pipelines preprocessing) with the current preprocessing.spatial_normalisation"
            )
        passed = sidecar["similarity"] >= config.min_similarity
        rows.append(
            (
                scan_id,
                subject_id,
                sidecar["similarity"],
                sidecar["head_scale"],
                sidecar["stage1_similarity"],
                sidecar["retried"],
                sidecar["brain_ml"],
                passed,
            )
        )
        if not passed:
            rejected.append(
                {
                    "source": scan_id,
                    "subject_id": subject_id,
                    "reason_code": REGISTRATION_FAILED,
                    "reason": (
                        f"{config.method} registration to the template reached a correlation of "
                        f"{sidecar['similarity']:.3f} inside the template mask, below "
                        f"spatial_normalisation.min_similarity {config.min_similarity:g}"
                    ),
                }
            )
    qc = pd.DataFrame(rows, columns=list(QC_COLUMNS)).astype(QC_COLUMNS)
    quarantine = pd.DataFrame(
        rejected, columns=["source", "subject_id", "reason_code", "reason"]
    ).astype(str)
    return qc, quarantine
