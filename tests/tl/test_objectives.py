"""Each objective's loss and predictions on inputs with known answers; the auxiliary-term seam."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tlkedro.tl.objectives import Objective, TaskInfo, create_objective, list_objectives
from tlkedro.tl.registry import UnknownComponentError

AGES = TaskInfo(
    task="regression", target_mean=60.0, target_std=10.0, target_min=44.0, target_max=80.0
)
SEX = TaskInfo(task="classification", num_classes=2)


def test_registry_lists_the_objectives_and_explains_unknown_names() -> None:
    assert list_objectives() == [
        "cross_entropy",
        "dice_ce",
        "l1",
        "masked_autoencoder",
        "mse",
        "simclr",
        "soft_label_kl",
    ]
    with pytest.raises(UnknownComponentError, match="Did you mean 'soft_label_kl'"):
        create_objective("soft_label")
    with pytest.raises(TypeError, match="It takes: bin_range, bin_width, sigma"):
        create_objective("soft_label_kl", bins=40)


def test_task_info_measures_classes_on_all_rows_and_statistics_on_training_rows() -> None:
    info = TaskInfo.from_targets("classification", np.array([0, 1, 0]), np.array([0, 1, 2, 0]))
    assert info.num_classes == 3
    info = TaskInfo.from_targets("regression", np.array([50.0, 70.0]), np.array([50.0, 70.0, 99.0]))
    assert (info.target_mean, info.target_std, info.target_min, info.target_max) == (
        60.0,
        10.0,
        50.0,
        70.0,
    )
    assert (
        TaskInfo.from_targets("regression", np.array([5.0, 5.0]), np.array([5.0])).target_std == 1.0
    )
    assert TaskInfo.from_dict({**info.as_dict(), "seed": 1}) == info


def test_cross_entropy_loss_and_predictions() -> None:
    objective = create_objective("cross_entropy")
    outputs = torch.tensor([[0.0, math.log(3.0)], [2.0, 0.0]])
    targets = torch.tensor([1, 1])
    assert objective.num_outputs(SEX) == 2
    # Class 1 has probability 3/4 in the first row and 1/(1+e^2) in the second.
    expected = -(math.log(0.75) + math.log(1 / (1 + math.e**2))) / 2
    assert objective.loss(outputs, targets, SEX).item() == pytest.approx(expected, rel=1e-6)
    prediction = objective.predict(outputs, SEX)
    assert prediction.values.tolist() == [1, 0]
    assert prediction.probabilities[0].tolist() == pytest.approx([0.25, 0.75])


def test_label_smoothing_is_validated() -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        create_objective("cross_entropy", label_smoothing=1.0)


@pytest.mark.parametrize(("name", "expected"), [("mse", (1.0 + 4.0) / 2), ("l1", (1.0 + 2.0) / 2)])
def test_regression_losses_are_on_the_standardised_target(name: str, expected: float) -> None:
    objective = create_objective(name)
    outputs = torch.zeros(2, 1)
    targets = torch.tensor([70.0, 40.0])  # 1 and -2 standard deviations from the mean
    assert objective.num_outputs(AGES) == 1
    assert objective.loss(outputs, targets, AGES).item() == pytest.approx(expected)
    assert objective.loss(torch.tensor([[1.0], [-2.0]]), targets, AGES).item() == pytest.approx(0.0)


def test_regression_predictions_are_back_in_years() -> None:
    prediction = create_objective("mse").predict(torch.tensor([[0.0], [1.5]]), AGES)
    assert prediction.values.tolist() == pytest.approx([60.0, 75.0])
    assert prediction.probabilities is None


def test_soft_label_bins_cover_the_cohort_with_a_two_sigma_margin() -> None:
    objective = create_objective("soft_label_kl")
    edges = objective.primary.edges(AGES)
    assert objective.num_outputs(AGES) == 40
    assert (edges[0].item(), edges[-1].item()) == (42.0, 82.0)
    explicit = create_objective("soft_label_kl", bin_range=[40, 90], bin_width=2.0)
    assert explicit.num_outputs(AGES) == 25


def test_soft_labels_sum_to_one_and_peak_at_the_true_bin() -> None:
    term = create_objective("soft_label_kl").primary
    soft = term.soft_labels(torch.tensor([60.3, 44.5, 95.0]), AGES)
    assert soft.sum(dim=1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert soft.argmax(dim=1).tolist() == [
        18,
        2,
        39,
    ]  # bins [60, 61), [44, 45) and the last (clamped)
    # Mass of N(60.3, 1) in [60, 61): Phi(0.7) - Phi(-0.3) (nearly all of it lies in [42, 82)).
    assert soft[0, 18].item() == pytest.approx(0.7580 - 0.3821, abs=1e-4)


def test_soft_label_kl_is_zero_at_the_soft_label_and_predicts_its_mean() -> None:
    objective = create_objective("soft_label_kl")
    targets = torch.tensor(
        [55.5, 70.5]
    )  # bin centres, so the soft labels are symmetric around them
    # Clamped: far from the target, bins get no mass at all, and a -inf output is no network's output.
    log_soft = objective.primary.soft_labels(targets, AGES).clamp_min(1e-30).log()
    assert objective.loss(log_soft, targets, AGES).item() == pytest.approx(0.0, abs=1e-6)
    assert objective.loss(torch.zeros(2, 40), targets, AGES).item() > 1.0
    assert objective.predict(log_soft, AGES).values.tolist() == pytest.approx(
        [55.5, 70.5], abs=1e-4
    )


@pytest.mark.parametrize("kwargs", [{"sigma": 0.0}, {"bin_width": -1.0}, {"bin_range": [50, 50.5]}])
def test_soft_label_kwargs_are_validated(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        create_objective("soft_label_kl", **kwargs)


class MeanOutput:
    """An auxiliary term for the test: the mean output, whatever the model."""

    name = "mean_output"

    def __call__(
        self, model: nn.Module, inputs: Tensor, outputs: Tensor, targets: Tensor
    ) -> Tensor:
        return outputs.mean()


def test_auxiliary_terms_are_weighted_and_named() -> None:
    primary = create_objective("mse").primary
    objective = Objective(primary, auxiliary=[(0.5, MeanOutput())])
    outputs = torch.full((2, 1), 4.0)
    targets = torch.tensor([60.0, 60.0])
    terms = objective.terms(nn.Identity(), outputs, outputs, targets, AGES)
    assert terms["primary"].item() == pytest.approx(16.0)
    assert terms["mean_output"].item() == pytest.approx(2.0)
    assert objective.loss(outputs, targets, AGES).item() == pytest.approx(16.0)


def test_auxiliary_term_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Objective(
            create_objective("mse").primary, auxiliary=[(1.0, MeanOutput()), (2.0, MeanOutput())]
        )
