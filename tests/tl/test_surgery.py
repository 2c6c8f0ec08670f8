"""Truncation, width factors, stage lookup and layer order.

Checks that only need shapes run on the ``meta`` device (no weights are allocated, the forward passes
only propagate shapes), which makes the all-architecture checks cheap; value checks use small models.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlkedro.tl.architectures import TLModel, create_architecture, list_architectures
from tlkedro.tl.architectures.surgery import ordered_layers, stage_of, truncate, truncation_points
from tlkedro.tl.config import ArchitectureConfig
from tlkedro.tl.registry import RenamedKeywordWarning


def _meta(name: str, **kwargs: object) -> TLModel:
    with torch.device("meta"):
        return create_architecture(name, **kwargs)


def _parameter_names(model: nn.Module) -> set[str]:
    return {name for name, _ in model.named_parameters()}


@pytest.fixture(scope="module", params=list_architectures())
def meta_model(request: pytest.FixtureRequest) -> TLModel:
    return _meta(request.param)


def test_truncating_any_architecture_at_its_middle_stage(meta_model: TLModel) -> None:
    stages = meta_model.stage_names
    cut_at = stages[len(stages) // 2]
    truncated = truncate(meta_model, cut_at)

    assert truncated.stage_names == stages[: len(stages) // 2 + 1]
    removed = [f"encoder.{stage}." for stage in stages[len(stages) // 2 + 1 :]]
    assert not [name for name in _parameter_names(truncated) if name.startswith(tuple(removed))]
    assert (
        truncated.head.in_features
        == truncated.num_features
        == truncated.example_features().shape[1]
    )
    assert (
        meta_model.stage_names == stages and "cut_at" not in meta_model.config
    )  # the original is kept

    with torch.device("meta"):
        rebuilt = create_architecture(**truncated.config)
    assert rebuilt.config["cut_at"] == cut_at
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in truncated.state_dict().items()
    }


def test_ordered_layers_follow_the_stages_and_cover_the_encoder(meta_model: TLModel) -> None:
    layers = ordered_layers(meta_model)
    assert len(layers) == len(set(layers))
    stage_indices = [meta_model.stage_names.index(stage_of(meta_model, layer)) for layer in layers]
    assert stage_indices == sorted(stage_indices)
    owners = {name.rpartition(".")[0] for name, _ in meta_model.encoder.named_parameters()}
    assert owners - set(layers) <= {""}  # "": a timm ViT's class token and position embedding
    assert all(meta_model.encoder.get_submodule(layer) is not None for layer in layers)


def test_truncated_resnet_keeps_the_weights_below_the_cut_point() -> None:
    torch.manual_seed(0)
    model = create_architecture("resnet18", img_size=32, num_outputs=3)
    truncated = truncate(model, "layer3")

    assert not [name for name in _parameter_names(truncated) if name.startswith("encoder.layer4.")]
    assert truncated.num_features == truncated.head.in_features == 256
    torch.testing.assert_close(
        truncated.encoder.layer3[1].conv2.weight,
        model.encoder.layer3[1].conv2.weight,
        rtol=0,
        atol=0,
    )
    truncated.eval()
    with torch.no_grad():
        assert truncated(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_truncating_inside_a_stage_keeps_the_blocks_before_the_cut_point() -> None:
    model = _meta("resnet18")
    names = _parameter_names(truncate(model, "layer3.0"))
    assert "encoder.layer3.0.conv1.weight" in names
    assert not [name for name in names if name.startswith(("encoder.layer3.1.", "encoder.layer4."))]


@pytest.mark.parametrize(
    ("name", "kwargs", "cut_at", "num_features"),
    [
        ("sfcn", {"spatial_dims": 2}, "conv_2", 128),
        ("cbr_large_t", {}, "layer2.bn", 64),
        ("vit_tiny", {}, "blocks.5", 192),
        ("efficientnet_b0", {}, "blocks.3", 80),
        ("resnet10_3d", {}, "layer2", 128),
    ],
)
def test_truncated_feature_size(name: str, kwargs: dict, cut_at: str, num_features: int) -> None:
    assert truncate(_meta(name, **kwargs), cut_at).num_features == num_features


def test_cut_at_is_a_builder_argument() -> None:
    direct = _meta("resnet18", cut_at="layer2")
    assert direct.stage_names[-1] == "layer2" and direct.num_features == 128
    assert _parameter_names(direct) == _parameter_names(truncate(_meta("resnet18"), "layer2"))


def test_the_old_name_truncate_at_still_builds_with_a_warning_naming_cut_at() -> None:
    with pytest.warns(RenamedKeywordWarning, match=r"'truncate_at' is renamed 'cut_at'"):
        old = _meta("resnet18", truncate_at="layer2")
    # A checkpoint written before the rename records truncate_at in its config; it rebuilds the same.
    assert old.config["cut_at"] == "layer2" and "truncate_at" not in old.config
    assert _parameter_names(old) == _parameter_names(_meta("resnet18", cut_at="layer2"))
    with pytest.raises(TypeError, match="both 'truncate_at' and its new name 'cut_at'"):
        _meta("resnet18", truncate_at="layer2", cut_at="layer3")
    with pytest.warns(RenamedKeywordWarning):
        config = ArchitectureConfig(name="resnet18", kwargs={"truncate_at": "layer2"})
    assert config.kwargs == {"cut_at": "layer2"}


def test_truncation_points_are_stages_and_sequential_sub_blocks() -> None:
    points = truncation_points(_meta("resnet18"))
    assert points[:7] == ["conv1", "bn1", "act1", "maxpool", "layer1.0", "layer1.1", "layer1"]
    assert points[-3:] == ["layer4.0", "layer4.1", "layer4"]


def test_invalid_cut_points_are_rejected_with_the_valid_ones() -> None:
    model = _meta("resnet18")
    with pytest.raises(
        ValueError, match=r"Cannot truncate 'resnet18' at 'layer3.1.conv1'.*layer3\.0"
    ):
        truncate(model, "layer3.1.conv1")  # inside a residual block, which is not a plain sequence
    with pytest.raises(ValueError, match="Valid cut points, input side first: conv1, .*, layer2$"):
        truncate(truncate(model, "layer2"), "layer3")  # already cut below layer3


@pytest.mark.parametrize(
    ("name", "kwargs", "cut_at"),
    [
        ("resnet18", {}, "layer2"),
        ("resnet50", {}, "layer3"),
        ("resnet10_3d", {}, "layer2"),
        ("sfcn", {}, "conv_2"),
        ("cbr_large_t", {"spatial_dims": 3}, "layer3"),
    ],
)
def test_width_factors_halve_the_stages_above_the_cut_point(
    name: str, kwargs: dict, cut_at: str
) -> None:
    full = _meta(name, **kwargs)
    above = full.stage_names[full.stage_names.index(cut_at) + 1 :]
    slim = _meta(name, **kwargs, width_factors=dict.fromkeys(above, 0.5))

    def conv_widths(model: TLModel) -> dict[str, int]:
        return {
            n: m.out_channels
            for n, m in model.encoder.named_modules()
            if isinstance(m, nn.modules.conv._ConvNd)
        }

    full_widths, slim_widths = conv_widths(full), conv_widths(slim)
    assert full_widths.keys() == slim_widths.keys()
    for layer, width in full_widths.items():
        expected = width // 2 if stage_of(full, layer) in above else width
        assert slim_widths[layer] == expected, layer
    assert slim.num_features == full.num_features // 2


def test_width_factor_on_a_stage_without_its_own_width_changes_nothing() -> None:
    shapes = {
        k: v.shape for k, v in _meta("resnet18", width_factors={"bn1": 0.5}).state_dict().items()
    }
    assert shapes == {k: v.shape for k, v in _meta("resnet18").state_dict().items()}


def test_width_factors_are_validated() -> None:
    with pytest.raises(
        ValueError, match="does not support width_factors; these do: .*resnet18.*sfcn"
    ):
        _meta("vit_tiny", width_factors={"blocks.11": 0.5})
    with pytest.raises(ValueError, match=r"unknown stages \['layer5'\]"):
        _meta("resnet18", width_factors={"layer5": 0.5})
    with pytest.raises(ValueError, match="must be positive"):
        _meta("sfcn", width_factors={"conv_4": 0.0})


def test_stage_of_matches_whole_path_components() -> None:
    assert stage_of(_meta("resnet18"), "layer3.1.conv1") == "layer3"
    vit = _meta("vit_tiny")
    assert stage_of(vit, "blocks.10.attn.qkv.weight") == "blocks.10"  # not blocks.1
    with pytest.raises(ValueError, match="'cls_token' lies in no stage"):
        stage_of(vit, "cls_token")


def test_ordered_layers_of_a_resnet_run_in_forward_order() -> None:
    layers = ordered_layers(_meta("resnet18"))
    assert layers[:6] == [
        "conv1",
        "bn1",
        "layer1.0.conv1",
        "layer1.0.bn1",
        "layer1.0.conv2",
        "layer1.0.bn2",
    ]
    assert (
        layers.index("layer2.0.bn2")
        < layers.index("layer2.0.downsample.0")
        < layers.index("layer2.1.conv1")
    )
    assert layers[-1] == "layer4.1.bn2"
