"""The registry's parameters outside a Kedro session."""

from __future__ import annotations

import pytest

from tlkedro.pipeline_registry import load_parameters


def test_outside_a_session_an_environment_merges_softly_into_base(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = load_parameters()
    monkeypatch.setenv("KEDRO_ENV", "tiny")
    tiny = load_parameters()
    assert tiny["synthetic"]["n_subjects"] == 48 != base["synthetic"]["n_subjects"]
    # Keys that conf/tiny leaves out keep their base values instead of vanishing with their section.
    assert tiny["pretrain"]["trainer"]["max_epochs"] == 1
    assert tiny["pretrain"]["objective"] == base["pretrain"]["objective"]
    assert tiny["synthetic"]["layout"] == base["synthetic"]["layout"]


def test_an_environment_removes_a_base_variant_with_null(monkeypatch: pytest.MonkeyPatch) -> None:
    from tlkedro.plan import build_plan

    assert "finetune.linear_probe" in build_plan(load_parameters()).variants
    monkeypatch.setenv("KEDRO_ENV", "ixi")  # conf/ixi: variants: {linear_probe: null, ...}
    parameters = load_parameters()
    assert parameters["finetune"]["variants"]["linear_probe"] is None
    variants = build_plan(parameters).variants
    assert "finetune.linear_probe" not in variants and "finetune.freeze_layer3_1" not in variants
    assert {"finetune.scratch", "finetune.full"} <= set(variants)
