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
