"""The segmentation library: decoder shapes and symmetry, strategies on the encoder, loss, Dice and HD95."""

from __future__ import annotations

import lightning
import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.config import TrainConfig
from tlkedro.tl.segmentation import (
    SegmentConfig,
    build_segmenter,
    fit_segmentation,
    mean_interval,
    paired_mean_difference,
    predict_masks,
    segmentation_net,
    subject_metrics,
    subject_scores,
    subject_volumes,
)

CLASSES = ["background", "dark", "bright"]


def toy_data(subjects: int = 8, slices: int = 2, size: int = 32, seed: int = 0):
    """Images of smoothed noise and masks thresholding them (0 below, 1 middle, 2 top third)."""
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.normal(size=(subjects * slices, 1, size // 4, size // 4)))
    images = torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear").numpy()
    low, high = np.quantile(images, [1 / 3, 2 / 3])
    masks = np.digitize(images, [low, high]).astype(np.uint8)
    labels = pd.DataFrame(
        {
            "subject_id": [f"s{i // slices:02d}" for i in range(subjects * slices)],
            "slice": [float(i % slices) for i in range(subjects * slices)],
        }
    )
    return images.astype(np.float32), masks, labels


def config(**overrides) -> SegmentConfig:
    base = {
        "seed": 0,
        "class_names": CLASSES,
        "architecture": {"name": "cbr_tiny"},
        "decoder_channels": 8,
        "optimizer": {"lr": 3e-3},
        "trainer": {
            "max_epochs": 1,
            "batch_size": 8,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "keep_epoch": "last",
        },
    }
    return SegmentConfig.model_validate({**base, **overrides})


@pytest.mark.parametrize(
    ("architecture", "size", "levels"),
    [
        ({"name": "resnet18"}, (32, 32), ("act1", "layer1", "layer2", "layer3", "layer4")),
        ({"name": "resnet10_3d"}, (16, 16, 16), ("act", "layer1", "layer2", "layer4")),
        ({"name": "sfcn"}, (32, 32, 32), ("conv_0", "conv_1", "conv_2", "conv_3", "conv_5")),
    ],
)
def test_decoder_gives_one_logit_per_class_at_input_resolution(architecture, size, levels) -> None:
    net = segmentation_net({**architecture, "in_channels": 1, "img_size": list(size)}, 5)
    assert net.skip_stages == levels
    assert len(net.decoder["blocks"]) == len(levels)
    assert net(torch.zeros(2, 1, *size)).shape == (2, 5, *size)


@pytest.mark.parametrize("name", ["vit_tiny", "swin_tiny"])
def test_transformer_encoders_are_refused_with_the_reason(name: str) -> None:
    with pytest.raises(ValueError, match="U-Net decoder"):
        segmentation_net({"name": name, "in_channels": 1, "img_size": [32, 32]}, 3)


def test_odd_slice_sizes_are_matched_back_to_the_input() -> None:
    net = segmentation_net({"name": "resnet18", "in_channels": 1, "img_size": [45, 54]}, 3)
    assert net(torch.zeros(1, 1, 45, 54)).shape == (1, 3, 45, 54)


def test_truncated_encoder_gets_a_symmetric_shorter_decoder_with_the_source_weights() -> None:
    source_model = create_architecture("resnet18", in_channels=1, img_size=[32, 32])
    source = {"state_dict": source_model.state_dict()}
    full, _ = build_segmenter(
        config(architecture={"name": "resnet18"}, strategy={"name": "full"}), (1, 1, 32, 32), source
    )
    cut, _ = build_segmenter(
        config(
            architecture={"name": "resnet18"},
            strategy={"name": "truncated", "kwargs": {"cut_at": "layer2"}},
        ),
        (1, 1, 32, 32),
        source,
    )
    assert cut.skip_stages == ("act1", "layer1", "layer2")
    assert len(cut.decoder["blocks"]) == len(full.decoder["blocks"]) - 2
    assert cut.config["architecture"]["cut_at"] == "layer2"
    assert not any(name.startswith("encoder.layer3.") for name, _ in cut.named_parameters())
    assert torch.equal(
        cut.encoder.layer2[0].conv1.weight, source_model.encoder.layer2[0].conv1.weight
    )
    assert cut(torch.zeros(1, 1, 32, 32)).shape == (1, len(CLASSES), 32, 32)


def test_linear_probe_trains_the_decoder_only() -> None:
    images, masks, labels = toy_data()
    source_model = create_architecture("cbr_tiny", in_channels=1, img_size=[32, 32])
    source = {"state_dict": {k: v.clone() for k, v in source_model.state_dict().items()}}
    probe = config(strategy={"name": "linear_probe"})
    lightning.seed_everything(
        probe.seed, verbose=False
    )  # as fit_segmentation seeds before building
    start = build_segmenter(probe, images.shape, source)[0].state_dict()
    fitted = fit_segmentation(probe, images, masks, labels, source)
    state = fitted.checkpoint["state_dict"]
    encoder = [k for k in state if k.startswith("encoder.")]
    assert encoder and all(torch.equal(state[k], source["state_dict"][k]) for k in encoder)
    decoder = [k for k in state if k.startswith("decoder.") and k.endswith("weight")]
    assert sum(not torch.equal(start[k], state[k]) for k in decoder) == len(decoder)
    assert fitted.summary["trainable_params"] < fitted.summary["total_params"]


def test_freeze_up_to_keeps_the_layers_below_the_cut() -> None:
    images, masks, labels = toy_data()
    source_model = create_architecture("cbr_tiny", in_channels=1, img_size=[32, 32])
    source = {"state_dict": {k: v.clone() for k, v in source_model.state_dict().items()}}
    strategy = {"name": "freeze_up_to", "kwargs": {"cut_at": "layer3.conv"}}
    state = fit_segmentation(config(strategy=strategy), images, masks, labels, source).checkpoint[
        "state_dict"
    ]
    below = [
        k
        for k in state
        if k.startswith(("encoder.layer1.", "encoder.layer2.")) and "running" not in k
    ]
    above = [k for k in state if k.startswith("encoder.layer4.") and k.endswith("weight")]
    assert below and all(torch.equal(state[k], source["state_dict"][k]) for k in below)
    assert any(not torch.equal(state[k], source["state_dict"][k]) for k in above)


def test_training_lowers_the_loss_and_predicts_label_maps() -> None:
    images, masks, labels = toy_data(subjects=10)
    trainer = {"max_epochs": 6, "batch_size": 4, "accelerator": "cpu", "enable_progress_bar": False}
    fitted = fit_segmentation(
        config(trainer={**trainer, "keep_epoch": "last"}), images, masks, labels
    )
    losses = fitted.history["train/loss"].to_numpy()
    assert losses[-1] < 0.8 * losses[0]
    predicted = predict_masks(fitted.checkpoint, images)
    assert predicted.shape == masks.shape and predicted.dtype == np.uint8
    assert set(np.unique(predicted)) <= {0, 1, 2}
    assert fitted.checkpoint["meta"]["class_names"] == CLASSES


def test_segmentation_config_refuses_a_classification_objective_and_odd_masks() -> None:
    with pytest.raises(ValidationError, match="not segmentation; use dice_ce"):
        config(objective={"name": "cross_entropy"})
    images, masks, labels = toy_data(subjects=4)
    with pytest.raises(ValueError, match="masks hold label 2, but class_names has 2"):
        fit_segmentation(config(class_names=["background", "x"]), images, masks, labels)


def test_dice_is_one_for_a_perfect_prediction_and_zero_for_a_disjoint_one() -> None:
    truth = np.zeros((2, 16, 16), dtype=np.uint8)
    truth[:, 2:6, 2:6] = 1
    truth[:, 10:14, 10:14] = 2
    perfect = subject_scores(truth, truth, CLASSES)
    assert perfect["dice_dark"] == perfect["dice_bright"] == perfect["dice_mean"] == 1.0
    assert perfect["hd95"] == 0.0
    swapped = np.where(truth == 1, 2, np.where(truth == 2, 1, 0)).astype(np.uint8)
    disjoint = subject_scores(swapped, truth, CLASSES)
    assert disjoint["dice_dark"] == disjoint["dice_bright"] == disjoint["dice_mean"] == 0.0


def test_hd95_of_a_shifted_mask_is_the_shift() -> None:
    truth = np.zeros((8, 32, 32), dtype=np.uint8)
    truth[2:6, 8:20, 8:20] = 1
    shifted = np.roll(truth, 3, axis=2)
    scores = subject_scores(shifted, truth, ["background", "object"])
    assert scores["hd95"] == pytest.approx(3.0)


def test_a_class_absent_from_both_maps_is_undefined_and_a_false_positive_class_scores_zero() -> (
    None
):
    truth = np.zeros((4, 8, 8), dtype=np.uint8)
    truth[:, :4] = 1
    scores = subject_scores(truth, truth, CLASSES)
    assert np.isnan(scores["dice_bright"]) and scores["dice_mean"] == 1.0
    predicted = truth.copy()
    predicted[:, 6:] = 2  # a class the truth does not have: a false positive, Dice 0
    scores = subject_scores(predicted, truth, CLASSES)
    assert scores["dice_bright"] == 0.0 and scores["dice_mean"] == pytest.approx(0.5)
    assert scores["hd95"] == 0.0  # the bright class has no HD95 without a true region: left out


def test_slices_are_stacked_per_subject_in_slice_order() -> None:
    maps = np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1) * np.ones((4, 1, 2, 2), np.uint8)
    labels = pd.DataFrame({"subject_id": ["b", "a", "b", "a"], "slice": [1.0, 5.0, 0.0, 2.0]})
    volumes = subject_volumes(maps, labels)
    assert list(volumes) == ["a", "b"]
    assert volumes["a"][:, 0, 0].tolist() == [3, 1] and volumes["b"][:, 0, 0].tolist() == [2, 0]
    table = subject_metrics(maps, maps, labels, ["background", "one", "two", "three"])
    assert table["subject_id"].tolist() == ["a", "b"] and (table["dice_mean"] == 1.0).all()


def test_intervals_hold_the_mean_and_a_paired_difference_of_equal_tables_is_zero() -> None:
    rng = np.random.default_rng(0)
    a = pd.DataFrame(
        {"subject_id": [f"s{i}" for i in range(30)], "dice_mean": rng.uniform(0.6, 0.9, 30)}
    )
    interval = mean_interval(a["dice_mean"], "dice_mean")
    assert interval.low < a["dice_mean"].mean() < interval.high and interval.n == 30
    b = a.assign(dice_mean=a["dice_mean"] - 0.1 + rng.normal(0, 0.01, 30))
    difference = paired_mean_difference(a, b, "dice_mean")
    assert difference.excludes_zero and difference.low < 0.1 < difference.high
    same = paired_mean_difference(a, a, "dice_mean")
    assert same.estimate == 0.0 and not same.excludes_zero


def test_classification_training_refuses_the_segmentation_objective() -> None:
    with pytest.raises(
        ValidationError, match="'dice_ce' is for segmentation, but task is 'regression'"
    ):
        TrainConfig.model_validate(
            {
                "target": "age",
                "task": "regression",
                "architecture": {"name": "cbr_tiny"},
                "objective": {"name": "dice_ce"},
            }
        )
