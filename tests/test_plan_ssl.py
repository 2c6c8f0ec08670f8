"""The plan's checks of self-supervised pretrain variants: each bad setting is named by its key."""

from __future__ import annotations

import pytest

from tlkedro.plan import PlanError, build_plan

PRETRAIN = {
    "target": "age",
    "task": "regression",
    "architecture": {"name": "cbr_tiny", "kwargs": {"img_size": 32}},
    "objective": {"name": "mse"},
    "evaluate_on": ["test"],
}
SIMCLR = {"objective": {"name": "simclr"}, "evaluate_on": []}


def _plan(simclr: dict, **parameters: object):
    return build_plan(
        {
            "pretrain": {**PRETRAIN, "variants": {"default": {}, "simclr": simclr}},
            "finetune": {
                **PRETRAIN,
                "target": "sex",
                "task": "classification",
                "objective": {"name": "cross_entropy"},
                "init_from": "pretrain.simclr",
                "variants": {"full": {}},
            },
            **parameters,
        }
    )


def test_a_self_supervised_variant_is_a_source_like_any_other() -> None:
    plan = _plan({**SIMCLR, "unlabelled_from": "external"})
    simclr = plan.variants["pretrain.simclr"]
    assert not simclr.config.objective.build().needs_labels
    assert simclr.config.unlabelled_from == "external"
    assert plan.variants["finetune.full"].source == "pretrain.simclr"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        # the base evaluates on test; a model with no target cannot be
        ({"objective": {"name": "simclr"}}, r"pretrain\.evaluate_on: .*learns no target"),
        (
            {**SIMCLR, "data": {"augmentation": [{"name": "RandFlip"}]}},
            r"pretrain\.data: .*augmentation must be \[\]",
        ),
        (
            {**SIMCLR, "objective": {"name": "simclr", "kwargs": {"temperature": -1}}},
            r"pretrain\.objective: .*temperature must be a positive number",
        ),
        (
            {**SIMCLR, "objective": {"name": "masked_autoencoder", "kwargs": {"holes": 0}}},
            r"pretrain\.objective: .*holes must be >= 1",
        ),
        (
            {**SIMCLR, "objective": {"name": "simclr", "kwargs": {"views": 3}}},
            r"pretrain\.objective: .*views",
        ),
    ],
)
def test_a_bad_self_supervised_setting_is_named_by_its_key(overrides: dict, named: str) -> None:
    with pytest.raises(PlanError, match=r"variant 'pretrain\.simclr'") as error:
        _plan(overrides)
    assert error.match(named)


def test_a_self_supervised_variant_cannot_be_cross_validated() -> None:
    with pytest.raises(PlanError, match=r"pretrain\.simclr: .*no held-out fold.*train_on"):
        _plan(SIMCLR, cross_validation={"split": "pretrain", "folds": 2})
