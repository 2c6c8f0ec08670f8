"""Contract tests over every registered strategy, then each strategy's defining property.

The target model is a resnet18 on 1x32x32 slices with 2 outputs (sex); the source is the same encoder
trained for another task with 1 output (age), perturbed so that no weight or BatchNorm statistic is at
its default value.
"""

from __future__ import annotations

import lightning
import pytest
import torch
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from tlkedro.tl.architectures import TLModel, create_architecture
from tlkedro.tl.config import StrategyConfig
from tlkedro.tl.registry import RenamedKeywordWarning, UnknownComponentError
from tlkedro.tl.strategies import (
    MissingSourceError,
    SourceMismatchError,
    create_strategy,
    list_strategies,
    truncation_candidates,
)

IMG = 32
# The kwargs each strategy needs in the contract test; the others take none.
KWARGS = {
    "freeze_up_to": {"cut_at": "layer4.0.conv1"},
    "lwft": {"k": 2, "lr_decay": 0.5},
    "truncated": {"cut_at": "layer3"},
    "transfusion": {"cut_at": "layer2"},
}
RESNET18_LAYER4_PARAMS = 8_393_728
HEAD_PARAMS = 512 * 2 + 2


def build(num_outputs: int = 2, **kwargs: object) -> TLModel:
    return create_architecture("resnet18", num_outputs=num_outputs, img_size=IMG, **kwargs)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def source_state() -> dict[str, Tensor]:
    torch.manual_seed(0)
    source = build(num_outputs=1)
    with torch.no_grad():
        for param in source.parameters():
            param.add_(0.1 * torch.randn_like(param))
    source.train()
    source(torch.randn(8, 1, IMG, IMG))  # moves the BatchNorm running statistics off their defaults
    return {key: value.clone() for key, value in source.state_dict().items()}


def prepared(
    name: str, source_state: dict[str, Tensor] | None, **kwargs: object
) -> tuple[object, TLModel]:
    strategy = create_strategy(name, **kwargs)
    return strategy, strategy.prepare(build(), source_state)


def frozen_state(model: TLModel) -> dict[str, Tensor]:
    """Copies of the frozen parameters and of the buffers of BatchNorm layers whose parameters are frozen."""
    state = {
        name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad
    }
    for path, module in model.named_modules():
        if isinstance(module, _BatchNorm) and not any(p.requires_grad for p in module.parameters()):
            state.update({f"{path}.{name}": b.clone() for name, b in module.named_buffers()})
    return state


def train_step(strategy: object, model: TLModel, lr: float = 0.1) -> None:
    model.train()
    loss = model(torch.randn(4, 1, IMG, IMG)).square().mean()
    penalty = strategy.penalty(model)
    if penalty is not None:
        loss = loss + penalty
    optimizer = torch.optim.SGD(strategy.param_groups(model, lr), lr=lr)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("name", list_strategies())
def test_contract(name: str, source_state: dict[str, Tensor]) -> None:
    torch.manual_seed(1)
    strategy, model = prepared(name, source_state, **KWARGS.get(name, {}))

    groups = strategy.param_groups(model, lr=0.1)
    assert all({"params", "lr", "name"} <= group.keys() for group in groups)
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)

    frozen_before = frozen_state(model)
    head_before = model.head.weight.detach().clone()
    train_step(strategy, model)
    assert not torch.equal(model.head.weight, head_before)
    frozen_after = frozen_state(model)
    assert frozen_after.keys() == frozen_before.keys()
    assert all(torch.equal(frozen_after[key], value) for key, value in frozen_before.items())
    assert model(torch.randn(3, 1, IMG, IMG)).shape == (3, 2)

    summary = strategy.summary(model)
    assert summary["strategy"] == name
    assert summary["total_params"] == sum(p.numel() for p in model.parameters())
    assert summary["trainable_params"] == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    assert summary["trainable_params"] + summary["frozen_params"] == summary["total_params"]
    assert all(isinstance(callback, lightning.Callback) for callback in strategy.callbacks())


@pytest.mark.parametrize("name", [name for name in list_strategies() if name != "scratch"])
def test_strategies_that_transfer_need_a_source(name: str) -> None:
    with pytest.raises(MissingSourceError, match=rf"'{name}'.*init_from"):
        prepared(name, None, **KWARGS.get(name, {}))


def test_a_source_that_does_not_fit_is_rejected_with_its_keys(
    source_state: dict[str, Tensor],
) -> None:
    bad = {key: value for key, value in source_state.items() if key != "encoder.conv1.weight"}
    bad["encoder.layer4.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    bad["encoder.extra.weight"] = torch.zeros(1)
    model = build()
    before = {key: value.clone() for key, value in model.state_dict().items()}

    with pytest.raises(SourceMismatchError) as error:
        create_strategy("full").prepare(model, bad)

    message = str(error.value)
    assert "encoder.conv1.weight" in message
    assert "encoder.extra.weight" in message
    assert "encoder.layer4.0.conv1.weight (source (3, 3, 3, 3), model (512, 256, 3, 3))" in message
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())


def test_create_strategy_errors_list_what_is_valid() -> None:
    with pytest.raises(UnknownComponentError, match=r"Did you mean 'linear_probe'.*freeze_up_to"):
        create_strategy("linear_prob")
    with pytest.raises(TypeError, match=r"'freeze_up_to'.*It takes: cut_at"):
        create_strategy("freeze_up_to", layers="layer3")


@pytest.mark.parametrize(
    ("name", "old"),
    [
        ("freeze_up_to", "layer"),
        ("truncated", "cutoff"),
        ("transfusion", "cutoff"),
        ("dapt_simplified", "cutoff"),
    ],
)
def test_the_old_names_of_cut_at_still_work_with_a_warning_naming_it(name: str, old: str) -> None:
    point = "layer2" if name != "freeze_up_to" else "layer4.0.conv1"
    with pytest.warns(
        RenamedKeywordWarning, match=rf"'{name}': keyword '{old}' is renamed 'cut_at'"
    ):
        strategy = create_strategy(name, **{old: point})
    assert strategy == create_strategy(name, cut_at=point)
    assert strategy.summary(build())["cut_at"] == point
    # The validated configuration holds the new name, so whatever reads it sees one name.
    with pytest.warns(RenamedKeywordWarning):
        assert StrategyConfig(name=name, kwargs={old: point}).kwargs == {"cut_at": point}
    with pytest.raises(ValueError, match=f"both '{old}' and its new name 'cut_at'"):
        StrategyConfig(name=name, kwargs={old: point, "cut_at": point})


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("lwft", {"k": -1}),
        ("lwft", {"k": 1, "lr_decay": 0.0}),
        ("transfusion", {"cut_at": "layer2", "width_factor": 0}),
        ("l2sp", {"alpha": -1.0}),
    ],
)
def test_invalid_settings_are_rejected(name: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=name):
        create_strategy(name, **kwargs)


def test_full_starts_from_the_source_encoder_and_scratch_does_not(
    source_state: dict[str, Tensor],
) -> None:
    _, full = prepared("full", source_state)
    _, scratch = prepared("scratch", source_state)

    encoder_keys = [key for key in full.state_dict() if key.startswith("encoder.")]
    assert all(torch.equal(full.state_dict()[key], source_state[key]) for key in encoder_keys)
    assert full.head.weight.shape == (2, 512) != source_state["head.weight"].shape
    scratch_weights = [
        name for name, p in scratch.named_parameters() if name.startswith("encoder.") and p.ndim > 1
    ]
    assert scratch_weights
    assert not any(
        torch.equal(scratch.state_dict()[key], source_state[key]) for key in scratch_weights
    )


def test_linear_probe_trains_the_head_only_and_its_frozen_batchnorm_uses_running_statistics(
    source_state: dict[str, Tensor],
) -> None:
    strategy, model = prepared("linear_probe", source_state)

    assert strategy.summary(model)["trainable_params"] == HEAD_PARAMS
    assert [name for name, p in model.named_parameters() if p.requires_grad] == [
        "head.weight",
        "head.bias",
    ]
    x = torch.randn(4, 1, IMG, IMG)
    model.train()  # as Lightning or a training loop would
    in_training = model(x)
    model.eval()
    assert torch.equal(in_training, model(x))


@pytest.mark.parametrize(
    ("name", "kwargs", "first_trained"),
    [
        ("linear_probe", {}, None),
        ("freeze_up_to", {"cut_at": "layer3.1.conv1"}, "layer3.1.conv1"),
        ("freeze_up_to", {"cut_at": "layer4.0.conv1"}, "layer4.0.conv1"),
        ("lwft", {"k": 1}, "layer4.0.conv1"),
    ],
)
def test_frozen_encoder_part_is_bit_identical_after_training(
    name: str, kwargs: dict[str, object], first_trained: str | None, source_state: dict[str, Tensor]
) -> None:
    strategy, model = prepared(name, source_state, **kwargs)
    encoder_params = [param_name for param_name, _ in model.encoder.named_parameters()]
    # A timm resnet registers its parameters in forward order (a block's downsample, registered last, runs
    # after conv2), so what is frozen is a prefix of named_parameters.
    cut = (
        len(encoder_params)
        if first_trained is None
        else encoder_params.index(f"{first_trained}.weight")
    )
    frozen = {f"encoder.{param_name}" for param_name in encoder_params[:cut]}
    assert {
        param_name for param_name, p in model.named_parameters() if not p.requires_grad
    } == frozen

    before = frozen_state(model)
    assert any("running_mean" in key for key in before)
    for _ in range(2):
        train_step(strategy, model)
    after = frozen_state(model)
    assert all(torch.equal(after[key], value) for key, value in before.items())
    assert all(torch.equal(value, source_state[key]) for key, value in after.items())


def test_freeze_up_to_layer4_0_conv1_trains_the_known_count(
    source_state: dict[str, Tensor],
) -> None:
    strategy, model = prepared("freeze_up_to", source_state, cut_at="layer4.0.conv1")
    assert strategy.summary(model)["trainable_params"] == RESNET18_LAYER4_PARAMS + HEAD_PARAMS
    assert model.encoder.layer4[0].downsample[0].weight.requires_grad


def test_freeze_up_to_an_unknown_layer_lists_the_valid_ones(
    source_state: dict[str, Tensor],
) -> None:
    with pytest.raises(ValueError, match=r"Did you mean 'layer3.1.conv1'.*layer4\.1\.bn2"):
        prepared("freeze_up_to", source_state, cut_at="layer3.1.cnv1")


def test_lwft_groups_carry_decaying_learning_rates(source_state: dict[str, Tensor]) -> None:
    strategy, model = prepared("lwft", source_state, k=3, lr_decay=0.5)

    groups = {group["name"]: group for group in strategy.param_groups(model, lr=1.0)}

    assert {name: group["lr"] for name, group in groups.items()} == {
        "encoder.layer4": 1.0,
        "encoder.layer3": 0.5,
        "encoder.layer2": 0.25,
        "head": 1.0,
    }
    for stage in ("layer2", "layer3", "layer4"):
        assert groups[f"encoder.{stage}"]["params"] == list(
            model.encoder.get_submodule(stage).parameters()
        )
    assert not any(p.requires_grad for p in model.encoder.layer1.parameters())


def test_lwft_counts_the_stages_with_parameters(source_state: dict[str, Tensor]) -> None:
    _, model = prepared("lwft", source_state, k=6)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match=r"6 stages with parameters: conv1, bn1, layer1, layer2"):
        prepared("lwft", source_state, k=7)


@pytest.mark.parametrize(
    ("cut_at", "removed", "num_features"),
    [("layer3", "layer4.", 256), ("layer3.0", "layer3.1.", 256)],
)
def test_truncated_model_has_no_parameters_above_the_cut_point(
    cut_at: str, removed: str, num_features: int, source_state: dict[str, Tensor]
) -> None:
    _, model = prepared("truncated", source_state, cut_at=cut_at)

    names = [name for name, _ in model.named_parameters()]
    assert not [name for name in names if name.startswith(f"encoder.{removed}")]
    assert model.head.in_features == num_features
    kept = [key for key in model.state_dict() if key.startswith("encoder.")]
    assert kept and all(torch.equal(model.state_dict()[key], source_state[key]) for key in kept)


def test_truncated_auto_holds_the_rule_and_refuses_to_train_unresolved(
    source_state: dict[str, Tensor],
) -> None:
    auto = create_strategy("truncated", cut_at="auto")
    assert auto.auto and (auto.probe, auto.rule, auto.max_images) == ("full", "largest_drop", 256)
    with pytest.raises(ValueError, match="cut_at: auto must be resolved"):
        auto.prepare(build(), source_state)
    assert "probe" not in create_strategy("truncated", cut_at="layer3").summary(build())
    for kwargs, message in [
        ({"cut_at": "layer3", "probe": "full"}, "probe is for cut_at: auto only"),
        ({"cut_at": "auto", "rule": "steepest"}, "unknown rule 'steepest'"),
        ({"cut_at": "auto", "rule": "threshold"}, "rule threshold needs threshold"),
        ({"cut_at": "auto", "max_images": 0}, "max_images must be positive"),
    ]:
        with pytest.raises(ValueError, match=message):
            create_strategy("truncated", **kwargs)
    # The validated configuration words it under the strategy's key.
    with pytest.raises(ValueError, match="unknown rule"):
        StrategyConfig(name="truncated", kwargs={"cut_at": "auto", "rule": "steepest"})


def test_truncation_candidates_search_blocks_then_around_the_best() -> None:
    assert truncation_candidates("resnet18", img_size=IMG) == [
        "conv1",
        "bn1",
        "act1",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]
    assert truncation_candidates("resnet18", "layer3", img_size=IMG) == [
        "layer3.0",
        "layer3",
        "layer4.0",
    ]
    assert truncation_candidates("resnet18", "layer4", img_size=IMG) == ["layer4.0", "layer4"]
    with pytest.raises(ValueError, match="layer4"):
        truncation_candidates("resnet18", "layer5", img_size=IMG)


def test_transfusion_slims_and_reinitialises_the_stages_above_the_cut_point(
    source_state: dict[str, Tensor],
) -> None:
    _, model = prepared("transfusion", source_state, cut_at="layer2")
    state = model.state_dict()

    assert state["encoder.layer3.0.conv1.weight"].shape == (
        128,
        128,
        3,
        3,
    )  # pretrained (256, 128, 3, 3)
    assert state["encoder.layer4.1.conv2.weight"].shape == (
        256,
        256,
        3,
        3,
    )  # pretrained (512, 512, 3, 3)
    assert model.head.in_features == 256
    pretrained_slice = source_state["encoder.layer3.0.conv1.weight"][:128]
    assert not torch.equal(state["encoder.layer3.0.conv1.weight"], pretrained_slice)
    bottom = [
        key
        for key in state
        if key.startswith(("encoder.conv1.", "encoder.bn1.", "encoder.layer1.", "encoder.layer2."))
    ]
    assert all(torch.equal(state[key], source_state[key]) for key in bottom)
    rebuilt = create_architecture(**model.config)
    rebuilt.load_state_dict(state)  # the slim model's checkpoint rebuilds from its config


def test_mean_var_redraws_each_tensor_with_its_mean_and_std(
    source_state: dict[str, Tensor],
) -> None:
    torch.manual_seed(2)
    _, model = prepared("mean_var", source_state)

    checked = 0
    for name, param in model.encoder.named_parameters():
        source = source_state[f"encoder.{name}"]
        assert not torch.equal(param, source)
        if (
            source.numel() >= 1000
        ):  # small tensors' sample statistics are too noisy to compare tightly
            std = source.std(correction=0)
            assert abs(param.mean() - source.mean()) < 4 * std / source.numel() ** 0.5
            assert abs(param.std(correction=0) / std - 1) < 4 / (2 * source.numel()) ** 0.5
            checked += 1
    assert checked >= 15
    batchnorm = model.encoder.layer2[0].bn1
    assert torch.equal(batchnorm.running_mean, torch.zeros(128))
    assert torch.equal(batchnorm.running_var, torch.ones(128))


def test_l2sp_gradient_pulls_towards_the_source_weights(source_state: dict[str, Tensor]) -> None:
    strategy, model = prepared("l2sp", source_state, alpha=0.3, beta=0.2)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))

    strategy.penalty(model).backward()

    for name, param in model.named_parameters():
        if name.startswith("encoder."):
            expected = 0.3 * (param.detach() - source_state[name])
        else:
            expected = 0.2 * param.detach()
        torch.testing.assert_close(param.grad, expected)
    assert all(group["weight_decay"] == 0.0 for group in strategy.param_groups(model, lr=0.1))


def test_l2sp_penalty_needs_prepare() -> None:
    with pytest.raises(RuntimeError, match="prepare"):
        create_strategy("l2sp").penalty(build())
