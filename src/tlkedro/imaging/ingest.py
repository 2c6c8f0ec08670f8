"""Turn a set of scans and a metadata table into a validated manifest and a quarantine table.

``ingest`` matches each image (UK Biobank or BIDS layout) to its subject's metadata record, checks every
file that could be used (``nifti_checks.check_nifti``, in parallel worker processes) and returns (the
``folders`` layout of 2D images, one class folder or labels-table row each, is handled by
:func:`tlkedro.imaging.images.ingest_images`, and the ``timeseries`` layout of ROI time series by
:func:`tlkedro.imaging.timeseries.ingest_timeseries`, with the same two tables):

- the manifest: one row per usable scan (columns in ``MANIFEST_COLUMNS``);
- the quarantine: one row per rejected file or metadata record with a reason code and a sentence.

Every image key ends up in exactly one of the two tables, and so does every metadata record that was not
used. The cheap checks (path, metadata) run first, so a file rejected by them is never read. The reason
codes and the column meanings are documented in docs/data.md.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import pandas as pd
from nilearn.interfaces.bids import parse_bids_filename
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tlkedro.errors import ConfigurationError
from tlkedro.imaging.labels import LabelMapParams, check_label_map
from tlkedro.imaging.nifti_checks import InvalidScanError, ScanInfo, check_nifti_result
from tlkedro.parallel import imap_ordered, resolve_workers

logger = logging.getLogger(__name__)

Layout = Literal["ukb", "bids", "folders", "timeseries"]
ColumnRole = Literal["subject_id", "age", "sex", "site"]

MANIFEST_COLUMNS: dict[str, str] = {
    "scan_id": "str",
    "subject_id": "str",
    "session": "str",
    "path": "str",
    "age": "float64",
    "sex": "int64",
    "site": "str",
    "dim_i": "int64",
    "dim_j": "int64",
    "dim_k": "int64",
    "voxel_i": "float64",
    "voxel_j": "float64",
    "voxel_k": "float64",
    "orientation": "str",
}
QUARANTINE_COLUMNS: dict[str, str] = {
    "source": "str",
    "subject_id": "str",
    "reason_code": "str",
    "reason": "str",
}

# UK Biobank showcase field codes: 31 sex, 21003 age when attending the assessment centre, 54 centre;
# instance 2 is the first imaging visit.
DEFAULT_COLUMNS: dict[Layout, dict[ColumnRole, str]] = {
    "ukb": {"subject_id": "eid", "age": "21003-2.0", "sex": "31-0.0", "site": "54-2.0"},
    "bids": {"subject_id": "participant_id", "age": "age", "sex": "sex", "site": "site"},
    "folders": {},  # 2D images: their columns are FolderConfig's
    # ROI time series: a BIDS-style participants table, as bids
    "timeseries": {"subject_id": "participant_id", "age": "age", "sex": "sex", "site": "site"},
}
# UK Biobank data coding 9 is 0 = female, 1 = male. BIDS recommends M/F (or male/female); numeric codes
# are ambiguous there (0/1 and 1/2 are both common), so they are rejected unless `sex_codes` declares them.
DEFAULT_SEX_CODES: dict[Layout, dict[str, int]] = {
    "ukb": {"0": 0, "1": 1, "female": 0, "male": 1},
    "bids": {"f": 0, "m": 1, "female": 0, "male": 1},
    "folders": {},
    "timeseries": {"f": 0, "m": 1, "female": 0, "male": 1},
}
_MAX_LISTED_IN_ERROR = 50
# Starting a worker process costs about 2 s (imports); one core checks about 80 MB of gzipped NIfTI per
# second, so a worker only pays for itself from a few hundred MB of input.
_BYTES_PER_AUTO_WORKER = 256 << 20


class FolderConfig(BaseModel):
    """How the ``folders`` layout finds each 2D image's class (the ``ingestion.folders`` parameters).

    Attributes:
        labels_from: ``folder``: the class is the image's top folder (``<class>/<image>``); ``table``:
            the metadata table gives it, one row per image.
        file_column: Table column with the image's path relative to the image folder.
        label_column: Table column with the class name.
        subject_column: Table column with a patient id, so that a patient's images share a split;
            ``None``: each image is its own subject (its key without the suffix).
        classes: The class names in index order; ``None``: the names found, sorted. An image of another
            class is quarantined (``unknown_class``).
        modes: Pillow modes accepted (others are quarantined as ``wrong_mode``); colour images (``RGB``)
            are converted to grayscale by Pillow's ITU-R 601-2 luma.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels_from: Literal["folder", "table"] = "folder"
    file_column: str = "file"
    label_column: str = "label"
    subject_column: str | None = None
    classes: tuple[str, ...] | None = Field(None, min_length=2)
    modes: tuple[str, ...] = ("L", "I;16", "I", "F", "RGB")


class TimeseriesConfig(BaseModel):
    """What the ``timeseries`` layout accepts (the ``ingestion.timeseries`` parameters).

    Attributes:
        rois: Columns (regions of interest) every series must have; ``None``: the number most series
            of the cohort have. A series with another number is quarantined (``wrong_rois``).
        min_timepoints: Fewest rows (time points) a series may have (fewer: ``too_short``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rois: int | None = Field(None, ge=1)
    min_timepoints: int = Field(32, ge=2)


class IngestionConfig(BaseModel):
    """Options of ``ingest``, validated once (the ``ingestion`` parameters key, less ``source``).

    Attributes:
        layout: ``ukb`` (``<eid>/...``), ``bids`` (``sub-<id>/[ses-<s>/]anat/<file>``) or ``folders``
            (PNG/JPEG/TIFF images, ``<class>/<image>`` or listed in a labels table; see ``folders``) or
            ``timeseries`` (``[<folder>/]<subject>_timeseries.tsv``, rows time points, columns ROIs, and
            a participants table; see ``timeseries``).
        strict: Raise ``QuarantineError`` instead of returning a non-empty quarantine.
        age_range: Smallest and largest accepted age in years (inclusive).
        voxel_size_range: Smallest and largest plausible voxel size in mm (inclusive).
        workers: Processes that read the files; ``None``: one per available core, fewer for small
            cohorts (one per 256 MiB of files), where starting processes would cost more than it saves.
        columns: Metadata column names that differ from the layout's defaults (``DEFAULT_COLUMNS``).
        sex_codes: Metadata sex value (case-insensitive) -> 0 female / 1 male, replacing the layout's
            defaults (``DEFAULT_SEX_CODES``).
        labels: ``required`` (training: a scan without a usable age and sex is quarantined) or
            ``optional`` (scoring new scans, the ``predict`` pipeline: only the subject id column is
            required, and a missing age or sex, or a subject without a metadata record, leaves the
            manifest's ``age`` NaN and ``sex`` null, a nullable ``Int64``; a value given but invalid is
            still quarantined).
        folders: Options of the ``folders`` layout.
        timeseries: Options of the ``timeseries`` layout.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    layout: Layout = "ukb"
    strict: bool = False
    age_range: tuple[float, float] = (18.0, 100.0)
    voxel_size_range: tuple[float, float] = (0.1, 10.0)
    workers: int | None = Field(default=None, ge=1)
    columns: dict[ColumnRole, str] = Field(default_factory=dict)
    # YAML reads an unquoted numeric code such as 1 as an int key.
    sex_codes: dict[str | int, Literal[0, 1]] | None = None
    labels: Literal["required", "optional"] = "required"
    folders: FolderConfig = FolderConfig()
    timeseries: TimeseriesConfig = TimeseriesConfig()

    @field_validator("age_range", "voxel_size_range")
    @classmethod
    def _increasing(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low < high:
            raise ValueError(f"must be [low, high] with 0 <= low < high, got [{low:g}, {high:g}]")
        return value

    @field_validator("sex_codes")
    @classmethod
    def _lowercase_codes(cls, value: dict[str | int, int] | None) -> dict[str, int] | None:
        return (
            None
            if value is None
            else {str(code).strip().lower(): sex for code, sex in value.items()}
        )

    def metadata_columns(self) -> dict[ColumnRole, str]:
        """Column name per role: the layout's defaults updated with ``columns``."""
        return {**DEFAULT_COLUMNS[self.layout], **self.columns}

    def sex_mapping(self) -> dict[str, int]:
        """Lower-case metadata sex value -> 0 female / 1 male."""
        return DEFAULT_SEX_CODES[self.layout] if self.sex_codes is None else self.sex_codes


class QuarantineError(ConfigurationError, RuntimeError):
    """Raised in strict mode when anything was quarantined; ``quarantine`` holds the full table."""

    def __init__(self, quarantine: pd.DataFrame) -> None:
        lines = [
            f"- {row.source}: {row.reason} [{row.reason_code}]" for row in quarantine.itertuples()
        ]
        more = len(lines) - _MAX_LISTED_IN_ERROR
        listed = lines[:_MAX_LISTED_IN_ERROR] + ([f"... and {more} more"] if more > 0 else [])
        super().__init__(
            f"strict mode is on and {len(quarantine)} file(s) or metadata record(s) were quarantined "
            "(set strict: false to write them to the quarantine table instead):\n"
            + "\n".join(listed)
        )
        self.quarantine = quarantine


class MetadataError(ConfigurationError, ValueError):
    """The metadata table as a whole cannot be used (e.g. a required column is missing)."""


class _Rejections:
    """Quarantine rows of one kind (files or metadata records)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []

    def add(self, source: str, subject_id: str, code: str, reason: str) -> None:
        self.rows.append(
            {"source": source, "subject_id": subject_id, "reason_code": code, "reason": reason}
        )

    def summary(self) -> str:
        counts = Counter(row["reason_code"] for row in self.rows)
        by_code = ", ".join(
            f"{code}: {n}"
            for code, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        )
        return f"{len(self.rows)} quarantined" + (f" ({by_code})" if by_code else "")


@dataclass(frozen=True)
class Scan:
    """One file to ingest: its key in the image dataset, absolute path, subject and session ("" none)."""

    key: str
    path: Path
    subject_id: str
    session: str


@dataclass(frozen=True)
class _Record:
    age: float
    sex: int | None
    site: str


_UNLABELLED = _Record(math.nan, None, "")  # labels optional: a scan whose subject has no record


def ingest(
    images: Mapping[str, str | os.PathLike[str]],
    metadata: pd.DataFrame,
    config: IngestionConfig | None = None,
    *,
    metadata_label: str = "metadata",
    label_maps: Mapping[str, str | os.PathLike[str]] | None = None,
    label_config: LabelMapParams | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate scans and metadata into a manifest and a quarantine table.

    Args:
        images: Key (path relative to the image folder, posix) -> file path.
        metadata: One row per subject: the UK Biobank showcase export or BIDS ``participants.tsv``.
        config: Options; defaults to ``IngestionConfig()``.
        metadata_label: Names the metadata in quarantine sources (``"<label> row <n>"``, rows counted
            from 1 after the header).
        label_maps: Key (path relative to the label maps' folder, in the layout of the images) -> file
            of each scan's label map (``ukb``/``bids`` only); ``None``: no label maps. Each accepted
            scan needs exactly one usable label map of its subject and session (see
            :func:`tlkedro.imaging.labels.check_label_map`), else it is quarantined; the manifest gains
            ``label_key``, the label map's key.
        label_config: The label scheme the label maps must keep to (default ``LabelMapParams()``).

    Returns:
        The manifest and the quarantine tables.

    Raises:
        MetadataError: A required metadata column is missing.
        QuarantineError: ``config.strict`` is set and something was quarantined.
    """
    config = config or IngestionConfig()
    if config.layout == "folders":
        from tlkedro.imaging.images import ingest_images  # it builds on this module

        return ingest_images(images, metadata, config, metadata_label=metadata_label)
    if config.layout == "timeseries":
        from tlkedro.imaging.timeseries import ingest_timeseries  # it builds on this module

        return ingest_timeseries(images, metadata, config, metadata_label=metadata_label)
    rejected_files = _Rejections()
    rejected_records = _Rejections()

    scans = []
    for key in sorted(images):
        path = Path(images[key]).absolute()
        try:
            subject_id, session = parse_scan_key(key, config.layout)
        except ValueError as exc:
            rejected_files.add(str(path), "", "bad_path", str(exc))
            continue
        scans.append(Scan(key, path, subject_id, session))
    candidates, records = match_metadata(
        scans, metadata, config, metadata_label, rejected_files, rejected_records
    )
    paths = [scan.path for scan in candidates]
    check = functools.partial(check_nifti_result, voxel_size_range=config.voxel_size_range)
    workers = config.workers or _auto_workers(paths)
    results = imap_ordered(check, paths, workers=workers, desc="Checking scans")
    manifest_rows = []
    for scan, result in zip(candidates, results, strict=True):
        if isinstance(result, InvalidScanError):
            rejected_files.add(str(scan.path), scan.subject_id, result.code, result.reason)
        else:
            record = records.get(scan.subject_id, _UNLABELLED)
            manifest_rows.append(_manifest_row(scan, record, result))

    logger.info(
        "Ingestion: %d scans found, %d accepted, %s; %d metadata records, %s",
        len(images),
        len(manifest_rows),
        rejected_files.summary(),
        len(metadata),
        rejected_records.summary(),
    )
    columns = {**MANIFEST_COLUMNS, **({"sex": "Int64"} if config.labels == "optional" else {})}
    if label_maps is not None:
        manifest_rows = _attach_label_maps(
            manifest_rows, label_maps, label_config or LabelMapParams(), config, rejected_files
        )
        columns["label_key"] = "str"
    manifest = _frame(manifest_rows, columns)
    quarantine = _frame(rejected_files.rows + rejected_records.rows, QUARANTINE_COLUMNS)
    if config.strict and len(quarantine):
        raise QuarantineError(quarantine)
    return manifest, quarantine


def match_metadata(
    scans: list[Scan],
    metadata: pd.DataFrame,
    config: IngestionConfig,
    metadata_label: str,
    rejected_files: _Rejections,
    rejected_records: _Rejections,
) -> tuple[list[Scan], dict[str, _Record]]:
    """The scans that may be checked (one per subject and session, with a usable metadata record unless
    labels are optional) and the valid records by subject id; every other scan and record is added to
    the rejections with its reason."""
    imaged = {scan.subject_id for scan in scans}
    scans = _drop_duplicate_scans(scans, rejected_files)

    records, bad_subjects = _read_metadata(
        metadata, config, imaged, metadata_label, rejected_records
    )
    candidates = []
    for scan in scans:
        if scan.subject_id in bad_subjects:
            code, reason = bad_subjects[scan.subject_id]
            rejected_files.add(
                str(scan.path),
                scan.subject_id,
                code,
                f"its subject's metadata is unusable: {reason}",
            )
        elif scan.subject_id not in records and config.labels == "required":
            reason = f"subject {scan.subject_id} has no metadata record in {metadata_label}"
            rejected_files.add(str(scan.path), scan.subject_id, "no_metadata", reason)
        else:
            candidates.append(scan)
    return candidates, records


def parse_scan_key(key: str, layout: Layout) -> tuple[str, str]:
    """Subject id and session ("" when none) of an image from its path relative to the image folder.

    Args:
        key: Posix relative path, e.g. ``1234567/T1/T1_brain_to_MNI.nii.gz`` (ukb) or
            ``sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz`` (bids).
        layout: ``ukb`` or ``bids``.

    Raises:
        ValueError: The path does not follow the layout; the message says what was expected.
    """
    parts = PurePosixPath(key).parts
    if layout == "ukb":
        if len(parts) < 2:
            raise ValueError(f"path {key!r} is not inside a <eid>/ folder (ukb layout)")
        return parts[0], ""
    mismatch = ValueError(
        f"path {key!r} does not follow sub-<id>/[ses-<session>/]anat/"
        "sub-<id>[_ses-<session>]_<suffix>.nii[.gz] (bids layout)"
    )
    try:
        entities = parse_bids_filename(key)["entities"]
    except ValueError:  # nilearn's message for a name without an extension says nothing useful
        raise mismatch from None
    if not entities.get("sub"):
        raise mismatch
    subject = f"sub-{entities['sub']}"
    session = f"ses-{entities['ses']}" if entities.get("ses") else ""
    if parts[:-1] != ((subject, session, "anat") if session else (subject, "anat")):
        raise mismatch
    return subject, session


def _drop_duplicate_scans(scans: list[Scan], rejected: _Rejections) -> list[Scan]:
    """Quarantine every image of a subject and session claimed by more than one image."""
    claims = Counter((s.subject_id, s.session) for s in scans)
    kept = []
    for scan in scans:
        n_claims = claims[(scan.subject_id, scan.session)]
        if n_claims == 1:
            kept.append(scan)
            continue
        session = f" session {scan.session}" if scan.session else ""
        rejected.add(
            str(scan.path),
            scan.subject_id,
            "duplicate_scan",
            f"{n_claims} images claim subject {scan.subject_id}{session}; cannot tell which one to use",
        )
    return kept


def _read_metadata(
    metadata: pd.DataFrame,
    config: IngestionConfig,
    imaged: set[str],
    label: str,
    rejected: _Rejections,
) -> tuple[dict[str, _Record], dict[str, tuple[str, str]]]:
    """Valid records by subject id, and (code, reason) of the imaged subjects whose record is unusable.

    Each unusable record gets one quarantine row, with the first failing check in this order: missing
    id, duplicate id, no image, age, sex.
    """
    columns = config.metadata_columns()
    optional = config.labels == "optional"
    roles = ("subject_id",) if optional else ("subject_id", "age", "sex")
    required = {role: columns[role] for role in roles}
    missing = {role: name for role, name in required.items() if name not in metadata.columns}
    if missing:
        wanted = ", ".join(f"{name!r} ({role})" for role, name in missing.items())
        raise MetadataError(
            f"{label} has no column {wanted} (layout {config.layout}); its columns are "
            f"{list(metadata.columns)}. Name the right ones in ingestion.columns."
        )
    if columns["site"] not in metadata.columns:
        logger.warning("%s has no site column %r: every scan gets site ''", label, columns["site"])
    prefix = "sub-" if config.layout == "bids" else ""
    ids = [_label(value, prefix) for value in metadata[columns["subject_id"]]]
    counts = Counter(ids)
    raw_ages, raw_sexes, sites = (
        metadata[columns[role]] if columns[role] in metadata.columns else [None] * len(metadata)
        for role in ("age", "sex", "site")
    )
    ages = pd.to_numeric(pd.Series(raw_ages, dtype=object), errors="coerce")
    sex_codes = config.sex_mapping()

    records: dict[str, _Record] = {}
    bad: dict[str, tuple[str, str]] = {}
    for row, (subject_id, raw_age, age, raw_sex, site) in enumerate(
        zip(ids, raw_ages, ages, raw_sexes, sites, strict=True),
        start=1,
    ):
        source = f"{label} row {row}"
        sex = sex_codes.get(_label(raw_sex).lower())
        if not subject_id:
            code, reason = "missing_subject_id", f"has no id in column {columns['subject_id']!r}"
        elif counts[subject_id] > 1:
            code, reason = (
                "duplicate_subject",
                f"subject {subject_id} has {counts[subject_id]} records",
            )
        elif subject_id not in imaged:
            code, reason = "no_image", f"subject {subject_id} has no image"
        elif (age_problem := _age_problem(raw_age, age, config.age_range)) and not (
            optional and pd.isna(raw_age)
        ):
            code, reason = "invalid_age", f"age of subject {subject_id} {age_problem}"
        elif sex is None and not (optional and not _label(raw_sex)):
            given = (
                f"{_label(raw_sex)!r} is not one of {sorted(sex_codes)}"
                if _label(raw_sex)
                else "is missing"
            )
            code = "invalid_sex"
            reason = (
                f"sex of subject {subject_id} {given} "
                f"(layout {config.layout}; declare others with ingestion.sex_codes)"
            )
        else:
            records[subject_id] = _Record(float(age), sex, _label(site))  # NaN, None: not given
            continue
        rejected.add(source, subject_id, code, reason)
        if subject_id in imaged:
            bad[subject_id] = (code, f"{source}: {reason}")
    return records, bad


def _age_problem(raw: Any, age: float, age_range: tuple[float, float]) -> str | None:
    """What is wrong with an age (``raw`` as given, ``age`` as a number or NaN); None if nothing."""
    low, high = age_range
    if pd.isna(raw):
        return "is missing"
    if math.isnan(age):
        return f"{str(raw)!r} is not a number"
    if not low <= age <= high:
        return f"{age:g} is outside age_range [{low:g}, {high:g}]"
    return None


def _auto_workers(paths: list[Path]) -> int:
    total = sum(path.stat().st_size for path in paths if path.is_file())
    return max(1, min(resolve_workers(None), total // _BYTES_PER_AUTO_WORKER))


def _label(value: Any, prefix: str = "") -> str:
    """A metadata value as text: "" when missing, whole numbers without ".0", ``prefix`` added."""
    if pd.isna(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return prefix + text if text and not text.startswith(prefix) else text


def scan_columns(scan: Scan, record: _Record) -> dict[str, Any]:
    """The manifest columns every layout shares: the file's identity and its subject's labels."""
    return {
        "scan_id": scan.key,
        "subject_id": scan.subject_id,
        "session": scan.session,
        "path": str(scan.path),
        "age": record.age,
        "sex": record.sex,
        "site": record.site,
    }


def _manifest_row(scan: Scan, record: _Record, info: ScanInfo) -> dict[str, Any]:
    return {
        **scan_columns(scan, record),
        **dict(zip(("dim_i", "dim_j", "dim_k"), info.shape, strict=True)),
        **dict(zip(("voxel_i", "voxel_j", "voxel_k"), info.voxel_mm, strict=True)),
        "orientation": info.orientation,
    }


def _attach_label_maps(
    rows: list[dict[str, Any]],
    label_maps: Mapping[str, str | os.PathLike[str]],
    label_config: LabelMapParams,
    config: IngestionConfig,
    rejected: _Rejections,
) -> list[dict[str, Any]]:
    """The manifest rows whose scan has one usable label map, with its key in ``label_key``; the other
    scans, and label maps of no accepted scan, are added to the rejections."""
    found: dict[tuple[str, str], list[tuple[str, Path]]] = defaultdict(list)
    for key in sorted(label_maps):
        path = Path(label_maps[key]).absolute()
        try:
            found[parse_scan_key(key, config.layout)].append((key, path))
        except ValueError as exc:
            rejected.add(str(path), "", "bad_path", f"label map: {exc}")
    matched = []
    for row in rows:
        scan = (row["subject_id"], row["session"])
        session = f" session {row['session']}" if row["session"] else ""
        if not found.get(scan):
            reason = f"has no label map of subject {row['subject_id']}{session} in the label maps"
            rejected.add(row["path"], row["subject_id"], "label_map_missing", reason)
        elif len(found[scan]) > 1:
            listed = ", ".join(str(path) for _, path in found[scan])
            reason = f"has {len(found[scan])} label maps ({listed}); cannot tell which one to use"
            rejected.add(row["path"], row["subject_id"], "label_map_ambiguous", reason)
        else:
            matched.append((row, *found[scan][0]))
    check = functools.partial(
        check_label_map,
        labels=tuple(label_config.labels),
        voxel_size_range=config.voxel_size_range,
    )
    results = imap_ordered(
        check,
        [(str(path), row["path"]) for row, _, path in matched],
        workers=config.workers or _auto_workers([path for _, _, path in matched]),
        desc="Checking label maps",
    )
    kept = []
    for (row, key, _), problem in zip(matched, results, strict=True):
        if problem is None:
            kept.append({**row, "label_key": key})
        else:
            rejected.add(row["path"], row["subject_id"], problem.code, problem.reason)
    accepted = {(row["subject_id"], row["session"]) for row in rows}
    for (subject_id, session), unused in sorted(found.items()):
        if (subject_id, session) in accepted:
            continue
        where = f" session {session}" if session else ""
        reason = (
            f"labels no accepted scan (subject {subject_id}{where} has none, or it is quarantined)"
        )
        for _, path in unused:
            rejected.add(str(path), subject_id, "label_map_unused", reason)
    logger.info("Label maps: %d of %d scans have a usable one", len(kept), len(rows))
    return kept


def _frame(rows: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns)).astype(columns)
