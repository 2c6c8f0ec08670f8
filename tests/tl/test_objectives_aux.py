"""Auxiliary terms: multitask masking, gradient reversal and its schedule, reconstruction, consistency,
the batch extras that feed them, and a tiny ``fit`` that trains a multitask, domain-adversarial model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.config import ObjectiveConfig, TrainConfig
from tlkedro.tl.data import ArrayDataset
from tlkedro.tl.objectives import UNLABELLED, build_objective, create_auxiliary_term
from tlkedro.tl.objectives.domain_adversarial import dann_coefficient, reverse_gradient
from tlkedro.tl.training import fit

IMG = 32


pytestmark = pytest.mark.usefixtures("single_thread")


def model() -> nn.Module:
    torch.manual_seed(0)
    return create_architecture("cbr_small", num_outputs=2, img_size=IMG)


def attached(
    name: str, labels: dict | None = None, **kwargs: object
) -> tuple[nn.Module, nn.Module]:
    term, network = create_auxiliary_term(name, **kwargs), model()
    term.attach(network, labels or {})
    return term, network


def test_multitask_term_with_every_label_missing_adds_zero_loss_and_zero_gradients() -> None:
    term, network = attached(
        "task", {"age": np.array([50.0, 60.0, 70.0])}, target="age", task="regression"
    )
    images = torch.randn(4, 1, IMG, IMG)
    loss = term(
        network, images, network(images), torch.zeros(4), age=torch.full((4,), float("nan"))
    )
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in term.parameters())
    assert all(p.grad is None or not p.grad.any() for p in network.encoder.parameters())


def test_multitask_term_counts_only_the_rows_that_have_the_label() -> None:
    term, network = attached(
        "task", {"sex": np.array([0.0, 1.0, np.nan])}, target="sex", task="classification"
    )
    assert term.name == "task_sex" and term.head.out_features == 2
    network.eval()  # the same features in both passes
    images = torch.randn(4, 1, IMG, IMG)
    labels = torch.tensor([1.0, float("nan"), 0.0, float("nan")])
    loss = term(network, images, network(images), torch.zeros(4), sex=labels)
    logits = term.head(network.forward_features(images[[0, 2]]))
    assert loss.item() == pytest.approx(
        nn.functional.cross_entropy(logits, torch.tensor([1, 0])).item(), rel=1e-5
    )


def test_multitask_term_standardises_a_regression_label_with_the_training_rows_that_have_it() -> (
    None
):
    term, _ = attached(
        "task", {"age": np.array([50.0, np.nan, 70.0])}, target="age", task="regression"
    )
    assert (term.info.target_mean, term.info.target_std) == (60.0, 10.0)
    with pytest.raises(ValueError, match="no training row has a 'age' label"):
        create_auxiliary_term("task", target="age", task="regression").attach(
            model(), {"age": np.full(3, np.nan)}
        )


def test_gradient_reversal_is_the_identity_forward_and_flips_and_scales_the_gradient() -> None:
    features = torch.randn(5, 3, requires_grad=True)
    weights = torch.randn(5, 3)
    reversed_ = reverse_gradient(features, 0.25)
    assert torch.equal(reversed_, features)
    (reversed_ * weights).sum().backward()
    assert torch.allclose(features.grad, -0.25 * weights)


def test_dann_schedule_ramps_from_zero_towards_one() -> None:
    values = [dann_coefficient(p) for p in np.linspace(0, 1, 11)]
    assert values[0] == 0.0
    assert values[-1] == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    constant = create_auxiliary_term("domain_adversarial", schedule="constant")
    assert constant.coefficient(0.0) == constant.coefficient(0.7) == 1.0


def test_domain_adversarial_term_trains_its_classifier_and_reverses_the_encoder_gradient() -> None:
    term, network = attached("domain_adversarial", schedule="constant")
    network.eval()
    labelled, unlabelled = torch.randn(3, 1, IMG, IMG), torch.randn(3, 1, IMG, IMG) + 1.0
    loss = term(
        network, labelled, network(labelled), torch.zeros(3), unlabelled=unlabelled, progress=0.5
    )
    loss.backward()
    adversarial = {n: p.grad.clone() for n, p in network.encoder.named_parameters()}
    network.zero_grad()
    # Without the reversal the encoder would receive exactly the opposite gradient.
    features = network.forward_features(torch.cat([labelled, unlabelled]))
    domains = torch.cat([torch.zeros(3), torch.ones(3)])
    nn.functional.binary_cross_entropy_with_logits(
        term.classifier(features).squeeze(1), domains
    ).backward()
    for name, param in network.encoder.named_parameters():
        assert torch.allclose(adversarial[name], -param.grad, atol=1e-6), name
    assert all(p.grad is not None and p.grad.any() for p in term.classifier.parameters())


def test_reconstruction_decodes_features_to_the_pooled_images() -> None:
    term, network = attached("reconstruction", size=4, hidden=16)
    images, unlabelled = torch.randn(2, 1, IMG, IMG), torch.randn(3, 1, IMG, IMG)
    loss = term(network, images, network(images), torch.zeros(2), unlabelled=unlabelled)
    both = torch.cat([images, unlabelled])
    decoded = term.decoder(network.forward_features(both)).view(5, 1, 4, 4)
    expected = nn.functional.mse_loss(decoded, nn.functional.adaptive_avg_pool2d(both, 4))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert create_auxiliary_term("reconstruction", unlabelled=False).needs == ()


def test_consistency_is_zero_for_a_model_that_ignores_its_input_and_positive_otherwise() -> None:
    term = create_auxiliary_term("consistency", noise_std=0.5)
    network = model().eval()
    images = torch.randn(3, 1, IMG, IMG)
    assert term(network, images, network(images), torch.zeros(3), unlabelled=images).item() > 0
    constant = nn.Sequential(nn.Flatten(), nn.Linear(IMG * IMG, 2))
    nn.init.zeros_(constant[1].weight)
    assert term(constant, images, constant(images), torch.zeros(3), unlabelled=images).item() == 0.0


def test_training_items_carry_other_labels_and_an_unlabelled_image_drawn_per_seed_epoch_and_row() -> (
    None
):
    images = np.zeros((4, 1, 8, 8), dtype=np.float16)
    unlabelled = np.arange(10, dtype=np.float32)[:, None, None, None] * np.ones(
        (10, 1, 8, 8), np.float32
    )
    ages = np.array([50.0, np.nan, 60.0, 70.0], dtype=np.float32)
    dataset = ArrayDataset(
        images, np.zeros(4, np.int64), seed=3, extras={"age": ages}, unlabelled=unlabelled
    )
    image, target, extras = dataset[1]
    assert image.shape == extras[UNLABELLED].shape == (1, 8, 8)
    assert torch.isnan(extras["age"])
    drawn = [[int(dataset[row][2][UNLABELLED][0, 0, 0]) for row in range(4)] for _ in range(2)]
    assert drawn[0] == drawn[1]  # the same epoch draws the same images
    dataset.set_epoch(1)
    assert [int(dataset[row][2][UNLABELLED][0, 0, 0]) for row in range(4)] != drawn[0]
    with pytest.raises(ValueError, match="shaped like the labelled ones"):
        ArrayDataset(images, np.zeros(4), unlabelled=np.zeros((2, 1, 4, 4)))


def test_auxiliary_terms_are_validated_by_name_weight_and_kwargs() -> None:
    with pytest.raises(ValidationError, match=r"auxiliary\.0\n.*Did you mean 'task'"):
        ObjectiveConfig(name="cross_entropy", auxiliary=[{"name": "tsk"}])
    with pytest.raises(ValidationError, match=r"auxiliary\.0\.weight"):
        ObjectiveConfig(name="cross_entropy", auxiliary=[{"name": "consistency", "weight": 0}])
    with pytest.raises(ValidationError, match="must be unique"):
        ObjectiveConfig(
            name="cross_entropy", auxiliary=[{"name": "consistency"}, {"name": "consistency"}]
        )
    objective = build_objective(
        "cross_entropy", {}, [{"name": "domain_adversarial", "weight": 0.3}]
    )
    assert objective.needs() == {"unlabelled", "progress"}


@pytest.fixture(scope="module")
def cohort() -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    subjects = 16
    labels = pd.DataFrame(
        {
            "subject_id": [f"sub-{i:02d}" for i in range(subjects)],
            "sex": np.arange(subjects) % 2,
            "age": np.where(np.arange(subjects) % 4 == 0, np.nan, rng.uniform(45, 80, subjects)),
        }
    )
    images = (
        rng.normal(size=(subjects, 1, IMG, IMG)) + labels["sex"].to_numpy()[:, None, None, None]
    )
    external = rng.normal(loc=0.5, size=(6, 1, IMG, IMG))
    return images.astype(np.float16), labels, external.astype(np.float16)


def multitask_config(**objective: object) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "target": "sex",
            "task": "classification",
            "architecture": {"name": "cbr_small"},
            "objective": {"name": "cross_entropy", **objective},
            "trainer": {
                "max_epochs": 1,
                "batch_size": 4,
                "accelerator": "cpu",
                "enable_progress_bar": False,
            },
        }
    )


def test_fit_trains_a_multitask_domain_adversarial_model_on_labelled_and_unlabelled_images(
    cohort,
) -> None:
    images, labels, external = cohort
    config = multitask_config(
        auxiliary=[
            {"name": "task", "weight": 0.5, "kwargs": {"target": "age", "task": "regression"}},
            {"name": "domain_adversarial", "weight": 0.1},
        ]
    )
    result = fit(config, images, labels, unlabelled=external)
    row = result.history.iloc[0]
    assert {
        "train/loss_primary",
        "train/loss_task_age",
        "train/loss_domain_adversarial",
        "lr/auxiliary",
    } <= set(row.index)
    assert row["train/loss"] == pytest.approx(
        row["train/loss_primary"]
        + row["train/loss_task_age"]
        + row["train/loss_domain_adversarial"],
        rel=1e-4,
    )
    # The saved model is the network alone: the auxiliary heads are training-time layers.
    assert not any(name.startswith("auxiliary") for name in result.checkpoint["state_dict"])
    with pytest.raises(ValueError, match="need unlabelled images"):
        fit(config, images, labels)
