"""The experiment plan: variants merged and validated once, their folds and their sources."""

from __future__ import annotations

import pytest

from tlkedro.plan import PlanError, WeightsFile, build_plan

BASE = {
    "target": "sex",
    "task": "classification",
    "architecture": {"name": "cbr_tiny", "kwargs": {"img_size": 32}},
    "objective": {"name": "cross_entropy"},
}
PRETRAIN = {**BASE, "target": "age", "task": "regression", "objective": {"name": "mse"}}


def _parameters(**finetune: object) -> dict:
    return {
        "pretrain": {**PRETRAIN, "variants": {"default": {}}},
        "finetune": {**BASE, "init_from": "pretrain.default", **finetune},
    }


def test_every_variant_is_merged_into_its_base_and_typed() -> None:
    plan = build_plan(
        _parameters(
            optimizer={"lr": 1e-3},
            variants={"full": {}, "probe": {"optimizer": {"lr": 0.1}}, "gone": None},
        )
    )
    assert list(plan.variants) == ["pretrain.default", "finetune.full", "finetune.probe"]
    probe = plan.variants["finetune.probe"]
    assert probe.config.optimizer.lr == 0.1 and probe.config.train_on == "finetune"
    assert plan.variants["finetune.full"].config.optimizer.lr == 1e-3
    assert probe.source == "pretrain.default" and not probe.cross_validated
    assert plan.variants["pretrain.default"].config.train_on == "pretrain"


def test_cross_validation_gives_the_variants_on_its_split_one_run_per_fold() -> None:
    parameters = _parameters(
        variants={"full": {}, "other": {"train_on": "test", "init_from": None}}
    )
    parameters["pretrain"]["train_on"] = "finetune"
    parameters["cross_validation"] = {"split": "finetune", "folds": 3, "repeats": 2}
    plan = build_plan(parameters)
    full = plan.variants["finetune.full"]
    assert [fold.name for fold in full.folds][:4] == [
        "repeat_0_fold_0",
        "repeat_0_fold_1",
        "repeat_0_fold_2",
        "repeat_1_fold_0",
    ]
    assert len(full.folds) == 6 and not plan.variants["finetune.other"].cross_validated


def test_a_cross_validated_source_needs_a_cross_validated_variant() -> None:
    parameters = _parameters(variants={"full": {"train_on": "test"}})
    parameters["pretrain"]["train_on"] = "finetune"
    parameters["cross_validation"] = {"split": "finetune"}
    with pytest.raises(
        PlanError, match=r"finetune\.full: its source pretrain\.default is cross-validated"
    ):
        build_plan(parameters)


def test_a_weights_file_is_a_source_but_no_variant_to_wait_for() -> None:
    plan = build_plan(
        _parameters(variants={"x": {"init_from": {"file": "w.pth", "format": "timm"}}})
    )
    variant = plan.variants["finetune.x"]
    assert isinstance(variant.config.init_from, WeightsFile) and variant.source is None
    with pytest.raises(PlanError, match=r"finetune\.init_from"):
        build_plan(_parameters(variants={"x": {"init_from": {"file": "w.pth"}}}))


def test_train_size_is_a_count_or_a_fraction_and_errors_name_the_cross_validation_key() -> None:
    assert build_plan(_parameters(variants={"x": {"train_size": 0.5}})).variants[
        "finetune.x"
    ].config.train_size == pytest.approx(0.5)
    with pytest.raises(PlanError, match="train_size"):
        build_plan(_parameters(variants={"x": {"train_size": 1.5}}))
    with pytest.raises(PlanError, match=r"cross_validation\.folds"):
        build_plan(
            {**_parameters(variants={"x": {}}), "cross_validation": {"split": "a", "folds": 1}}
        )


# Optuna sweeps (kind: optuna): one tuned variant, its study validated when the plan is built.
def _tuned(space: dict, **study: object) -> dict:
    return {"tuned": {"kind": "optuna", "space": space, "study": {"n_trials": 3, **study}}}


LR_SPACE = {"optimizer.lr": {"log_uniform": [1e-5, 1e-2]}}


def test_an_optuna_sweep_is_a_tuned_variant_with_its_study_storage() -> None:
    plan = build_plan(
        {
            **_parameters(variants={"full": {}}, sweeps=_tuned(LR_SPACE)),
            "runtime": {"checkpoint_dir": "c"},
        }
    )
    tuned = plan.variants["finetune.tuned"]
    assert tuned.tuning is not None and plan.variants["finetune.full"].tuning is None
    assert tuned.source == "pretrain.default"  # the base's, as for any variant
    assert plan.study_storage(tuned) == "journal:c/optuna/finetune.tuned.journal"
    given = build_plan(_parameters(sweeps=_tuned(LR_SPACE, storage="sqlite:///s.db")))
    assert given.study_storage(given.variants["finetune.tuned"]) == "sqlite:///s.db"


@pytest.mark.parametrize(
    ("sweeps", "message"),
    [
        (
            _tuned({"optimizer.lrr": {"choice": [1e-3]}}),
            r"(?s)overrides `finetune\.sweeps\.tuned\.space\.optimizer\.lrr = 0\.001`.*lrr",
        ),
        (
            _tuned({"optimizer.lr": {"uniform": [-1.0, 0.1]}}),
            r"(?s)finetune\.sweeps\.tuned\.space\.optimizer\.lr = -1\.0.*greater than 0",
        ),
        (
            _tuned({"seed": {"choice": [1, 2]}}),
            r"finetune\.sweeps\.tuned\.space\.seed: not a hyper",
        ),
        (_tuned({"train_size": {"choice": [8]}}), r"space\.train_size: not a hyperparameter"),
        (
            _tuned(LR_SPACE, sampler={"name": "tpe", "kwargs": {"n_startup": 2}}),
            r"finetune\.sweeps\.tuned\.study\.sampler: .*n_startup",
        ),
        (
            _tuned(LR_SPACE, pruner={"name": "percentile", "kwargs": {"percentile": 150}}),
            r"finetune\.sweeps\.tuned\.study\.pruner: .*percentile",
        ),
        (
            _tuned(LR_SPACE, metric="test/auroc"),
            r"(?s)finetune\.sweeps\.tuned: .*validation metric",
        ),
    ],
)
def test_a_bad_optuna_sweep_is_named_with_its_key(sweeps: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_plan(_parameters(sweeps=sweeps))


def test_an_optuna_sweep_cannot_train_on_the_cross_validated_split() -> None:
    parameters = _parameters(init_from=None, strategy={"name": "scratch"}, sweeps=_tuned(LR_SPACE))
    parameters["cross_validation"] = {"split": "finetune"}
    with pytest.raises(PlanError, match=r"finetune\.sweeps\.tuned: an optuna sweep cannot train"):
        build_plan(parameters)


def test_every_split_a_variant_names_must_exist() -> None:
    parameters = _parameters(evaluate_on=["test", "external"], variants={"default": {}})
    parameters["preprocessing"] = {"splits": {"external_sites": ["11028", "11027"]}}
    assert build_plan(parameters).variants["finetune.default"].config.evaluate_on == [
        "test",
        "external",
    ]
    with pytest.raises(
        PlanError,
        match=r"finetune\.default: evaluate_on names split 'tset', which does not exist; splits: "
        r"pretrain, finetune, test, external",
    ):
        build_plan({**parameters, "finetune": {**parameters["finetune"], "evaluate_on": ["tset"]}})
    with pytest.raises(
        PlanError, match=r"finetune\.default: unlabelled_from names split 'extrnal'"
    ):
        build_plan(
            {**parameters, "finetune": {**parameters["finetune"], "unlabelled_from": "extrnal"}}
        )
    with pytest.raises(PlanError, match=r"pretrain\.default: train_on names split 'all'"):
        build_plan({**parameters, "pretrain": {**parameters["pretrain"], "train_on": "all"}})


def test_external_needs_a_held_out_site_and_the_split_keys_are_checked_early() -> None:
    parameters = _parameters(evaluate_on=["external"], variants={"default": {}})
    parameters["preprocessing"] = {"splits": {"external_sites": []}}
    with pytest.raises(
        PlanError,
        match=r"finetune\.default: evaluate_on names split 'external', which is empty: "
        r"preprocessing\.splits\.external_sites holds out no site",
    ):
        build_plan(parameters)
    parameters["preprocessing"] = {"splits": {"external_sites": ["1", "1"]}}
    with pytest.raises(PlanError, match=r"preprocessing\.splits: .*lists 1 more than once"):
        build_plan(parameters)
    # The old name still works (its warning is the preprocessing node's).
    parameters["preprocessing"] = {"splits": {"external_site": "11028"}}
    assert build_plan(parameters).variants["finetune.default"].config.evaluate_on == ["external"]


AUTO = {"strategy": {"name": "truncated", "kwargs": {"cut_at": "auto"}}}


def test_an_auto_cut_takes_the_probe_variant_or_the_group_member_of_its_seed() -> None:
    from tlkedro.plan import auto_cut_probe

    plan = build_plan(_parameters(variants={"full": {}, "ttl": AUTO}))
    assert auto_cut_probe(plan.variants, plan.variants["finetune.ttl"]).namespace == "finetune.full"
    sweeps = {
        name: {"kind": "grid", "overrides": {**overrides, "group": name}, "grid": {"seed": [1, 2]}}
        for name, overrides in (("full", {}), ("ttl", AUTO))
    }
    plan = build_plan(_parameters(sweeps=sweeps))
    assert auto_cut_probe(plan.variants, plan.variants["finetune.ttl_1"]).namespace == (
        "finetune.full_1"
    )


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        (
            {"ttl": AUTO},
            r"finetune.ttl: strategy.kwargs.probe is 'full' \(no such variant or group\)",
        ),
        (
            {"full": {"architecture": {"name": "cbr_small"}}, "ttl": AUTO},
            "finetune.full cannot be the probe: it differs in architecture",
        ),
        (
            {"full": {"train_on": "test"}, "ttl": AUTO},
            "finetune.full cannot be the probe: it differs in train_on",
        ),
        ({"ttl": {**AUTO, "init_from": None}}, "finetune.ttl: strategy.kwargs.cut_at: auto needs"),
    ],
)
def test_an_auto_cut_without_a_fitting_probe_is_named_with_its_key(variants, message) -> None:
    with pytest.raises(PlanError, match=message):
        build_plan(_parameters(variants=variants))
