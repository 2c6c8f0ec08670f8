"""Model surgery for the transfer-learning strategies: truncation, stage lookup and layer order.

Names are module paths inside ``model.encoder``, without the ``encoder.`` prefix: a stage (``layer3``,
``blocks.5``), a block inside a stage (``layer3.0``) or a layer (``layer3.0.conv1``). A point where the encoder is cut, whatever the strategy
does there (truncate, freeze below, slim above), is called ``cut_at`` everywhere. Slimming the stages
above a cut point (TransFusion) is not surgery on a built model but the builder keyword ``width_factors``.

This module only needs ``TLModel``'s attributes, so ``base`` can import it to handle ``cut_at``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from tlkedro.tl.architectures.base import TLModel


def stage_of(model: TLModel, name: str) -> str:
    """The stage that contains the module or parameter ``name``.

    Args:
        model: The model.
        name: A module or parameter path inside the encoder (``layer3.1.conv1``, ``blocks.10.attn.qkv``).

    Raises:
        ValueError: If ``name`` lies in no stage (e.g. a pooling module, or the class token and position
            embedding that a timm ViT keeps on the encoder itself), listing the stages.
    """
    matches = [
        stage for stage in model.stage_names if name == stage or name.startswith(f"{stage}.")
    ]
    if not matches:
        raise ValueError(
            f"{name!r} lies in no stage of {_describe(model)}; its stages are {', '.join(model.stage_names)}"
        )
    return max(matches, key=len)


def ordered_layers(model: TLModel) -> list[str]:
    """Paths of the encoder's modules that hold parameters, in the order the forward pass finishes them.

    A module is listed when it owns parameters itself (a convolution, a norm, an attention module
    with a position bias table). The order is measured with forward hooks on ``model.example_input()``,
    so a residual block's ``downsample`` comes where it runs. Parameters owned by the encoder itself
    (a timm ViT's ``cls_token`` and ``pos_embed``) belong to no layer. Every listed path resolves with
    ``model.encoder.get_submodule``.
    """
    order: list[str] = []
    handles = []
    for path, module in model.encoder.named_modules():
        if path and next(module.parameters(recurse=False), None) is not None:

            def record(*_: object, path: str = path) -> None:
                if path not in order:
                    order.append(path)

            handles.append(module.register_forward_hook(record))
    try:
        model.example_features()
    finally:
        for handle in handles:
            handle.remove()
    return order


def truncation_points(model: TLModel) -> list[str]:
    """The valid cut points of ``truncate``, input side first.

    Every stage is a cut point, and so is every child of a stage that is an ``nn.Sequential`` (recursively,
    through nested ``nn.Sequential``\\ s): cutting there keeps the children before it. Blocks whose
    forward is not a plain sequence (a residual block, a transformer block) can only be kept or dropped
    whole. On a timm resnet18: ``conv1, bn1, act1, maxpool, layer1.0, layer1.1, layer1, layer2.0, ...``.
    A truncated model's cut points stop at its own ``cut_at``.
    """
    points: list[str] = []
    for stage in model.stage_names:
        points.extend(_sequential_points(model.encoder.get_submodule(stage), stage))
    current = model.config.get("cut_at")
    return points[: points.index(current) + 1] if current in points else points


def truncate(model: TLModel, cut_at: str) -> TLModel:
    """A copy of ``model`` keeping the encoder from the input up to and including ``cut_at``.

    Everything above the cut point is removed (replaced by identities, so the kept parameters keep their
    names and the copy loads the same state-dict entries), the encoder's own global pooling or ``pool``
    pools the shallower feature map, and a new head of ``model.num_outputs`` outputs is sized by a dummy
    forward pass. The kept weights are those of ``model``. ``config`` gains ``cut_at``, so
    ``create_architecture(**config)`` rebuilds the truncated architecture.

    Args:
        model: The model to cut; it is not changed.
        cut_at: A stage (``layer3``) or a block inside a sequential stage (``layer3.0``); see
            ``truncation_points``.

    Raises:
        ValueError: If ``cut_at`` is not a valid cut point, listing the valid ones.
    """
    truncated = copy.deepcopy(model)
    truncate_in_place(truncated, cut_at)
    return truncated


def truncate_in_place(model: TLModel, cut_at: str) -> None:
    """``truncate`` without the copy; the builders apply it for the ``cut_at`` keyword."""
    points = truncation_points(model)
    if cut_at not in points:
        raise ValueError(
            f"Cannot truncate {_describe(model)} at {cut_at!r}. Valid cut points, input side first: "
            f"{', '.join(points)}"
        )
    stage = stage_of(model, cut_at)
    index = model.stage_names.index(stage)
    for later in model.stage_names[index + 1 :]:
        model.encoder.set_submodule(later, nn.Identity())
    path = cut_at
    while path != stage:  # inside the stage: drop the later siblings at every level up to the stage
        parent, _, child = path.rpartition(".")
        siblings = list(model.encoder.get_submodule(parent)._modules)
        for later in siblings[siblings.index(child) + 1 :]:
            model.encoder.set_submodule(f"{parent}.{later}", nn.Identity())
        path = parent
    model.stage_names = model.stage_names[: index + 1]
    model.num_features = model.infer_num_features()
    model.reset_head(model.num_outputs)
    model.config["cut_at"] = cut_at


def _sequential_points(module: nn.Module, path: str) -> list[str]:
    points: list[str] = []
    if isinstance(module, nn.Sequential):
        for child, submodule in module.named_children():
            points.extend(_sequential_points(submodule, f"{path}.{child}"))
    points.append(path)
    return points


def _describe(model: TLModel) -> str:
    return repr(model.config["name"]) if "name" in model.config else type(model.encoder).__name__
