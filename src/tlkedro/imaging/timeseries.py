"""ROI time series (e.g. fMRI, one ``<subject>_timeseries.tsv`` per subject): checks, manifest, model input.

The ``timeseries`` ingestion layout (``IngestionConfig.layout``), TLIMB's second data type beside images.
A series is a tab-separated table with a header row of ROI names, one row per time point and one column
per region of interest. ``ingest_timeseries`` takes each subject's id from its file name
(``[<folder>/]<subject>_timeseries.tsv``), its age, sex and site from a participants table (the columns
of the ``bids`` layout: ``participant_id``, ``age``, ``sex`` M/F, ``site``), reads every series once (in
worker processes, as the NIfTI checks) and returns the same two tables as
:func:`tlkedro.imaging.ingest.ingest`:

- the manifest: ``MANIFEST_COLUMNS`` with ``dim_i`` the number of ROIs, ``dim_j`` the number of time
  points, ``dim_k`` 1 and no voxel size;
- the quarantine: one row per rejected series or metadata record, with its reason code (docs/timeseries.md).

``build_timeseries_input`` turns the manifest rows of a split into the model-input array the training
template reads, ``(N, ROIs, length)``: the ROIs are the channels of a 1D signal, each z-scored over its own
time points, then cropped to its first ``length`` points or zero padded at the end (zero is each ROI's
mean after the z-score), so every subject has the same length and training needs no special case.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tlkedro.imaging.extraction import LABEL_COLUMNS, LazyArrayStack, ScanExtractionError
from tlkedro.imaging.ingest import (
    _UNLABELLED,
    MANIFEST_COLUMNS,
    QUARANTINE_COLUMNS,
    IngestionConfig,
    QuarantineError,
    Scan,
    _auto_workers,
    _frame,
    _Rejections,
    match_metadata,
    scan_columns,
)
from tlkedro.imaging.nifti_checks import InvalidScanError, check_readable
from tlkedro.parallel import imap_ordered

logger = logging.getLogger(__name__)

SUFFIX = "_timeseries.tsv"
WHOLE_SERIES = -1
"""The ``slice`` label of a series: the whole series, as for a volume."""


class TimeseriesInputConfig(BaseModel):
    """How a series becomes a model-input row (the ``preprocessing.timeseries`` parameters).

    Attributes:
        length: Time points of every row: longer series are cropped to their first ``length`` points,
            shorter ones zero padded at the end.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    length: int = Field(128, ge=2)


@dataclass(frozen=True)
class SeriesInfo:
    """What the checks read from a usable series."""

    rois: int
    timepoints: int


def parse_series_key(key: str) -> str:
    """The subject id of a series from its path relative to the series folder.

    Raises:
        ValueError: The file is not named ``<subject>_timeseries.tsv``.
    """
    name = PurePosixPath(key).name
    subject = name.removesuffix(SUFFIX)
    if subject == name or not subject:
        raise ValueError(f"path {key!r} is not named <subject>{SUFFIX} (timeseries layout)")
    return subject


def read_series(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A series as read, one column per ROI (header row: the ROI names)."""
    return pd.read_csv(path, sep="\t")


def check_series(path: str | os.PathLike[str], min_timepoints: int) -> SeriesInfo:
    """Read one series fully and check that it can be a model input.

    Raises:
        InvalidScanError: With code ``unreadable``, ``zero_byte``, ``not_table``, ``empty``,
            ``non_numeric``, ``missing_values``, ``too_short`` or ``constant_roi`` (docs/timeseries.md).
    """
    path = Path(path)
    check_readable(path)
    try:
        table = read_series(path)
    except pd.errors.EmptyDataError:
        raise InvalidScanError(path, "empty", "has no header row of ROI names") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidScanError(
            path, "not_table", f"is not a tab-separated table ({exc})".replace("\n", " ")
        ) from exc
    if table.empty:
        raise InvalidScanError(
            path, "empty", f"has {len(table.columns)} ROI column(s) but no time points"
        )
    values = table.apply(pd.to_numeric, errors="coerce")
    text = values.isna() & table.notna()
    if text.any().any():
        column = text.any().idxmax()
        row = int(text[column].to_numpy().argmax())
        raise InvalidScanError(
            path,
            "non_numeric",
            f"has a value that is not a number in ROI {column!r}, time point {row + 1}: "
            f"{table[column].iloc[row]!r}",
        )
    finite = np.isfinite(values.to_numpy(dtype=np.float64))
    if not finite.all():
        missing = int((~finite).sum())
        column = values.columns[int((~finite).any(axis=0).argmax())]
        raise InvalidScanError(
            path,
            "missing_values",
            f"has {missing} missing or infinite value(s) (NaN, inf), the first in ROI {column!r}",
        )
    if len(values) < min_timepoints:
        raise InvalidScanError(
            path,
            "too_short",
            f"has {len(values)} time points, fewer than ingestion.timeseries.min_timepoints "
            f"({min_timepoints})",
        )
    constant = [str(c) for c in values.columns if values[c].nunique() == 1]
    if constant:
        raise InvalidScanError(
            path, "constant_roi", f"has ROI(s) with one value at every time point: {constant[:5]}"
        )
    return SeriesInfo(rois=values.shape[1], timepoints=len(values))


def check_series_result(
    path: str | os.PathLike[str], min_timepoints: int
) -> SeriesInfo | InvalidScanError:
    """``check_series`` returning the error instead of raising it (for a process pool)."""
    try:
        return check_series(path, min_timepoints)
    except InvalidScanError as exc:
        return exc


def ingest_timeseries(
    series: Mapping[str, str | os.PathLike[str]],
    metadata: pd.DataFrame,
    config: IngestionConfig,
    *,
    metadata_label: str = "metadata",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate ROI time series and their participants table into a manifest and a quarantine table.

    Args:
        series: Key (path relative to the series folder, posix) -> file path.
        metadata: One row per subject (``participant_id``, ``age``, ``sex``, ``site``; other names
            through ``ingestion.columns``).
        config: Options; ``config.timeseries`` holds the ROI count and the shortest series accepted.
        metadata_label: Names the table in quarantine sources (``"<label> row <n>"``).

    Returns:
        The manifest (``MANIFEST_COLUMNS``) and the quarantine tables.

    Raises:
        MetadataError: The participants table lacks a column it must have.
        QuarantineError: ``config.strict`` is set and something was quarantined.
    """
    options = config.timeseries
    rejected_files, rejected_records = _Rejections(), _Rejections()
    scans = []
    for key in sorted(series):
        path = Path(series[key]).absolute()
        try:
            scans.append(Scan(key, path, parse_series_key(key), ""))
        except ValueError as exc:
            rejected_files.add(str(path), "", "bad_path", str(exc))
    candidates, records = match_metadata(
        scans, metadata, config, metadata_label, rejected_files, rejected_records
    )
    check = functools.partial(check_series_result, min_timepoints=options.min_timepoints)
    paths = [scan.path for scan in candidates]
    workers = config.workers or _auto_workers(paths)
    results = imap_ordered(check, paths, workers=workers, desc="Checking time series")
    readable = []
    for scan, result in zip(candidates, results, strict=True):
        if isinstance(result, InvalidScanError):
            rejected_files.add(str(scan.path), scan.subject_id, result.code, result.reason)
        else:
            readable.append((scan, result))
    rows = [
        _manifest_row(scan, records.get(scan.subject_id, _UNLABELLED), info)
        for scan, info in _same_rois(readable, options.rois, rejected_files)
    ]
    logger.info(
        "Ingestion (timeseries): %d series found, %d accepted, %s; %d metadata records, %s",
        len(series),
        len(rows),
        rejected_files.summary(),
        len(metadata),
        rejected_records.summary(),
    )
    optional = config.labels == "optional"  # as ingest: a missing sex is a null of Int64
    manifest = _frame(rows, {**MANIFEST_COLUMNS, **({"sex": "Int64"} if optional else {})})
    quarantine = _frame(rejected_files.rows + rejected_records.rows, QUARANTINE_COLUMNS)
    if config.strict and len(quarantine):
        raise QuarantineError(quarantine)
    return manifest, quarantine


def _same_rois(
    readable: list[tuple[Scan, SeriesInfo]], rois: int | None, rejected: _Rejections
) -> list[tuple[Scan, SeriesInfo]]:
    """The series with the expected number of ROIs (``rois``, else the cohort's most common number,
    the smallest on a tie); the others are quarantined (``wrong_rois``): the ROIs are the channels."""
    if rois is None:
        counts = Counter(info.rois for _, info in readable)
        rois = min(counts, key=lambda n: (-counts[n], n)) if counts else 0
        where = "as most series of the cohort have (ingestion.timeseries.rois: null)"
    else:
        where = "as ingestion.timeseries.rois asks"
    kept = []
    for scan, info in readable:
        if info.rois == rois:
            kept.append((scan, info))
        else:
            reason = f"has {info.rois} ROI columns, not {rois} {where}"
            rejected.add(str(scan.path), scan.subject_id, "wrong_rois", reason)
    return kept


def _manifest_row(scan: Scan, record: Any, info: SeriesInfo) -> dict[str, Any]:
    return {
        **scan_columns(scan, record),
        "dim_i": info.rois,
        "dim_j": info.timepoints,
        "dim_k": 1,
        "voxel_i": np.nan,
        "voxel_j": np.nan,
        "voxel_k": np.nan,
        "orientation": "",
    }


def series_input(values: np.ndarray, length: int) -> np.ndarray:
    """``(time points, ROIs)`` values as one model-input row ``(ROIs, length)``, float32.

    Each ROI is z-scored over its time points (so ROIs and subjects share one scale), then cropped to
    the first ``length`` points or zero padded at the end.
    """
    values = np.asarray(values, dtype=np.float64)
    standardised = (values - values.mean(axis=0)) / values.std(axis=0)
    row = np.zeros((values.shape[1], length), dtype=np.float32)
    kept = min(length, len(values))
    row[:, :kept] = standardised[:kept].T
    return row


def extract_series(
    path: str, length: int, dtype: Literal["float16", "float32"] = "float32"
) -> np.ndarray:
    """One series file as its model-input block, ``(1, ROIs, length)`` of ``dtype``.

    Raises:
        ScanExtractionError: The file cannot be read or turned into an input; the message names it.
    """
    try:
        block = series_input(read_series(path).to_numpy(dtype=np.float64), length)
    except Exception as exc:
        raise ScanExtractionError(
            f"preprocessing failed: {path}: {type(exc).__name__}: {exc}"
        ) from exc
    return block[None].astype(dtype)


def build_timeseries_input(
    subjects: pd.DataFrame,
    config: TimeseriesInputConfig,
    files: Sequence[str | os.PathLike[str]],
    *,
    dtype: Literal["float16", "float32"] = "float32",
    workers: int | None = None,
    desc: str | None = None,
) -> tuple[LazyArrayStack, pd.DataFrame]:
    """Recipes for the model-input array of some series, and its labels table.

    Args:
        subjects: Manifest rows of the ``timeseries`` layout, in output order; all with one ROI count.
        config: The output length.
        files: The file of each series, in the same order (resolved through the catalog).
        dtype: Data type of the array.
        workers: Processes that evaluate the recipes when the stack is written.
        desc: Progress-bar label.

    Returns:
        The lazy ``(N, ROIs, length)`` array and one label row per series (``LABEL_COLUMNS``; ``slice``
        is -1, the whole series; ``head_scale`` NaN).

    Raises:
        ValueError: ``files`` and ``subjects`` differ in length, or the rows differ in ROI count.
    """
    files = list(files)
    if len(files) != len(subjects):
        raise ValueError(f"{len(files)} files for {len(subjects)} series")
    rois = sorted(set(subjects["dim_i"].astype(int)))
    if len(rois) > 1:
        raise ValueError(
            f"the series have {rois} ROIs: a split's rows must share one count (the manifest of "
            "ingest_timeseries does)"
        )
    stack = LazyArrayStack(
        recipes=[
            functools.partial(extract_series, str(path), config.length, dtype) for path in files
        ],
        rows=[1] * len(subjects),
        item_shape=(rois[0] if rois else 0, config.length),
        dtype=dtype,
        workers=workers,
        desc=desc,
        preload=(__name__,),
    )
    labels = subjects.assign(head_scale=np.nan, slice=WHOLE_SERIES)[LABEL_COLUMNS]
    return stack, labels.reset_index(drop=True).astype({"head_scale": np.float64})
