"""2D image folders: the checks and their quarantine reasons, per-image splits and folds, model input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tlkedro.imaging.extraction import ExtractionConfig
from tlkedro.imaging.folds import assign_folds
from tlkedro.imaging.images import (
    IMAGE_LABEL_COLUMNS,
    IMAGE_MANIFEST_COLUMNS,
    build_image_input,
    check_image,
    extract_image,
    ingest_images,
)
from tlkedro.imaging.ingest import IngestionConfig, MetadataError, QuarantineError, ingest
from tlkedro.imaging.nifti_checks import InvalidScanError
from tlkedro.imaging.splits import SplitConfig, split_subjects

RNG = np.random.default_rng(0)


def _png(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)
    return path


def _noise(height: int = 24, width: int = 32) -> np.ndarray:
    return RNG.integers(1, 255, size=(height, width), dtype=np.uint8)


def _images(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def _config(**folders) -> IngestionConfig:
    return IngestionConfig(layout="folders", workers=1, folders=folders)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    """Two classes of three distinct grayscale PNGs each."""
    root = tmp_path / "images"
    for label in ("glioma", "pituitary"):
        for i in range(3):
            _png(root / label / f"{i}.png", _noise())
    return root


def _codes(quarantine: pd.DataFrame) -> dict[str, str]:
    return {Path(s).name: c for s, c in zip(quarantine["source"], quarantine["reason_code"])}


def test_class_folders_give_a_manifest_with_class_indices(good: Path) -> None:
    manifest, quarantine = ingest(_images(good), None, _config())

    assert quarantine.empty
    assert list(manifest.columns) == list(IMAGE_MANIFEST_COLUMNS)
    assert manifest["label"].tolist() == [0, 0, 0, 1, 1, 1]  # sorted class names
    assert manifest["label_name"].unique().tolist() == ["glioma", "pituitary"]
    assert manifest["subject_id"].tolist()[0] == "glioma/0"  # each image its own subject
    assert (manifest[["dim_i", "dim_j", "dim_k"]].iloc[0] == [32, 24, 1]).all()


@pytest.mark.parametrize(
    ("name", "write", "code"),
    [
        ("empty.png", lambda p: p.write_bytes(b""), "zero_byte"),
        ("text.png", lambda p: p.write_text("not a picture"), "not_image"),
        ("named.jpg", lambda p: _png(p.with_suffix(".png"), _noise()).rename(p), "not_image"),
        ("notes.txt", lambda p: p.write_text("hello"), "not_image"),
        ("cut.png", lambda p: p.write_bytes(_png(p, _noise(64, 64)).read_bytes()[:300]), "corrupt"),
        ("rgba.png", lambda p: _png(p, RNG.integers(0, 255, (8, 8, 4), np.uint8)), "wrong_mode"),
        ("black.png", lambda p: _png(p, np.zeros((8, 8), np.uint8)), "constant"),
        (
            "stack.tif",
            lambda p: Image.fromarray(_noise()).save(
                p, save_all=True, append_images=[Image.fromarray(_noise())]
            ),
            "multi_frame",
        ),
    ],
)
def test_each_bad_file_is_quarantined_with_its_reason(good: Path, name, write, code) -> None:
    write(good / "glioma" / name)

    manifest, quarantine = ingest(_images(good), None, _config())

    assert _codes(quarantine) == {name: code}
    assert len(manifest) == 6
    assert quarantine["reason"].str.len().gt(10).all()


def test_a_file_that_cannot_be_opened_is_unreadable(good: Path) -> None:
    images = _images(good) | {"glioma/gone.png": good / "glioma" / "gone.png"}

    _, quarantine = ingest(images, None, _config())

    assert _codes(quarantine) == {"gone.png": "unreadable"}


def test_wrong_mode_follows_the_accepted_modes(good: Path) -> None:
    _png(good / "glioma" / "rgb.png", RNG.integers(0, 255, (8, 8, 3), np.uint8))

    assert _codes(ingest(_images(good), None, _config())[1]) == {}  # RGB is accepted by default
    _, quarantine = ingest(_images(good), None, _config(modes=["L"]))
    assert _codes(quarantine) == {"rgb.png": "wrong_mode"}


def test_duplicates_by_content_keep_one_copy_unless_their_classes_differ(good: Path) -> None:
    # The same pixels in another file format (PNG and TIFF) are still a duplicate.
    Image.open(good / "glioma" / "0.png").save(good / "glioma" / "copy.tif")
    shutil.copy(good / "pituitary" / "1.png", good / "glioma" / "9.png")

    manifest, quarantine = ingest(_images(good), None, _config())

    assert _codes(quarantine) == {
        "copy.tif": "duplicate_image",
        "9.png": "duplicate_image",
        "1.png": "duplicate_image",
    }
    assert "glioma/0.png" in manifest["scan_id"].tolist()  # the first copy is kept
    assert "pituitary/1.png" not in manifest["scan_id"].tolist()  # its classes disagree
    assert (
        quarantine.loc[quarantine["source"].str.endswith("9.png"), "reason"]
        .str.contains("cannot tell which class")
        .all()
    )


def test_paths_outside_a_class_folder_and_unknown_classes(good: Path) -> None:
    _png(good / "loose.png", _noise())
    _png(good / "other" / "x.png", _noise())

    manifest, quarantine = ingest(_images(good), None, _config(classes=["pituitary", "glioma"]))

    assert _codes(quarantine) == {"loose.png": "bad_path", "x.png": "unknown_class"}
    # Indices follow the declared order, not the sorted names.
    assert dict(zip(manifest["label_name"], manifest["label"])) == {"pituitary": 0, "glioma": 1}


def test_a_labels_table_gives_classes_and_patients(good: Path) -> None:
    keys = list(_images(good))
    table = pd.DataFrame(
        {
            "file": [*keys, "glioma/missing.png", keys[0]],
            "label": ["a", "a", "b", "b", "", "c", "x", "y"],
            "patient": ["p1", "p1", "p2", "p3", "p4", "p5", "p6", "p7"],
        }
    )
    config = _config(labels_from="table", subject_column="patient")

    manifest, quarantine = ingest_images(_images(good), table, config, metadata_label="labels")

    codes = dict(zip(quarantine["source"].map(lambda s: Path(s).name), quarantine["reason_code"]))
    assert codes == {
        "0.png": "no_metadata",  # glioma/0.png: its two rows contradict each other
        "1.png": "no_metadata",  # pituitary/1.png: its row has no class
        "labels row 1": "duplicate_record",
        "labels row 5": "missing_label",
        "labels row 7": "no_image",
        "labels row 8": "duplicate_record",
    }
    assert manifest["subject_id"].tolist() == ["p1", "p2", "p3", "p5"]
    assert manifest["label_name"].tolist() == ["a", "b", "b", "c"]
    # Every image is in exactly one of the two tables.
    assert len(manifest) + (quarantine["reason_code"] == "no_metadata").sum() == len(keys)


def test_a_labels_table_without_its_columns_is_an_error(good: Path) -> None:
    with pytest.raises(MetadataError, match=r"'label' \(ingestion.folders.label_column\)"):
        ingest(_images(good), pd.DataFrame({"file": []}), _config(labels_from="table"))


def test_strict_mode_raises_with_the_quarantine(good: Path) -> None:
    (good / "glioma" / "empty.png").write_bytes(b"")
    config = IngestionConfig(layout="folders", strict=True, workers=1)
    with pytest.raises(QuarantineError, match="zero_byte") as raised:
        ingest(_images(good), None, config)
    assert len(raised.value.quarantine) == 1


def test_check_image_reads_sixteen_bit_images(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 4000, (12, 10), dtype=np.uint16)
    info = check_image(_png(tmp_path / "a.png", pixels), ["I;16"])
    assert (info.width, info.height, info.mode) == (10, 12, "I;16")
    with pytest.raises(InvalidScanError, match="mode I;16"):
        check_image(tmp_path / "a.png", ["L"])


def _image_manifest(n_per_class: dict[str, int]) -> pd.DataFrame:
    names = [name for name, n in n_per_class.items() for _ in range(n)]
    return pd.DataFrame(
        {
            "scan_id": [f"{name}/{i}.png" for i, name in enumerate(names)],
            "subject_id": [f"{name}/{i}" for i, name in enumerate(names)],
            "session": "",
            "age": np.nan,
            "sex": -1,
            "site": "",
            "label": [list(n_per_class).index(name) for name in names],
            "label_name": names,
        }
    )


def test_per_image_splits_are_stratified_by_class_and_reproducible() -> None:
    manifest = _image_manifest({"a": 40, "b": 20, "c": 20})
    config = SplitConfig(pretrain=0.5, finetune=0.25, test=0.25)

    splits = split_subjects(manifest, config, seed=3)

    assert splits.equals(split_subjects(manifest.sample(frac=1, random_state=1), config, seed=3))
    assert not splits.equals(split_subjects(manifest, config, seed=4))
    classes = manifest.set_index("subject_id")["label_name"]
    counts = (
        splits.assign(label=splits["subject_id"].map(classes)).groupby(["split", "label"]).size()
    )
    assert counts["test"].to_dict() == {"a": 10, "b": 5, "c": 5}
    assert counts["pretrain"].to_dict() == {"a": 20, "b": 10, "c": 10}


def test_folds_of_images_are_stratified_by_class() -> None:
    subjects = _image_manifest({"a": 30, "b": 15, "c": 15})

    folds = assign_folds(subjects, k=5, seed=0)

    per_fold = folds.merge(subjects, on="subject_id").groupby(["fold", "label"]).size()
    assert set(per_fold.unstack().itertuples(index=False)) == {(6, 3, 3)}
    assert folds.equals(assign_folds(subjects.iloc[::-1], k=5, seed=0))


def test_preprocessing_keeps_the_aspect_ratio_and_normalises(tmp_path: Path) -> None:
    pixels = np.full((20, 40), 100, dtype=np.uint8)  # 40 wide, 20 high
    pixels[:, :20] = 200
    config = ExtractionConfig(slices={"size": (32, 32)}, dtype="float32")

    row = extract_image(str(_png(tmp_path / "wide.png", pixels)), config)

    assert row.shape == (1, 1, 32, 32)
    image = row[0, 0]
    filled = np.flatnonzero(np.abs(image).sum(axis=1) > 0)
    assert (filled.min(), filled.max()) == (8, 23)  # 16 rows: scaled by 0.8, padded above and below
    np.testing.assert_allclose(image[filled].mean(), 0.0, atol=0.05)  # z-scored over the image
    assert image[12, 2] > 0 > image[12, 30]  # the bright half stays on the left


def test_colour_images_become_one_channel(tmp_path: Path) -> None:
    pixels = RNG.integers(1, 255, (16, 16, 3), np.uint8)
    config = ExtractionConfig(slices={"size": (16, 16)}, dtype="float32")
    row = extract_image(str(_png(tmp_path / "rgb.png", pixels)), config)
    gray = np.asarray(Image.fromarray(pixels).convert("L"), dtype=np.float32)
    expected = (gray - gray.mean()) / gray.std()
    np.testing.assert_allclose(row[0, 0], expected, atol=1e-4)


def test_model_input_has_the_shape_and_labels_training_reads(good: Path) -> None:
    manifest, _ = ingest(_images(good), None, _config())
    config = ExtractionConfig(slices={"size": (16, 16)})

    stack, labels = build_image_input(manifest, config, manifest["path"])

    assert stack.shape == (6, 1, 16, 16)
    assert np.stack(list(stack)).dtype == np.float16
    assert list(labels.columns) == IMAGE_LABEL_COLUMNS
    assert labels["label"].tolist() == manifest["label"].tolist()
    assert (labels["slice"] == -1).all() and labels["head_scale"].isna().all()
    with pytest.raises(ValueError, match="preprocessing.mode: slices"):
        build_image_input(manifest, ExtractionConfig(mode="volume"), manifest["path"])
