"""Synthetic ROI time series with known age and sex effects on known connections.

The time-series counterpart of the synthetic T1 cohort (``synthetic.data_type: timeseries``): the same
subjects (:func:`tlkedro.imaging.synthetic.draw_subject`: age, sex, site, brain age) each get one
``(timepoints, rois)`` series, like an fMRI parcellation's mean signals:

* every ROI is AR(1) noise (``ar_coefficient``), the slow autocorrelation of BOLD signals;
* each pair of ``age_pairs`` shares a latent AR(1) signal with weight
  ``coupling * exp(age_log_coupling_per_decade * (brain_age - 64) / 10)``, so its correlation grows
  with the brain age; each pair of ``sex_pairs`` one with weight
  ``coupling * exp(sex_log_coupling * (sex - 1/2))``, stronger in males for a positive value;
* the series is in scanner-like units (``offset`` plus ``scale`` times the signal).

A pair with weight ``w`` on unit-variance noise has correlation ``w^2 / (1 + w^2)``, the quantity a
model has to read off (docs/timeseries.md). Every series draws from its own stream of the subject's seed,
so it depends neither on the cohort size nor on the workers.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.signal import lfilter

SERIES_PATH = "sub-{eid}_timeseries.tsv"
_REFERENCE_AGE = 64.0
_STREAM = 3  # the subject's seed streams 0-2 are the T1 generator's (tlkedro.imaging.synthetic)


class SyntheticSeriesParams(BaseModel):
    """The ``synthetic.timeseries`` parameters (used with ``synthetic.data_type: timeseries``).

    Attributes:
        rois: Regions of interest (columns).
        timepoints: Time points (rows) of every series.
        ar_coefficient: AR(1) coefficient of the noise and of the shared signals.
        age_pairs: ROI pairs whose coupling grows with the brain age.
        sex_pairs: ROI pairs whose coupling depends on sex.
        coupling: Weight of a pair's shared signal at the reference age (64), or halfway between sexes.
        age_log_coupling_per_decade: Log change of an age pair's weight per decade of brain age.
        sex_log_coupling: Log ratio of a sex pair's weight, male to female.
        offset: Mean of every ROI, in arbitrary scanner units.
        scale: Standard deviation of the noise, in the same units.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rois: Annotated[int, Field(ge=2)] = 8
    timepoints: Annotated[int, Field(ge=2)] = 160
    ar_coefficient: Annotated[float, Field(ge=0, lt=1)] = 0.6
    age_pairs: tuple[tuple[int, int], ...] = ((0, 1), (2, 3))
    sex_pairs: tuple[tuple[int, int], ...] = ((4, 5),)
    coupling: Annotated[float, Field(gt=0)] = 0.6
    age_log_coupling_per_decade: float = 0.5
    sex_log_coupling: float = 0.5
    offset: float = 1000.0
    scale: Annotated[float, Field(gt=0)] = 10.0

    @model_validator(mode="after")
    def _pairs(self) -> SyntheticSeriesParams:
        used = [roi for pair in (*self.age_pairs, *self.sex_pairs) for roi in pair]
        outside = sorted({roi for roi in used if not 0 <= roi < self.rois})
        if outside:
            raise ValueError(
                f"ROI indices {outside} of age_pairs/sex_pairs are not in 0..{self.rois - 1}"
            )
        shared = sorted({roi for roi in used if used.count(roi) > 1})
        if shared:
            raise ValueError(
                f"ROIs {shared} are in more than one pair: each pair's correlation must be its own"
            )
        return self


def pair_weights(
    params: SyntheticSeriesParams, brain_age: float, sex: int
) -> dict[tuple[int, int], float]:
    """The weight of each coupled pair's shared signal for a subject."""
    decades = (brain_age - _REFERENCE_AGE) / 10.0
    age_weight = params.coupling * np.exp(params.age_log_coupling_per_decade * decades)
    sex_weight = params.coupling * np.exp(params.sex_log_coupling * (sex - 0.5))
    return {
        **{pair: float(age_weight) for pair in params.age_pairs},
        **{pair: float(sex_weight) for pair in params.sex_pairs},
    }


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], coefficient: float) -> np.ndarray:
    """Unit-variance AR(1) processes along axis 0, started from their stationary distribution."""
    innovations = rng.standard_normal(shape) * np.sqrt(1 - coefficient**2)
    innovations[0] = rng.standard_normal(shape[1:])
    return lfilter([1.0], [1.0, -coefficient], innovations, axis=0)


def generate_series(
    params: SyntheticSeriesParams, seed: int, index: int, brain_age: float, sex: int
) -> pd.DataFrame:
    """One subject's series: ``timepoints`` rows, columns ``roi_00`` ... (header: the ROI names)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, _STREAM)))
    shape = (params.timepoints, params.rois)
    signal = _ar1(rng, shape, params.ar_coefficient)
    weights = pair_weights(params, brain_age, sex)
    shared = _ar1(rng, (params.timepoints, len(weights)), params.ar_coefficient)
    for column, ((a, b), weight) in enumerate(weights.items()):
        signal[:, [a, b]] += weight * shared[:, [column]]
    columns = [f"roi_{i:02d}" for i in range(params.rois)]
    return pd.DataFrame((params.offset + params.scale * signal).round(3), columns=columns)
