"""ROI time series: the checks and their quarantine reasons, the cohort's ROI count, model input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tlkedro.imaging.extraction import LABEL_COLUMNS
from tlkedro.imaging.ingest import (
    MANIFEST_COLUMNS,
    IngestionConfig,
    MetadataError,
    QuarantineError,
    ingest,
)
from tlkedro.imaging.nifti_checks import InvalidScanError
from tlkedro.imaging.timeseries import (
    TimeseriesInputConfig,
    build_timeseries_input,
    check_series,
    parse_series_key,
    series_input,
)

RNG = np.random.default_rng(0)


def _write(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [f"roi_{i}" for i in range(values.shape[1])]
    pd.DataFrame(values, columns=columns).to_csv(path, sep="\t", index=False)
    return path


def _series(timepoints: int = 40, rois: int = 4) -> np.ndarray:
    return RNG.normal(100, 5, size=(timepoints, rois))


def _participants(subjects: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "participant_id": subjects,
            "age": [50.0 + i for i in range(len(subjects))],
            "sex": ["F", "M"] * (len(subjects) // 2) + ["F"] * (len(subjects) % 2),
            "site": "A",
        }
    )


def _config(**timeseries) -> IngestionConfig:
    return IngestionConfig(layout="timeseries", workers=1, timeseries=timeseries)


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*.tsv"))}


def _codes(quarantine: pd.DataFrame) -> dict[str, str]:
    return {Path(s).name: c for s, c in zip(quarantine["source"], quarantine["reason_code"])}


@pytest.fixture
def good(tmp_path: Path) -> Path:
    """Four valid series of 40 time points and 4 ROIs."""
    root = tmp_path / "series"
    for i in range(4):
        _write(root / f"sub-{i}_timeseries.tsv", _series())
    return root


def test_valid_series_give_a_manifest_with_labels_and_sizes(good: Path) -> None:
    subjects = [f"sub-{i}" for i in range(4)]
    manifest, quarantine = ingest(_files(good), _participants(subjects), _config())

    assert quarantine.empty
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert manifest["subject_id"].tolist() == subjects
    assert manifest["age"].tolist() == [50.0, 51.0, 52.0, 53.0]
    assert manifest["sex"].tolist() == [0, 1, 0, 1]
    assert set(manifest["dim_i"]) == {4} and set(manifest["dim_j"]) == {40}


def _text(path: Path) -> None:
    values = _series().astype(object)
    values[3, 1] = "n/a?"
    _write(path, values)


def _nan(path: Path) -> None:
    values = _series()
    values[5, 2] = np.nan
    _write(path, values)


def _constant(path: Path) -> None:
    values = _series()
    values[:, 0] = 7.0
    _write(path, values)


@pytest.mark.parametrize(
    ("write", "code"),
    [
        (lambda p: p.write_bytes(b""), "zero_byte"),
        (lambda p: p.write_text("roi_0\troi_1\n"), "empty"),
        (lambda p: p.write_text("\n\n"), "empty"),
        (lambda p: p.write_bytes(b'a\t"b\n1\t2\n'), "not_table"),
        (_text, "non_numeric"),
        (_nan, "missing_values"),
        (lambda p: _write(p, _series(timepoints=10)), "too_short"),
        (_constant, "constant_roi"),
        (lambda p: _write(p, _series(rois=5)), "wrong_rois"),
    ],
)
def test_each_bad_series_is_quarantined_with_its_reason(good: Path, write, code) -> None:
    write(good / "sub-9_timeseries.tsv")
    subjects = [f"sub-{i}" for i in (0, 1, 2, 3, 9)]

    manifest, quarantine = ingest(_files(good), _participants(subjects), _config())

    assert _codes(quarantine) == {"sub-9_timeseries.tsv": code}
    assert quarantine["reason"].str.len().min() > 10
    assert "sub-9" not in set(manifest["subject_id"])
    assert len(manifest) == 4


def test_check_series_names_the_first_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "sub-1_timeseries.tsv"
    _text(path)
    with pytest.raises(InvalidScanError, match=r"ROI 'roi_1', time point 4: 'n/a\?'"):
        check_series(path, min_timepoints=2)


def test_a_declared_roi_count_overrides_the_cohort_majority(good: Path) -> None:
    _write(good / "sub-9_timeseries.tsv", _series(rois=5))
    subjects = [f"sub-{i}" for i in (0, 1, 2, 3, 9)]

    manifest, quarantine = ingest(_files(good), _participants(subjects), _config(rois=5))

    assert manifest["subject_id"].tolist() == ["sub-9"]
    assert set(quarantine["reason_code"]) == {"wrong_rois"}
    assert "as ingestion.timeseries.rois asks" in quarantine["reason"].iloc[0]


def test_names_and_metadata_are_checked_before_the_files(good: Path) -> None:
    _write(good / "sub-8_bold.tsv", _series())  # not <subject>_timeseries.tsv
    (good / "sub-7_timeseries.tsv").write_bytes(b"")  # no record: never read
    files = _files(good)
    files["sub-8_bold.tsv"] = good / "sub-8_bold.tsv"
    participants = _participants([f"sub-{i}" for i in (0, 1, 2, 3)])
    participants["age"] = participants["age"].astype(object)
    participants.loc[3, "age"] = "old"

    manifest, quarantine = ingest(files, participants, _config())

    assert manifest["subject_id"].tolist() == ["sub-0", "sub-1", "sub-2"]
    codes = dict(zip(quarantine["source"].map(lambda s: Path(s).name), quarantine["reason_code"]))
    assert codes["sub-8_bold.tsv"] == "bad_path"
    assert codes["sub-7_timeseries.tsv"] == "no_metadata"
    assert codes["sub-3_timeseries.tsv"] == "invalid_age"
    assert codes["metadata row 4"] == "invalid_age"


def test_optional_labels_keep_a_series_without_a_record(good: Path) -> None:
    config = _config().model_copy(update={"labels": "optional"})
    manifest, quarantine = ingest(_files(good), _participants(["sub-0"]), config)

    assert quarantine.empty
    assert manifest["subject_id"].tolist() == [f"sub-{i}" for i in range(4)]
    assert manifest["age"].isna().tolist() == [False, True, True, True]
    assert manifest["sex"].dtype == "Int64" and manifest["sex"].isna().sum() == 3


def test_a_participants_table_without_its_columns_is_an_error(good: Path) -> None:
    with pytest.raises(MetadataError, match="participant_id"):
        ingest(_files(good), pd.DataFrame({"id": ["sub-0"]}), _config())


def test_strict_mode_raises_with_the_quarantine(good: Path) -> None:
    (good / "sub-9_timeseries.tsv").write_bytes(b"")
    subjects = [f"sub-{i}" for i in (0, 1, 2, 3, 9)]
    with pytest.raises(QuarantineError, match="zero_byte"):
        ingest(_files(good), _participants(subjects), _config().model_copy(update={"strict": True}))


def test_parse_series_key_takes_the_subject_from_the_file_name() -> None:
    assert parse_series_key("site-a/sub-01_timeseries.tsv") == "sub-01"
    with pytest.raises(ValueError, match="timeseries layout"):
        parse_series_key("sub-01.tsv")
    with pytest.raises(ValueError, match="timeseries layout"):
        parse_series_key("_timeseries.tsv")


def test_series_input_zscores_each_roi_then_crops_or_pads() -> None:
    values = np.column_stack([np.arange(10.0), 100 + 3 * np.arange(10.0) ** 2])

    cropped = series_input(values, length=6)
    padded = series_input(values, length=14)

    full = series_input(values, length=10)
    np.testing.assert_allclose(full.mean(axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(full.std(axis=1), 1, atol=1e-6)
    assert cropped.shape == (2, 6) and padded.shape == (2, 14)
    np.testing.assert_allclose(cropped, full[:, :6])
    np.testing.assert_allclose(padded[:, :10], full)
    assert not padded[:, 10:].any()


def test_model_input_has_the_shape_and_labels_training_reads(good: Path) -> None:
    subjects = [f"sub-{i}" for i in range(4)]
    manifest, _ = ingest(_files(good), _participants(subjects), _config())
    config = TimeseriesInputConfig(length=32)

    stack, labels = build_timeseries_input(manifest, config, manifest["path"], workers=1)
    array = np.concatenate(list(stack))

    assert stack.shape == array.shape == (4, 4, 32)
    assert array.dtype == np.float32
    assert list(labels.columns) == LABEL_COLUMNS
    assert labels["subject_id"].tolist() == subjects
    assert set(labels["slice"]) == {-1}
    raw = pd.read_csv(manifest["path"].iloc[2], sep="\t").to_numpy()
    np.testing.assert_allclose(array[2], series_input(raw, 32), rtol=1e-6)


def test_rows_with_different_roi_counts_are_refused(good: Path) -> None:
    manifest, _ = ingest(_files(good), _participants([f"sub-{i}" for i in range(4)]), _config())
    manifest.loc[0, "dim_i"] = 5
    with pytest.raises(ValueError, match="share one count"):
        build_timeseries_input(manifest, TimeseriesInputConfig(), manifest["path"])
