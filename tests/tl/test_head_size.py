"""head_size_status and head_size_markdown: what the report says about head size, per model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tlkedro.tl.evaluation import head_size_markdown, head_size_status
from tlkedro.tl.evaluation.head_size import CONTROLLED, NOT_CONTROLLED, UNKNOWN

COVARIATES = {"finetune.full": [], "finetune.full_head_scale": ["head_scale"]}


def test_affine_registration_controls_head_size_unless_a_covariate_gives_it() -> None:
    status = head_size_status(np.array([0.55, 0.61, 0.78]), COVARIATES)
    assert status["finetune.full"][0] == CONTROLLED
    assert "0.55 to 0.78" in status["finetune.full"][1]
    assert status["finetune.full_head_scale"][0] == NOT_CONTROLLED
    assert "given `head_scale`" in status["finetune.full_head_scale"][1]


def test_rigid_registration_and_unregistered_scans_do_not_control_it() -> None:
    rigid = head_size_status(np.ones(4), COVARIATES)
    assert rigid["finetune.full"][0] == NOT_CONTROLLED and "rigid" in rigid["finetune.full"][1]
    unregistered = head_size_status(np.full(4, np.nan), COVARIATES)
    assert unregistered["finetune.full"][0] == UNKNOWN
    partly = head_size_status(np.array([0.6, np.nan, 0.7]), COVARIATES)
    assert partly["finetune.full"][0] == UNKNOWN and "1 of 3 rows" in partly["finetune.full"][1]


def evaluation_table(models: list[str], verdicts: dict[str, str] | None = None) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "model": models,
            "metric": "auroc",
            "estimate": np.linspace(0.6, 0.8, len(models)),
            "low": 0.5,
            "high": 0.9,
            "confidence": 0.95,
        }
    )
    if verdicts is not None:  # as evaluation_table(covariate_baseline=...) adds them
        table["covariate_difference"] = 0.01
        table["covariate_difference_low"] = -0.02
        table["covariate_difference_high"] = 0.04
        table["covariate_verdict"] = [verdicts.get(m, "") for m in models]
    return table


def test_the_section_puts_the_head_size_baseline_beside_the_variants() -> None:
    status = head_size_status(np.array([0.55, 0.61, 0.78]), COVARIATES)
    table = evaluation_table([*COVARIATES, "baseline.covariate"])
    markdown = head_size_markdown(status, table, "baseline.covariate")
    rows = {line.split(" | ")[0].strip("| "): line for line in markdown.splitlines() if "|" in line}
    assert "**controlled**" in rows["finetune.full"] and "0.6 (0.5 to 0.9)" in rows["finetune.full"]
    assert "**not controlled**" in rows["finetune.full_head_scale"]
    assert "the only input" in rows["baseline.covariate"] and "0.8 (0.5 to 0.9)" in markdown
    assert "has to beat baseline.covariate" in markdown
    assert "against head size alone" not in markdown  # no paired differences in this table


def test_the_section_says_whether_a_model_given_head_size_beats_head_size_alone() -> None:
    status = head_size_status(np.array([0.55, 0.61, 0.78]), COVARIATES)
    same = "not distinguishable from baseline.covariate"
    table = evaluation_table([*COVARIATES, "baseline.covariate"], {m: same for m in COVARIATES})
    markdown = head_size_markdown(status, table, "baseline.covariate")
    rows = {line.split(" | ")[0].strip("| "): line for line in markdown.splitlines() if "|" in line}
    assert f"+0.01 (-0.02 to 0.04): {same} |" in rows["finetune.full"]
    assert rows["baseline.covariate"].endswith("| reference |")
    assert (
        f"- finetune.full_head_scale against head size alone: +0.01 (-0.02 to 0.04): {same}: "
        "no evidence that the images add to it." in markdown
    )
    assert "- finetune.full against" not in markdown  # controlled: nothing to add to
    better = evaluation_table(
        [*COVARIATES, "baseline.covariate"],
        {"finetune.full_head_scale": "better than baseline.covariate"},
    )
    assert "better than baseline.covariate: the images add to it." in head_size_markdown(
        status, better, "baseline.covariate"
    )


def test_without_the_baseline_the_section_says_it_is_missing() -> None:
    status = head_size_status(np.full(3, np.nan), {"pretrain.default": []})
    markdown = head_size_markdown(
        status, evaluation_table(["pretrain.default"]), "baseline.covariate"
    )
    assert "**unknown**" in markdown and "No head-size-only baseline" in markdown
