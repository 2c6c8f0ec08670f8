"""ArrayDataset, the subject-level split, per-epoch seeding and the training-only augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tlkedro.tl.augmentation import RandTimeShift
from tlkedro.tl.config import AugmentationConfig
from tlkedro.tl.data import (
    ArrayDataset,
    EpochShuffleSampler,
    MRIDataModule,
    augmentation_transform,
    compose_augmentation,
    subject_split,
)
from tlkedro.tl.labels import target_values

SLICES = 3  # rows per subject


def cohort(subjects: int = 20) -> pd.DataFrame:
    """``SLICES`` rows per subject, 30 % of the subjects male, ages spread over 45-80."""
    ids = np.repeat([f"sub-{i:02d}" for i in range(subjects)], SLICES)
    sex = np.repeat((np.arange(subjects) % 10 < 3).astype(int), SLICES)
    age = np.repeat(np.linspace(45, 80, subjects), SLICES)
    return pd.DataFrame(
        {"subject_id": ids, "sex": sex, "age": age, "slice": np.tile(np.arange(SLICES), subjects)}
    )


@pytest.fixture
def memmap(tmp_path: Path) -> np.ndarray:
    images = np.random.default_rng(0).normal(size=(60, 1, 8, 8)).astype(np.float16)
    np.save(tmp_path / "images.npy", images)
    return np.load(tmp_path / "images.npy", mmap_mode="r")


def test_array_dataset_casts_one_memory_mapped_row_to_float32(memmap: np.ndarray) -> None:
    targets = np.arange(60, dtype=np.int64)
    dataset = ArrayDataset(memmap, targets, indices=[5, 7])
    image, target = dataset[1]
    assert len(dataset) == 2
    assert image.dtype == torch.float32 and image.shape == (1, 8, 8)
    assert torch.equal(image, torch.from_numpy(memmap[7].astype(np.float32)))
    assert target.item() == 7 and target.dtype == torch.int64
    assert isinstance(dataset.images, np.memmap)  # rows are read on demand, the array is not loaded


def test_split_keeps_subjects_whole_and_is_deterministic() -> None:
    labels = cohort()
    train, val = subject_split(labels["subject_id"], 0.25, seed=3)
    train_subjects = set(labels["subject_id"].iloc[train])
    val_subjects = set(labels["subject_id"].iloc[val])
    assert not train_subjects & val_subjects
    assert sorted([*train, *val]) == list(range(len(labels)))
    assert len(val_subjects) == 5
    again = subject_split(labels["subject_id"], 0.25, seed=3)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(subject_split(labels["subject_id"], 0.25, seed=4)[1], val)


def test_classification_split_is_stratified_by_subject_class() -> None:
    labels = cohort()
    targets = labels["sex"].to_numpy()
    for seed in range(5):
        train, val = subject_split(labels["subject_id"], 0.5, seed=seed, targets=targets)
        assert not set(labels["subject_id"].iloc[train]) & set(labels["subject_id"].iloc[val])
        # 6 of the 20 subjects are male: exactly 3 of the 10 validation subjects, every time.
        assert targets[val].sum() == 3 * SLICES


def test_a_subject_with_two_classes_is_an_error() -> None:
    labels = cohort()
    labels.loc[0, "sex"] = 1 - labels.loc[0, "sex"]
    with pytest.raises(ValueError, match="sub-00"):
        subject_split(labels["subject_id"], 0.2, seed=0, targets=labels["sex"].to_numpy())


def test_target_values_check_the_column() -> None:
    labels = cohort()
    assert target_values(labels, "age", "regression").dtype == np.float32
    assert target_values(labels, "sex", "classification").dtype == np.int64
    with pytest.raises(ValueError, match="columns"):
        target_values(labels, "diagnosis", "classification")
    with pytest.raises(ValueError, match="class indices"):
        target_values(labels, "age", "classification")
    labels.loc[4, "age"] = np.nan
    with pytest.raises(ValueError, match="sub-01"):
        target_values(labels, "age", "regression")


def test_sampler_permutation_depends_only_on_seed_and_epoch() -> None:
    dataset = ArrayDataset(np.zeros((30, 1, 2, 2), np.float32), np.zeros(30))
    sampler = EpochShuffleSampler(dataset, seed=1)
    sampler.set_epoch(2)
    epoch_two = list(sampler)
    assert sorted(epoch_two) == list(range(30))
    assert dataset.epoch == 2
    sampler.set_epoch(1)
    assert list(sampler) != epoch_two
    fresh = EpochShuffleSampler(dataset, seed=1)
    fresh.set_epoch(2)
    assert list(fresh) == epoch_two


def test_augmentation_is_seeded_per_item_and_epoch(memmap: np.ndarray) -> None:
    transform = compose_augmentation(
        [AugmentationConfig(name="RandGaussianNoise", kwargs={"prob": 1.0})]
    )
    dataset = ArrayDataset(memmap, np.zeros(60), transform=transform, seed=5)
    first = dataset[3][0]
    dataset[4]  # another item in between changes nothing for item 3
    assert torch.equal(dataset[3][0], first)
    assert not torch.equal(first, torch.from_numpy(memmap[3].astype(np.float32)))
    assert type(first) is torch.Tensor and first.dtype == torch.float32  # no MONAI metadata
    dataset.set_epoch(1)
    assert not torch.equal(dataset[3][0], first)


def test_augmentation_transform_reports_unknown_names() -> None:
    with pytest.raises(ValueError, match="Closest: RandGaussianNoise"):
        augmentation_transform("RandGausianNoise", {})
    assert (
        type(augmentation_transform("RandFlip", {"prob": 1.0, "spatial_axis": 0})).__name__
        == "RandFlip"
    )


def test_datamodule_augments_training_images_only(memmap: np.ndarray) -> None:
    labels = cohort()
    flip = [AugmentationConfig(name="RandFlip", kwargs={"prob": 1.0, "spatial_axis": 0})]
    module = MRIDataModule(
        memmap,
        labels,
        target="sex",
        task="classification",
        val_fraction=0.2,
        batch_size=4,
        seed=0,
        augmentation=flip,
    )
    row = int(module.train_indices[0])
    raw = torch.from_numpy(memmap[row].astype(np.float32))
    assert torch.equal(module.train_dataset[0][0], raw.flip(1))
    val_row = int(module.val_indices[0])
    assert torch.equal(
        module.val_dataset[0][0], torch.from_numpy(memmap[val_row].astype(np.float32))
    )
    images, targets = next(iter(module.val_dataloader()))
    assert (
        images.shape == (4, 1, 8, 8)
        and targets.tolist() == module.targets[module.val_indices[:4]].tolist()
    )


def test_datamodule_drops_a_final_batch_of_one(memmap: np.ndarray) -> None:
    labels = cohort()
    module = MRIDataModule(
        memmap, labels, target="age", task="regression", val_fraction=0.2, batch_size=47, seed=0
    )
    assert len(module.train_dataset) == 48
    batches = list(module.train_dataloader())
    assert [len(images) for images, _ in batches] == [47]


def test_a_validation_split_too_small_for_every_class_says_what_to_change() -> None:
    subjects = pd.Series([f"s{i}" for i in range(5)])
    with pytest.raises(
        ValueError, match=r"val_fraction 0.2 of 5 training subjects gives 1 .*2 classes"
    ):
        subject_split(subjects, 0.2, seed=0, targets=np.array([0, 1, 0, 1, 0]))


def test_the_series_augmentation_of_conf_timeseries_keeps_the_shape_and_is_seeded() -> None:
    conf = Path(__file__).parents[2] / "conf" / "timeseries" / "parameters.yml"
    parameters = yaml.safe_load(conf.read_text())
    specs = [AugmentationConfig(**spec) for spec in parameters["finetune"]["data"]["augmentation"]]
    assert specs == [
        AugmentationConfig(**spec) for spec in parameters["pretrain"]["data"]["augmentation"]
    ]
    series = np.random.default_rng(0).standard_normal((6, 8, 96)).astype(np.float32)
    dataset = ArrayDataset(series, np.zeros(6), transform=compose_augmentation(specs), seed=3)
    first = [dataset[row][0] for row in range(6)]
    assert all(item.shape == (8, 96) and item.dtype == torch.float32 for item in first)
    assert all(torch.equal(item, dataset[row][0]) for row, item in enumerate(first))  # seeded
    assert sum(not torch.allclose(item, torch.from_numpy(s)) for item, s in zip(first, series)) > 3
    dataset.set_epoch(1)
    assert not all(torch.equal(item, dataset[row][0]) for row, item in enumerate(first))


def test_rand_time_shift_starts_later_and_pads_with_zeros() -> None:
    series = torch.arange(2 * 10, dtype=torch.float32).reshape(2, 10) + 1
    shift = augmentation_transform("RandTimeShift", {"max_shift": 4})
    shifts = set()
    for seed in range(20):
        shift.set_random_state(seed=seed)
        shifted = shift(series)
        s = int((shifted == 0).all(dim=0).sum())
        shifts.add(s)
        assert shifted.shape == series.shape
        torch.testing.assert_close(shifted[:, : 10 - s], series[:, s:])
    assert shifts == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError, match="leaves nothing of a series of 4"):
        RandTimeShift(max_shift=4)(series[:, :4])
    with pytest.raises(ValueError, match=r"takes a \(ROIs, T\) series"):
        RandTimeShift()(series[None])
