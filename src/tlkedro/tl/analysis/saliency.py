"""Saliency maps of 2D, 3D and 1D (time series) ``TLModel``\\ s with captum: Grad-CAM and Integrated Gradients.

- ``grad_cam`` (Selvaraju et al. 2017; captum ``LayerGradCam``): the stage's feature maps weighted by
  the spatial mean of the target output's gradient, summed over channels, rectified (the original
  method) and upsampled to the input (``LayerAttribution.interpolate``, bilinear or trilinear). Coarse:
  its resolution is the stage's, so a deep stage of a 64x64 input gives a 2x2 map.
- ``integrated_gradients`` (Sundararajan et al. 2017; captum ``IntegratedGradients``): the input minus a
  baseline times the gradient averaged along the straight path from the baseline to the input, at the
  input's resolution. The baseline is a constant image, 0 by default, which after the project's
  normalisations is the background (zero voxels stay zero). Maps are the absolute attribution summed
  over channels: where the output is sensitive, whichever way.

A map explains one output of the head (``target``): a class logit, or the single output of a
regression. The maps of several subjects can be averaged per class (``class_mean_maps``) or correlated
with a continuous label such as age (``label_correlation_map``); both only mean something when the scans
are in a common space (template-registered volumes or slices of them), where a voxel is the same place
in every subject. docs/saliency.md says what the maps do and do not show.

ROI time series (1D models, ``(N, ROIs, T)`` inputs, the ROIs as channels) keep the channel axis: a
series' map is ``(ROIs, T)``, Integrated Gradients' absolute attribution per ROI and time point, and
``roi_importance`` sums it up per ROI (its mean over time). Grad-CAM is refused there: its map is a
stage's, after the first convolution has mixed the ROIs, so it has a time axis but no ROI axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam
from matplotlib.figure import Figure
from torch import Tensor

from tlkedro.tl.architectures.base import TLModel, eval_mode

SALIENCY_METHODS = ("grad_cam", "integrated_gradients")
_UPSAMPLING = {2: "bilinear", 3: "trilinear"}


def saliency_maps(
    model: TLModel,
    images: Tensor | np.ndarray,
    method: str = "grad_cam",
    target: int | None = None,
    *,
    layer: str | None = None,
    baseline: float = 0.0,
    n_steps: int = 32,
    batch_size: int = 8,
) -> np.ndarray:
    """Per-image saliency maps at the input's resolution.

    The model runs in eval mode on its own device (its training flags are restored afterwards).

    Args:
        model: The model to explain.
        images: ``(N, C, *spatial)`` inputs.
        method: ``grad_cam`` or ``integrated_gradients``.
        target: The head output to explain; ``None``: the predicted class of each image for a classifier,
            the single output of a regression model.
        layer: Grad-CAM's stage (a module path inside the encoder); ``None``: the last stage. Its output
            must be a ``(B, C, *spatial)`` feature map (not a transformer's tokens).
        baseline: Integrated Gradients' constant baseline image value.
        n_steps: Integrated Gradients' steps along the path.
        batch_size: Images per attribution pass.

    Returns:
        ``(N, *spatial)`` float32 maps; larger means more salient. Grad-CAM maps are non-negative and
        Integrated Gradients maps absolute values, both in the units of their method. A 1D model's
        maps keep the channels (the ROIs of a series): ``(N, ROIs, T)``.

    Raises:
        ValueError: If ``method`` is unknown, ``images`` do not have the model's dimensions, ``target``
            is not an output of the head, Grad-CAM's layer does not give a spatial feature map, or
            Grad-CAM is asked of a 1D model.
    """
    if method not in SALIENCY_METHODS:
        raise ValueError(f"unknown saliency method {method!r}; the methods are {SALIENCY_METHODS}")
    if not isinstance(images, Tensor):  # a copy: a memory-mapped split is read-only
        images = torch.tensor(np.asarray(images), dtype=torch.float32)
    images = images.float()
    if images.ndim != model.spatial_dims + 2 or images.shape[1] != model.in_channels:
        raise ValueError(
            f"images of shape {tuple(images.shape)} do not fit a {model.spatial_dims}D model with "
            f"{model.in_channels} input channel(s): expected (N, {model.in_channels}, *spatial)"
        )
    if target is not None and not 0 <= target < model.num_outputs:
        raise ValueError(f"target {target} is not an output of a head with {model.num_outputs}")
    series = model.spatial_dims == 1
    if series and method == "grad_cam":
        raise ValueError(
            "Grad-CAM of a 1D model (ROI time series) has no ROI axis: its stage's feature maps come "
            "after the first convolution has mixed the ROIs; use integrated_gradients, which keeps one "
            "map per ROI"
        )
    device = next(model.parameters()).device
    maps = []
    with eval_mode(model):
        if method == "grad_cam":
            stage = layer if layer is not None else model.stage_names[-1]
            if getattr(model.encoder, "output_fmt", "NCHW") == "NHWC":  # timm Swin
                raise ValueError(
                    "Grad-CAM here needs channels-first feature maps; this encoder's stages are "
                    "channels last (Swin): use integrated_gradients"
                )
            attribution = LayerGradCam(model, model.encoder.get_submodule(stage))
        else:
            attribution = IntegratedGradients(model)
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device).requires_grad_()
            targets = _targets(model, batch, target)
            if method == "grad_cam":
                maps.append(_grad_cam(attribution, batch, targets, stage, model.spatial_dims))
            else:
                attributed = attribution.attribute(
                    batch, baselines=baseline, target=targets, n_steps=n_steps
                )
                # A series keeps its channels, the ROIs; an image's channels are summed.
                maps.append(attributed.abs() if series else attributed.abs().sum(dim=1))
    return torch.cat(maps).detach().float().cpu().numpy()


def _targets(model: TLModel, batch: Tensor, target: int | None) -> Tensor | int:
    if target is not None:
        return target
    if model.num_outputs == 1:
        return 0
    with torch.no_grad():
        return model(batch).argmax(dim=1)


def _grad_cam(
    grad_cam: LayerGradCam, batch: Tensor, targets: Tensor | int, stage: str, spatial_dims: int
) -> Tensor:
    cam = grad_cam.attribute(batch, target=targets, relu_attributions=True)
    if cam.ndim != spatial_dims + 2:
        raise ValueError(
            f"Grad-CAM needs a (B, C, *spatial) feature map, but stage {stage!r} gives "
            f"{tuple(cam.shape)} after the channel sum; choose a convolutional stage or use "
            "integrated_gradients"
        )
    upsampled = LayerAttribution.interpolate(
        cam, tuple(batch.shape[2:]), interpolate_mode=_UPSAMPLING[spatial_dims]
    )
    return upsampled[:, 0]


def _normalised(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum (an all-zero map stays zero), so every subject weighs the same."""
    maps = np.asarray(maps, dtype=np.float64)
    peak = maps.reshape(len(maps), -1).max(axis=1)
    peak = np.where(peak > 0, peak, 1.0).reshape(-1, *([1] * (maps.ndim - 1)))
    return maps / peak


def class_mean_maps(maps: np.ndarray, labels: Sequence) -> dict:
    """``label -> mean map`` of the subjects of each label, each map normalised to a maximum of 1.

    Raises:
        ValueError: If there is not one label per map.
    """
    labels = np.asarray(labels)
    if len(labels) != len(maps):
        raise ValueError(f"{len(maps)} maps but {len(labels)} labels")
    normalised = _normalised(maps)
    return {label.item(): normalised[labels == label].mean(axis=0) for label in np.unique(labels)}


def label_correlation_map(maps: np.ndarray, values: Sequence[float]) -> np.ndarray:
    """Pearson correlation, at each voxel, between the normalised saliency and a label such as age.

    Positive where the model relies more on a region in subjects with higher values. Voxels where the
    saliency does not vary across subjects give 0.

    Raises:
        ValueError: If there is not one value per map, fewer than 3 subjects or the values are constant.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(maps):
        raise ValueError(f"{len(maps)} maps but {len(values)} values")
    if len(values) < 3 or values.std() == 0:
        raise ValueError("a correlation map needs at least 3 subjects with differing values")
    normalised = _normalised(maps)
    centred = normalised - normalised.mean(axis=0)
    scores = (values - values.mean()) / values.std()
    spread = centred.std(axis=0)
    covariance = np.tensordot(scores, centred, axes=1) / len(values)
    return np.divide(covariance, spread, out=np.zeros_like(covariance), where=spread > 0)


def roi_importance(mean_maps: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Per ROI, the mean over time of each ``(ROIs, T)`` map of series (a class mean, a correlation).

    Returns:
        One row per ROI (index: its position among the input channels, ``ROI 0`` ...), one column per
        map.

    Raises:
        ValueError: A map is not ``(ROIs, T)``, or the maps differ in ROI count.
    """
    shapes = {np.shape(m) for m in mean_maps.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"roi_importance needs (ROIs, T) maps of one shape; got {sorted(shapes)}")
    columns = {name: np.asarray(m, dtype=np.float64).mean(axis=1) for name, m in mean_maps.items()}
    rois = len(next(iter(columns.values())))
    return pd.DataFrame(columns, index=pd.Index([f"ROI {i}" for i in range(rois)], name="ROI"))


def _planes(array: np.ndarray, series: bool) -> list[tuple[str, np.ndarray]]:
    """What a figure shows of one map or input: a series' ``(ROIs, T)`` as it is, else ``mid_slices``."""
    return [("", np.asarray(array))] if series else mid_slices(array)


def _series_axes(axis, series: bool) -> None:
    if series:  # ROIs down, time across
        axis.set_xlabel("time point", fontsize="small")
        axis.set_ylabel("ROI", fontsize="small")
    else:
        axis.set_axis_off()


def mid_slices(volume: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The sagittal, coronal and axial mid-slices of a RAS ``(X, Y, Z)`` volume, superior/anterior up;
    a 2D image gives itself, rotated the same way."""
    volume = np.asarray(volume)
    if volume.ndim == 2:
        return [("slice", np.rot90(volume))]
    x, y, z = (n // 2 for n in volume.shape)
    return [
        ("sagittal", np.rot90(volume[x, :, :])),
        ("coronal", np.rot90(volume[:, y, :])),
        ("axial", np.rot90(volume[:, :, z])),
    ]


def plot_saliency_overlays(
    images: np.ndarray,
    maps: np.ndarray,
    titles: Sequence[str] | None = None,
    alpha: float = 0.5,
    *,
    series: bool = False,
) -> Figure:
    """One row per subject: its image (3D: three mid-slices; a series: ROIs x time) with its map overlaid.

    Args:
        images: ``(N, C, *spatial)`` inputs (the first channel is shown) or ``(N, *spatial)``; series:
            ``(N, ROIs, T)``.
        maps: ``(N, *spatial)`` maps from ``saliency_maps`` (series: ``(N, ROIs, T)``); each is scaled
            to its own maximum.
        titles: One title per subject (e.g. its ID, label and prediction).
        alpha: Opacity of the map at its maximum.
        series: The inputs are ROI time series, shown with the ROIs down and time across.
    """
    images = np.asarray(images)
    maps = np.asarray(maps)
    if images.ndim == maps.ndim + 1 and not series:
        images = images[:, 0]
    if images.shape != maps.shape:
        raise ValueError(f"images {images.shape} and maps {maps.shape} differ in shape")
    if titles is not None and len(titles) != len(maps):
        raise ValueError(f"{len(maps)} maps but {len(titles)} titles")
    normalised = _normalised(maps)
    views = len(_planes(images[0], series))
    width = 6.0 if series else 2.6 * views
    figure = Figure(figsize=(width, 2.6 * len(maps)), layout="constrained")
    axes = figure.subplots(len(maps), views, squeeze=False)
    shape = {"aspect": "auto", "interpolation": "nearest"} if series else {}
    for row, (image, saliency) in enumerate(zip(images, normalised, strict=True)):
        for column, ((view, plane), (_, heat)) in enumerate(
            zip(_planes(image, series), _planes(saliency, series), strict=True)
        ):
            axis = axes[row, column]
            axis.imshow(plane, cmap="gray", **shape)
            axis.imshow(heat, cmap="jet", vmin=0, vmax=1, alpha=alpha * heat, **shape)
            _series_axes(axis, series)
            label = titles[row] if titles is not None and column == 0 else ""
            axis.set_title(f"{label} {view}".strip() if views > 1 else label, fontsize="small")
    return figure


def plot_mean_maps(
    mean_maps: Mapping[str, np.ndarray],
    background: np.ndarray | None = None,
    *,
    diverging: bool = False,
    alpha: float = 0.6,
    series: bool = False,
) -> Figure:
    """One row per map (a class mean or a label correlation), over ``background`` (e.g. the mean image).

    Args:
        mean_maps: ``name -> (*spatial)`` map; the name titles its row (say how many subjects it rests on).
        background: ``(*spatial)`` image shown in grey underneath.
        diverging: Signed maps (``label_correlation_map``): a symmetric blue-red scale; otherwise each
            map is scaled to its maximum.
        alpha: Opacity of the maps.
        series: ``(ROIs, T)`` maps of ROI time series: each row adds, on the right, the map's mean over
            time per ROI (``roi_importance``).
    """
    if not mean_maps:
        raise ValueError("no maps to plot")
    first = np.asarray(next(iter(mean_maps.values())))
    views = len(_planes(first, series))
    width = 8.0 if series else 2.8 * views + 0.8
    figure = Figure(figsize=(width, 2.6 * len(mean_maps)), layout="constrained")
    axes = figure.subplots(
        len(mean_maps),
        views + series,
        squeeze=False,
        width_ratios=[3, 1] if series else None,
    )
    shape = {"aspect": "auto", "interpolation": "nearest"} if series else {}
    for row, (name, saliency) in enumerate(mean_maps.items()):
        saliency = np.asarray(saliency, dtype=np.float64)
        if diverging:
            limit = float(np.abs(saliency).max()) or 1.0
            scale = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
        else:
            scale = {"cmap": "jet", "vmin": 0.0, "vmax": float(saliency.max()) or 1.0}
        planes = _planes(saliency, series)
        backgrounds = (
            _planes(background, series) if background is not None else [None] * len(planes)
        )
        for column, ((view, heat), under) in enumerate(zip(planes, backgrounds, strict=True)):
            axis = axes[row, column]
            if under is not None:
                axis.imshow(under[1], cmap="gray", **shape)
            shown = axis.imshow(heat, alpha=alpha if under is not None else 1.0, **shape, **scale)
            _series_axes(axis, series)
            axis.set_title(f"{name} {view}" if views > 1 else str(name), fontsize="small")
        figure.colorbar(shown, ax=axes[row, views - 1], shrink=0.8)
        if series:
            profile = roi_importance({name: saliency})[name]
            bars = axes[row, views]
            bars.barh(np.arange(len(profile)), profile.to_numpy(), color="tab:red")
            bars.set_ylim(len(profile) - 0.5, -0.5)  # ROI 0 at the top, as in the map
            bars.set_xlabel("mean over time", fontsize="small")
            bars.set_yticks(np.arange(len(profile)))
    return figure
