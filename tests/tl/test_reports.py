import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from tlkedro.tl import reports


def _records():
    return [
        {
            "variant": "finetune.full",
            "group": "full",
            "strategy": "full",
            "seed": 1,
            "test/auroc": 0.8,
            "trainable_params": 100,
        },
        {
            "variant": "finetune.full_s2",
            "group": "full",
            "strategy": "full",
            "seed": 2,
            "test/auroc": 0.7,
            "trainable_params": 100,
        },
        {
            "variant": "finetune.probe",
            "group": "probe",
            "strategy": "linear_probe",
            "seed": 1,
            "test/auroc": 0.6,
            "trainable_params": 3,
        },
    ]


def _predictions(seed: int, n: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, n)
    probability = np.clip(target * 0.3 + rng.uniform(0, 0.7, n), 0, 1)
    return pd.DataFrame(
        {
            "subject_id": [f"s{i}" for i in range(n)],
            "target": target,
            "probability": probability,
            "prediction": (probability > 0.5).astype(int),
        }
    )


def test_comparison_table_puts_descriptions_before_metrics():
    table = reports.comparison_table(_records())
    assert list(table.columns) == [
        "variant",
        "group",
        "strategy",
        "seed",
        "trainable_params",
        "test/auroc",
    ]
    assert len(table) == 3


def test_group_summary_aggregates_seeds():
    summary = reports.group_summary(reports.comparison_table(_records()), ["test/auroc"]).set_index(
        "group"
    )
    assert summary.loc["full", "test/auroc mean"] == pytest.approx(0.75)
    assert summary.loc["full", "test/auroc std"] == pytest.approx(np.std([0.8, 0.7], ddof=1))
    assert summary.loc["full", "test/auroc count"] == 2
    assert summary.loc["probe", "test/auroc count"] == 1


def test_markdown_report_lists_every_variant_and_the_groups():
    table = reports.comparison_table(_records())
    text = reports.markdown_report(
        "finetune", table, reports.group_summary(table, ["test/auroc"]), ["variant", "test/auroc"]
    )
    assert text.startswith("# finetune")
    for record in _records():
        assert f"| {record['variant']} | {record['test/auroc']:.4g} |" in text
    assert "## Groups" in text


def test_plots_are_figures_with_one_artist_per_variant():
    predictions = {"finetune.a": _predictions(1), "finetune.b": _predictions(2)}
    roc = reports.plot_roc_curves(predictions, title="sex")
    assert isinstance(roc, Figure) and len(roc.axes[0].get_lines()) == 3  # two curves + chance line
    history = pd.DataFrame({"epoch": [0, 1], "train/loss": [1.0, 0.5], "val/loss": [1.1, 0.7]})
    curves = reports.plot_learning_curves({"finetune.a": history, "finetune.b": history})
    assert len(curves.axes[0].get_lines()) == 4
    # A run of one epoch is a single point: it shows only with a marker.
    one_epoch = reports.plot_learning_curves({"finetune.a": history.iloc[:1]})
    assert all(
        line.get_marker() not in ("None", "", None) for line in one_epoch.axes[0].get_lines()
    )
    regression = pd.DataFrame({"target": [50.0, 60.0], "prediction": [52.0, 57.0]})
    scatter = reports.plot_predicted_vs_true({"pretrain.default": regression}, quantity="age")
    assert "MAE 2.50" in scatter.axes[0].get_title()
    table = reports.comparison_table(_records())
    bars = reports.plot_metric_by_variant(table, "test/auroc")
    assert [p.get_height() for p in bars.axes[0].patches] == pytest.approx([0.8, 0.7, 0.6])


def test_higher_is_better_knows_scores_from_errors():
    assert all(
        map(
            reports.higher_is_better,
            ["val/auprc", "test/auroc", "test/balanced_accuracy", "test/r2", "test/pearson_r"],
        )
    )
    assert not any(map(reports.higher_is_better, ["val/loss", "test/mae", "test/cross_entropy"]))


CUTOFFS = {
    f"finetune.ttl_{cutoff}_{seed}": cutoff for cutoff in ("layer2", "layer3") for seed in (1, 2)
}


def _cutoff_table() -> pd.DataFrame:
    rows = []
    for group, scores, params, latency in (
        ("full", [0.70, 0.72], 1000, 4.0),
        ("ttl_layer2", [0.80, 0.76], 250, 1.0),
        ("ttl_layer3", [0.81, 0.65], 500, 2.0),
    ):
        for seed, score in enumerate(scores, 1):
            rows.append(
                {
                    "variant": f"finetune.{group}_{seed}",
                    "group": group,
                    "seed": seed,
                    "total_params": params,
                    "cpu_latency_ms": latency + 0.1 * seed,
                    "val/auprc": score,
                    "test/auroc": score - 0.1,
                }
            )
    return reports.comparison_table(rows)


def test_group_comparison_sets_every_group_against_the_reference():
    table = reports.group_comparison(_cutoff_table(), ["test/auroc"], reference="full").set_index(
        "group"
    )
    assert table.loc["ttl_layer2", "params_reduction"] == pytest.approx(4.0)
    assert table.loc["ttl_layer2", "speedup"] == pytest.approx(
        4.15 / 1.15
    )  # mean latencies over seeds
    assert (
        table.loc["full", "params_reduction"] == table.loc["full", "speedup"] == pytest.approx(1.0)
    )
    assert table.loc["ttl_layer3", "test/auroc mean"] == pytest.approx(0.63)
    assert "macs_reduction" not in table  # no MACs in this table
    with pytest.raises(ValueError, match="reference group 'lwft'"):
        reports.group_comparison(_cutoff_table(), ["test/auroc"], reference="lwft")


def test_rank_cutoffs_orders_groups_by_their_mean_over_seeds():
    table = _cutoff_table()
    ranking = reports.rank_cutoffs(table, CUTOFFS, "val/auprc")
    # layer3 has the best single seed (0.81) but the lower mean: the search ranks means.
    assert ranking["cutoff"].tolist() == ["layer2", "layer3"]
    assert ranking.loc[0, "val/auprc mean"] == pytest.approx(0.78)
    assert ranking.loc[0, "val/auprc count"] == 2
    by_loss = reports.rank_cutoffs(
        table.assign(**{"val/loss": table["val/auprc"]}), CUTOFFS, "val/loss"
    )
    assert by_loss["cutoff"].tolist() == ["layer3", "layer2"]  # lower is better
    with pytest.raises(ValueError, match="mix truncation cutoffs"):
        reports.rank_cutoffs(table, {**CUTOFFS, "finetune.ttl_layer2_2": "layer2.0"}, "val/auprc")


def _regression_predictions(noise: float, n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    target = np.random.default_rng(99).normal(50, 15, n)  # the same subjects for every model
    return pd.DataFrame(
        {
            "subject_id": [f"s{i:02d}" for i in range(n)],
            "target": target,
            "prediction": target + rng.normal(0, noise, n),
        }
    )


def _with_folds(table: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    return table.assign(repeat=0, fold=np.arange(len(table)) % k)


def _evaluation_tables() -> dict[str, pd.DataFrame]:
    scratch = _regression_predictions(10.0, seed=1)
    return {
        "finetune.scratch": _with_folds(scratch),
        "finetune.full": _with_folds(_regression_predictions(3.0, seed=2)),
        "finetune.probe": _with_folds(_regression_predictions(10.0, seed=3)),
        "baseline.trivial": _with_folds(scratch.assign(prediction=scratch["target"].mean())),
    }


def test_evaluation_table_gives_intervals_folds_and_verdicts_against_the_reference():
    tables = _evaluation_tables()
    table = reports.evaluation_table(
        tables, "regression", reference="scratch", n_resamples=300
    ).set_index("model")
    assert list(table.index) == [
        "finetune.scratch",
        "finetune.full",
        "finetune.probe",
        "baseline.trivial",
    ]
    assert table.loc["baseline.trivial", "kind"] == "baseline"
    assert (table["n_subjects"] == 60).all() and (table["folds"] == 3).all()
    full = table.loc["finetune.full"]
    assert full["low"] < full["estimate"] < full["high"]
    assert full["estimate"] == pytest.approx(full["mae"])
    assert full["verdict"] == "better than finetune.scratch"
    assert full["difference"] == pytest.approx(
        full["estimate"] - table.loc["finetune.scratch", "estimate"]
    )
    assert full["fold_difference_mean"] < 0
    assert table.loc["finetune.probe", "verdict"] == "not distinguishable from finetune.scratch"
    assert (
        table.loc["finetune.probe", "difference_low"]
        < 0
        < table.loc["finetune.probe", "difference_high"]
    )
    assert table.loc["finetune.scratch", "verdict"] == "reference"
    no_reference = reports.evaluation_table(tables, "regression", reference=None, n_resamples=50)
    assert no_reference["difference"].isna().all() and (no_reference["verdict"] == "").all()


def test_reference_resolution():
    names = ["finetune.scratch", "finetune.full"]
    assert reports.resolve_reference(names, "scratch") == "finetune.scratch"
    assert reports.resolve_reference(names, "finetune.full") == "finetune.full"
    assert reports.resolve_reference(names, "lwft") is None
    with pytest.raises(ValueError, match="matches several models"):
        reports.resolve_reference(["pretrain.scratch", "finetune.scratch"], "scratch")


def test_evaluation_table_compares_every_variant_with_the_covariate_baseline_too():
    tables = _evaluation_tables() | {"baseline.covariate": _regression_predictions(10.0, seed=4)}
    table = reports.evaluation_table(
        tables, "regression", n_resamples=300, covariate_baseline="baseline.covariate"
    ).set_index("model")

    assert table.loc["finetune.full", "covariate_verdict"] == "better than baseline.covariate"
    assert table.loc["finetune.full", "covariate_difference_high"] < 0  # a lower MAE
    probe = table.loc["finetune.probe"]  # as noisy as the covariate baseline
    assert probe["covariate_verdict"] == "not distinguishable from baseline.covariate"
    assert (
        probe["covariate_difference_low"]
        < probe["covariate_difference"]
        < probe["covariate_difference_high"]
    )
    assert table.loc["baseline.trivial", "covariate_verdict"] == ""
    assert np.isnan(table.loc["baseline.covariate", "covariate_difference"])
    without = reports.evaluation_table(
        _evaluation_tables(), "regression", n_resamples=50, covariate_baseline="baseline.covariate"
    )
    assert "covariate_verdict" not in without.columns


def test_evaluation_markdown_shows_the_table_notes_and_flags():
    table = reports.evaluation_table(_evaluation_tables(), "regression", n_resamples=100)
    text = reports.evaluation_markdown(table, ["finetune.probe does not beat it."], "Age", 100)
    assert text.startswith("## Age")
    assert "| model | kind | subjects | mae (95% interval) | mae per fold (mean ± std) |" in text
    assert "| baseline.trivial | baseline | 60 |" in text
    assert "not distinguishable from finetune.scratch" in text
    assert "BCa bootstrap over subjects (100 resamples" in text
    assert "- finetune.probe does not beat it." in text
    assert "averaged over the" not in text  # one repeat
    assert "covariate" not in text  # no covariate baseline in the table
    assert "### Flags\n\nNone." in reports.evaluation_markdown(table, [], "Age")
    with_covariate = reports.evaluation_table(
        _evaluation_tables() | {"baseline.covariate": _regression_predictions(9.0, seed=4)},
        "regression",
        n_resamples=50,
    )
    text = reports.evaluation_markdown(with_covariate, [], "Age", covariate="head_scale")
    assert "baseline.covariate predicts from `head_scale` alone" in text


def test_training_size_plot_draws_one_line_per_strategy_with_intervals():
    tables = {
        f"finetune.{strategy}_n{size}": _regression_predictions(noise, seed=size)
        for strategy, base in (("scratch", 12.0), ("full", 6.0))
        for size, noise in ((10, base), (20, base * 0.8), (40, base * 0.6))
    }
    table = reports.evaluation_table(tables, "regression", reference=None, n_resamples=100)
    sizes = {name: int(name.rsplit("_n", 1)[1]) for name in tables}
    groups = {name: name.split(".")[1].split("_")[0] for name in tables}
    figure = reports.plot_metric_by_training_size(table, sizes, groups)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["scratch", "full"]
    lines = [container.lines[0] for container in ax.containers]
    assert [list(line.get_xdata()) for line in lines] == [[10, 20, 40], [10, 20, 40]]
    assert all(line.get_marker() == "o" for line in lines)
    scratch = table.set_index("model").loc[[f"finetune.scratch_n{n}" for n in (10, 20, 40)]]
    assert list(lines[0].get_ydata()) == pytest.approx(scratch["estimate"].tolist())
    bars = ax.containers[0].lines[2][0].get_segments()  # one vertical bar per point: low to high
    assert [segment[0][1] for segment in bars] == pytest.approx(scratch["low"].tolist())
    assert "95% bootstrap intervals" in ax.get_title()
    with pytest.raises(ValueError, match="no model of the evaluation table has a training size"):
        reports.plot_metric_by_training_size(table, {}, {})
