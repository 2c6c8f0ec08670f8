"""Contract tests over the architecture registry, in the style of timm's ``test_models``.

Every registered architecture goes through the same checks; a new architecture is tested by being
registered and given its test input size in ``TEST_IMG_SIZE``. Each is built once (a module-scoped
fixture) at the smallest input it allows or the tests can afford; rebuilds that only compare shapes use
the ``meta`` device, which allocates no weights.
"""

from __future__ import annotations

import io

import pytest
import torch
from monai.networks import nets as monai_nets
from torch import nn

from tlkedro.imaging.extraction import SliceConfig, VolumeConfig
from tlkedro.imaging.timeseries import TimeseriesInputConfig
from tlkedro.tl.architectures import (
    TLModel,
    create_architecture,
    list_architectures,
    register_architecture,
)
from tlkedro.tl.architectures.base import check_architecture
from tlkedro.tl.architectures.shapes import DEFAULT_IMG_SIZE
from tlkedro.tl.registry import UnknownComponentError
from tlkedro.tl.strategies import create_strategy

# Spatial size of the test input per architecture: 32x32 slices (five stride-2 reductions; ViT patch 8
# gives 16 tokens, Swin windows shrink to the feature maps), 16^3 volumes for the MONAI ResNets, 32^3 for
# the 3D DenseNet (four poolings after a stride-2 stem), SFCN (five poolings) and the 3D ViTs (patch 16);
# series of 64 time points for the 1D networks (transformer_1d: four patches of 16).
TEST_IMG_SIZE = {
    "cbr_large_t": 32,
    "cbr_large_w": 32,
    "cbr_small": 32,
    "cbr_tiny": 32,
    "convnext_tiny": 32,
    "densenet121": 32,
    "densenet121_3d": 32,
    "efficientnet_b0": 32,
    "resnet10_1d": 64,
    "resnet10_3d": 16,
    "resnet18": 32,
    "resnet18_1d": 64,
    "resnet18_3d": 16,
    "resnet34": 32,
    "resnet34_3d": 16,
    "resnet50": 32,
    "resnet50_3d": 16,
    "sfcn": 32,
    "swin_tiny": 32,
    "swin_3d": 32,
    "transformer_1d": 64,
    "vit_small": 32,
    "vit_small_3d": 32,
    "vit_tiny": 32,
    "vit_tiny_3d": 32,
}
# Builder arguments that keep a test model small (the others are built at their defaults).
TEST_KWARGS = {"swin_3d": {"feature_size": 12}}
# Parameters a timm ViT keeps on the encoder itself, outside every stage.
ENCODER_LEVEL_PARAMETERS = {
    "vit_tiny": {"cls_token", "pos_embed"},
    "vit_small": {"cls_token", "pos_embed"},
}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module", params=list_architectures())
def model(request: pytest.FixtureRequest) -> TLModel:
    torch.manual_seed(0)
    return create_architecture(
        request.param,
        img_size=TEST_IMG_SIZE[request.param],
        num_outputs=2,
        **TEST_KWARGS.get(request.param, {}),
    )


def _batch(model: TLModel) -> torch.Tensor:
    return torch.randn(2, model.in_channels, *model.input_size)


def test_every_architecture_has_a_test_input_size() -> None:
    assert set(TEST_IMG_SIZE) == set(list_architectures())


def test_passes_the_contract_that_class_path_architectures_are_held_to(model: TLModel) -> None:
    name = model.config["name"]
    check_architecture(model, name, {"img_size": TEST_IMG_SIZE[name], "num_outputs": 2})


def test_forward_backward_reaches_every_parameter(model: TLModel) -> None:
    model.train()
    out = model(_batch(model))
    assert out.shape == (2, model.num_outputs)
    out.sum().backward()
    without_grad = [name for name, param in model.named_parameters() if param.grad is None]
    model.zero_grad(set_to_none=True)
    assert without_grad == []


def test_forward_is_head_of_features(model: TLModel) -> None:
    x = _batch(model)
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, model.num_features)
        torch.testing.assert_close(model(x), model.head(features))


def test_reset_head_replaces_head_and_keeps_encoder(model: TLModel) -> None:
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    old_head = model.head
    model.reset_head(5)
    try:
        assert model.head is not old_head
        assert model.head.out_features == model.num_outputs == model.config["num_outputs"] == 5
        encoder_after = model.encoder.state_dict()
        assert encoder_after.keys() == encoder_before.keys()
        assert all(torch.equal(encoder_after[k], v) for k, v in encoder_before.items())
        model.eval()
        with torch.no_grad():
            assert model(_batch(model)).shape == (2, 5)
    finally:
        model.reset_head(2)


def test_config_rebuilds_the_same_architecture(model: TLModel) -> None:
    buffer = io.BytesIO()
    torch.save(model.config, buffer)
    buffer.seek(0)
    config = torch.load(buffer, weights_only=True)  # as checkpoints are loaded
    assert config == model.config and config["name"] in list_architectures()
    with torch.device("meta"):
        rebuilt = create_architecture(**config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert (rebuilt.stage_names, rebuilt.num_features, rebuilt.spatial_dims) == (
        model.stage_names,
        model.num_features,
        model.spatial_dims,
    )


def test_stages_run_in_order_and_hold_the_encoder_parameters(model: TLModel) -> None:
    called: list[str] = []
    handles = [
        model.encoder.get_submodule(stage).register_forward_hook(
            lambda *_, stage=stage: called.append(stage)
        )
        for stage in model.stage_names
    ]
    try:
        model.example_features()
    finally:
        for handle in handles:
            handle.remove()
    assert called == list(model.stage_names)
    outside = {
        name
        for name, _ in model.encoder.named_parameters()
        if not any(name.startswith(f"{stage}.") for stage in model.stage_names)
    }
    assert outside == ENCODER_LEVEL_PARAMETERS.get(model.config["name"], set())


@pytest.mark.parametrize(("name", "spatial_dims", "size"), [("sfcn", 2, 32), ("cbr_tiny", 3, 16)])
def test_spatial_dims_switches_between_slices_and_volumes(
    name: str, spatial_dims: int, size: int
) -> None:
    model = create_architecture(name, spatial_dims=spatial_dims, img_size=size, num_outputs=3)
    assert model.spatial_dims == spatial_dims
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, *(size,) * spatial_dims)).shape == (2, 3)


@pytest.mark.parametrize("name", ["resnet10_1d", "resnet18_1d", "transformer_1d"])
def test_1d_networks_take_rois_as_channels_and_any_strategy(name: str) -> None:
    torch.manual_seed(0)
    source = create_architecture(name, in_channels=8, img_size=64, num_outputs=1)
    series = torch.randn(3, 8, 64)
    assert source.spatial_dims == 1 and source(series).shape == (3, 1)
    stage = source.stage_names[len(source.stage_names) // 2]
    layer = next(
        n for n, m in source.encoder.get_submodule(stage).named_modules() if not list(m.children())
    )
    for strategy, kwargs in [
        ("full", {}),
        ("linear_probe", {}),
        ("freeze_up_to", {"cut_at": f"{stage}.{layer}"}),
        ("truncated", {"cut_at": stage}),
    ]:
        target = create_architecture(name, in_channels=8, img_size=64, num_outputs=2)
        prepared = create_strategy(strategy, **kwargs).prepare(target, source.state_dict())
        assert prepared(series).shape == (3, 2), strategy
    with pytest.raises(ValueError, match="1 spatial dimensions|1 entries"):
        create_architecture(name, in_channels=8, img_size=(64, 64))


def test_sfcn_matches_the_published_parameter_count() -> None:
    # Peng et al.'s model: convolutions with bias, BatchNorm, and a 1x1 convolution to 40 age bins.
    convs = [(1, 32, 27), (32, 64, 27), (64, 128, 27), (128, 256, 27), (256, 256, 27), (256, 64, 1)]
    expected = sum(i * o * k + o + 2 * o for i, o, k in convs) + 64 * 40 + 40
    with torch.device("meta"):
        model = create_architecture("sfcn", num_outputs=40)
    assert sum(p.numel() for p in model.parameters()) == expected == 2_952_936


@pytest.mark.parametrize(
    ("name", "monai_builder"),
    [
        ("resnet10_3d", monai_nets.resnet10),
        ("resnet18_3d", monai_nets.resnet18),
        ("resnet34_3d", monai_nets.resnet34),
        ("resnet50_3d", monai_nets.resnet50),
    ],
)
def test_monai_resnets_are_monais_resnets(name: str, monai_builder: type[nn.Module]) -> None:
    with torch.device("meta"):
        model = create_architecture(name)
        reference = monai_builder(
            spatial_dims=3, n_input_channels=1, conv1_t_stride=2, feed_forward=False
        )
    shapes = {k: v.shape for k, v in model.encoder.state_dict().items()}
    assert shapes == {k: v.shape for k, v in reference.state_dict().items()}


@pytest.mark.parametrize(
    ("name", "channels", "kernel"),
    [
        ("cbr_large_t", [32, 64, 128, 256, 512], 7),
        ("cbr_large_w", [64, 128, 256, 512], 7),
        ("cbr_small", [32, 64, 128, 256], 7),
        ("cbr_tiny", [64, 128, 256, 512], 5),
    ],
)
def test_cbr_networks_have_the_papers_widths_and_kernels(
    name: str, channels: list[int], kernel: int
) -> None:
    with torch.device("meta"):
        model = create_architecture(name)
    convs = [model.encoder.get_submodule(f"{stage}.conv") for stage in model.stage_names]
    assert [conv.out_channels for conv in convs] == channels
    assert {conv.kernel_size for conv in convs} == {(kernel, kernel)}


def test_vit_takes_image_and_patch_size() -> None:
    with torch.device("meta"):
        model = create_architecture("vit_tiny", img_size=48, patch_size=16)
    assert model.encoder.patch_embed.num_patches == 9
    assert model.input_size == (48, 48)


def test_unknown_name_lists_the_valid_names() -> None:
    with pytest.raises(UnknownComponentError) as error:
        create_architecture("resnet19")
    message = str(error.value)
    assert "Did you mean 'resnet18'?" in message
    assert all(name in message for name in list_architectures())


def test_unexpected_argument_lists_the_accepted_ones() -> None:
    with pytest.raises(
        TypeError, match="accepts in_channels, num_outputs, dropout, img_size, width_factors"
    ):
        create_architecture("resnet18", depth=3)


def test_wrong_img_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="should have 3 entries"):
        create_architecture("resnet10_3d", img_size=(32, 32))


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("resnet18")(lambda: None)


@pytest.mark.parametrize("name", list_architectures())
def test_without_img_size_the_model_input_is_the_preprocessing_default(name: str) -> None:
    assert DEFAULT_IMG_SIZE == {
        1: (TimeseriesInputConfig().length,),
        2: SliceConfig().size,
        3: VolumeConfig().shape,
    }
    with torch.device("meta"):
        model = create_architecture(name)
    assert model.input_size == DEFAULT_IMG_SIZE[model.spatial_dims]
