"""Weights files in published layouts: every key lands where it should, and a wrong file fails clearly.

Each test writes a small random checkpoint in one format (a timm, torchvision, MONAI or MedicalNet
network's own state dict, a Lightning checkpoint) and loads it into a tlkedro model on 32-pixel inputs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import torchvision
from monai.networks.nets import ResNet
from torch import Tensor

from tlkedro.errors import MissingFileError
from tlkedro.tl.architectures import TLModel, create_architecture
from tlkedro.tl.checkpoint import make_checkpoint
from tlkedro.tl.registry import UnknownComponentError
from tlkedro.tl.strategies import create_strategy
from tlkedro.tl.weights import (
    WeightsFileError,
    WeightsMismatchError,
    list_source_formats,
    load_source_weights,
)

pytestmark = pytest.mark.usefixtures("single_thread")

IMG = 32


def randomised(state: dict[str, Tensor], seed: int = 0) -> dict[str, Tensor]:
    """The state with every float tensor replaced by random values: no key can match by its default."""
    generator = torch.Generator().manual_seed(seed)
    return {
        key: torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
        for key, value in state.items()
    }


def assert_lands(checkpoint: dict, expected: dict[str, Tensor], model: TLModel) -> None:
    """Every encoder key is in the source state, with the file's value where ``expected`` has one."""
    assert checkpoint["state_dict"].keys() == {f"encoder.{k}" for k in model.encoder.state_dict()}
    for key, value in expected.items():
        assert torch.equal(checkpoint["state_dict"][key], value), key


def test_timm_weights_load_through_timm_with_the_stem_summed_to_one_channel(
    tmp_path: Path,
) -> None:
    source = timm.create_model("resnet18", pretrained=False, in_chans=3, num_classes=1000)
    state = randomised(source.state_dict())
    path = tmp_path / "resnet18.safetensors"
    safetensors.torch.save_file(state, str(path))
    model = create_architecture("resnet18", img_size=IMG, num_outputs=2)

    checkpoint, report = load_source_weights(model, path, "timm")

    encoder_keys = {f"encoder.{k}" for k in model.encoder.state_dict()}
    expected = {
        f"encoder.{k}": v
        for k, v in state.items()
        if f"encoder.{k}" in encoder_keys and k != "conv1.weight"
    }
    expected["encoder.conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    assert_lands(checkpoint, expected, model)
    assert report.matched == sorted(encoder_keys) and report.missing == []
    assert report.matched_fraction == 1.0
    assert report.dropped == ["fc.bias", "fc.weight"] and report.unexpected == []
    assert report.adapted == [
        "encoder.conv1.weight: 3 -> 1 input channels, summed over the file's channels "
        "(timm adapt_input_conv)"
    ]
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert checkpoint["meta"]["source_weights"] == report.as_dict()
    assert checkpoint["config"] == model.config


def test_torchvision_resnet_weights_land_in_the_timm_resnet(tmp_path: Path) -> None:
    state = randomised(torchvision.models.resnet18(weights=None).state_dict(), seed=1)
    path = tmp_path / "resnet18-torchvision.pth"
    torch.save(state, path)
    model = create_architecture("resnet18", img_size=IMG, in_channels=3)

    checkpoint, report = load_source_weights(model, path, "torchvision")

    expected = {f"encoder.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    assert expected.keys() == checkpoint["state_dict"].keys()
    assert_lands(checkpoint, expected, model)
    assert report.adapted == [] and report.dropped == ["fc.bias", "fc.weight"]


def test_timm_resamples_a_vit_to_the_model_patch_and_image_size(tmp_path: Path) -> None:
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    path = tmp_path / "vit.pth"
    torch.save({"state_dict": randomised(source.state_dict(), seed=2)}, path)
    model = create_architecture("vit_tiny", img_size=IMG, patch_size=8)

    _, report = load_source_weights(model, path, "timm")

    assert report.missing == [] and report.dropped == ["head.bias", "head.weight"]
    assert report.adapted == [
        "encoder.patch_embed.proj.weight: (192, 3, 16, 16) -> (192, 1, 8, 8), resampled by timm's "
        "checkpoint filter",
        "encoder.pos_embed: (1, 197, 192) -> (1, 17, 192), resampled by timm's checkpoint filter",
    ]


def _medicalnet_state(model: TLModel) -> dict[str, Tensor]:
    """A MedicalNet checkpoint's state dict for ``model``'s encoder: ``module.`` keys, a conv_seg head."""
    state = {f"module.{k}": v for k, v in randomised(model.encoder.state_dict(), seed=3).items()}
    state["module.conv_seg.0.weight"] = torch.randn(32, 512, 3, 3, 3)
    state["module.conv_seg.1.weight"] = torch.randn(32)
    return state


def test_medicalnet_weights_land_in_the_monai_resnet_and_the_segmentation_head_is_dropped(
    tmp_path: Path,
) -> None:
    kwargs = {"img_size": IMG, "shortcut_type": "B", "bias_downsample": False}
    model = create_architecture("resnet10_3d", **kwargs)
    state = _medicalnet_state(model)
    path = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": state}, path)

    checkpoint, report = load_source_weights(model, path, "medicalnet")

    expected = {
        k.replace("module.", "encoder.", 1): v for k, v in state.items() if "conv_seg" not in k
    }
    assert_lands(checkpoint, expected, model)
    assert report.missing == [] and report.unexpected == []
    assert report.dropped == ["module.conv_seg.0.weight", "module.conv_seg.1.weight"]

    # Built with MONAI's default shortcut instead, the downsample biases are not in the file: reported,
    # kept at their initialisation, and the load passes (they are a few hundred of 14 million).
    default = create_architecture("resnet10_3d", img_size=IMG)
    checkpoint, report = load_source_weights(default, path, "medicalnet")
    assert report.missing == [f"encoder.layer{i}.0.downsample.0.bias" for i in (2, 3, 4)]
    assert 0.9999 < report.matched_fraction < 1
    assert torch.equal(
        checkpoint["state_dict"]["encoder.layer2.0.downsample.0.bias"],
        default.encoder.layer2[0].downsample[0].bias,
    )


def test_monai_weights_with_a_three_channel_stem_and_a_classifier(tmp_path: Path) -> None:
    monai_net = ResNet(
        "basic", [1, 1, 1, 1], [64, 128, 256, 512], spatial_dims=3, n_input_channels=3,
        conv1_t_stride=2, num_classes=4,
    )  # fmt: skip
    state = randomised(monai_net.state_dict(), seed=4)
    path = tmp_path / "monai_resnet10.pt"
    torch.save(state, path)
    model = create_architecture("resnet10_3d", img_size=IMG)

    checkpoint, report = load_source_weights(model, path, "monai")

    expected = {f"encoder.{k}": v for k, v in state.items() if not k.startswith(("fc.", "conv1."))}
    expected["encoder.conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    assert_lands(checkpoint, expected, model)
    assert report.dropped == ["fc.bias", "fc.weight"] and report.missing == []
    assert report.adapted == [
        "encoder.conv1.weight: 3 -> 1 input channels, summed over the file's channels "
        "(timm adapt_input_conv)"
    ]


@pytest.mark.parametrize("prefix", ["model.", "backbone."])
def test_lightning_checkpoints_with_a_model_or_backbone_prefix(tmp_path: Path, prefix: str) -> None:
    model = create_architecture("cbr_small", img_size=IMG)
    source = randomised(model.state_dict(), seed=5)
    if prefix == "backbone.":  # a bare network as the module's backbone: its keys have no encoder.
        source = {k.removeprefix("encoder."): v for k, v in source.items()}
    path = tmp_path / "last.ckpt"
    ckpt = {f"{prefix}{k}": v for k, v in source.items()}
    ckpt["criterion.weight"] = torch.ones(2)
    lightning = {
        "state_dict": ckpt,
        "epoch": 3,
        "global_step": 30,
        "pytorch-lightning_version": "2.6",
    }
    torch.save(lightning, path)

    checkpoint, report = load_source_weights(model, path, "lightning")

    expected = {
        (k if prefix == "model." else f"encoder.{k}"): v
        for k, v in source.items()
        if not k.startswith("head.")
    }
    assert_lands(checkpoint, expected, model)
    assert report.unexpected == ["criterion.weight"]
    assert report.dropped == [f"{prefix}head.bias", f"{prefix}head.weight"]


def test_a_loaded_source_is_consumed_by_the_strategies_like_a_tlkedro_source(
    tmp_path: Path,
) -> None:
    source = create_architecture("cbr_small", img_size=IMG, num_outputs=5)
    source.load_state_dict(randomised(source.state_dict(), seed=6))
    path = tmp_path / "source.pt"
    torch.save(make_checkpoint(source, {"task": "classification"}), path)
    template = create_architecture("cbr_small", img_size=IMG, num_outputs=2)

    checkpoint, _ = load_source_weights(template, path, "tlkedro")
    model = create_strategy("linear_probe").prepare(
        create_architecture("cbr_small", img_size=IMG, num_outputs=2), checkpoint["state_dict"]
    )

    assert all(
        torch.equal(value, source.state_dict()[key])
        for key, value in model.state_dict().items()
        if key.startswith("encoder.")
    )
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_a_versioned_model_folder_reads_its_latest_version(tmp_path: Path) -> None:
    # What the catalog's versioned `pretrain.default.model` leaves: model.pt/<version>/model.pt
    folder = tmp_path / "model.pt"
    sources = {}
    for seed, version in enumerate(["2026-12-03T09.05.11.120Z", "2026-12-03T17.56.45.422Z"]):
        sources[version] = create_architecture("cbr_small", img_size=IMG)
        sources[version].load_state_dict(randomised(sources[version].state_dict(), seed=seed))
        (folder / version).mkdir(parents=True)
        torch.save(make_checkpoint(sources[version], {}), folder / version / "model.pt")
    (folder / "notes").mkdir()  # not a version: ignored
    template = create_architecture("cbr_small", img_size=IMG)

    checkpoint, report = load_source_weights(template, folder, "tlkedro")

    latest = folder / "2026-12-03T17.56.45.422Z" / "model.pt"
    assert report.file == str(latest)
    assert report.sha256 == hashlib.sha256(latest.read_bytes()).hexdigest()
    weight = "encoder.layer1.conv.weight"
    assert torch.equal(
        checkpoint["state_dict"][weight],
        sources["2026-12-03T17.56.45.422Z"].state_dict()[weight],
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        MissingFileError, match=r"empty' is a folder .*not a versioned Kedro dataset"
    ):
        load_source_weights(template, tmp_path / "empty", "tlkedro")


def test_weights_of_another_network_fail_with_the_report_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "resnet18-2d.pth"
    torch.save(create_architecture("resnet18", img_size=IMG).encoder.state_dict(), path)
    model = create_architecture("resnet10_3d", img_size=IMG)

    with pytest.raises(WeightsMismatchError) as error:
        load_source_weights(model, path, "monai")

    message = str(error.value)
    assert str(path) in message and "as format 'monai'" in message
    assert "0.0% of its parameters matched, 90% needed" in message
    assert "encoder.conv1.weight: file (64, 1, 7, 7), model (64, 1, 7, 7, 7)" in message
    assert error.value.report.missing and error.value.report.shape_mismatches


def test_a_half_matching_file_fails_unless_min_match_allows_it(tmp_path: Path) -> None:
    model = create_architecture("resnet18", img_size=IMG)
    state = model.encoder.state_dict()
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, path)

    with pytest.raises(
        WeightsMismatchError, match=r"(?s)matched, 90% needed.*missing: encoder\.layer4"
    ):
        load_source_weights(model, path, "torchvision")
    _, report = load_source_weights(model, path, "torchvision", min_match=0.1)
    assert all(key.startswith("encoder.layer4.") for key in report.missing)
    assert 0.1 < report.matched_fraction < 0.5  # layer4 holds most of a resnet18's parameters


def test_files_that_are_not_weights_fail_naming_the_file_and_the_reason(tmp_path: Path) -> None:
    model = create_architecture("cbr_small", img_size=IMG)
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(WeightsFileError, match=rf"{text}.*is not a PyTorch or safetensors file"):
        load_source_weights(model, text, "tlkedro")

    pickled = tmp_path / "object.pth"
    torch.save({"state_dict": model.state_dict(), "hparams": Path("/tmp")}, pickled)
    with pytest.raises(
        WeightsFileError,
        match=rf"{pickled}.*would run code from the file \(Unsupported global: GLOBAL pathlib",
    ):
        load_source_weights(model, pickled, "lightning")

    listed = tmp_path / "list.pth"
    torch.save([1, 2], listed)
    with pytest.raises(WeightsFileError, match=rf"{listed}.*holds a list, not a state dict"):
        load_source_weights(model, listed, "tlkedro")

    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_source_weights(model, tmp_path / "missing.pth", "tlkedro")


def test_formats_are_checked_against_the_architecture_and_by_name() -> None:
    model = create_architecture("resnet18", img_size=IMG)
    with pytest.raises(ValueError, match=r"'medicalnet'.*does not fit.*'resnet18'.*timm, tlkedro"):
        load_source_weights(model, "w.pth", "medicalnet")
    with pytest.raises(UnknownComponentError, match="Did you mean 'medicalnet'"):
        load_source_weights(model, "w.pth", "medicalnt")
    assert list_source_formats() == [
        "lightning", "medicalnet", "monai", "timm", "tlkedro", "torchvision",
    ]  # fmt: skip
