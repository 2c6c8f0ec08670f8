"""Self-supervised objectives (``simclr``, ``masked_autoencoder``), their views of MRI, and a label-free
``fit``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.augmentation import contrastive_view, masked_view
from tlkedro.tl.config import TrainConfig
from tlkedro.tl.objectives import build_objective, create_objective, list_objectives
from tlkedro.tl.training import fit
from tlkedro.tl.views import ViewsDataset

IMG = 32
SSL = ("simclr", "masked_autoencoder")

pytestmark = pytest.mark.usefixtures("single_thread")


def brain_like(n: int, seed: int = 0) -> np.ndarray:
    """Blobs of varying size and position on noise: images with structure to learn."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(IMG), np.arange(IMG), indexing="ij"))
    images = rng.normal(scale=0.2, size=(n, 1, IMG, IMG))
    for image in images:
        centre = rng.uniform(10, 22, size=(2, 1, 1))
        radius = rng.uniform(4, 10)
        image[0] += (((grid - centre) ** 2).sum(axis=0) < radius**2).astype(float)
    return images.astype(np.float32)


def views_of(name: str, images: np.ndarray, seed: int = 0) -> list[torch.Tensor]:
    """Each image's views, stacked per view, as the data module gives them."""
    term = create_objective(name).primary
    dataset = ViewsDataset(images, range(len(images)), term.view_transforms(images.shape[2:]), seed)
    return list(torch.stack([dataset[i][0] for i in range(len(images))]).unbind(dim=1))


@pytest.mark.parametrize("name", SSL)
def test_objective_is_registered_and_needs_no_labels(name: str) -> None:
    assert name in list_objectives()
    objective = create_objective(name)
    assert not objective.needs_labels and objective.task is None
    assert create_objective("mse").needs_labels


@pytest.mark.parametrize("name", SSL)
def test_loss_is_finite_and_decreases_on_a_tiny_batch(name: str) -> None:
    torch.manual_seed(0)
    model = create_architecture("cbr_tiny", num_outputs=1, img_size=IMG)
    term = create_objective(name).primary
    term.attach(model, {})
    views = views_of(name, brain_like(16))
    optimizer = torch.optim.Adam([*model.parameters(), *term.parameters()], lr=1e-3)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = term(model, views)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0]


def test_contrastive_views_are_two_different_views_of_the_same_shape() -> None:
    image = torch.from_numpy(brain_like(1)[0])
    first, second = views_of("simclr", brain_like(1))
    assert first.shape == second.shape == (1, *image.shape)
    assert not torch.allclose(first, second)
    assert not torch.allclose(first[0], image)
    # A view depends only on its seed.
    transform = contrastive_view(image.shape[1:])
    transform.set_random_state(seed=5)
    again = transform(image)
    transform.set_random_state(seed=5)
    assert torch.equal(again, transform(image))


def test_masked_view_hides_patches_of_the_clean_image() -> None:
    clean, corrupted = views_of("masked_autoencoder", brain_like(1))
    assert clean.shape == corrupted.shape
    assert torch.equal(clean[0], torch.from_numpy(brain_like(1)[0]))
    noiseless = masked_view((IMG, IMG), holes=4, patch=0.25, noise_std=0.0)
    noiseless.set_random_state(seed=0)
    masked = noiseless(clean[0])
    hidden = (masked == 0) & (clean[0] != 0)
    assert 64 <= int(hidden.sum()) <= 4 * 64  # up to four 8x8 patches, overlapping or not
    assert torch.equal(masked[~hidden], clean[0][~hidden])


def test_volumes_get_views_too() -> None:
    volume = torch.randn(1, 12, 12, 12)
    view = contrastive_view(volume.shape[1:])
    view.set_random_state(seed=0)
    assert view(volume).shape == volume.shape


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"crop_scale": 0.0}, "crop_scale"),
        ({"flip_axis": 3}, "flip_axis"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_a_bad_simclr_setting_is_named(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        create_objective("simclr", **kwargs)


def test_a_bad_masking_setting_is_named() -> None:
    with pytest.raises(ValueError, match="patch"):
        create_objective("masked_autoencoder", patch=1.5)


def test_self_supervised_objectives_take_no_auxiliary_terms() -> None:
    with pytest.raises(ValueError, match="no auxiliary terms"):
        build_objective("simclr", {}, [{"name": "consistency", "weight": 1.0}])


def test_views_are_redrawn_each_epoch_for_training_and_fixed_for_validation() -> None:
    images = brain_like(4)
    term = create_objective("simclr").primary
    transforms = term.view_transforms(images.shape[2:])
    dataset = ViewsDataset(images, range(4), transforms, seed=1)
    first = dataset[0][0]
    assert torch.equal(first, dataset[0][0])
    dataset.set_epoch(1)
    assert not torch.equal(first, dataset[0][0])
    extra = ViewsDataset(images, [0, 1], transforms, seed=1, unlabelled=images)
    assert len(extra) == 2 + 4  # the unlabelled images are training items of their own
    assert extra[2][0].shape == (2, 1, IMG, IMG)
    # Unlabelled image 0 is labelled row 0's image, but its views are drawn from seeds of their own.
    assert not torch.equal(extra[2][0], extra[0][0])


def config(name: str, **data: object) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "seed": 0,
            "target": "age",
            "task": "classification",  # ignored: a self-supervised objective reads no target
            "architecture": {"name": "cbr_tiny", "kwargs": {"img_size": IMG}},
            "objective": {"name": name},
            "optimizer": {"name": "adam", "lr": 1e-3},
            "trainer": {"max_epochs": 2, "batch_size": 8, "enable_progress_bar": False},
            "data": {"val_fraction": 0.25, **data},
        }
    )


def test_fit_trains_without_labels_and_keeps_the_lowest_validation_loss() -> None:
    images = brain_like(24)
    # No label column at all: only subject ids, two rows per subject, for the subject-level split.
    labels = pd.DataFrame({"subject_id": [f"s{i // 2}" for i in range(24)]})
    result = fit(config("simclr"), images, labels, unlabelled=brain_like(6, seed=1))
    history = result.history
    assert list(history["epoch"]) == [0, 1]
    assert np.isfinite(history[["train/loss", "val/loss"]].to_numpy()).all()
    assert result.summary["best_val_loss"] == pytest.approx(history["val/loss"].min())
    assert result.summary["best_epoch"] == int(history["val/loss"].idxmin())
    assert "worse_than_trivial" not in result.summary
    assert result.checkpoint["meta"]["target"] is None
    assert result.checkpoint["meta"]["objective"]["name"] == "simclr"
    assert any(k.startswith("encoder.") for k in result.checkpoint["state_dict"])


def test_an_augmentation_with_a_self_supervised_objective_is_refused_naming_the_key() -> None:
    with pytest.raises(ValidationError, match=r"data\n.*augmentation must be \[\]"):
        config("simclr", augmentation=[{"name": "RandFlip", "kwargs": {"prob": 0.5}}])
    assert config("cross_entropy", augmentation=[{"name": "RandFlip"}]).data.augmentation
