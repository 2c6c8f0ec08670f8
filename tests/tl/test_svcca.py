"""SVCCA: the known cases of the measure, the per-stage table of two models and the cutoff rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from tlkedro.tl.analysis.svcca import (
    SVCCA_COLUMNS,
    auto_cut_at,
    plot_svcca_by_stage,
    suggest_cutoff,
    svcca,
    svcca_by_stage,
)
from tlkedro.tl.architectures import create_architecture
from tlkedro.tl.architectures.surgery import truncate

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL_CBR = {"width_factors": {f"layer{i}": 0.125 for i in range(1, 5)}, "img_size": 32}


def test_identical_representations_give_one() -> None:
    x = np.random.default_rng(0).normal(size=(2000, 20))
    assert svcca(x, x) == pytest.approx(1.0, abs=1e-9)


def test_independent_representations_give_near_zero() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5000, 10)), rng.normal(size=(5000, 10))
    # The canonical correlations of independent data are of the order of sqrt(dims / samples) = 0.045.
    assert svcca(x, y) < 0.1


def test_an_invertible_linear_map_gives_one() -> None:
    rng = np.random.default_rng(2)
    full_rank = rng.normal(size=(2000, 12))
    mixing = rng.normal(size=(12, 12)) + 4 * np.eye(12)  # well conditioned, invertible
    # Without the SVD step this is plain CCA, exactly invariant to invertible maps.
    assert svcca(full_rank, full_rank @ mixing + 3.0, variance_kept=1.0) == pytest.approx(
        1, abs=1e-9
    )
    # With it, on a representation whose variance lies in 5 of its 30 neurons, the 99% subspaces of
    # both sides are that same 5-dimensional one.
    low_rank = rng.normal(size=(2000, 5)) @ (rng.normal(size=(5, 30)) + 2 * np.eye(5, 30))
    mixing = rng.normal(size=(30, 30)) + 6 * np.eye(30)
    assert svcca(low_rank, low_rank @ mixing) == pytest.approx(1.0, abs=1e-6)


def test_similarity_falls_as_noise_grows() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 8))
    values = [svcca(x, x + scale * rng.normal(size=x.shape)) for scale in (0.1, 1.0, 3.0)]
    assert values[0] > values[1] > values[2]
    assert values[0] > 0.95 and values[2] < 0.5


def test_bad_inputs_raise_with_the_reason() -> None:
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="too few"):
        svcca(rng.normal(size=(30, 20)), rng.normal(size=(30, 20)))
    with pytest.raises(ValueError, match="no variance"):
        svcca(np.ones((100, 3)), rng.normal(size=(100, 3)))
    with pytest.raises(ValueError, match="same samples"):
        svcca(rng.normal(size=(100, 3)), rng.normal(size=(90, 3)))


def _images(n: int, size: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, *size, generator=torch.Generator().manual_seed(seed))


def test_a_model_against_itself_is_one_at_every_stage() -> None:
    torch.manual_seed(0)
    model = create_architecture("cbr_small", **SMALL_CBR)
    table = svcca_by_stage(model, model, _images(32, (32, 32)), max_samples=512, seed=0)
    assert list(table.columns) == list(SVCCA_COLUMNS)
    assert list(table["stage"]) == list(model.stage_names)
    assert table["similarity"].to_numpy() == pytest.approx(1.0, abs=1e-6)
    # ceil(512 / 32) = 16 positions per image where a stage has them; layer3 (4x4) and layer4 (2x2) fewer.
    assert list(table["samples"]) == [512, 512, 512, 128]


def test_reinitialised_top_stages_are_less_similar_and_the_cutoff_is_before_them() -> None:
    torch.manual_seed(0)
    source = create_architecture("cbr_small", **SMALL_CBR)
    finetuned = create_architecture("cbr_small", **SMALL_CBR)  # other random weights
    finetuned.load_state_dict(source.state_dict())
    for stage in ("layer3", "layer4"):
        for parameter in finetuned.encoder.get_submodule(stage).parameters():
            torch.nn.init.normal_(parameter)
    table = svcca_by_stage(source, finetuned, _images(64, (32, 32)), max_samples=1024, seed=1)
    similarity = dict(zip(table["stage"], table["similarity"], strict=True))
    assert similarity["layer1"] == pytest.approx(1.0, abs=1e-6)
    assert similarity["layer2"] == pytest.approx(1.0, abs=1e-6)
    assert similarity["layer3"] < 0.9
    assert suggest_cutoff(table) == "layer2"


@pytest.mark.parametrize(
    ("moved", "cut_at"), [(("layer2", "layer3", "layer4"), "layer1"), (("layer4",), "layer3")]
)
def test_auto_cut_point_is_the_stage_before_the_probe_moves_away(moved, cut_at) -> None:
    torch.manual_seed(0)
    source = create_architecture("cbr_small", **SMALL_CBR)
    probe = create_architecture("cbr_small", **SMALL_CBR)
    probe.load_state_dict(source.state_dict())
    for stage in moved:  # the stages the "fine-tuning" moved far from the source
        for parameter in probe.encoder.get_submodule(stage).parameters():
            torch.nn.init.normal_(parameter)
    chosen, table = auto_cut_at(
        source, probe, _images(96, (32, 32)), max_images=64, max_samples=1024, seed=1
    )
    assert chosen == cut_at == suggest_cutoff(table)
    similarity = table.set_index("stage")["similarity"]
    assert similarity[cut_at] == pytest.approx(1.0, abs=1e-6)
    assert similarity[moved[0]] < 0.9
    assert table.set_index("stage").loc["layer4", "samples"] == 64 * 4  # 64 images of 2x2 positions
    threshold, _ = auto_cut_at(
        source, probe, _images(64, (32, 32)), rule="threshold", threshold=0.999, seed=1
    )
    assert threshold == cut_at


def test_a_truncated_model_is_compared_on_its_own_stages() -> None:
    torch.manual_seed(0)
    source = create_architecture("cbr_small", **SMALL_CBR)
    table = svcca_by_stage(
        source, truncate(source, "layer2"), _images(16, (32, 32)), max_samples=256
    )
    assert list(table["stage"]) == ["layer1", "layer2"]
    assert table["similarity"].to_numpy() == pytest.approx(1.0, abs=1e-6)


def test_3d_models_and_too_few_samples_give_a_nan_with_the_reason() -> None:
    torch.manual_seed(0)
    model = create_architecture("cbr_small", spatial_dims=3, **SMALL_CBR | {"img_size": 16})
    table = svcca_by_stage(model, model, _images(6, (16, 16, 16)), max_samples=300, seed=0)
    by_stage = table.set_index("stage")
    assert by_stage.loc["layer1", "similarity"] == pytest.approx(1.0, abs=1e-6)
    # layer4 is 1x1x1: 6 samples for its 32 channels
    assert math.isnan(by_stage.loc["layer4", "similarity"])
    assert "too few" in by_stage.loc["layer4", "note"]
    with pytest.raises(ValueError, match="layer4 .*too few"):
        suggest_cutoff(table)


def test_transformer_tokens_are_data_points() -> None:
    torch.manual_seed(0)
    model = create_architecture("vit_tiny", img_size=32, patch_size=8)
    table = svcca_by_stage(model, model, _images(48, (32, 32)), max_samples=2000, seed=0)
    assert table["samples"].iloc[1] == 48 * 17  # 16 patches and the class token per image
    assert table["similarity"].to_numpy() == pytest.approx(1.0, abs=1e-6)


def test_the_models_must_share_stages_of_the_same_positions() -> None:
    cbr = create_architecture("cbr_small", **SMALL_CBR)
    with pytest.raises(ValueError, match="share no stage"):
        svcca_by_stage(cbr, create_architecture("vit_tiny", img_size=32), _images(2, (32, 32)))
    # resnet18's layer1 works at a quarter of the input size, cbr_small's at half of it.
    with pytest.raises(ValueError, match="layer1 has 256 positions .* and 64"):
        svcca_by_stage(cbr, create_architecture("resnet18", img_size=32), _images(2, (32, 32)))


def _table(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {"stage": [f"layer{i + 1}" for i in range(len(values))], "similarity": values, "note": ""}
    )


def test_cutoff_rules() -> None:
    table = _table([0.98, 0.95, 0.9, 0.5, 0.3])
    assert suggest_cutoff(table) == "layer3"  # the fall from 0.9 to 0.5 is the largest
    assert suggest_cutoff(table, "threshold", threshold=0.92) == "layer2"
    assert suggest_cutoff(table, "threshold", threshold=0.2) == "layer5"
    assert suggest_cutoff(table, "threshold", threshold=0.99) == "layer1"
    assert suggest_cutoff(_table([0.7, 0.8, 0.9])) == "layer3"  # never falls: keep everything
    with pytest.raises(ValueError, match="unknown cutoff rule"):
        suggest_cutoff(table, "steepest")
    with pytest.raises(ValueError, match="needs a threshold"):
        suggest_cutoff(table, "threshold")


def test_plot_draws_a_line_per_variant_and_marks_the_cutoffs() -> None:
    table = pd.concat(
        [_table([0.99, 0.9, 0.4]).assign(variant="full"), _table([0.99, 0.7]).assign(variant="ttl")]
    )
    figure = plot_svcca_by_stage(table, cutoffs={"full": "layer2"})
    assert isinstance(figure, Figure)
    axes = figure.axes[0]
    assert [line.get_label() for line in axes.get_lines()] == ["full", "_child1", "ttl"]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["layer1", "layer2", "layer3"]
    star = axes.get_lines()[1]
    assert list(star.get_xdata()) == [1] and list(star.get_ydata()) == [0.9]


def test_channels_last_stages_are_read_as_channels_last() -> None:
    torch.manual_seed(0)
    model = create_architecture("swin_tiny", img_size=32)  # timm Swin stages give (B, H, W, C)
    table = svcca_by_stage(model, model, _images(24, (32, 32)), max_samples=24 * 64, seed=0)
    patch_embed = table.iloc[0]
    # 8x8 positions of 96 channels; read channels first it would be 8 "channels" at 8x96 positions
    assert patch_embed["samples"] == 24 * 64
    assert patch_embed["source_dims"] > 8
    assert table["similarity"].dropna().to_numpy() == pytest.approx(1.0, abs=1e-6)
