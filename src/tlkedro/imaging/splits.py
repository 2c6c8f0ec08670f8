"""Subject-level splits: pretrain / finetune / test from the in-site subjects, plus held-out sites.

Every subject gets exactly one split, so no subject's scans reach two splits:

- ``external``: every subject with a scan at one of the ``external_sites`` (other domains, for
  evaluation). The sites share one split (one array, one ``evaluate_external`` node per variant); the
  labels' ``site`` column tells them apart, and the reports give each site its own metrics
  (:func:`subject_sites`);
- ``test``, ``finetune``, ``pretrain``: carved in that order from the other subjects with scikit-learn's
  ``train_test_split``, stratified by sex and age bin (``age_bins`` quantile bins), seeded; where the
  manifest has a ``label`` column (2D images, ``tlkedro.imaging.images``), by that class instead;
- ``unused``: the in-site subjects the requested sizes leave over. They are kept in the table and
  counted in the log, never silently dropped.

Sizes are fractions of the in-site subjects (written with a decimal point: ``0.2``) or counts (``500``);
TLIMB's design is ``pretrain: 10000, finetune: 500, test: 1000``. Fractions become counts by the
largest-remainder rule, so fractions summing to 1 use every subject.

Where a stratum is too small for a stratified draw (fewer than two subjects, or fewer subjects requested
than strata), the draw falls back to sex only, then to no stratification, with a warning.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator
from sklearn.model_selection import train_test_split

from tlkedro.errors import ConfigurationError

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("pretrain", "finetune", "test", "external")
"""The splits that get model-input arrays."""
UNUSED = "unused"
_CARVE_ORDER = ("test", "finetune", "pretrain")

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class CohortTooSmallError(ConfigurationError, ValueError):
    """The cohort has fewer subjects than the requested split sizes."""


class SplitLeakageError(ConfigurationError, ValueError):
    """A subject appears in more than one split."""


class SplitConfig(BaseModel):
    """Split sizes and the held-out sites (the ``preprocessing.splits`` parameters).

    Args:
        pretrain: Fraction (float in [0, 1]) or count (int) of in-site subjects.
        finetune: As ``pretrain``.
        test: As ``pretrain``.
        external_sites: Sites whose subjects form the ``external`` split (a list; one site may be given
            as a string); empty or ``None`` for none. ``external_site``, its old name, still works with
            a ``FutureWarning`` and, where both are given (an environment written for the old name over
            a base with the new one), takes precedence.
        age_bins: Number of age quantile bins to stratify by.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    pretrain: NonNegativeInt | Fraction = 0.6
    finetune: NonNegativeInt | Fraction = 0.2
    test: NonNegativeInt | Fraction = 0.2
    external_sites: tuple[str, ...] = ()
    age_bins: PositiveInt = 5

    @model_validator(mode="before")
    @classmethod
    def _sites_as_a_list(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "external_site" in data:
            # FutureWarning, not DeprecationWarning: Python shows it to the person editing the YAML.
            warnings.warn(
                "parameter preprocessing.splits.external_site is deprecated; use external_sites "
                "(a list of sites)",
                FutureWarning,
                stacklevel=2,
            )
            data["external_sites"] = data.pop("external_site")
        sites = data.get("external_sites")
        if sites is None:
            data["external_sites"] = ()
        elif isinstance(sites, str | int):
            data["external_sites"] = (sites,)
        return data

    @model_validator(mode="after")
    def _sites_once(self) -> SplitConfig:
        repeated = sorted({s for s in self.external_sites if self.external_sites.count(s) > 1})
        if repeated:
            raise ValueError(f"external_sites lists {', '.join(repeated)} more than once")
        return self

    @model_validator(mode="after")
    def _fractions_fit(self) -> SplitConfig:
        fractions = {k: v for k, v in self.sizes().items() if isinstance(v, float)}
        if sum(fractions.values()) > 1 + 1e-9:
            given = ", ".join(f"{k}={v}" for k, v in fractions.items())
            raise ValueError(
                f"split fractions {given} sum to {sum(fractions.values()):g}; allowed: at most 1"
            )
        return self

    def sizes(self) -> dict[str, int | float]:
        """Requested size of each in-site split, by name."""
        return {"pretrain": self.pretrain, "finetune": self.finetune, "test": self.test}


def split_counts(config: SplitConfig, n_subjects: int) -> dict[str, int]:
    """Turn the requested sizes into subject counts for a cohort of ``n_subjects`` in-site subjects.

    Raises:
        CohortTooSmallError: The counts add up to more than ``n_subjects``.
    """
    sizes = config.sizes()
    counts = {k: v for k, v in sizes.items() if isinstance(v, int)}
    exact = {k: v * n_subjects for k, v in sizes.items() if isinstance(v, float)}
    counts |= {k: math.floor(v) for k, v in exact.items()}
    leftover = round(sum(exact.values())) - sum(counts[k] for k in exact)
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[:leftover]:
        counts[k] += 1
    if sum(counts.values()) > n_subjects:
        asked = " + ".join(f"{k}={counts[k]}" for k in sizes)
        raise CohortTooSmallError(
            f"preprocessing.splits asks for {asked} = {sum(counts.values())} in-site subjects, but the "
            f"manifest has only {n_subjects}: lower the counts or give fractions"
        )
    return counts


def subject_table(manifest: pd.DataFrame, external_sites: Sequence[str] = ()) -> pd.DataFrame:
    """One row per subject: ``subject_id``, ``age``, ``sex``, ``site`` of its first session, ``external``.

    Raises:
        ValueError: A site of ``external_sites`` has no scan.
    """
    sites = manifest["site"].astype(str)
    absent = [site for site in external_sites if not (sites == site).any()]
    if absent:
        raise ValueError(
            f"preprocessing.splits.external_sites names {', '.join(map(repr, absent))}, but no scan "
            f"has that site; sites present: {', '.join(sorted(sites.unique()))}. List only those, "
            "or [] for none"
        )
    ordered = manifest.assign(site=sites, external=sites.isin(list(external_sites))).sort_values(
        ["subject_id", "session"]
    )
    grouped = ordered.groupby("subject_id", sort=True)
    subjects = grouped[["age", "sex", "site", *(["label"] if "label" in manifest else [])]].first()
    # A subject scanned at an external site anywhere is external everywhere, or it would leak.
    subjects["external"] = grouped["external"].any()
    return subjects.reset_index()


def _strata_options(subjects: pd.DataFrame, age_bins: int) -> list[tuple[str, pd.Series]]:
    if "label" in subjects:  # 2D images: no age or sex, a class per image (tlkedro.imaging.images)
        return [("class", subjects["label"].astype(str))]
    age_bin = pd.qcut(subjects["age"], q=age_bins, labels=False, duplicates="drop")
    sex = subjects["sex"].astype(str)
    return [("sex and age bin", sex + "_" + age_bin.astype(str)), ("sex", sex)]


def _stratified_take(
    pool: pd.DataFrame, n: int, strata: list[tuple[str, pd.Series]], seed: int, split: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    if n == 0:
        return pool.iloc[:0], pool
    if n == len(pool):
        return pool, pool.iloc[:0]
    chosen, y = "nothing", None
    for name, labels in strata:
        candidate = labels.loc[pool.index]
        counts = candidate.value_counts()
        # train_test_split needs two subjects per stratum and at least one draw per stratum on each side.
        if counts.min() >= 2 and min(n, len(pool) - n) >= len(counts):
            chosen, y = name, candidate
            break
    if chosen != strata[0][0]:
        logger.warning(
            "split %s: too few subjects per stratum; stratified by %s only", split, chosen
        )
    taken, rest = train_test_split(pool, train_size=n, stratify=y, random_state=seed)
    return taken, rest


def split_subjects(manifest: pd.DataFrame, config: SplitConfig, seed: int) -> pd.DataFrame:
    """Assign every subject of the manifest to one split.

    Args:
        manifest: One row per scan (``subject_id``, ``session``, ``age``, ``sex``, ``site``).
        config: Split sizes and external sites.
        seed: Random seed; the same manifest, config and seed give the same table.

    Returns:
        ``subject_id``, ``split`` (``pretrain | finetune | test | external | unused``), one row per subject.

    Raises:
        CohortTooSmallError: The manifest has fewer in-site subjects than requested.
        ValueError: A site of ``external_sites`` does not occur in the manifest.
    """
    subjects = subject_table(manifest, config.external_sites)
    external = subjects[subjects["external"]]
    pool = subjects[~subjects["external"]]
    counts = split_counts(config, len(pool))
    strata = _strata_options(pool, config.age_bins)
    parts = [external.assign(split="external")]
    for split in _CARVE_ORDER:
        taken, pool = _stratified_take(pool, counts[split], strata, seed, split)
        parts.append(taken.assign(split=split))
    parts.append(pool.assign(split=UNUSED))
    table = pd.concat(parts)[["subject_id", "split"]].sort_values("subject_id", ignore_index=True)
    check_no_leakage(table)
    sizes = table["split"].value_counts()
    logger.info(
        "subjects per split: %s",
        ", ".join(f"{s}={sizes.get(s, 0)}" for s in (*SPLITS, UNUSED)),
    )
    if len(config.external_sites) > 1:
        per_site = subject_sites(manifest[manifest["subject_id"].isin(external["subject_id"])])
        logger.info(
            "external subjects per site: %s",
            ", ".join(f"{site}={n}" for site, n in per_site.value_counts(sort=False).items()),
        )
    return table


def subject_sites(labels: pd.DataFrame) -> pd.Series:
    """The site of each subject of a manifest or labels table (``subject_id``, ``site``), by subject.

    A subject scanned at several sites gets their names joined with ``+`` (``11028+11029``), so that
    its averaged prediction is reported apart rather than under one of them.
    """
    return (
        labels.assign(site=labels["site"].astype(str), subject_id=labels["subject_id"].astype(str))
        .groupby("subject_id")["site"]
        .agg(lambda sites: "+".join(sorted(set(sites))))
        .rename("site")
    )


def check_no_leakage(splits: pd.DataFrame) -> None:
    """Check that no subject is in two splits.

    Raises:
        SplitLeakageError: Naming the subjects found in more than one split, and their splits.
    """
    per_subject = splits.groupby("subject_id")["split"].unique()
    leaked = per_subject[per_subject.map(len) > 1]
    if len(leaked):
        shown = "; ".join(f"{s}: {', '.join(sorted(v))}" for s, v in leaked.head(10).items())
        more = f" (and {len(leaked) - 10} more)" if len(leaked) > 10 else ""
        raise SplitLeakageError(f"{len(leaked)} subjects are in more than one split: {shown}{more}")


def select_split(manifest: pd.DataFrame, splits: pd.DataFrame, split: str) -> pd.DataFrame:
    """The manifest rows of the subjects in ``split``, ordered by subject, session and scan.

    Raises:
        SplitLeakageError: The split table puts a subject in two splits.
        ValueError: Manifest subjects are missing from the split table (it is stale), or ``split``
            is not a split name.
    """
    if split not in (*SPLITS, UNUSED):
        raise ValueError(f"split {split!r} is unknown; valid: {', '.join((*SPLITS, UNUSED))}")
    check_no_leakage(splits)
    missing = np.setdiff1d(manifest["subject_id"].unique(), splits["subject_id"].unique())
    if len(missing):
        raise ValueError(
            f"{len(missing)} manifest subjects are in no split (e.g. {', '.join(missing[:5])}): the "
            "split table is older than the manifest; re-run the split_subjects node"
        )
    members = splits.loc[splits["split"] == split, "subject_id"]
    scans = manifest[manifest["subject_id"].isin(members)]
    return scans.sort_values(["subject_id", "session", "scan_id"], ignore_index=True)
