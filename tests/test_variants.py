import pytest

from tlkedro.variants import base_config, deep_merge, expand_variants, optuna_sweeps

SECTION = {
    "seed": 1,
    "optimizer": {"name": "adamw", "lr": 0.001},
    "variants": {"full": {}, "probe": {"strategy": {"name": "linear_probe"}}},
    "sweeps": {
        "lr": {
            "kind": "grid",
            "overrides": {"strategy": {"name": "full"}},
            "grid": {"optimizer.lr": [0.1, 0.01], "seed": [1, 2]},
        },
        "rnd": {
            "kind": "random",
            "count": 3,
            "seed": 5,
            "space": {
                "optimizer.lr": {"log_uniform": [1e-5, 1e-2]},
                "trainer.batch_size": {"choice": [8, 16]},
            },
        },
        "tuned": {
            "kind": "optuna",
            "overrides": {"group": "tuned"},
            "space": {"optimizer.lr": {"log_uniform": [1e-5, 1e-2]}},
            "study": {"n_trials": 4, "metric": "val/auroc", "direction": "maximize"},
        },
    },
}


def test_declared_variants_come_first_then_sweep_points():
    variants = expand_variants(SECTION, "finetune")
    assert list(variants) == [
        "full",
        "probe",
        "lr_0",
        "lr_1",
        "lr_2",
        "lr_3",
        "rnd_0",
        "rnd_1",
        "rnd_2",
        "tuned",
    ]
    assert variants["probe"] == {"strategy": {"name": "linear_probe"}}


def test_an_optuna_sweep_is_one_variant_whose_study_picks_the_searched_keys():
    variants = expand_variants(SECTION, "finetune")
    assert variants["tuned"] == {"group": "tuned"}  # the shared overrides only
    (name,) = optuna_sweeps(SECTION, "finetune")
    study = optuna_sweeps(SECTION, "finetune")[name].study
    assert name == "tuned" and study.n_trials == 4 and study.direction == "maximize"
    assert (study.sampler.name, study.pruner.name) == ("tpe", "median")  # the defaults


def test_grid_covers_every_combination_with_shared_overrides():
    variants = expand_variants(SECTION, "finetune")
    points = {(v["optimizer"]["lr"], v["seed"]) for k, v in variants.items() if k.startswith("lr_")}
    assert points == {(0.1, 1), (0.1, 2), (0.01, 1), (0.01, 2)}
    assert all(variants[f"lr_{i}"]["strategy"] == {"name": "full"} for i in range(4))


def test_random_sweep_is_seeded_and_within_bounds():
    first = expand_variants(SECTION, "finetune")
    second = expand_variants(SECTION, "finetune")
    assert [first[f"rnd_{i}"] for i in range(3)] == [second[f"rnd_{i}"] for i in range(3)]
    for i in range(3):
        assert 1e-5 <= first[f"rnd_{i}"]["optimizer"]["lr"] <= 1e-2
        assert first[f"rnd_{i}"]["trainer"]["batch_size"] in (8, 16)


def test_merge_keeps_base_keys_the_variant_does_not_override():
    base = base_config(SECTION)
    assert "variants" not in base and "sweeps" not in base
    merged = deep_merge(base, {"optimizer": {"lr": 0.5}})
    assert merged["optimizer"] == {"name": "adamw", "lr": 0.5}
    assert base["optimizer"]["lr"] == 0.001  # the base is not mutated


@pytest.mark.parametrize(
    "section, message",
    [
        ({"variants": {"bad-name": {}}}, "must be a Python identifier"),
        ({"variants": {}}, "at least one"),
        ({"sweeps": {"s": {"kind": "grid"}}}, "finetune.sweeps.s"),
        (
            {
                "sweeps": {
                    "s": {
                        "kind": "random",
                        "count": 2,
                        "space": {"a": {"uniform": [0, 1], "choice": [1]}},
                    }
                }
            },
            "exactly one",
        ),
        (
            {"sweeps": {"t": {"kind": "optuna", "space": {"optimizer.lr": {"choice": [1]}}}}},
            r"(?s)finetune.sweeps.t: .*optuna sweep needs `space` and `study`",
        ),
        (
            {"sweeps": {"t": {"kind": "optuna", "count": 3, "space": {"a": {"choice": [1]}}}}},
            "no `grid` or `count`",
        ),
        (
            {
                "sweeps": {
                    "t": {
                        "kind": "optuna",
                        "space": {"a": {"choice": [1]}},
                        "study": {"n_trials": 2, "pruner": {"name": "sometimes"}},
                    }
                }
            },
            r"(?s)finetune.sweeps.t: .*unknown pruner 'sometimes'; known: median",
        ),
        (
            {"sweeps": {"t": {"kind": "grid", "grid": {"a": [1]}, "study": {"n_trials": 2}}}},
            "no `space` or `study`",
        ),
    ],
)
def test_bad_declarations_name_the_problem(section, message):
    with pytest.raises(ValueError, match=message):
        expand_variants(section, "finetune")
