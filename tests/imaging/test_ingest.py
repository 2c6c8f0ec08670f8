"""Ingestion library: every kind of bad input is quarantined with its reason, good scans are described."""

from __future__ import annotations

import gzip
import logging
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tlkedro.imaging.ingest import (
    MANIFEST_COLUMNS,
    QUARANTINE_COLUMNS,
    IngestionConfig,
    MetadataError,
    QuarantineError,
    ingest,
    parse_scan_key,
)
from tlkedro.imaging.nifti_checks import InvalidScanError, check_nifti

IXI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ixi_t1_2mm_bids"
UKB_FILE = "T1/T1_brain_to_MNI.nii.gz"


def _volume(seed: int = 0, shape: tuple[int, ...] = (8, 8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1, 100, shape).astype(np.float32)


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(
        nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine), path
    )
    return path


def _ukb_cohort(root: Path, n: int = 3) -> tuple[dict[str, Path], pd.DataFrame]:
    """``n`` valid UK Biobank subjects: images keyed as the dataset keys them, and the showcase table."""
    eids = [1000001 + i for i in range(n)]
    images = {f"{eid}/{UKB_FILE}": _save(root / str(eid) / UKB_FILE, _volume(eid)) for eid in eids}
    metadata = pd.DataFrame(
        {
            "eid": eids,
            "31-0.0": [i % 2 for i in range(n)],
            "21003-2.0": [50.0 + i for i in range(n)],
            "54-2.0": [11025] * n,
        }
    )
    return images, metadata


def _run(images, metadata, **options) -> tuple[pd.DataFrame, pd.DataFrame]:
    return ingest(
        images, metadata, IngestionConfig(workers=1, **options), metadata_label="raw_metadata"
    )


def _only_rejection(quarantine: pd.DataFrame, source: str) -> pd.Series:
    rows = quarantine[quarantine["source"] == source]
    assert len(rows) == 1, quarantine
    return rows.iloc[0]


# --- one bad file of each kind among good ones -------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_compressed_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


def _bad_datatype_code(path: Path) -> None:
    header = bytearray(gzip.decompress(path.read_bytes()))
    header[70:72] = (9999).to_bytes(2, "little")  # NIfTI-1 `datatype` field
    path.write_bytes(gzip.compress(bytes(header)))


def _with_nan(path: Path) -> None:
    data = _volume()
    data[3, 4, 5] = np.nan
    _save(path, data)


def _with_inf(path: Path) -> None:
    data = _volume()
    data[0, 0, 0] = -np.inf
    _save(path, data)


SINGULAR = np.array(
    [[2.0, 2.0, 0, 0], [0, 0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]]
)  # i and j both map to x
CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "zero_byte": lambda path: path.write_bytes(b""),
    "truncated": _truncate,
    "not_nifti": lambda path: path.write_text("subject notes, not an image\n"),
    "corrupt": _flip_a_compressed_byte,
    "invalid_header": _bad_datatype_code,
    "unreadable": lambda path: path.unlink(),
    "multi_volume": lambda path: _save(path, _volume(shape=(8, 8, 8, 3))),
    "not_3d": lambda path: _save(path, _volume(shape=(8, 8))),
    "unsupported_dtype": lambda path: _save(path, _volume().astype(np.complex64)),
    "nan_voxels": _with_nan,
    "inf_voxels": _with_inf,
    "all_zero": lambda path: _save(path, np.zeros((8, 8, 8), np.int16)),
    "bad_voxel_size": lambda path: _save(path, _volume(), np.diag([20.0, 20.0, 20.0, 1.0])),
    "singular_affine": lambda path: _save(path, _volume(), SINGULAR),
}


@pytest.mark.parametrize("code", sorted(CORRUPTIONS))
def test_a_bad_file_is_quarantined_with_its_reason_and_the_others_accepted(tmp_path, code):
    images, metadata = _ukb_cohort(tmp_path)
    bad_key = sorted(images)[1]
    CORRUPTIONS[code](images[bad_key])

    manifest, quarantine = _run(images, metadata)

    assert sorted(manifest["scan_id"]) == sorted(set(images) - {bad_key})
    row = _only_rejection(quarantine, str(images[bad_key]))
    assert row["reason_code"] == code
    assert row["subject_id"] == bad_key.split("/")[0]
    assert row["reason"]
    assert list(quarantine.columns) == list(QUARANTINE_COLUMNS)


def test_truncation_is_found_with_a_buffer_smaller_than_the_image(tmp_path):
    path = _save(tmp_path / "scan.nii.gz", _volume(shape=(16, 16, 16)))
    _truncate(path)
    with pytest.raises(InvalidScanError) as error:
        check_nifti(path, chunk_bytes=1024)
    assert error.value.code == "truncated"
    assert str(path) in str(error.value)


def test_an_uncompressed_file_cut_short_is_truncated(tmp_path):
    path = _save(tmp_path / "scan.nii", _volume())
    _truncate(path)
    with pytest.raises(InvalidScanError, match="before the 2048 data bytes") as error:
        check_nifti(path)
    assert error.value.code == "truncated"


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        (lambda data: data[:-4], "truncated"),  # the stream's length field is missing
        (lambda data: data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:], "corrupt"),  # wrong CRC
    ],
)
def test_the_gzip_trailer_after_intact_voxels_is_verified(tmp_path, damage, code):
    path = _save(tmp_path / "scan.nii.gz", _volume())
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(InvalidScanError) as error:
        check_nifti(path)
    assert error.value.code == code


def test_a_nan_in_a_late_chunk_is_counted(tmp_path):
    data = _volume(shape=(16, 16, 16))
    data[15, 15, 15] = data[0, 0, 15] = (
        np.nan
    )  # the last axis is the slowest: both lie in the last chunk
    path = _save(tmp_path / "scan.nii.gz", data)
    with pytest.raises(InvalidScanError, match="2 NaN voxels") as error:
        check_nifti(path, chunk_bytes=1024)
    assert error.value.code == "nan_voxels"


def test_zero_voxels_scaled_by_an_intercept_are_not_all_zero(tmp_path):
    image = nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4))
    image.header.set_slope_inter(1.0, 100.0)
    nib.save(image, tmp_path / "scan.nii.gz")
    assert check_nifti(tmp_path / "scan.nii.gz").shape == (8, 8, 8)


def test_memory_does_not_grow_with_the_image(tmp_path):
    path = _save(tmp_path / "scan.nii.gz", _volume(shape=(64, 64, 64)))  # 1 MiB of float32
    tracemalloc.start()
    check_nifti(path, chunk_bytes=64 << 10)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 512 << 10


def test_a_single_volume_4d_image_is_accepted_as_3d(tmp_path):
    images, metadata = _ukb_cohort(tmp_path, n=1)
    _save(next(iter(images.values())), _volume(shape=(8, 9, 10, 1)))
    manifest, quarantine = _run(images, metadata)
    assert quarantine.empty
    assert manifest.loc[0, ["dim_i", "dim_j", "dim_k"]].tolist() == [8, 9, 10]


# --- UK Biobank layout -------------------------------------------------------------------------------


def test_ukb_manifest_describes_each_scan(tmp_path):
    images, metadata = _ukb_cohort(tmp_path, n=2)
    psr = np.array(
        [[0, 0, 1.5, 0], [-1.5, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 0, 1]]
    )  # axes point P, S, R
    _save(images[f"1000002/{UKB_FILE}"], _volume(shape=(6, 7, 8)), psr)

    manifest, quarantine = _run(images, metadata)

    assert quarantine.empty
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    first, second = manifest.to_dict("records")
    assert first == {
        "scan_id": f"1000001/{UKB_FILE}",
        "subject_id": "1000001",
        "session": "",
        "path": str(images[f"1000001/{UKB_FILE}"].absolute()),
        "age": 50.0,
        "sex": 0,
        "site": "11025",
        "dim_i": 8,
        "dim_j": 8,
        "dim_k": 8,
        "voxel_i": 2.0,
        "voxel_j": 2.0,
        "voxel_k": 2.0,
        "orientation": "RAS",
    }
    assert (second["sex"], second["dim_i"], second["voxel_k"], second["orientation"]) == (
        1,
        6,
        1.5,
        "PSR",
    )


def test_ukb_ids_and_sites_read_as_floats_lose_their_decimal_point(tmp_path):
    images, metadata = _ukb_cohort(tmp_path, n=1)
    metadata = metadata.astype(float)  # what pandas makes of integer columns with a missing value
    manifest, _ = _run(images, metadata)
    assert manifest.loc[0, ["subject_id", "site"]].tolist() == ["1000001", "11025"]


def test_column_names_can_be_overridden(tmp_path):
    images, metadata = _ukb_cohort(tmp_path, n=1)
    metadata = metadata.rename(columns={"21003-2.0": "age_at_scan"})
    manifest, _ = _run(images, metadata, columns={"age": "age_at_scan"})
    assert manifest.loc[0, "age"] == 50.0


def test_a_missing_column_is_an_error_naming_it(tmp_path):
    images, metadata = _ukb_cohort(tmp_path, n=1)
    with pytest.raises(MetadataError, match=r"'21003-2.0' \(age\).*ingestion.columns"):
        _run(images, metadata.drop(columns="21003-2.0"))


def test_a_file_outside_a_subject_folder_is_a_bad_path(tmp_path):
    images, metadata = _ukb_cohort(tmp_path, n=1)
    images["loose.nii.gz"] = _save(tmp_path / "loose.nii.gz", _volume())
    manifest, quarantine = _run(images, metadata)
    assert len(manifest) == 1
    assert _only_rejection(quarantine, str(tmp_path / "loose.nii.gz"))["reason_code"] == "bad_path"


# --- metadata records --------------------------------------------------------------------------------


def test_an_image_without_metadata_and_a_record_without_image(tmp_path):
    images, metadata = _ukb_cohort(tmp_path, n=3)
    orphan_image = images[f"1000003/{UKB_FILE}"]
    metadata.loc[2, "eid"] = 2000000  # row 3 now describes a subject with no image

    manifest, quarantine = _run(images, metadata)

    assert len(manifest) == 2
    image_row = _only_rejection(quarantine, str(orphan_image))
    assert (image_row["reason_code"], image_row["subject_id"]) == ("no_metadata", "1000003")
    record_row = _only_rejection(quarantine, "raw_metadata row 3")
    assert (record_row["reason_code"], record_row["subject_id"]) == ("no_image", "2000000")


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (np.nan, "is missing"),
        (5.0, "outside age_range [18, 100]"),
        ("fifty", "age of subject 1000002 'fifty' is not a number"),
    ],
)
def test_invalid_age_quarantines_the_record_and_its_image(tmp_path, age, expected):
    images, metadata = _ukb_cohort(tmp_path)
    metadata["21003-2.0"] = metadata["21003-2.0"].astype(object)
    metadata.loc[1, "21003-2.0"] = age

    manifest, quarantine = _run(images, metadata)

    assert "1000002" not in set(manifest["subject_id"])
    record = _only_rejection(quarantine, "raw_metadata row 2")
    assert record["reason_code"] == "invalid_age"
    assert expected in record["reason"]
    image = _only_rejection(quarantine, str(images[f"1000002/{UKB_FILE}"]))
    assert image["reason_code"] == "invalid_age"
    assert "raw_metadata row 2" in image["reason"]


def test_age_range_is_configurable(tmp_path):
    images, metadata = _ukb_cohort(tmp_path)  # ages 50, 51, 52
    manifest, quarantine = _run(images, metadata, age_range=(0, 51))
    assert list(manifest["age"]) == [50.0, 51.0]
    assert set(quarantine["reason_code"]) == {"invalid_age"}


@pytest.mark.parametrize("sex", [2, np.nan, "unknown"])
def test_unknown_or_missing_sex_is_invalid(tmp_path, sex):
    images, metadata = _ukb_cohort(tmp_path)
    metadata["31-0.0"] = metadata["31-0.0"].astype(object)
    metadata.loc[0, "31-0.0"] = sex
    manifest, quarantine = _run(images, metadata)
    assert len(manifest) == 2
    assert _only_rejection(quarantine, "raw_metadata row 1")["reason_code"] == "invalid_sex"


def test_optional_labels_keep_scans_without_age_sex_or_a_record(tmp_path):
    images, metadata = _ukb_cohort(tmp_path, n=4)
    metadata = metadata.astype({"31-0.0": object}).iloc[:3]  # 1000004 has no record
    metadata.loc[0, "21003-2.0"] = None
    metadata.loc[1, "31-0.0"] = None
    metadata.loc[2, "31-0.0"] = "x"  # given but invalid: still quarantined
    manifest, quarantine = _run(images, metadata, labels="optional")
    assert list(manifest["subject_id"]) == ["1000001", "1000002", "1000004"]
    assert manifest["age"].isna().tolist() == [True, False, True]
    assert manifest["sex"].isna().tolist() == [False, True, True]
    assert str(manifest["sex"].dtype) == "Int64"
    assert list(quarantine["reason_code"]) == [
        "invalid_sex",
        "invalid_sex",
    ]  # the image, the record
    required, _ = _run(images, metadata)
    assert list(required["subject_id"]) == []  # every scan lacks a label or a record


def test_optional_labels_need_only_the_subject_id_column(tmp_path):
    images, metadata = _ukb_cohort(tmp_path)
    manifest, quarantine = _run(images, metadata[["eid"]], labels="optional")
    assert len(manifest) == 3 and quarantine.empty
    assert manifest["age"].isna().all() and manifest["sex"].isna().all()
    with pytest.raises(MetadataError, match="'eid' \\(subject_id\\)"):
        _run(images, metadata[["21003-2.0"]], labels="optional")


def test_duplicate_subject_in_the_metadata_quarantines_every_copy_and_the_image(tmp_path):
    images, metadata = _ukb_cohort(tmp_path)
    metadata = pd.concat([metadata, metadata.iloc[[0]]], ignore_index=True)

    manifest, quarantine = _run(images, metadata)

    assert "1000001" not in set(manifest["subject_id"])
    duplicates = quarantine[quarantine["reason_code"] == "duplicate_subject"]
    assert sorted(duplicates["source"]) == sorted(
        ["raw_metadata row 1", "raw_metadata row 4", str(images[f"1000001/{UKB_FILE}"])]
    )


def test_a_record_without_subject_id_is_quarantined(tmp_path):
    images, metadata = _ukb_cohort(tmp_path)
    metadata = pd.concat(
        [metadata, pd.DataFrame({"eid": [None], "21003-2.0": [60.0]})], ignore_index=True
    )
    manifest, quarantine = _run(images, metadata)
    assert len(manifest) == 3
    assert _only_rejection(quarantine, "raw_metadata row 4")["reason_code"] == "missing_subject_id"


# --- BIDS layout -------------------------------------------------------------------------------------


def _bids(root: Path, keys: list[str], participants: dict) -> tuple[dict[str, Path], pd.DataFrame]:
    images = {key: _save(root / key, _volume(i)) for i, key in enumerate(keys)}
    return images, pd.DataFrame(participants)


def test_bids_with_sessions_gives_one_row_per_scan(tmp_path):
    keys = [
        "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz",
        "sub-02/anat/sub-02_T1w.nii.gz",
    ]
    # participant ids without the "sub-" prefix and male/female spelled out are accepted too
    participants = {"participant_id": ["sub-01", "02"], "age": [30.5, 41], "sex": ["F", "male"]}
    images, participants = _bids(tmp_path, keys, participants)

    manifest, quarantine = _run(images, participants, layout="bids")

    assert quarantine.empty
    assert manifest[["subject_id", "session", "sex", "age", "site"]].values.tolist() == [
        ["sub-01", "ses-1", 0, 30.5, ""],
        ["sub-01", "ses-2", 0, 30.5, ""],
        ["sub-02", "", 1, 41.0, ""],
    ]


def test_two_bids_images_of_one_session_are_both_quarantined(tmp_path):
    keys = [
        "sub-01/anat/sub-01_T1w.nii.gz",
        "sub-01/anat/sub-01_acq-fast_T1w.nii.gz",
        "sub-02/anat/sub-02_T1w.nii.gz",
    ]
    participants = {"participant_id": ["sub-01", "sub-02"], "age": [30, 40], "sex": ["M", "F"]}
    images, participants = _bids(tmp_path, keys, participants)

    manifest, quarantine = _run(images, participants, layout="bids")

    assert list(manifest["subject_id"]) == ["sub-02"]
    assert sorted(quarantine["source"]) == sorted(str(images[key]) for key in keys[:2])
    assert set(quarantine["reason_code"]) == {"duplicate_scan"}


def test_numeric_bids_sex_is_ambiguous_unless_declared(tmp_path):
    participants = {"participant_id": ["sub-01"], "age": [30], "sex": [1]}
    images, participants = _bids(tmp_path, ["sub-01/anat/sub-01_T1w.nii.gz"], participants)

    _, quarantine = _run(images, participants, layout="bids")
    assert set(quarantine["reason_code"]) == {"invalid_sex"}
    assert "ingestion.sex_codes" in quarantine.loc[0, "reason"]

    manifest, _ = _run(images, participants, layout="bids", sex_codes={1: 1, 2: 0})
    assert manifest.loc[0, "sex"] == 1


@pytest.mark.parametrize(
    "key",
    [
        "sub-01/anat/sub-02_T1w.nii.gz",
        "sub-01/sub-01_T1w.nii.gz",
        "sub-01/ses-1/anat/sub-01_T1w.nii.gz",
        "sub-01/anat/notes",
    ],
)
def test_paths_that_break_the_bids_layout_are_rejected(key):
    with pytest.raises(ValueError, match="bids layout"):
        parse_scan_key(key, "bids")


def test_real_ixi_subset_is_accepted(caplog):
    if not (IXI / "participants.tsv").is_file():
        pytest.skip(f"real data not found at {IXI}")
    images = {
        path.relative_to(IXI).as_posix(): path for path in IXI.glob("sub-*/**/anat/*_T1w.nii.gz")
    }
    participants = pd.read_csv(IXI / "participants.tsv", sep="\t")

    with caplog.at_level(logging.INFO, logger="tlkedro.imaging.ingest"):
        manifest, quarantine = ingest(
            images, participants, IngestionConfig(layout="bids", workers=1)
        )

    assert quarantine.empty
    assert len(manifest) == 40
    assert set(manifest["orientation"]) == {"PSR"}
    assert manifest[["dim_i", "dim_j", "dim_k"]].drop_duplicates().values.tolist() == [
        [120, 120, 90]
    ]
    assert set(manifest["sex"]) == {0, 1}
    assert manifest["age"].between(18, 100).all()
    assert "40 scans found, 40 accepted, 0 quarantined" in caplog.text


# --- strict mode, summary, invariants, parameters ----------------------------------------------------


def test_strict_mode_fails_listing_every_rejected_file(tmp_path):
    images, metadata = _ukb_cohort(tmp_path)
    _truncate(images[f"1000001/{UKB_FILE}"])
    images[f"1000003/{UKB_FILE}"].write_bytes(b"")

    with pytest.raises(QuarantineError) as error:
        _run(images, metadata, strict=True)

    message = str(error.value)
    assert "strict mode is on and 2 file(s) or metadata record(s) were quarantined" in message
    assert f"{images[f'1000001/{UKB_FILE}']}: is cut short" in message
    assert f"{images[f'1000003/{UKB_FILE}']}: is empty (0 bytes) [zero_byte]" in message
    assert len(error.value.quarantine) == 2


def test_every_image_and_record_lands_in_one_table_and_the_summary_counts_them(tmp_path, caplog):
    images, metadata = _ukb_cohort(tmp_path, n=4)
    _truncate(images[f"1000001/{UKB_FILE}"])
    metadata.loc[3, "eid"] = 2000000

    with caplog.at_level(logging.INFO, logger="tlkedro.imaging.ingest"):
        manifest, quarantine = _run(images, metadata)

    files = set(manifest["path"]) | set(quarantine["source"])
    assert {str(path) for path in images.values()} <= files
    from_records = quarantine["source"].str.startswith("raw_metadata row ")
    assert len(manifest) + (~from_records).sum() == len(images)
    assert (
        "4 scans found, 2 accepted, 2 quarantined (no_metadata: 1, truncated: 1); "
        "4 metadata records, 1 quarantined (no_image: 1)" in caplog.text
    )


def test_worker_processes_give_the_same_tables(tmp_path):
    images, metadata = _ukb_cohort(tmp_path)
    CORRUPTIONS["nan_voxels"](images[f"1000002/{UKB_FILE}"])
    serial = _run(images, metadata)
    parallel = ingest(images, metadata, IngestionConfig(workers=2), metadata_label="raw_metadata")
    for one, other in zip(serial, parallel, strict=True):
        pd.testing.assert_frame_equal(one, other)
    assert serial[1].loc[0, "reason_code"] == "nan_voxels"


def test_an_empty_result_keeps_the_column_types(tmp_path):
    manifest, quarantine = _run({}, pd.DataFrame({"eid": [], "31-0.0": [], "21003-2.0": []}))
    assert manifest.empty and quarantine.empty
    assert manifest.dtypes.astype(str).to_dict() == MANIFEST_COLUMNS


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"layout": "nifti"}, "layout"),
        ({"age_range": [60, 20]}, "age_range"),
        ({"voxel_size_range": [-1, 5]}, "voxel_size_range"),
        ({"workers": 0}, "workers"),
        ({"columns": {"gender": "31-0.0"}}, "columns"),
        ({"sex_codes": {"m": 2}}, "sex_codes"),
        ({"strickt": True}, "strickt"),
    ],
)
def test_invalid_options_name_the_key_and_the_value(options, key):
    with pytest.raises(ValidationError) as error:
        IngestionConfig(**options)
    assert key in str(error.value)
    assert "input_value=" in str(error.value)
