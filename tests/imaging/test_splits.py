"""Subject splits: sizes, stratification, determinism, the external site, `unused`, and the leakage guard."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tlkedro.imaging.splits import (
    CohortTooSmallError,
    SplitConfig,
    SplitLeakageError,
    check_no_leakage,
    select_split,
    split_counts,
    split_subjects,
    subject_sites,
)


def _manifest(
    n: int = 60, sites: tuple[str, ...] = ("11025", "11026", "11028"), seed: int = 0
) -> pd.DataFrame:
    """One scan per subject; about 30% female, ages 45-80, sites assigned round robin."""
    rng = np.random.default_rng(seed)
    ids = [f"{1000000 + i}" for i in range(n)]
    return pd.DataFrame(
        {
            "scan_id": [f"{s}/T1/T1_brain_to_MNI.nii.gz" for s in ids],
            "subject_id": ids,
            "session": "",
            "path": [f"/data/{s}.nii.gz" for s in ids],
            "age": rng.uniform(45, 80, n).round(1),
            "sex": (rng.uniform(size=n) > 0.3).astype(int),
            "site": [sites[i % len(sites)] for i in range(n)],
        }
    )


def test_every_subject_gets_exactly_one_split_and_leftovers_are_unused():
    manifest = _manifest(90)
    table = split_subjects(
        manifest, SplitConfig(pretrain=30, finetune=10, test=15, external_sites=["11028"]), seed=1
    )
    assert sorted(table["subject_id"]) == sorted(manifest["subject_id"])
    counts = table["split"].value_counts().to_dict()
    assert counts == {"pretrain": 30, "finetune": 10, "test": 15, "external": 30, "unused": 5}


def test_external_split_is_exactly_the_external_site():
    manifest = _manifest(60)
    table = split_subjects(manifest, SplitConfig(external_sites=["11028"]), seed=1).merge(manifest)
    assert set(table.loc[table["split"] == "external", "site"]) == {"11028"}
    assert "11028" not in set(table.loc[table["split"] != "external", "site"])


def test_a_subject_scanned_at_the_external_site_is_external_in_all_its_sessions():
    manifest = _manifest(30, sites=("A", "B"))
    revisit = manifest.iloc[[0]].assign(session="2", site="B", scan_id="revisit")
    manifest = pd.concat([manifest.assign(session="1"), revisit], ignore_index=True)
    subject = manifest.loc[0, "subject_id"]
    assert manifest.loc[0, "site"] == "A"
    table = split_subjects(manifest, SplitConfig(external_sites=["B"]), seed=0)
    assert table.set_index("subject_id").loc[subject, "split"] == "external"
    assert len(table) == 30


def test_fractions_summing_to_one_use_every_in_site_subject():
    table = split_subjects(
        _manifest(61, sites=("A",)), SplitConfig(pretrain=0.6, finetune=0.2, test=0.2), seed=3
    )
    counts = table["split"].value_counts().to_dict()
    assert counts == {"pretrain": 37, "finetune": 12, "test": 12}


def test_fractions_and_counts_mix():
    assert split_counts(SplitConfig(pretrain=0.5, finetune=10, test=0.25), 100) == {
        "pretrain": 50,
        "finetune": 10,
        "test": 25,
    }


def test_same_seed_same_table_and_another_seed_another():
    manifest = _manifest(80)
    config = SplitConfig(external_sites=["11028"])
    first = split_subjects(manifest, config, seed=11)
    shuffled = manifest.sample(frac=1.0, random_state=5)
    pd.testing.assert_frame_equal(first, split_subjects(shuffled, config, seed=11))
    assert not first.equals(split_subjects(manifest, config, seed=12))


def test_stratification_keeps_the_sex_ratio_in_every_split():
    manifest = _manifest(400, sites=("A",), seed=2)
    table = split_subjects(
        manifest, SplitConfig(pretrain=0.5, finetune=0.2, test=0.3), seed=0
    ).merge(manifest)
    overall = manifest["sex"].mean()
    for split, group in table.groupby("split"):
        assert group["sex"].mean() == pytest.approx(overall, abs=0.03), split


def test_stratification_falls_back_for_a_tiny_cohort(caplog):
    with caplog.at_level(logging.WARNING, logger="tlkedro.imaging.splits"):
        table = split_subjects(
            _manifest(7, sites=("A",)), SplitConfig(pretrain=3, finetune=2, test=2), seed=0
        )
    assert table["split"].value_counts().to_dict() == {"pretrain": 3, "finetune": 2, "test": 2}
    assert "stratified by" in caplog.text


def test_counts_larger_than_the_cohort_raise_a_clear_error():
    with pytest.raises(
        CohortTooSmallError, match=r"pretrain=10000 \+ finetune=500 \+ test=1000 = 11500 .* only 40"
    ):
        split_subjects(
            _manifest(60),
            SplitConfig(pretrain=10000, finetune=500, test=1000, external_sites=["11028"]),
            seed=0,
        )


def test_unknown_external_site_lists_the_sites_present():
    with pytest.raises(
        ValueError,
        match=r"external_sites names '99999', but no scan has that site; "
        r"sites present: 11025, 11026, 11028",
    ):
        split_subjects(_manifest(30), SplitConfig(external_sites=["11028", "99999"]), seed=0)


def test_external_sites_given_as_numbers_or_one_string_are_read_as_a_list_of_strings():
    assert SplitConfig(external_sites=[11028, 11027]).external_sites == ("11028", "11027")
    assert SplitConfig(external_sites="11028").external_sites == ("11028",)
    assert SplitConfig(external_sites=None).external_sites == ()
    with pytest.raises(ValidationError, match="external_sites lists 11028 more than once"):
        SplitConfig(external_sites=["11028", 11028])


def test_the_old_name_external_site_still_works_with_a_future_warning_and_wins():
    with pytest.warns(FutureWarning, match="external_site is deprecated; use external_sites"):
        config = SplitConfig.model_validate({"external_site": 11028})
    assert config.external_sites == ("11028",)
    # An environment written for the old name, over a base that has the new one.
    with pytest.warns(FutureWarning):
        config = SplitConfig.model_validate({"external_sites": ["11028"], "external_site": None})
    assert config.external_sites == ()


def test_several_external_sites_share_the_external_split_and_keep_their_site(caplog):
    manifest = _manifest(90)
    with caplog.at_level(logging.INFO, logger="tlkedro.imaging.splits"):
        table = split_subjects(manifest, SplitConfig(external_sites=["11026", "11028"]), seed=1)
    table = table.merge(manifest)
    external = table[table["split"] == "external"]
    assert external["site"].value_counts().to_dict() == {"11026": 30, "11028": 30}
    assert set(table.loc[table["split"] != "external", "site"]) == {"11025"}
    assert "external subjects per site: 11026=30, 11028=30" in caplog.text
    assert subject_sites(external).to_dict() == dict(zip(external["subject_id"], external["site"]))


def test_a_subject_scanned_at_two_sites_is_reported_under_both():
    labels = pd.DataFrame(
        {"subject_id": ["1", "1", "2", "3"], "site": ["B", "A", 11028, "B"], "age": 50.0}
    )
    assert subject_sites(labels).to_dict() == {"1": "A+B", "2": "11028", "3": "B"}


def test_fractions_over_one_are_rejected_naming_them():
    with pytest.raises(ValidationError, match=r"pretrain=0.8, finetune=0.2, test=0.2 sum to 1.2"):
        SplitConfig(pretrain=0.8, finetune=0.2, test=0.2)
    with pytest.raises(ValidationError, match="test"):
        SplitConfig(test=-3)


def test_leakage_guard_names_the_subjects_in_two_splits():
    table = pd.DataFrame(
        {"subject_id": ["a", "b", "b", "c"], "split": ["pretrain", "pretrain", "test", "test"]}
    )
    with pytest.raises(
        SplitLeakageError, match=r"1 subjects are in more than one split: b: pretrain, test"
    ):
        check_no_leakage(table)
    check_no_leakage(table.drop(index=2))


def test_select_split_refuses_a_leaking_or_stale_table():
    manifest = _manifest(10, sites=("A",))
    table = split_subjects(manifest, SplitConfig(pretrain=5, finetune=2, test=3), seed=0)
    assert len(select_split(manifest, table, "test")) == 3
    leaking = pd.concat([table, table.iloc[[0]].assign(split="external")])
    with pytest.raises(SplitLeakageError):
        select_split(manifest, leaking, "test")
    with pytest.raises(
        ValueError, match="1 manifest subjects are in no split .*re-run the split_subjects node"
    ):
        select_split(manifest, table.iloc[1:], "test")
