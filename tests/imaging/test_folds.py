import logging

import numpy as np
import pandas as pd
import pytest

from tlkedro.imaging.folds import (
    FoldLeakageError,
    assign_folds,
    check_fold_leakage,
    fold_subjects,
    nested_subsets,
)
from tlkedro.imaging.splits import SplitLeakageError


def _subjects(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "subject_id": [f"sub-{i:03d}" for i in range(n)],
            "age": rng.uniform(20, 80, n),
            "sex": rng.integers(0, 2, n),
            "site": "Guys",
        }
    )


def test_every_subject_gets_one_fold_per_repeat():
    folds = assign_folds(_subjects(), k=5, repeats=3, seed=1)
    assert list(folds.columns) == ["subject_id", "repeat", "fold"]
    assert len(folds) == 60 * 3
    assert (folds.groupby(["repeat", "subject_id"]).size() == 1).all()
    assert set(folds["fold"]) == set(range(5))
    assert (folds.groupby(["repeat", "fold"]).size() == 12).all()
    # Repeats are different shuffles.
    by_repeat = folds.pivot(index="subject_id", columns="repeat", values="fold")
    assert (by_repeat[0] != by_repeat[1]).any()


def test_folds_are_reproducible_and_independent_of_row_order():
    subjects = _subjects()
    first = assign_folds(subjects, k=4, repeats=2, seed=7)
    shuffled = subjects.sample(frac=1, random_state=3)
    pd.testing.assert_frame_equal(first, assign_folds(shuffled, k=4, repeats=2, seed=7))
    assert not first.equals(assign_folds(subjects, k=4, repeats=2, seed=8))


def test_folds_are_stratified_by_sex_and_age_bin():
    subjects = _subjects(100)
    folds = assign_folds(subjects, k=5, seed=0).merge(subjects, on="subject_id")
    # Each fold holds its share of each sex to within one subject per age bin.
    share = folds.groupby("fold")["sex"].sum()
    expected = subjects["sex"].sum() / 5
    assert (share - expected).abs().max() <= 3
    age_bin = pd.qcut(folds["age"], 5, labels=False)
    per_fold_bin = folds.assign(age_bin=age_bin).groupby(["fold", "age_bin"]).size().unstack()
    assert (per_fold_bin.max() - per_fold_bin.min()).max() <= 2


def test_small_strata_fall_back_to_sex_with_a_warning(caplog):
    subjects = _subjects(12)
    with caplog.at_level(logging.WARNING):
        folds = assign_folds(subjects, k=5, age_bins=5)
    assert "stratified by sex" in caplog.text
    assert folds["subject_id"].nunique() == 12


def test_bad_subject_tables_are_refused():
    with pytest.raises(ValueError, match="missing \\['sex'\\]"):
        assign_folds(_subjects().drop(columns="sex"))
    with pytest.raises(ValueError, match="subject ids repeat"):
        assign_folds(pd.concat([_subjects(10), _subjects(10)]))
    with pytest.raises(ValueError, match="at least 5 subjects"):
        assign_folds(_subjects(4), k=5)


def test_leakage_guard_fires_on_a_subject_in_two_folds():
    folds = assign_folds(_subjects(20), k=4)
    leaking = pd.concat(
        [folds, folds.iloc[[0]].assign(fold=(folds["fold"].iloc[0] + 1) % 4)], ignore_index=True
    )
    with pytest.raises(FoldLeakageError, match="sub-000 \\(repeat 0\\)"):
        check_fold_leakage(leaking)
    assert issubclass(FoldLeakageError, SplitLeakageError)


def test_leakage_guard_fires_on_pretraining_subjects():
    folds = assign_folds(_subjects(20), k=4)
    check_fold_leakage(folds, pretraining_subjects=["sub-900", "sub-901"])
    with pytest.raises(
        FoldLeakageError, match="1 cross-validated subjects were pretraining.*sub-007"
    ):
        check_fold_leakage(folds, pretraining_subjects=["sub-900", "sub-007"])


def test_leakage_guard_fires_on_a_repeat_missing_subjects():
    folds = assign_folds(_subjects(20), k=4, repeats=2)
    dropped = folds[~((folds["repeat"] == 1) & (folds["subject_id"] == "sub-003"))]
    with pytest.raises(FoldLeakageError, match="repeat 1 lacks sub-003"):
        check_fold_leakage(dropped)


def test_fold_subjects_split_the_repeat():
    folds = assign_folds(_subjects(20), k=4, repeats=2)
    train, held_out = fold_subjects(folds, repeat=1, fold=2)
    assert len(held_out) == 5 and len(train) == 15
    assert set(train).isdisjoint(held_out)
    with pytest.raises(ValueError, match="no repeat 2 fold 0"):
        fold_subjects(folds, repeat=2, fold=0)


def test_nested_subsets_are_nested_and_reproducible():
    ids = [f"sub-{i:03d}" for i in range(40)]
    subsets = nested_subsets(ids, [0.25, 20, 1.0], seed=3)
    assert list(subsets) == [0.25, 20, 1.0]
    assert [len(s) for s in subsets.values()] == [10, 20, 40]
    assert set(subsets[0.25]) <= set(subsets[20]) <= set(subsets[1.0])
    assert subsets == nested_subsets(list(reversed(ids)), [1.0, 20, 0.25], seed=3)
    assert subsets[0.25] != nested_subsets(ids, [0.25], seed=4)[0.25]


def test_nested_subsets_keep_strata_proportions():
    ids = [f"sub-{i:03d}" for i in range(60)]
    strata = pd.Series(["F"] * 20 + ["M"] * 40, index=ids)
    for size, members in nested_subsets(ids, [6, 15, 30, 45], seed=0, strata=strata).items():
        women = int((strata.loc[members] == "F").sum())
        assert abs(women - size / 3) <= 1, (size, women)


def test_nested_subsets_refuse_bad_sizes():
    ids = [f"sub-{i}" for i in range(10)]
    with pytest.raises(ValueError, match="11 subjects is asked for, from 10"):
        nested_subsets(ids, [11], seed=0)
    with pytest.raises(ValueError, match="fraction must lie in"):
        nested_subsets(ids, [1.5], seed=0)
    with pytest.raises(ValueError, match="no stratum for 1"):
        nested_subsets(ids, [5], seed=0, strata=pd.Series("F", index=ids[:-1]))
