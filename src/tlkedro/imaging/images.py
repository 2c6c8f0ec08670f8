"""2D images (PNG, JPEG, TIFF) in class folders or with a labels table: checks, manifest and model input.

The ``folders`` ingestion layout (``IngestionConfig.layout``). ``ingest_images`` gives every image a
class, from its top folder (``<class>/<image>``) or from a labels table, reads every file once with
Pillow (in worker processes, as the NIfTI checks) and returns the same two tables as
:func:`tlkedro.imaging.ingest.ingest`:

- the manifest: ``MANIFEST_COLUMNS`` (``age`` NaN, ``sex`` -1, no voxel size: 2D images carry none) plus
  ``label`` (class index, in the order of ``FolderConfig.classes`` or of the sorted names) and
  ``label_name``;
- the quarantine: one row per rejected image or labels-table row, with its reason code (docs/data.md).

Without a patient id every image is its own subject (its key without the suffix), so the splits and
folds of :mod:`tlkedro.imaging.splits` and :mod:`tlkedro.imaging.folds` are per image, stratified by
class (they stratify by ``label`` where the manifest has one).

``build_image_input`` turns the manifest rows of a split into the model-input array the training
template reads for 2D slices, ``(N, 1, H, W)``: grayscale, intensity-normalised (the ``normalisation``
of the preprocessing parameters, statistics over the nonzero pixels), scaled to fit
``slices.size`` keeping the aspect ratio and zero padded, as the slices of scans are.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from tlkedro.imaging.extraction import (
    LABEL_COLUMNS,
    ExtractionConfig,
    LazyArrayStack,
    ScanExtractionError,
)
from tlkedro.imaging.ingest import (
    MANIFEST_COLUMNS,
    QUARANTINE_COLUMNS,
    FolderConfig,
    IngestionConfig,
    MetadataError,
    QuarantineError,
    _auto_workers,
    _frame,
    _label,
    _Rejections,
)
from tlkedro.imaging.nifti_checks import InvalidScanError, check_readable
from tlkedro.imaging.transforms import normalisation
from tlkedro.parallel import imap_ordered

logger = logging.getLogger(__name__)

IMAGE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
"""File suffix (lower case) -> the Pillow format the file must hold."""
IMAGE_MANIFEST_COLUMNS: dict[str, str] = {**MANIFEST_COLUMNS, "label": "int64", "label_name": "str"}
IMAGE_LABEL_COLUMNS = [*LABEL_COLUMNS, "label", "label_name"]
"""Columns of a 2D-image split's labels table: the scans' columns plus the class index and name."""
UNKNOWN_SEX = -1
WHOLE_IMAGE = -1
"""The ``slice`` label of a 2D image: the whole image, as for a volume."""


@dataclass(frozen=True)
class ImageInfo:
    """What the checks read from a usable image."""

    width: int
    height: int
    mode: str
    digest: str
    """SHA-256 of the decoded pixels, mode and size: equal for the same picture in two files."""


@dataclass(frozen=True)
class _Candidate:
    key: str
    path: Path
    subject_id: str
    label_name: str


def check_image(path: str | os.PathLike[str], modes: Sequence[str]) -> ImageInfo:
    """Read one image fully and check that it can be a one-channel model input.

    Raises:
        InvalidScanError: With code ``unreadable``, ``zero_byte``, ``not_image``, ``corrupt``,
            ``multi_frame``, ``wrong_mode`` or ``constant`` (docs/data.md).
    """
    path = Path(path)
    check_readable(path)
    expected = IMAGE_FORMATS.get(path.suffix.lower())
    if expected is None:
        raise InvalidScanError(
            path, "not_image", f"is not named {', '.join(sorted(IMAGE_FORMATS))}"
        )
    try:
        with Image.open(path) as image:
            found = image.format
            if found != expected:
                raise InvalidScanError(
                    path, "not_image", f"is named {path.suffix} but holds {found} data"
                )
            if getattr(image, "n_frames", 1) > 1:
                raise InvalidScanError(
                    path, "multi_frame", f"holds {image.n_frames} frames; one 2D image expected"
                )
            if image.mode not in modes:
                raise InvalidScanError(
                    path,
                    "wrong_mode",
                    f"has Pillow mode {image.mode}; accepted: {', '.join(modes)} "
                    "(ingestion.folders.modes)",
                )
            image.load()
            pixels = image.tobytes()
            extrema = image.getextrema()
            width, height, mode = image.width, image.height, image.mode
    except UnidentifiedImageError:
        raise InvalidScanError(
            path, "not_image", f"is not a {expected} file Pillow can identify"
        ) from None
    except InvalidScanError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's truncated or damaged data
        raise InvalidScanError(
            path, "corrupt", f"has image data that cannot be decoded ({exc})"
        ) from exc
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    if all(low == high for low, high in bands):
        raise InvalidScanError(path, "constant", f"has one value ({bands[0][0]}) in every pixel")
    digest = hashlib.sha256(f"{mode}:{width}x{height}:".encode() + pixels).hexdigest()
    return ImageInfo(width, height, mode, digest)


def check_image_result(
    path: str | os.PathLike[str], modes: Sequence[str]
) -> ImageInfo | InvalidScanError:
    """``check_image`` returning the error instead of raising it (for a process pool)."""
    try:
        return check_image(path, modes)
    except InvalidScanError as exc:
        return exc


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image as a 2D float32 array (rows, columns); colour is converted to grayscale."""
    with Image.open(path) as image:
        if image.mode not in ("L", "I;16", "I", "F"):
            image = image.convert("L")
        return np.asarray(image, dtype=np.float32)


def ingest_images(
    images: Mapping[str, str | os.PathLike[str]],
    metadata: pd.DataFrame | None,
    config: IngestionConfig,
    *,
    metadata_label: str = "metadata",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate 2D images and their classes into a manifest and a quarantine table.

    Args:
        images: Key (path relative to the image folder, posix) -> file path.
        metadata: The labels table (``config.folders.labels_from: table``); ignored, and may be None,
            with ``labels_from: folder``.
        config: Options; ``config.folders`` says where the classes come from.
        metadata_label: Names the table in quarantine sources (``"<label> row <n>"``).

    Returns:
        The manifest (``IMAGE_MANIFEST_COLUMNS``) and the quarantine tables.

    Raises:
        MetadataError: The labels table lacks a column it must have.
        QuarantineError: ``config.strict`` is set and something was quarantined.
    """
    folders = config.folders
    rejected_files, rejected_records = _Rejections(), _Rejections()
    paths = {key: Path(images[key]).absolute() for key in sorted(images)}
    if folders.labels_from == "folder":
        candidates = _from_folders(paths, rejected_files)
    else:
        candidates = _from_table(
            paths, metadata, folders, metadata_label, rejected_files, rejected_records
        )
    classes = folders.classes or tuple(sorted({c.label_name for c in candidates}))
    known = []
    for candidate in candidates:
        if candidate.label_name in classes:
            known.append(candidate)
        else:
            rejected_files.add(
                str(candidate.path),
                candidate.subject_id,
                "unknown_class",
                f"class {candidate.label_name!r} is not one of ingestion.folders.classes {list(classes)}",
            )

    check = functools.partial(check_image_result, modes=folders.modes)
    workers = config.workers or _auto_workers([c.path for c in known])
    results = imap_ordered(check, [c.path for c in known], workers=workers, desc="Checking images")
    readable = []
    for candidate, result in zip(known, results, strict=True):
        if isinstance(result, InvalidScanError):
            rejected_files.add(
                str(candidate.path), candidate.subject_id, result.code, result.reason
            )
        else:
            readable.append((candidate, result))
    rows = [
        _manifest_row(candidate, info, classes.index(candidate.label_name))
        for candidate, info in _drop_duplicate_images(readable, rejected_files)
    ]
    logger.info(
        "Ingestion (folders): %d images found in %d classes, %d accepted, %s; labels: %s",
        len(images),
        len(classes),
        len(rows),
        rejected_files.summary(),
        rejected_records.summary(),
    )
    manifest = _frame(rows, IMAGE_MANIFEST_COLUMNS)
    quarantine = _frame(rejected_files.rows + rejected_records.rows, QUARANTINE_COLUMNS)
    if config.strict and len(quarantine):
        raise QuarantineError(quarantine)
    return manifest, quarantine


def _image_id(key: str) -> str:
    return PurePosixPath(key).with_suffix("").as_posix()


def _from_folders(paths: Mapping[str, Path], rejected: _Rejections) -> list[_Candidate]:
    candidates = []
    for key, path in paths.items():
        parts = PurePosixPath(key).parts
        if len(parts) < 2:
            rejected.add(
                str(path),
                "",
                "bad_path",
                f"path {key!r} is not inside a <class>/ folder (folders layout)",
            )
            continue
        candidates.append(_Candidate(key, path, _image_id(key), parts[0]))
    return candidates


def _from_table(
    paths: Mapping[str, Path],
    table: pd.DataFrame | None,
    folders: FolderConfig,
    label: str,
    rejected_files: _Rejections,
    rejected_records: _Rejections,
) -> list[_Candidate]:
    """The images the labels table lists, each with its class and subject; every other row and image is
    quarantined (``no_image``, ``duplicate_record``, ``missing_label``; ``no_metadata``)."""
    roles = {"file_column": folders.file_column, "label_column": folders.label_column}
    if folders.subject_column is not None:
        roles["subject_column"] = folders.subject_column
    columns = [] if table is None else list(table.columns)
    missing = {role: name for role, name in roles.items() if name not in columns}
    if missing:
        wanted = ", ".join(f"{name!r} (ingestion.folders.{role})" for role, name in missing.items())
        raise MetadataError(
            f"{label} has no column {wanted}; its columns are {columns}. With labels_from: table the "
            "labels table needs them; name the right ones, or set labels_from: folder."
        )
    files = [_label(value) for value in table[folders.file_column]]
    counts = Counter(files)
    listed: dict[str, _Candidate] = {}
    for row, (key, raw_label) in enumerate(zip(files, table[folders.label_column], strict=True), 1):
        subject = (
            _label(table[folders.subject_column].iloc[row - 1])
            if folders.subject_column
            else _image_id(key)
        )
        source = f"{label} row {row}"
        if key not in paths:
            code, reason = "no_image", f"lists {key!r}, which is not in the image folder"
        elif counts[key] > 1:
            code, reason = (
                "duplicate_record",
                f"{key!r} has {counts[key]} rows; cannot tell which is right",
            )
        elif not _label(raw_label):
            code, reason = "missing_label", f"has no class in column {folders.label_column!r}"
        elif not subject:
            code, reason = "missing_subject_id", f"has no id in column {folders.subject_column!r}"
        else:
            listed[key] = _Candidate(key, paths[key], subject, _label(raw_label))
            continue
        rejected_records.add(source, subject, code, reason)
    for key, path in paths.items():
        if key not in listed:
            why = "has no usable row" if counts[key] else "is not listed"
            rejected_files.add(
                str(path),
                _image_id(key),
                "no_metadata",
                f"{why} in {label} (column {folders.file_column!r})",
            )
    return list(listed.values())


def _drop_duplicate_images(
    readable: list[tuple[_Candidate, ImageInfo]], rejected: _Rejections
) -> list[tuple[_Candidate, ImageInfo]]:
    """Keep one image of each set with the same pixels (the first key) where they agree on the class;
    quarantine the others, and every copy where the classes differ. A copy kept twice would put one
    picture in two splits."""
    groups: dict[str, list[tuple[_Candidate, ImageInfo]]] = defaultdict(list)
    for item in readable:
        groups[item[1].digest].append(item)
    kept = []
    for candidate, info in readable:
        group = groups[info.digest]
        if len(group) == 1:
            kept.append((candidate, info))
            continue
        first = group[0][0]
        labels = sorted({c.label_name for c, _ in group})
        if len(labels) > 1:
            reason = (
                f"has the same pixels as {len(group) - 1} other image(s) ({', '.join(c.key for c, _ in group)}) "
                f"labelled {', '.join(labels)}: cannot tell which class is right"
            )
        elif candidate is first:
            kept.append((candidate, info))
            continue
        else:
            reason = f"has the same pixels as {first.key}, which is kept"
        rejected.add(str(candidate.path), candidate.subject_id, "duplicate_image", reason)
    return kept


def _manifest_row(candidate: _Candidate, info: ImageInfo, label: int) -> dict[str, Any]:
    return {
        "scan_id": candidate.key,
        "subject_id": candidate.subject_id,
        "session": "",
        "path": str(candidate.path),
        "age": np.nan,
        "sex": UNKNOWN_SEX,
        "site": "",
        "dim_i": info.width,
        "dim_j": info.height,
        "dim_k": 1,
        "voxel_i": np.nan,
        "voxel_j": np.nan,
        "voxel_k": np.nan,
        "orientation": "",
        "label": label,
        "label_name": candidate.label_name,
    }


@functools.lru_cache(maxsize=4)
def _image_transforms(config: ExtractionConfig):
    from monai.transforms import Resize, SpatialPad  # imported by the workers only

    normalise = normalisation(config.normalisation.name, **dict(config.normalisation.kwargs))
    size = config.slices.size
    pad = SpatialPad(size)

    def transform(pixels: np.ndarray) -> np.ndarray:
        scale = min(out / n for out, n in zip(size, pixels.shape, strict=True))
        fitted = [max(1, round(n * scale)) for n in pixels.shape]
        resize = Resize(fitted, mode="bilinear", anti_aliasing=scale < 1)
        return np.asarray(pad(resize(normalise(pixels)[None])))

    return transform


def extract_image(path: str, config: ExtractionConfig) -> np.ndarray:
    """One image as its model-input row: ``(1, 1, H, W)`` of ``config.dtype``.

    Normalised first, so that the statistics are the image's own and the zero padding stays zero.

    Raises:
        ScanExtractionError: The file cannot be read or transformed; the message names it.
    """
    try:
        block = _image_transforms(config)(read_image(path))
    except Exception as exc:
        raise ScanExtractionError(
            f"preprocessing failed: {path}: {type(exc).__name__}: {exc}"
        ) from exc
    return block[None].astype(config.dtype)


def build_image_input(
    images: pd.DataFrame,
    config: ExtractionConfig,
    files: Sequence[str | os.PathLike[str]],
    *,
    workers: int | None = None,
    desc: str | None = None,
) -> tuple[LazyArrayStack, pd.DataFrame]:
    """Recipes for the model-input array of some 2D images, and its labels table.

    Args:
        images: Manifest rows of the ``folders`` layout, in output order.
        config: The preprocessing parameters: ``slices.size``, ``normalisation``, ``dtype``.
        files: The file of each image, in the same order (resolved through the catalog).
        workers: Processes that evaluate the recipes when the stack is written.
        desc: Progress-bar label.

    Returns:
        The lazy ``(N, 1, H, W)`` array and one label row per image (``IMAGE_LABEL_COLUMNS``; ``slice``
        is -1, the whole image).

    Raises:
        ValueError: ``files`` and ``images`` differ in length, or ``config.mode`` is not ``slices``.
    """
    if config.mode != "slices":
        raise ValueError(
            f"preprocessing.mode is {config.mode!r}, but 2D images (ingestion.layout: folders) can only "
            "give 2D inputs: set preprocessing.mode: slices (slices.size is the output size)"
        )
    files = list(files)
    if len(files) != len(images):
        raise ValueError(f"{len(files)} files for {len(images)} images")
    stack = LazyArrayStack(
        recipes=[functools.partial(extract_image, str(path), config) for path in files],
        rows=[1] * len(images),
        item_shape=config.item_shape(),
        dtype=config.dtype,
        workers=workers,
        desc=desc,
        preload=("monai.transforms", __name__),
    )
    labels = images.assign(head_scale=np.nan, slice=WHOLE_IMAGE)[IMAGE_LABEL_COLUMNS]
    return stack, labels.reset_index(drop=True).astype({"head_scale": np.float64})
