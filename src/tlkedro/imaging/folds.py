"""Subject-level k-fold cross-validation and nested training subsets for the data-size ablation.

- ``assign_folds``: every subject gets one fold per repeat, from scikit-learn's ``StratifiedKFold`` on a
  stratum label combining sex and age bin (quantile bins), seeded per repeat (by class where the subjects
  have a ``label``: 2D images). Where a stratum has fewer
  than ``k`` subjects the folds are stratified by sex only, then not at all, with a warning (as the
  splits of ``tlkedro.imaging.splits`` fall back).
- ``check_fold_leakage``: no subject in two folds of one repeat, every repeat covers the same subjects,
  and no subject a source model was pretrained on is ever held out (it would be tested on a model that
  has seen it).
- ``nested_subsets``: reproducible subsets of a fold's training subjects, each smaller one inside each
  larger one, stratified where strata are given, so that a metric against training-set size measures
  the size and not a different draw of subjects.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold

from tlkedro.imaging.splits import SplitLeakageError, _strata_options

logger = logging.getLogger(__name__)

FOLD_COLUMNS = ("subject_id", "repeat", "fold")


class FoldLeakageError(SplitLeakageError):
    """A subject is in two folds of one repeat, or held out although a source model saw it."""


def _repeat_seed(seed: int, repeat: int) -> int:
    # Independent, reproducible shuffles per repeat (seed + repeat would make repeat 1 of seed 0
    # the same as repeat 0 of seed 1).
    return int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0])


def assign_folds(
    subjects: pd.DataFrame, k: int = 5, repeats: int = 1, seed: int = 0, age_bins: int = 5
) -> pd.DataFrame:
    """Assign every subject to one of ``k`` folds, ``repeats`` times with different shuffles.

    Args:
        subjects: One row per subject with ``subject_id``, ``age`` and ``sex`` (other columns ignored),
            e.g. ``tlkedro.imaging.splits.subject_table`` of the subjects to cross-validate.
        k: Number of folds (at least 2).
        repeats: Number of repetitions, each with its own shuffle.
        seed: Random seed; the same subjects (in any row order), ``k``, ``repeats`` and seed give the
            same table.
        age_bins: Number of age quantile bins to stratify by.

    Returns:
        ``subject_id``, ``repeat`` (0..repeats-1), ``fold`` (0..k-1): one row per subject and repeat,
        sorted by repeat and subject.

    Raises:
        ValueError: A column is missing, a subject id is repeated, ``k`` or ``repeats`` is below its
            minimum, or there are fewer subjects than folds.
    """
    missing = [c for c in ("subject_id", "age", "sex") if c not in subjects.columns]
    if missing:
        raise ValueError(
            f"assign_folds needs the columns subject_id, age, sex; missing {missing} "
            f"(columns: {list(subjects.columns)})"
        )
    if k < 2 or repeats < 1:
        raise ValueError(
            f"cross-validation needs k >= 2 and repeats >= 1; got k={k}, repeats={repeats}"
        )
    duplicated = subjects["subject_id"][subjects["subject_id"].duplicated()]
    if len(duplicated):
        raise ValueError(
            f"assign_folds takes one row per subject; {duplicated.nunique()} subject ids repeat "
            f"(e.g. {', '.join(map(str, duplicated.unique()[:5]))})"
        )
    if len(subjects) < k:
        raise ValueError(
            f"{k}-fold cross-validation needs at least {k} subjects; got {len(subjects)}"
        )
    ordered = subjects.assign(subject_id=subjects["subject_id"].astype(str))
    ordered = ordered.sort_values("subject_id", ignore_index=True)
    chosen, labels = "nothing", None
    strata = _strata_options(ordered, age_bins)
    for name, candidate in strata:
        # StratifiedKFold puts a stratum's subjects into distinct folds only when it has k of them.
        if candidate.value_counts().min() >= k:
            chosen, labels = name, candidate
            break
    if chosen != strata[0][0]:
        logger.warning(
            "%d-fold cross-validation of %d subjects: too few subjects per stratum; stratified by %s",
            k,
            len(ordered),
            chosen,
        )
    parts = []
    for repeat in range(repeats):
        fold = np.empty(len(ordered), dtype=np.int64)
        random_state = _repeat_seed(seed, repeat)
        if labels is None:
            splits = KFold(k, shuffle=True, random_state=random_state).split(ordered)
        else:
            splitter = StratifiedKFold(k, shuffle=True, random_state=random_state)
            splits = splitter.split(ordered, labels)
        for index, (_, held_out) in enumerate(splits):
            fold[held_out] = index
        parts.append(
            pd.DataFrame({"subject_id": ordered["subject_id"], "repeat": repeat, "fold": fold})
        )
    folds = pd.concat(parts, ignore_index=True)
    check_fold_leakage(folds)
    sizes = folds[folds["repeat"] == 0]["fold"].value_counts().sort_index()
    logger.info(
        "%d subjects in %d folds x %d repeats (repeat 0 fold sizes: %s)",
        len(ordered),
        k,
        repeats,
        ", ".join(map(str, sizes.tolist())),
    )
    return folds


def check_fold_leakage(
    folds: pd.DataFrame, pretraining_subjects: Iterable[str] | None = None
) -> None:
    """Check that the folds keep every held-out subject unseen.

    Args:
        folds: A fold table (``assign_folds``).
        pretraining_subjects: The subjects a source model was trained on (its training and validation
            subjects), or ``None`` when no source model is involved.

    Raises:
        ValueError: A column is missing.
        FoldLeakageError: A subject is in two folds of one repeat; the repeats do not hold the same
            subjects; or held-out subjects are among ``pretraining_subjects``. The message names them.
    """
    missing = [c for c in FOLD_COLUMNS if c not in folds.columns]
    if missing:
        raise ValueError(
            f"the fold table lacks the columns {missing} (columns: {list(folds.columns)})"
        )
    subject = folds["subject_id"].astype(str)
    per_subject = (
        folds.assign(subject_id=subject).groupby(["repeat", "subject_id"])["fold"].nunique()
    )
    leaked = per_subject[per_subject > 1]
    if len(leaked):
        shown = ", ".join(f"{s} (repeat {r})" for r, s in leaked.index[:10])
        raise FoldLeakageError(
            f"{len(leaked)} subjects are in more than one fold of a repeat: {shown}; one fold each, "
            "or a subject is trained on and tested in the same repeat"
        )
    members = subject.groupby(folds["repeat"]).agg(frozenset)
    everyone = frozenset(subject)
    uneven = {r: sorted(everyone - m)[:5] for r, m in members.items() if m != everyone}
    if uneven:
        raise FoldLeakageError(
            "every repeat must assign the same subjects; "
            + "; ".join(f"repeat {r} lacks {', '.join(s)}" for r, s in uneven.items())
        )
    if pretraining_subjects is not None:
        seen = everyone & {str(s) for s in pretraining_subjects}
        if seen:
            raise FoldLeakageError(
                f"{len(seen)} cross-validated subjects were pretraining subjects of the source model "
                f"(e.g. {', '.join(sorted(seen)[:5])}): they would be tested on a model that was trained "
                "on them; cross-validate only subjects outside the pretraining split"
            )


def fold_subjects(folds: pd.DataFrame, repeat: int, fold: int) -> tuple[list[str], list[str]]:
    """The training and held-out subject ids of one fold of one repeat, each sorted.

    Raises:
        ValueError: The table has no such repeat or fold.
    """
    rows = folds[folds["repeat"] == repeat]
    if rows.empty or not (rows["fold"] == fold).any():
        raise ValueError(
            f"the fold table has no repeat {repeat} fold {fold}; repeats "
            f"{sorted(folds['repeat'].unique())}, folds {sorted(folds['fold'].unique())}"
        )
    held_out = rows["fold"] == fold
    subjects = rows["subject_id"].astype(str)
    return sorted(subjects[~held_out]), sorted(subjects[held_out])


def _subset_count(size: int | float, n: int) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Real):
        raise ValueError(f"a subset size is a fraction in (0, 1] or a count; got {size!r}")
    if not isinstance(size, numbers.Integral):
        if not 0 < size <= 1:
            raise ValueError(f"a subset fraction must lie in (0, 1]; got {size}")
        return max(1, round(size * n))
    if not 1 <= size <= n:
        raise ValueError(f"a subset of {size} subjects is asked for, from {n} training subjects")
    return int(size)


def nested_subsets(
    train_subject_ids: Sequence[str],
    sizes: Sequence[int | float],
    seed: int,
    strata: Mapping[str, object] | pd.Series | None = None,
) -> dict[int | float, list[str]]:
    """Nested, reproducible subsets of training subjects, one per requested size.

    All subsets are prefixes of one seeded ordering of the subjects, so each smaller subset lies inside
    each larger one. With ``strata`` the ordering interleaves the strata (a subject's key is its rank
    within its shuffled stratum, plus a random offset, over the stratum's size), so every prefix keeps
    the strata's proportions to within about one subject each. scikit-learn's splitters draw each size
    independently, which is not nested.

    Args:
        train_subject_ids: A fold's training subjects.
        sizes: Fractions (floats in (0, 1], of the training subjects, rounded, at least 1) or counts.
        seed: Random seed; the same subjects (in any order), sizes, strata and seed give the same subsets.
        strata: A stratum label per subject id (e.g. sex and age bin), or ``None``.

    Returns:
        ``{size: sorted subject ids}`` with the sizes as given, in increasing order of subset size.

    Raises:
        ValueError: Subjects repeat, a size is out of range, or ``strata`` lacks some subjects.
    """
    subjects = pd.Series(sorted(str(s) for s in train_subject_ids), dtype=object)
    if subjects.duplicated().any():
        raise ValueError(
            f"training subjects repeat: {', '.join(subjects[subjects.duplicated()].unique()[:5])}"
        )
    rng = np.random.default_rng(seed)
    shuffled = subjects.iloc[rng.permutation(len(subjects))].reset_index(drop=True)
    if strata is None:
        order = shuffled
    else:
        labels = pd.Series(strata)
        labels.index = labels.index.astype(str)
        absent = sorted(set(shuffled) - set(labels.index))
        if absent:
            raise ValueError(
                f"strata give no stratum for {len(absent)} training subjects (e.g. {', '.join(absent[:5])})"
            )
        stratum = labels.loc[shuffled].astype(str).to_numpy()
        rank = pd.Series(stratum).groupby(stratum).cumcount().to_numpy()
        size = pd.Series(stratum).map(pd.Series(stratum).value_counts()).to_numpy()
        key = (rank + rng.uniform(size=len(shuffled))) / size
        order = shuffled.iloc[np.argsort(key, kind="stable")]
    counts = {size: _subset_count(size, len(subjects)) for size in sizes}
    return {
        size: sorted(order.iloc[:count])
        for size, count in sorted(counts.items(), key=lambda kv: kv[1])
    }
