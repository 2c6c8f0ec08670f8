"""Data for the self-supervised objectives: every image as its random views, and no label read.

``ViewsDataModule`` is ``MRIDataModule`` for an objective whose ``needs_labels`` is false: the labels
table gives only ``subject_id`` (for the subject-level validation split, drawn at random), and each item
is ``(views, 0)``, ``views`` the ``(V, C, ...)`` stack of the objective's view transforms
(``SelfSupervisedTerm.view_transforms``), view ``v`` of row ``r`` seeded from ``(seed, epoch, r, v)``.
Training views change every epoch; validation views are those of epoch 0, so ``val/loss`` compares
epochs on the same views. Unlabelled images (another split, ``unlabelled_from``) are further training
items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from monai.transforms import Randomizable
from torch import Tensor

from tlkedro.tl.data import ArrayDataset, EpochShuffleSampler, MRIDataModule, subject_split

View = Callable[[Tensor], Tensor]


class ViewsDataset(ArrayDataset):
    """Rows of an image array, then every unlabelled image, each as its views.

    Args:
        images: ``(N, C, ...)`` array, memory-mapped or in memory.
        indices: The rows of ``images`` this dataset serves.
        views: One random transform per view.
        seed: Base seed of the views.
        unlabelled: ``(M, C, ...)`` further images, served after the rows of ``indices``.
    """

    def __init__(
        self,
        images: np.ndarray,
        indices: Sequence[int] | np.ndarray,
        views: Sequence[View],
        seed: int,
        unlabelled: np.ndarray | None = None,
    ) -> None:
        super().__init__(images, np.zeros(len(images)), indices, seed=seed, unlabelled=unlabelled)
        self.views = list(views)

    def __len__(self) -> int:
        return len(self.indices) + (0 if self.unlabelled is None else len(self.unlabelled))

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if index < len(self.indices):
            array, row = self.images, int(self.indices[index])
            key = row
        else:  # an unlabelled image; its key follows the labelled rows', so their seeds differ
            array, row = self.unlabelled, index - len(self.indices)
            key = len(self.images) + row
        image = torch.from_numpy(np.array(array[row], dtype=np.float32))
        views = []
        for number, view in enumerate(self.views):
            if isinstance(view, Randomizable):
                sequence = np.random.SeedSequence([self.seed, self.epoch, key, number])
                view.set_random_state(seed=int(sequence.generate_state(1)[0]))
            views.append(view(image))
        return torch.stack(views), torch.tensor(0.0)


class ViewsDataModule(MRIDataModule):
    """Training and validation loaders of views, for a self-supervised objective.

    Args:
        images: ``(N, C, ...)`` image array.
        labels: One row per image row with ``subject_id``; no other column is read.
        views: The objective's view transforms.
        val_fraction: Fraction of subjects held out for validation.
        batch_size: Images per batch.
        seed: Seed of the split, the epoch order and the views.
        num_workers: Data-loading worker processes.
        unlabelled: Further training images.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: pd.DataFrame,
        views: Sequence[View],
        val_fraction: float,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        unlabelled: np.ndarray | None = None,
    ) -> None:
        L.LightningDataModule.__init__(self)
        if len(images) != len(labels):
            raise ValueError(f"images has {len(images)} rows but labels has {len(labels)}")
        self.targets = np.zeros(len(labels), dtype=np.float32)  # a placeholder nothing reads
        self.extras: dict[str, np.ndarray] = {}
        self.covariates = None  # a self-supervised loss has no head to take them
        self.train_indices, self.val_indices = subject_split(
            labels["subject_id"], val_fraction, seed
        )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_dataset = ViewsDataset(images, self.train_indices, views, seed, unlabelled)
        self.val_dataset = ViewsDataset(images, self.val_indices, views, seed)
        self.train_sampler = EpochShuffleSampler(self.train_dataset, seed)
        self.seed = seed
