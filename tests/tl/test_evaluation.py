import logging
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from tlkedro.imaging.folds import assign_folds
from tlkedro.tl import evaluation


def _ids(n: int) -> list[str]:
    return [f"sub-{i:03d}" for i in range(n)]


def _regression(n: int = 60, noise: float = 5.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    target = rng.normal(50, 15, n)
    return pd.DataFrame(
        {"subject_id": _ids(n), "target": target, "prediction": target + rng.normal(0, noise, n)}
    )


def _binary(n: int = 60, shift: float = 1.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, n)
    score = rng.normal(shift * target, 1.0)
    probability = 1 / (1 + np.exp(-score))
    return pd.DataFrame(
        {
            "subject_id": _ids(n),
            "target": target,
            "prediction": (probability >= 0.5).astype(int),
            "probability": probability,
        }
    )


def _multiclass(n: int = 90, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    target = np.arange(n) % 3
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[target]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    table = pd.DataFrame(
        {"subject_id": _ids(n), "target": target, "prediction": probabilities.argmax(axis=1)}
    )
    for k in range(3):
        table[f"probability_{k}"] = probabilities[:, k]
    return table


def test_metrics_agree_with_scikit_learn():
    reg = _regression()
    values = evaluation.metric_values(reg, "regression")
    assert values["mae"] == pytest.approx(mean_absolute_error(reg.target, reg.prediction))
    assert values["rmse"] == pytest.approx(root_mean_squared_error(reg.target, reg.prediction))
    assert values["r2"] == pytest.approx(r2_score(reg.target, reg.prediction))
    assert values["pearson_r"] == pytest.approx(np.corrcoef(reg.target, reg.prediction)[0, 1])
    binary = _binary().assign(probability=lambda t: t["probability"].round(1))  # ties count half
    values = evaluation.metric_values(binary, "classification")
    assert values["auroc"] == pytest.approx(roc_auc_score(binary.target, binary.probability))
    assert values["accuracy"] == pytest.approx(accuracy_score(binary.target, binary.prediction))
    assert values["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(binary.target, binary.prediction)
    )
    multi = _multiclass()
    values = evaluation.metric_values(multi, "classification")
    probabilities = multi[[f"probability_{k}" for k in range(3)]].to_numpy()
    assert values["auroc"] == pytest.approx(
        roc_auc_score(multi.target, probabilities, multi_class="ovr", average="macro")
    )
    assert values["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(multi.target, multi.prediction)
    )


def test_the_contract_is_checked_with_the_reason():
    with pytest.raises(ValueError, match="lacks probability"):
        evaluation.metric_values(_binary().drop(columns="probability"), "classification")
    doubled = pd.concat([_regression(5), _regression(5)])
    with pytest.raises(ValueError, match="5 subjects have more than one row"):
        evaluation.metric_values(doubled, "regression")
    with pytest.raises(ValueError, match="'prediction' is missing in 1 of 5"):
        evaluation.metric_values(
            _regression(5).assign(prediction=[1, 2, np.nan, 4, 5]), "regression"
        )
    with pytest.raises(ValueError, match="not a regression metric"):
        evaluation.metric_interval(_regression(), "auroc", "regression")


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_the_mae_interval_covers_the_population_mae_about_95_percent_of_the_time(method):
    # Errors ~ N(0, 5): the population MAE is 5 * sqrt(2 / pi).
    truth = 5 * math.sqrt(2 / math.pi)
    covered = [
        evaluation.metric_interval(
            _regression(50, 5.0, seed),
            "mae",
            "regression",
            n_resamples=500,
            seed=seed,
            method=method,
        ).excludes(truth)
        is False
        for seed in range(300)
    ]
    assert 0.90 <= np.mean(covered) <= 0.99


def test_the_auroc_interval_covers_the_population_auroc():
    # Scores N(0, 1) against N(1, 1): the population AUROC is Phi(1 / sqrt(2)).
    truth = norm.cdf(1 / math.sqrt(2))
    covered = [
        not evaluation.metric_interval(
            _binary(60, 1.0, seed), "auroc", "classification", n_resamples=500, seed=seed
        ).excludes(truth)
        for seed in range(200)
    ]
    assert 0.89 <= np.mean(covered) <= 0.99


def test_an_interval_is_defined_with_few_subjects_of_a_class():
    # 3 positives among 15: an unstratified resample would often hold no positive.
    table = _binary(15, 2.0, 1).assign(target=[1, 1, 1] + [0] * 12)
    interval = evaluation.metric_interval(table, "auroc", "classification", n_resamples=500)
    assert interval.n == 15
    assert interval.low <= interval.estimate <= interval.high
    assert math.isfinite(interval.low)


def test_a_model_against_itself_differs_by_exactly_zero():
    for table, task, metric in [
        (_regression(), "regression", "mae"),
        (_binary(), "classification", "auroc"),
    ]:
        difference = evaluation.paired_difference(table, table, metric, task, n_resamples=200)
        assert (difference.estimate, difference.low, difference.high) == (0.0, 0.0, 0.0)
        assert not difference.excludes_zero
        assert "not distinguishable" in difference.statement("x", "x")


def test_a_real_difference_is_called_and_a_small_one_is_not():
    good, bad = _regression(80, 3.0, 0), _regression(80, 12.0, 0)
    difference = evaluation.paired_difference(good, bad, "mae", "regression", names=("good", "bad"))
    assert difference.n == 80
    assert difference.estimate == pytest.approx(difference.value_a - difference.value_b)
    assert difference.high < 0 and difference.a_is_better is True
    assert difference.statement("good", "bad").startswith("good is better than bad")
    # Two models as good as each other, with independent errors.
    rng = np.random.default_rng(1)
    first, second = (good.assign(prediction=good["target"] + rng.normal(0, 5, 80)) for _ in "ab")
    close = evaluation.paired_difference(first, second, "mae", "regression")
    assert close.low < 0 < close.high and close.a_is_better is None


def test_a_paired_difference_needs_the_same_subjects_and_targets():
    table = _regression(10)
    other = table.assign(subject_id=[f"other-{i}" for i in range(10)])
    with pytest.raises(ValueError, match="share no subject"):
        evaluation.paired_difference(table, other, "mae", "regression")
    with pytest.raises(ValueError, match="different targets"):
        evaluation.paired_difference(
            table, table.assign(target=table.target + 1), "mae", "regression"
        )


def test_partial_overlap_is_compared_on_the_shared_subjects_with_a_warning(caplog):
    table = _regression(20)
    with caplog.at_level(logging.WARNING):
        difference = evaluation.paired_difference(table, table.iloc[:15], "mae", "regression")
    assert difference.n == 15
    assert "compared on the 15 subjects they share" in caplog.text


def _cross_validated(table: pd.DataFrame, repeats: int, seed: int = 0) -> pd.DataFrame:
    """Out-of-fold-like predictions: each repeat perturbs the predictions differently."""
    subjects = pd.DataFrame(
        {
            "subject_id": table["subject_id"],
            "age": table["target"],
            "sex": np.arange(len(table)) % 2,
        }
    )
    folds = assign_folds(subjects, k=4, repeats=repeats, seed=seed)
    rng = np.random.default_rng(seed)
    merged = folds.merge(table, on="subject_id")
    return merged.assign(prediction=merged["prediction"] + rng.normal(0, 1, len(merged)))


def test_repeats_are_averaged_per_subject_before_the_interval():
    table = _cross_validated(_regression(40), repeats=3)
    pooled = evaluation.pool_repeats(table, "regression")
    assert len(pooled) == 40
    expected = table.groupby("subject_id")["prediction"].mean()
    assert pooled.set_index("subject_id")["prediction"].to_dict() == pytest.approx(
        expected.to_dict()
    )
    interval = evaluation.metric_interval(table, "mae", "regression", n_resamples=200)
    assert (interval.n, interval.repeats) == (40, 3)
    assert interval.estimate == pytest.approx(
        mean_absolute_error(pooled["target"], pooled["prediction"])
    )


def test_classification_repeats_average_probabilities():
    table = pd.DataFrame(
        {
            "subject_id": ["a", "a", "b", "b"],
            "repeat": [0, 1, 0, 1],
            "target": [1, 1, 0, 0],
            "prediction": [1, 0, 0, 0],
            "probability": [0.9, 0.3, 0.2, 0.4],
        }
    )
    pooled = evaluation.pool_repeats(table, "classification").set_index("subject_id")
    assert pooled.loc["a", "probability"] == pytest.approx(0.6)
    assert pooled.loc["a", "prediction"] == 1 and pooled.loc["b", "prediction"] == 0


def test_fold_summaries_and_per_fold_differences():
    a = _cross_validated(_regression(40, 3.0), repeats=2)
    b = a.assign(prediction=a["prediction"] + 2.0)  # same folds, every prediction 2 years higher
    per_fold = evaluation.fold_metrics(a, "regression")
    assert len(per_fold) == 8 and per_fold["n"].sum() == 80
    one = a[(a["repeat"] == 1) & (a["fold"] == 2)]
    row = per_fold[(per_fold["repeat"] == 1) & (per_fold["fold"] == 2)].iloc[0]
    assert row["mae"] == pytest.approx(mean_absolute_error(one["target"], one["prediction"]))
    summary = evaluation.fold_summary(a, "mae", "regression")
    assert summary.folds == 8
    assert summary.mean == pytest.approx(per_fold["mae"].mean())
    assert summary.std == pytest.approx(per_fold["mae"].std(ddof=1))
    differences = evaluation.fold_differences(a, b, "mae", "regression")
    assert differences["difference"].to_numpy() == pytest.approx(
        (differences["a"] - differences["b"]).to_numpy()
    )
    assert (differences["difference"] < 0).all()
    refolded = b.assign(fold=(b["fold"] + 1) % 4)
    with pytest.raises(ValueError, match="not cross-validated on the same folds"):
        evaluation.fold_differences(a, refolded, "mae", "regression")


# Baselines ------------------------------------------------------------------------------------------


def _images_and_labels(n: int = 40, slices: int = 2, seed: int = 0):
    """32x32 slices whose upper-left quadrant's brightness is linear in age (plus noise)."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 80, n)
    images = rng.normal(0, 0.2, (n * slices, 1, 32, 32)).astype(np.float32)
    images[:, :, :16, :16] += np.repeat(age, slices)[:, None, None, None] / 20
    labels = pd.DataFrame(
        {
            "subject_id": np.repeat(_ids(n), slices),
            "age": np.repeat(age, slices),
            "sex": np.repeat((age > 50).astype(int), slices),
            "head_scale": np.repeat(1 + 0.004 * age + rng.normal(0, 0.01, n), slices),
        }
    )
    return images, labels


def test_trivial_baselines_predict_the_training_mean_and_majority():
    images, labels = _images_and_labels()
    train, test = labels["subject_id"] < "sub-030", labels["subject_id"] >= "sub-030"
    mean = evaluation.baseline_predictions(
        "trivial", images[train], labels[train], images[test], labels[test], "regression", "age"
    )
    assert len(mean) == 10
    train_mean = labels[train].groupby("subject_id")["age"].mean().mean()
    assert mean["prediction"].to_numpy() == pytest.approx(np.full(10, train_mean))
    # 22 of the 30 training subjects and 5 of the 10 test subjects are of class 1.
    zeros = [*_ids(8), *_ids(35)[30:]]
    skewed = labels.assign(sex=(~labels["subject_id"].isin(zeros)).astype(int))
    majority = evaluation.baseline_predictions(
        "trivial", None, skewed[train], None, skewed[test], "classification", "sex"
    )
    assert (majority["prediction"] == 1).all()
    assert majority["probability"].to_numpy() == pytest.approx(np.full(10, 22 / 30))
    assert evaluation.metric_values(majority, "classification")["auroc"] == pytest.approx(0.5)


def test_the_linear_baseline_recovers_a_linear_signal():
    images, labels = _images_and_labels(60)
    train, test = labels["subject_id"] < "sub-040", labels["subject_id"] >= "sub-040"
    ridge = evaluation.baseline_predictions(
        "linear", images[train], labels[train], images[test], labels[test], "regression", "age"
    )
    trivial = evaluation.baseline_predictions(
        "trivial", images[train], labels[train], images[test], labels[test], "regression", "age"
    )
    mae = evaluation.metric_values(ridge, "regression")["mae"]
    assert mae < 0.2 * evaluation.metric_values(trivial, "regression")["mae"]
    logistic = evaluation.baseline_predictions(
        "linear", images[train], labels[train], images[test], labels[test], "classification", "sex"
    )
    assert evaluation.metric_values(logistic, "classification")["auroc"] > 0.9


def test_image_features_average_a_subjects_slices():
    images = np.stack([np.full((1, 4, 4), v, np.float32) for v in (1.0, 3.0, 5.0)])
    labels = pd.DataFrame({"subject_id": ["a", "a", "b"]})
    features = evaluation.image_features(images, labels, pooled_size=2)
    assert features.shape == (2, 4)
    assert features.loc["a"].to_numpy() == pytest.approx(np.full(4, 2.0))
    with pytest.raises(ValueError, match="3 rows but the labels 2"):
        evaluation.image_features(images, labels.iloc[:2])


def test_series_features_are_their_roi_correlations():
    rng = np.random.default_rng(0)
    shared = rng.standard_normal((4, 1, 200))
    noise = rng.standard_normal((4, 3, 200))
    coupled = noise.copy()
    coupled[:, :2] += 3 * shared  # ROIs 0 and 1 correlated, ROI 2 not
    labels = pd.DataFrame({"subject_id": ["a", "b", "c", "d"]})

    features = evaluation.image_features(coupled.astype(np.float32), labels)

    assert features.shape == (4, 3)  # the upper triangle of 3 x 3
    pair = features.to_numpy()[:, np.argmax(features.to_numpy().mean(axis=0))]
    assert pair.min() > 0.8
    assert np.abs(np.delete(features.to_numpy(), np.argmax(features.mean()), axis=1)).max() < 0.4


def test_cross_validated_baselines_predict_every_subject_once_per_repeat(caplog):
    images, labels = _images_and_labels(40)
    subjects = labels.drop_duplicates("subject_id")
    folds = assign_folds(subjects, k=4, repeats=2, seed=0)
    tables = evaluation.cross_validated_baselines(
        images, labels, folds, "regression", "age", ["trivial", "linear", "covariate"]
    )
    assert set(tables) == {"trivial", "linear", "covariate"}
    for table in tables.values():
        evaluation.check_predictions(table, "regression")
        assert len(table) == 80
    trivial = tables["trivial"]
    held_out = trivial[(trivial["repeat"] == 1) & (trivial["fold"] == 3)]
    training = folds[(folds["repeat"] == 1) & (folds["fold"] != 3)]["subject_id"]
    expected = subjects.set_index("subject_id").loc[training, "age"].mean()
    assert held_out["prediction"].to_numpy() == pytest.approx(np.full(len(held_out), expected))
    # head_scale grows with age here, so head size alone beats the mean.
    covariate = evaluation.metric_values(tables["covariate"], "regression")["mae"]
    assert covariate < evaluation.metric_values(trivial, "regression")["mae"]
    with caplog.at_level(logging.WARNING):
        skipped = evaluation.cross_validated_baselines(
            images, labels.drop(columns="head_scale"), folds, "regression", "age", ["covariate"]
        )
    assert (
        skipped == {}
        and "covariate baseline skipped" in caplog.text
        and "head_scale" in caplog.text
    )
    with pytest.raises(ValueError, match="only in the labels: \\['sub-039'\\]"):
        evaluation.cross_validated_baselines(
            images,
            labels,
            folds[folds["subject_id"] != "sub-039"],
            "regression",
            "age",
            ["trivial"],
        )


# Flags ----------------------------------------------------------------------------------------------


def test_each_flag_fires_on_a_constant_predictor(caplog):
    reg = _regression(20)
    trivial = reg.assign(prediction=reg["target"].mean())
    constant = reg.assign(prediction=0.0)
    with caplog.at_level(logging.WARNING):
        flags = evaluation.quality_flags(
            {"constant": constant, "baseline.trivial": trivial},
            "regression",
            "age",
            n_resamples=200,
        )
    assert any(f.startswith("constant does not beat the trivial baseline") for f in flags)
    assert any("constant has an MAE of" in f and "standard deviation of age" in f for f in flags)
    assert any("rests on 20 subjects (fewer than 30)" in f for f in flags)
    for flag in flags:
        assert flag in caplog.text
    binary = _binary(40)
    one_class = binary.assign(prediction=0, probability=0.2)
    flags = evaluation.quality_flags(
        {"one_class": one_class, "baseline.trivial": one_class},
        "classification",
        "sex",
        n_resamples=200,
    )
    assert "one_class predicts class 0 of sex for all 40 subjects." in flags
    assert any(f.startswith("one_class does not beat the trivial baseline") for f in flags)


def test_a_good_model_on_enough_subjects_raises_no_flag():
    reg = _regression(80, 3.0)
    trivial = reg.assign(prediction=reg["target"].mean())
    flags = evaluation.quality_flags(
        {"good": reg, "baseline.trivial": trivial}, "regression", "age", n_resamples=200
    )
    assert flags == []
    missing = evaluation.quality_flags({"good": reg}, "regression", "age", n_resamples=200)
    assert len(missing) == 1 and missing[0].startswith("No trivial baseline")


def test_auroc_is_checked_against_chance_not_the_pooled_trivial_baseline():
    # Pooled over folds, the trivial baseline's fold-wise priors rank subjects against their class.
    images, labels = _images_and_labels(40)
    labels = labels.assign(sex=np.repeat(np.arange(40) % 2, 2))
    subjects = labels.drop_duplicates("subject_id")
    folds = assign_folds(subjects.assign(sex=0), k=3, seed=0)  # folds blind to sex: priors differ
    trivial = evaluation.cross_validated_baselines(
        images, labels, folds, "classification", "sex", ["trivial"]
    )["trivial"]
    assert evaluation.metric_values(trivial, "classification")["auroc"] < 0.5
    assert evaluation.fold_summary(trivial, "auroc", "classification").mean == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    noise = trivial.assign(probability=rng.uniform(size=len(trivial)))
    flags = evaluation.quality_flags(
        {"noise": noise, "baseline.trivial": trivial}, "classification", "sex", n_resamples=200
    )
    assert any(f.startswith("noise does not beat the trivial baseline: its AUROC") for f in flags)
