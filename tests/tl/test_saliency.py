"""Saliency maps: on data whose label lives in a known region, the mean map weights that region most."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from tlkedro.imaging.anatomy import mni_grid
from tlkedro.imaging.synthetic import (
    SexEffects,
    SyntheticCohortParams,
    Variability,
    draw_cohort,
    generate_subject,
    tissue_maps,
)
from tlkedro.imaging.transforms import zscore_brain
from tlkedro.tl.analysis.saliency import (
    class_mean_maps,
    label_correlation_map,
    mid_slices,
    plot_mean_maps,
    plot_saliency_overlays,
    roi_importance,
    saliency_maps,
)
from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.architectures.base import GlobalAvgPool, TLModel

pytestmark = pytest.mark.usefixtures("single_thread")


def _squares(n: int, seed: int, size: int, label_box: slice, distractor_box: slice, dims: int):
    """Noise images whose label is the sign of the intensity in ``label_box`` (a square or cube); a
    distractor box of the same contrast elsewhere has a random sign, independent of the label."""
    rng = np.random.default_rng(seed)
    images = 0.5 * rng.standard_normal((n, 1, *(size,) * dims)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    column = (-1, 1) + (1,) * (dims - 1)
    images[(slice(None), 0, *(label_box,) * dims)] += np.where(labels, 1.0, -1.0).reshape(column)
    images[(slice(None), 0, *(distractor_box,) * dims)] += rng.choice([-1.0, 1.0], n).reshape(
        column
    )
    return torch.from_numpy(images), torch.from_numpy(labels)


def _train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(epochs):
        for start in range(0, len(images), 32):
            loss = nn.functional.cross_entropy(
                model(images[start : start + 32]), labels[start : start + 32]
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()


def _region_means(mean_map: np.ndarray, label_box: slice, distractor_box: slice) -> tuple:
    dims = mean_map.ndim
    inside = np.zeros(mean_map.shape, dtype=bool)
    inside[(label_box,) * dims] = True
    return (
        mean_map[inside].mean(),
        mean_map[(distractor_box,) * dims].mean(),
        mean_map[~inside].mean(),
    )


@pytest.fixture(scope="module")
def square_model_2d(single_thread):
    torch.manual_seed(0)
    model = create_architecture(
        "cbr_small",
        num_outputs=2,
        img_size=32,
        width_factors={f"layer{i}": 0.25 for i in range(1, 5)},
    )
    _train(model, *_squares(256, 0, 32, slice(4, 12), slice(20, 28), dims=2), epochs=4)
    return model


@pytest.mark.parametrize(
    ("method", "layer"), [("grad_cam", "layer2"), ("integrated_gradients", None)]
)
def test_2d_mean_map_weights_the_label_region_most(square_model_2d, method, layer) -> None:
    images, labels = _squares(64, 1, 32, slice(4, 12), slice(20, 28), dims=2)
    assert (square_model_2d(images).argmax(1) == labels).float().mean() > 0.9  # it learnt the task
    maps = saliency_maps(square_model_2d, images, method, layer=layer, n_steps=16)
    assert maps.shape == (64, 32, 32) and maps.dtype == np.float32 and (maps >= 0).all()
    mean_map = np.mean(list(class_mean_maps(maps, labels.numpy()).values()), axis=0)
    region, distractor, rest = _region_means(mean_map, slice(4, 12), slice(20, 28))
    assert region > 1.5 * distractor and region > 1.5 * rest


def _tiny_3d_model() -> TLModel:
    """Three 3x3x3 convolution stages: small receptive fields, so a 16^3 task trains in a second."""

    def stage(inputs: int, outputs: int, downsample: bool) -> nn.Sequential:
        pool = [nn.MaxPool3d(2)] if downsample else []
        conv = nn.Conv3d(inputs, outputs, 3, padding=1)
        return nn.Sequential(*pool, conv, nn.BatchNorm3d(outputs), nn.ReLU())

    encoder = nn.Sequential(stage(1, 8, False), stage(8, 16, True), stage(16, 16, True))
    return TLModel(
        encoder,
        stage_names=["0", "1", "2"],
        spatial_dims=3,
        input_size=(16, 16, 16),
        in_channels=1,
        num_outputs=2,
        pool=GlobalAvgPool(),
    )


def test_3d_mean_maps_weight_the_label_region_most() -> None:
    torch.manual_seed(0)
    model = _tiny_3d_model()
    _train(model, *_squares(256, 0, 16, slice(2, 6), slice(10, 14), dims=3), epochs=4)
    images, labels = _squares(32, 1, 16, slice(2, 6), slice(10, 14), dims=3)
    assert (model(images).argmax(1) == labels).float().mean() > 0.9
    for method in ("grad_cam", "integrated_gradients"):  # Grad-CAM at the last stage, 4x4x4
        maps = saliency_maps(model, images, method, n_steps=8)
        assert maps.shape == (32, 16, 16, 16)
        mean_map = np.mean(list(class_mean_maps(maps, labels.numpy()).values()), axis=0)
        region, distractor, rest = _region_means(mean_map, slice(2, 6), slice(10, 14))
        assert region > 1.5 * distractor and region > 1.5 * rest, method


@pytest.mark.slow
def test_on_the_synthetic_cohort_sex_maps_weight_the_ventricles() -> None:
    """Sex lives only in the ventricles here (3x larger enlargement in males, every other sex effect
    off): on axial slices through them, the mean maps weight the voxels whose CSF differs between the
    sexes above the rest of the brain. 320 subjects at 4 mm; about a minute."""
    params = SyntheticCohortParams(
        seed=3,
        n_subjects=320,
        voxel_size_mm=4.0,
        sex=SexEffects(cortex_mm=0, ventricle_ratio=3.0, contrast=0, shape_mm=0),
        variability=Variability(ventricle_sd=0.1),
    )
    affine, _ = mni_grid(params.voxel_size_mm)
    z = round((16 - affine[2, 3]) / params.voxel_size_mm)  # MNI z = 16 mm: the lateral ventricles
    subjects = draw_cohort(params)
    volumes = [np.asarray(generate_subject(s, params).dataobj, dtype=np.float32) for s in subjects]
    images = torch.from_numpy(np.stack([zscore_brain(v[:, :, z]) for v in volumes])[:, None])
    sexes = torch.tensor([s.sex for s in subjects])
    train, test = slice(0, 240), slice(240, 320)
    csf = np.stack([tissue_maps(s, params)["csf"][:, :, z] for s in subjects[train]])
    male = sexes[train].numpy() == 1
    ventricles = csf[male].mean(axis=0) - csf[~male].mean(axis=0) > 0.2
    brain = (images[:, 0] != 0).float().mean(dim=0).numpy() > 0.5
    assert 50 < ventricles.sum() < 0.2 * brain.sum()

    torch.manual_seed(0)
    model = create_architecture(
        "cbr_small",
        num_outputs=2,
        img_size=tuple(images.shape[2:]),
        width_factors={f"layer{i}": 0.25 for i in range(1, 5)},
    )
    _train(model, images[train], sexes[train], epochs=15, lr=1e-3, weight_decay=1e-4)
    assert (model(images[test]).argmax(1) == sexes[test]).float().mean() >= 0.8
    # Measured: Integrated Gradients 1.56x, Grad-CAM at layer3 1.33x (layer2 0.97x, layer4 1.15x).
    for method, layer, ratio in (("integrated_gradients", None, 1.4), ("grad_cam", "layer3", 1.2)):
        maps = saliency_maps(model, images[test], method, layer=layer, n_steps=16)
        mean_map = np.mean(list(class_mean_maps(maps, sexes[test].numpy()).values()), axis=0)
        assert mean_map[ventricles].mean() > ratio * mean_map[brain & ~ventricles].mean(), method


def test_regression_targets_the_single_output_and_training_flags_are_restored() -> None:
    torch.manual_seed(0)
    model = create_architecture("cbr_small", num_outputs=1, img_size=32)
    model.train()
    maps = saliency_maps(model, torch.randn(3, 1, 32, 32), "integrated_gradients", n_steps=4)
    assert maps.shape == (3, 32, 32)
    assert model.training and model.encoder.layer1.bn.training


def test_bad_requests_raise_with_the_reason() -> None:
    model = create_architecture("cbr_small", num_outputs=2, img_size=32)
    images = torch.randn(2, 1, 32, 32)
    with pytest.raises(ValueError, match="unknown saliency method"):
        saliency_maps(model, images, "occlusion")
    with pytest.raises(ValueError, match="target 2 is not an output"):
        saliency_maps(model, images, target=2)
    with pytest.raises(ValueError, match="do not fit a 2D model"):
        saliency_maps(model, torch.randn(2, 1, 8, 8, 8))
    vit = create_architecture("vit_tiny", num_outputs=2, img_size=32)
    with pytest.raises(ValueError, match="Grad-CAM needs a .* feature map"):
        saliency_maps(vit, images, "grad_cam")
    # Integrated Gradients works on any model
    assert saliency_maps(vit, images, "integrated_gradients", n_steps=4).shape == (2, 32, 32)


def test_class_means_weigh_every_subject_the_same() -> None:
    maps = np.array([[[2.0, 0.0]], [[0.0, 10.0]], [[1.0, 1.0]]])  # (3 subjects, 1 x 2 pixels)
    means = class_mean_maps(maps, ["f", "f", "m"])
    assert set(means) == {"f", "m"}
    np.testing.assert_allclose(means["f"], [[0.5, 0.5]])
    np.testing.assert_allclose(means["m"], [[1.0, 1.0]])
    with pytest.raises(ValueError, match="3 maps but 2 labels"):
        class_mean_maps(maps, ["f", "m"])


def test_label_correlation_map() -> None:
    ages = np.array([50.0, 60.0, 70.0, 80.0])
    # pixel 0 grows with age, pixel 1 shrinks, pixel 2 is the constant peak (the normaliser)
    maps = np.stack([[0.1 * a / 80, 1 - a / 100, 1.0] for a in ages])[:, None, :]
    correlation = label_correlation_map(maps, ages)
    np.testing.assert_allclose(correlation[0], [1.0, -1.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="differing values"):
        label_correlation_map(maps, np.full(4, 60.0))


def test_mid_slices_of_a_volume() -> None:
    volume = np.zeros((4, 6, 8))
    volume[2, 3, 4] = 1
    views = dict(mid_slices(volume))
    assert [v.shape for v in views.values()] == [(8, 6), (8, 4), (6, 4)]
    assert all(v.max() == 1 for v in views.values())  # each passes through the centre voxel


def test_figures_show_one_row_per_subject_or_map() -> None:
    rng = np.random.default_rng(0)
    images, maps = rng.random((2, 1, 8, 8, 8)), rng.random((2, 8, 8, 8))
    figure = plot_saliency_overlays(images, maps, titles=["sub-1", "sub-2"])
    assert isinstance(figure, Figure) and len(figure.axes) == 2 * 3
    assert figure.axes[0].get_title() == "sub-1 sagittal"
    figure = plot_mean_maps({"female (n=1)": maps[0], "male (n=1)": maps[1]}, images[0, 0])
    assert len([a for a in figure.axes if a.get_title()]) == 2 * 3
    slices = plot_saliency_overlays(images[:, :, 4], maps[:, 4])
    assert len(slices.axes) == 2
    with pytest.raises(ValueError, match="differ in shape"):
        plot_saliency_overlays(images, maps[:, :4])


def _series(n: int, seed: int, rois: int = 6, length: int = 48):
    """Noise series whose label is the sign of ROI 2's level; ROI 4 has a level of a random sign (a
    distractor of the same contrast)."""
    rng = np.random.default_rng(seed)
    series = rng.standard_normal((n, rois, length)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    series[:, 2] += np.where(labels, 0.8, -0.8)[:, None]
    series[:, 4] += rng.choice([-0.8, 0.8], n)[:, None]
    return torch.from_numpy(series), torch.from_numpy(labels)


def test_series_maps_are_per_roi_and_time_and_weight_the_label_roi_most() -> None:
    torch.manual_seed(0)
    model = create_architecture("resnet10_1d", in_channels=6, num_outputs=2, img_size=[48])
    _train(model, *_series(256, 0), epochs=4)
    series, labels = _series(64, 1)
    assert (model(series).argmax(1) == labels).float().mean() > 0.9  # it learnt the task
    maps = saliency_maps(model, series, "integrated_gradients", n_steps=8)
    assert maps.shape == (64, 6, 48) and (maps >= 0).all()  # one map per ROI and time point
    importance = roi_importance(class_mean_maps(maps, labels.numpy()))
    assert list(importance.index) == [f"ROI {i}" for i in range(6)]
    per_roi = importance.mean(axis=1)
    assert per_roi.idxmax() == "ROI 2"
    assert (
        per_roi["ROI 2"] > 1.5 * per_roi["ROI 4"]
        and per_roi["ROI 2"] > 1.5 * per_roi.drop(["ROI 2"]).max()
    )
    with pytest.raises(ValueError, match="no ROI axis"):
        saliency_maps(model, series[:2], "grad_cam", layer="layer2")


def test_series_figures_show_rois_by_time_and_a_per_roi_bar() -> None:
    rng = np.random.default_rng(0)
    series, maps = rng.standard_normal((2, 5, 20)), rng.random((2, 5, 20))
    figure = plot_saliency_overlays(series, maps, titles=["sub-1", "sub-2"], series=True)
    assert len(figure.axes) == 2
    assert figure.axes[0].get_images()[1].get_array().shape == (5, 20)  # ROIs down, time across
    assert figure.axes[0].get_ylabel() == "ROI"
    figure = plot_mean_maps({"female (n=1)": maps[0], "male (n=1)": maps[1]}, series=True)
    bars = [a for a in figure.axes if a.patches]
    assert len(bars) == 2 and len(bars[0].patches) == 5
    np.testing.assert_allclose([p.get_width() for p in bars[0].patches], maps[0].mean(axis=1))
    with pytest.raises(ValueError, match=r"\(ROIs, T\) maps"):
        roi_importance({"volume": np.zeros((2, 2, 2))})
