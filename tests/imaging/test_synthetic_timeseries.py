"""Synthetic ROI time series: deterministic per subject, with the age and sex coupling they declare."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic
import pytest

from tlkedro.imaging.synthetic import (
    SyntheticCohortParams,
    cohort_metadata,
    cohort_recipes,
    draw_cohort,
)
from tlkedro.imaging.synthetic_timeseries import (
    SyntheticSeriesParams,
    generate_series,
    pair_weights,
)

LONG = SyntheticSeriesParams(timepoints=2000)


def _correlation(series: pd.DataFrame, a: int, b: int) -> float:
    return float(np.corrcoef(series.iloc[:, a], series.iloc[:, b])[0, 1])


def test_a_series_is_reproducible_and_has_the_declared_shape() -> None:
    first = generate_series(SyntheticSeriesParams(), 1, 3, 60.0, 0)
    assert first.shape == (160, 8)
    assert list(first.columns) == [f"roi_{i:02d}" for i in range(8)]
    pd.testing.assert_frame_equal(first, generate_series(SyntheticSeriesParams(), 1, 3, 60.0, 0))
    assert not first.equals(generate_series(SyntheticSeriesParams(), 1, 4, 60.0, 0))


def test_age_pairs_couple_more_with_age_and_sex_pairs_more_in_men() -> None:
    young, old = (generate_series(LONG, 0, 0, age, 0) for age in (45.0, 80.0))
    woman, man = (generate_series(LONG, 0, 0, 64.0, sex) for sex in (0, 1))

    for a, b in LONG.age_pairs:
        assert _correlation(old, a, b) > _correlation(young, a, b) + 0.2
    for a, b in LONG.sex_pairs:
        assert _correlation(man, a, b) > _correlation(woman, a, b) + 0.12
        # ... while the age pairs do not follow sex
        assert abs(_correlation(man, 0, 1) - _correlation(woman, 0, 1)) < 0.1
    weight = pair_weights(LONG, 80.0, 0)[LONG.age_pairs[0]]
    assert _correlation(old, 0, 1) == pytest.approx(weight**2 / (1 + weight**2), abs=0.06)
    assert abs(_correlation(old, 6, 7)) < 0.1  # uncoupled ROIs


def test_pairs_must_be_distinct_rois_in_range() -> None:
    with pytest.raises(pydantic.ValidationError, match="not in 0..7"):
        SyntheticSeriesParams(sex_pairs=((6, 8),))
    with pytest.raises(pydantic.ValidationError, match="more than one pair"):
        SyntheticSeriesParams(sex_pairs=((1, 6),))


def test_the_cohort_writes_series_beside_a_participants_table() -> None:
    params = SyntheticCohortParams(n_subjects=3, data_type="timeseries")
    subjects = draw_cohort(params)

    recipes = cohort_recipes(subjects, params)
    metadata = cohort_metadata(subjects, params.metadata_layout)

    assert list(recipes) == [f"sub-{s.eid}_timeseries.tsv" for s in subjects]
    assert metadata["participant_id"].tolist() == [f"sub-{s.eid}" for s in subjects]
    assert set(metadata["sex"]) <= {"F", "M"}
    series = recipes[f"sub-{subjects[1].eid}_timeseries.tsv"]()
    pd.testing.assert_frame_equal(
        series,
        generate_series(params.timeseries, params.seed, 1, subjects[1].brain_age, subjects[1].sex),
    )
    # The image cohort is unchanged by default.
    assert SyntheticCohortParams().data_type == "t1"
    assert next(
        iter(cohort_recipes(subjects, params.model_copy(update={"data_type": "t1"})))
    ).endswith("T1_brain_to_MNI.nii.gz")
