"""Each held-out site on its own: the metric per model and site, with intervals or fold spread."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tlkedro.tl import evaluation, reports


def _predictions(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """A binary classifier's predictions: good on the first half of the subjects, random on the rest."""
    rng = np.random.default_rng(seed)
    target = np.tile([0, 1], n // 2)
    informative = np.arange(n) < n // 2
    probability = np.where(informative, 0.3 + 0.4 * target, rng.uniform(size=n))
    probability = np.clip(probability + rng.normal(0, 0.1, n), 0, 1)
    return pd.DataFrame(
        {
            "subject_id": [f"s{i:02d}" for i in range(n)],
            "target": target,
            "prediction": (probability >= 0.5).astype(int),
            "probability": probability,
        }
    )


def _sites(n: int = 40) -> pd.Series:
    ids = [f"s{i:02d}" for i in range(n)]
    return pd.Series(["A" if i < n // 2 else "B" for i in range(n)], index=ids, name="site")


def test_each_site_is_scored_on_its_own_subjects_with_an_interval():
    table = _predictions()
    result = reports.site_table(
        {"finetune.full": table}, _sites(), "classification", n_resamples=200
    )
    assert list(result["site"]) == ["A", "B"] and list(result["n_subjects"]) == [20, 20]
    for site, part in zip("AB", (table.iloc[:20], table.iloc[20:])):
        row = result.set_index("site").loc[site]
        expected = evaluation.metric_interval(part, "auroc", "classification", n_resamples=200)
        assert row["estimate"] == pytest.approx(expected.estimate)
        assert row["low"] == pytest.approx(expected.low) and row["folds"] == 0
    a, b = result["estimate"]
    assert a > 0.9 > b  # the sites differ, which a pooled metric would hide


def test_fold_models_give_their_mean_and_spread_and_a_stale_label_table_is_refused():
    folds = [_predictions(seed=s).assign(repeat=0, fold=f) for f, s in enumerate((1, 2, 3))]
    result = reports.site_table(
        {"finetune.cv": pd.concat(folds, ignore_index=True)}, _sites(), "classification"
    )
    row = result.set_index("site").loc["A"]
    per_fold = [
        evaluation.metric_interval(f.iloc[:20], "auroc", "classification").estimate for f in folds
    ]
    assert row["estimate"] == pytest.approx(np.mean(per_fold))
    assert row["fold_std"] == pytest.approx(np.std(per_fold, ddof=1))
    assert row["folds"] == 3 and row["n_subjects"] == 20 and np.isnan(row["low"])
    markdown = reports.site_markdown(result, "finetune: sex per held-out site", 2000, "BCa")
    assert "| finetune.cv | A | 20 |" in markdown and "(3 folds)" in markdown
    with pytest.raises(ValueError, match=r"finetune.full: 20 predicted subjects have no site"):
        reports.site_table({"finetune.full": _predictions()}, _sites()[:20], "classification")
