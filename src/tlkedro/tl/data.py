"""Datasets over the model-input arrays: subject-level train/validation split and MONAI augmentation.

Images are ``(N, 1, H, W)`` slices or ``(N, 1, D, H, W)`` volumes, usually a read-only memory map of a
float16 ``.npy`` file; items are read and cast to float32 one at a time, so the array is never loaded
whole. Labels are a table with one row per image row (``subject_id`` and the target column).

Randomness in the data is a function of ``(seed, epoch)`` only: each epoch's order comes from
``EpochShuffleSampler`` and each item's augmentation is seeded from ``(seed, epoch, row)``. So the data of
an epoch do not depend on worker processes, on what else consumed random numbers, or on whether training
was resumed from a checkpoint before that epoch.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import lightning as L
import monai.transforms
import numpy as np
import pandas as pd
import torch
from monai.transforms import Compose, EnsureType, MapTransform, Randomizable, Transform
from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from tlkedro.tl.augmentation import RandTimeShift
from tlkedro.tl.labels import covariate_values, optional_values, target_values
from tlkedro.tl.objectives import UNLABELLED, Task

COVARIATES = "covariates"
"""The batch extra holding a row's ``(num_covariates,)`` covariate values, which the model's head reads."""

if TYPE_CHECKING:
    from tlkedro.tl.config import ComponentConfig

# tlkedro's own array transforms, taken by name beside MONAI's: for ROI time series.
SERIES_TRANSFORMS = {"RandTimeShift": RandTimeShift}


def _array_transform_names() -> list[str]:
    return sorted(
        [
            name
            for name, value in vars(monai.transforms).items()
            if inspect.isclass(value)
            and issubclass(value, Transform)
            and not issubclass(value, MapTransform)
        ]
        + list(SERIES_TRANSFORMS)
    )


def augmentation_transform(name: str, kwargs: dict[str, Any]) -> Transform:
    """Build one MONAI array transform (``RandAffine``, ``RandFlip``, ...) from its class name.

    Args:
        name: A class of ``monai.transforms`` that works on arrays (not the dictionary ``...d`` ones),
            or one of ``SERIES_TRANSFORMS`` (``RandTimeShift``).
        kwargs: Its keyword arguments.

    Raises:
        ValueError: For an unknown name (with the closest array transform names) or arguments the
            transform rejects.
    """
    cls = SERIES_TRANSFORMS.get(name) or getattr(monai.transforms, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Transform)) or issubclass(cls, MapTransform):
        close = difflib.get_close_matches(name, _array_transform_names(), n=3)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise ValueError(
            f"{name!r} is not a MONAI array transform.{hint} Use a class of monai.transforms that takes "
            f"an image array, e.g. RandAffine, RandFlip, RandGaussianNoise, RandBiasField, RandAdjustContrast."
        )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} does not accept kwargs {kwargs}: {error}") from None


def compose_augmentation(specs: Sequence[ComponentConfig]) -> Compose:
    """Chain the configured transforms; the result is a plain float32 tensor (no MONAI metadata)."""
    transforms = [augmentation_transform(spec.name, spec.kwargs) for spec in specs]
    return Compose(
        [*transforms, EnsureType(data_type="tensor", dtype=torch.float32, track_meta=False)]
    )


def _item_seed(seed: int, epoch: int, row: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, row]).generate_state(1)[0])


class ArrayDataset(Dataset[tuple[Tensor, ...]]):
    """Rows of an image array with their targets, as float32 image tensors.

    Items are ``(image, target)``, or ``(image, target, extras)`` when ``extras`` or ``unlabelled`` are
    given: a dict of the row's other label values (float32, NaN where missing) and, under
    ``"unlabelled"``, one image of ``unlabelled`` drawn for the row from ``(seed, epoch, row)`` and
    augmented like the labelled one (what the objectives' auxiliary terms need), and under
    ``"covariates"`` the row's covariate values when ``covariates`` are given (the model's head input).

    Args:
        images: ``(N, 1, ...)`` array, memory-mapped or in memory, float16 or float32.
        targets: ``(N,)`` targets (int64 class indices or float32 values), aligned with ``images``.
        indices: The rows of ``images`` this dataset serves (all when ``None``).
        transform: Applied to each ``(1, ...)`` image tensor; if it is random (MONAI ``Randomizable``)
            it is reseeded per item from ``(seed, epoch, row)``.
        seed: Base seed of the per-item augmentation and of the unlabelled images' draw.
        extras: ``{column: (N,) values}`` of further labels, aligned with ``images``.
        unlabelled: ``(M, 1, ...)`` images without labels (another split or site), same image shape.
        covariates: ``(N, K)`` float32 per-row scalars for the model's head (``covariate_values``).
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        indices: Sequence[int] | np.ndarray | None = None,
        transform: Callable[[Tensor], Tensor] | None = None,
        seed: int = 0,
        extras: Mapping[str, np.ndarray] | None = None,
        unlabelled: np.ndarray | None = None,
        covariates: np.ndarray | None = None,
    ) -> None:
        if len(images) != len(targets):
            raise ValueError(f"images has {len(images)} rows but targets has {len(targets)}")
        if covariates is not None and len(covariates) != len(images):
            raise ValueError(f"images has {len(images)} rows but covariates has {len(covariates)}")
        if unlabelled is not None and (
            not len(unlabelled) or unlabelled.shape[1:] != images.shape[1:]
        ):
            raise ValueError(
                f"unlabelled images must be a non-empty array of images shaped like the labelled ones "
                f"{tuple(images.shape[1:])}; got {tuple(unlabelled.shape)}"
            )
        self.images = images
        self.targets = targets
        self.indices = (
            np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
        )
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.extras = dict(extras or {})
        self.unlabelled = unlabelled
        self.covariates = covariates

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation the items get."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def _image(self, array: np.ndarray, row: int, seed: int) -> Tensor:
        image = torch.from_numpy(np.array(array[row], dtype=np.float32))
        if self.transform is not None:
            if isinstance(self.transform, Randomizable):
                self.transform.set_random_state(seed=seed)
            image = self.transform(image)
        return image

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        row = int(self.indices[index])
        image = self._image(self.images, row, _item_seed(self.seed, self.epoch, row))
        target = torch.as_tensor(self.targets[row])
        if not self.extras and self.unlabelled is None and self.covariates is None:
            return image, target
        extras = {
            name: torch.tensor(values[row], dtype=torch.float32)
            for name, values in self.extras.items()
        }
        if self.covariates is not None:
            extras[COVARIATES] = torch.from_numpy(self.covariates[row])
        if self.unlabelled is not None:
            # A stream of its own (the trailing 1), so the draw does not repeat the augmentation's numbers.
            draw = np.random.default_rng([self.seed, self.epoch, row, 1])
            other = int(draw.integers(len(self.unlabelled)))
            extras[UNLABELLED] = self._image(self.unlabelled, other, int(draw.integers(2**32)))
        return image, target, extras


class EpochShuffleSampler(Sampler[int]):
    """Shuffles an ``ArrayDataset`` with a permutation that depends only on ``(seed, epoch)``.

    Lightning calls ``set_epoch`` before every training epoch; the sampler passes the epoch on to the
    dataset so its augmentation follows the same epoch.

    Args:
        dataset: The dataset to sample.
        seed: Base seed of the permutations.
    """

    def __init__(self, dataset: ArrayDataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation ``__iter__`` yields."""
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        yield from (
            np.random.default_rng([self.seed, self.epoch]).permutation(len(self.dataset)).tolist()
        )

    def __len__(self) -> int:
        return len(self.dataset)


def subject_labels(subjects: pd.Series, targets: np.ndarray) -> pd.Series:
    """One class label per subject (index: subject id, sorted).

    Raises:
        ValueError: If the rows of a subject carry different labels.
    """
    per_subject = pd.Series(targets, index=subjects.to_numpy()).groupby(level=0)
    conflicting = per_subject.nunique()
    conflicting = conflicting[conflicting > 1]
    if len(conflicting):
        raise ValueError(
            f"rows of one subject must share its class label; subjects {conflicting.index[:5].tolist()} "
            "have several"
        )
    return per_subject.first()


def subject_split(
    subjects: pd.Series, val_fraction: float, seed: int, targets: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into training and validation so that no subject's rows straddle the two.

    Args:
        subjects: ``subject_id`` of every row.
        val_fraction: Fraction of subjects that go to validation.
        seed: Seed of the split.
        targets: Class labels of the rows, to stratify subjects by class (classification); ``None`` for
            a plain random split of subjects.

    Returns:
        Sorted row indices of the training and the validation set.
    """
    subjects = subjects.astype(str).reset_index(drop=True)
    if subjects.nunique() < 2:
        raise ValueError(
            f"need at least 2 subjects to split off a validation set; got {subjects.nunique()}"
        )
    if targets is None:
        splitter = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
        train, val = next(splitter.split(np.zeros(len(subjects)), groups=subjects))
        return np.sort(train), np.sort(val)
    per_subject = subject_labels(subjects, targets)
    n_classes, n_val = per_subject.nunique(), math.ceil(val_fraction * len(per_subject))
    if n_val < n_classes or len(per_subject) - n_val < n_classes:
        raise ValueError(
            f"val_fraction {val_fraction} of {len(per_subject)} training subjects gives {n_val} for "
            f"validation, too few to hold each of the {n_classes} classes in both parts: raise "
            "data.val_fraction or train on more subjects"
        )
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    _, val_subjects = next(splitter.split(np.zeros(len(per_subject)), per_subject.to_numpy()))
    is_val = subjects.isin(per_subject.index[val_subjects]).to_numpy()
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


class MRIDataModule(L.LightningDataModule):
    """Training and validation loaders over one split's images and labels.

    Args:
        images: ``(N, 1, ...)`` image array.
        labels: One row per image row, with ``subject_id`` and the ``target`` column.
        target: The label column to predict.
        task: ``"classification"`` (subjects stratified by class) or ``"regression"``.
        val_fraction: Fraction of subjects held out for validation.
        batch_size: Images per batch.
        seed: Seed of the split, the epoch order and the augmentation.
        augmentation: MONAI array transforms applied to training images only.
        num_workers: Data-loading worker processes (0: load in the main process).
        extra_columns: Further label columns the training batches carry (NaN where missing), for the
            objective's auxiliary terms.
        unlabelled: Images without labels paired with the training images (``ArrayDataset``).
        covariate_columns: Label columns fed to the model's head (``covariate_values``).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: pd.DataFrame,
        target: str,
        task: Task,
        val_fraction: float,
        batch_size: int,
        seed: int,
        augmentation: Sequence[ComponentConfig] = (),
        num_workers: int = 0,
        extra_columns: Sequence[str] = (),
        unlabelled: np.ndarray | None = None,
        covariate_columns: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if len(images) != len(labels):
            raise ValueError(f"images has {len(images)} rows but labels has {len(labels)}")
        self.targets = target_values(labels, target, task)
        self.extras = {column: optional_values(labels, column) for column in extra_columns}
        self.covariates = covariate_values(labels, covariate_columns)
        self.train_indices, self.val_indices = subject_split(
            labels["subject_id"],
            val_fraction,
            seed,
            targets=self.targets if task == "classification" else None,
        )
        self.batch_size = batch_size
        self.num_workers = num_workers
        transform = compose_augmentation(augmentation) if augmentation else None
        self.train_dataset = ArrayDataset(
            images,
            self.targets,
            self.train_indices,
            transform,
            seed,
            self.extras,
            unlabelled,
            self.covariates,
        )
        self.val_dataset = ArrayDataset(
            images, self.targets, self.val_indices, covariates=self.covariates
        )
        self.train_sampler = EpochShuffleSampler(self.train_dataset, seed)
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches."""
        # A resumed run creates this loader's first iterator (and, with workers, prefetches from it)
        # before Lightning calls set_epoch, so the epoch is set here too, with the count Lightning uses:
        # a checkpoint saved at the end of an epoch has the epoch processed but not yet completed.
        self.train_sampler.set_epoch(
            self.trainer.fit_loop.epoch_progress.current.processed
            if self.trainer is not None
            else 0
        )
        # With several processes (DDP) each trains on a shard of ceil(N / processes) rows.
        processes = self.trainer.world_size if self.trainer is not None else 1
        shard = math.ceil(len(self.train_dataset) / processes)
        return DataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            sampler=self.train_sampler,
            num_workers=self.num_workers,
            # Creating an iterator draws a base seed for the workers. Drawn from the global generator, it
            # would shift the random numbers the model gets (dropout), since a resumed run creates its
            # first iterator before the epoch starts and a fresh run after. The workers need no seed of
            # their own: augmentation is seeded per item. Made here, not kept: a torch.Generator cannot be
            # sent to processes started by spawn (DDP's ddp_spawn), which receive this data module.
            generator=torch.Generator().manual_seed(self.seed),
            # Persistent workers would keep the dataset of the first epoch, and its augmentation seeds.
            persistent_workers=False,
            # BatchNorm cannot train on a batch of one image.
            drop_last=shard % self.batch_size == 1,
        )

    def val_dataloader(self) -> DataLoader:
        """Validation batches in row order, without augmentation."""
        return DataLoader(
            self.val_dataset, batch_size=self.batch_size, num_workers=self.num_workers
        )
