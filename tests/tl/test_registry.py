"""Components named by class path: resolved, checked against their kind's contract, trained like any other.

The components are defined here, in a test module, not in the package: the class paths are
``f"{__name__}:Name"``, importable however pytest imported this file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from tlkedro.tl.architectures import TLModel, create_architecture
from tlkedro.tl.architectures.base import GlobalAvgPool
from tlkedro.tl.checkpoint import build_model
from tlkedro.tl.config import ArchitectureConfig, StrategyConfig, TrainConfig
from tlkedro.tl.objectives import Objective, Prediction, PrimaryTerm, TaskInfo, create_objective
from tlkedro.tl.registry import (
    ContractError,
    Registry,
    RenamedKeywordWarning,
    UnknownComponentError,
    import_class_path,
)
from tlkedro.tl.strategies import Strategy, create_strategy, freeze
from tlkedro.tl.training import fit

pytestmark = pytest.mark.usefixtures("single_thread")

HERE = __name__
IMG = 32


class TinyNet(TLModel):
    """Two convolution stages and a linear head: a user's own network."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_outputs: int = 1,
        img_size: int | Sequence[int] = IMG,
        dropout: float = 0.0,
        width: int = 4,
    ) -> None:
        encoder = nn.Sequential()
        encoder.add_module("stem", nn.Conv2d(in_channels, width, 3, stride=2, padding=1))
        encoder.add_module("act", nn.ReLU())
        encoder.add_module("block", nn.Conv2d(width, 2 * width, 3, stride=2, padding=1))
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        super().__init__(
            encoder,
            stage_names=("stem", "act", "block"),
            spatial_dims=2,
            input_size=size,
            in_channels=in_channels,
            num_outputs=num_outputs,
            dropout=dropout,
            pool=GlobalAvgPool(),
        )


def tiny_net_with_a_missing_stage(**kwargs: object) -> TLModel:
    model = TinyNet(**kwargs)
    model.stage_names = ("stem", "blocks")
    return model


def tiny_net_with_wrong_features(**kwargs: object) -> TLModel:
    model = TinyNet(**kwargs)
    model.pool = (
        nn.Flatten()
    )  # (B, C*H*W) features, not the (B, num_features) the head was sized for
    return model


def plain_module(**kwargs: object) -> nn.Module:
    return nn.Linear(4, 1)


def tiny_net_ignoring_img_size(*, img_size: int = IMG, **kwargs: object) -> TLModel:
    return TinyNet(**kwargs)


@dataclasses.dataclass
class FreezeStem(Strategy):
    """Load the source encoder, freeze its stem, train the rest: a user's own strategy."""

    def prepare(self, model: TLModel, source_state: dict[str, Tensor] | None) -> TLModel:
        model = super().prepare(model, source_state)
        freeze([model.encoder.get_submodule("stem")])
        return model


class NotAStrategy:
    def prepare(self, model: TLModel, source_state: object) -> TLModel:
        return model


class UndecoratedStrategy(Strategy):
    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha


class Huber(PrimaryTerm):
    """Huber loss on the standardised target: a user's own objective."""

    task = "regression"

    def __init__(self, delta: float = 1.0) -> None:
        self.delta = delta

    def num_outputs(self, info: TaskInfo) -> int:
        return 1

    def loss(self, outputs: Tensor, targets: Tensor, info: TaskInfo) -> Tensor:
        standardised = (targets.to(outputs.dtype) - info.target_mean) / info.target_std
        return nn.functional.huber_loss(outputs.squeeze(1), standardised, delta=self.delta)

    def predict(self, outputs: Tensor, info: TaskInfo) -> Prediction:
        return Prediction(outputs.squeeze(1) * info.target_std + info.target_mean, None)


class NoTaskTerm:
    def num_outputs(self, info: TaskInfo) -> int:
        return 1


def no_task_objective() -> Objective:
    return Objective(NoTaskTerm())  # type: ignore[arg-type]


def test_an_architecture_by_class_path_builds_records_its_path_and_rebuilds() -> None:
    model = create_architecture(f"{HERE}:TinyNet", img_size=IMG, num_outputs=3, width=2)
    assert model.num_features == 4 and model.num_outputs == 3
    assert model.config == {
        "name": f"{HERE}:TinyNet",
        "in_channels": 1,
        "num_outputs": 3,
        "img_size": IMG,
        "dropout": 0.0,
        "width": 2,
    }
    rebuilt = build_model({"config": model.config, "state_dict": model.state_dict()})
    x = torch.randn(2, 1, IMG, IMG)
    assert torch.equal(rebuilt(x), model.eval()(x))
    # The shared keyword every architecture takes works on it too.
    cut = create_architecture(f"{HERE}:TinyNet", img_size=IMG, cut_at="act")
    assert cut.stage_names == ("stem", "act") and cut.num_features == 4
    assert ArchitectureConfig(name=f"{HERE}:TinyNet").name == f"{HERE}:TinyNet"


@pytest.mark.parametrize(
    ("builder", "problem"),
    [
        ("tiny_net_with_a_missing_stage", r"stage 'blocks' is not a module of the encoder"),
        ("tiny_net_with_wrong_features", r"forward_features gave \(2, 1152\), not \(2, 8\)"),
        ("plain_module", r"returned a Linear, not a TLModel"),
        ("tiny_net_ignoring_img_size", r"asked for img_size=\[48, 48\], has input_size \(32, 32\)"),
        ("IMG", r"is a int, not a builder"),
    ],
)
def test_an_architecture_that_breaks_the_contract_is_refused_naming_the_problem(
    builder: str, problem: str
) -> None:
    with pytest.raises(ContractError, match=rf"'{HERE}:{builder}'.*{problem}"):
        create_architecture(f"{HERE}:{builder}", img_size=48)


def test_a_strategy_by_class_path_prepares_trains_and_reports_under_its_path() -> None:
    source = create_architecture(f"{HERE}:TinyNet")
    with torch.no_grad():
        for param in source.parameters():
            param.add_(1.0)
    strategy = create_strategy(f"{HERE}:FreezeStem")
    model = strategy.prepare(create_architecture(f"{HERE}:TinyNet"), source.state_dict())
    assert torch.equal(model.encoder.block.weight, source.encoder.block.weight)
    assert not model.encoder.stem.weight.requires_grad and model.encoder.block.weight.requires_grad
    summary = strategy.summary(model)
    assert summary["strategy"] == f"{HERE}:FreezeStem"
    assert summary["frozen_params"] == sum(p.numel() for p in model.encoder.stem.parameters())
    assert StrategyConfig(name=f"{HERE}:FreezeStem").name == f"{HERE}:FreezeStem"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("NotAStrategy", r"lacks param_groups, penalty, callbacks, phases, summary"),
        (
            "UndecoratedStrategy",
            r"alpha of UndecoratedStrategy are not; decorate it with @dataclasses.dataclass",
        ),
    ],
)
def test_a_strategy_that_breaks_the_contract_is_refused_naming_the_problem(
    name: str, problem: str
) -> None:
    with pytest.raises(ContractError, match=problem):
        create_strategy(f"{HERE}:{name}")


def test_an_objective_by_class_path_may_be_a_primary_term() -> None:
    objective = create_objective(f"{HERE}:Huber", delta=0.5)
    assert isinstance(objective, Objective) and objective.task == "regression"
    info = TaskInfo("regression", target_mean=60.0, target_std=10.0)
    outputs, targets = torch.tensor([[0.0], [1.0]]), torch.tensor([60.0, 60.0])
    assert objective.loss(outputs, targets, info).item() == pytest.approx(0.375 / 2)
    with pytest.raises(ContractError, match=r"NoTaskTerm lacks loss, predict, a task class attr"):
        create_objective(f"{HERE}:no_task_objective")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tlkedro_missing_package.nets:Net", r"there is no module 'tlkedro_missing_package'"),
        (f"{HERE}:TinyNett", r"has no attribute 'TinyNett'\. Did you mean 'TinyNet'\?"),
        (f"{HERE}:", r"write it as 'package.module:Name'"),
    ],
)
def test_a_class_path_that_does_not_import_says_why(path: str, message: str) -> None:
    with pytest.raises(UnknownComponentError, match=message):
        create_architecture(path)
    # The configuration turns it into a validation error at the key.
    with pytest.raises(ValueError, match=message):
        ArchitectureConfig(name=path)


def test_a_registry_without_class_paths_refuses_them_and_lists_its_names() -> None:
    registry: Registry[int] = Registry("widget")
    registry.register("one")(lambda: 1)
    with pytest.raises(UnknownComponentError, match=r"widgets cannot be named by class path.*one"):
        registry.create(f"{HERE}:TinyNet")
    with pytest.raises(ValueError, match="must not contain ':'"):
        registry.register("a:b")(lambda: 2)
    assert import_class_path(f"{HERE}:Huber.task", "attribute") == "regression"


def test_a_renamed_keyword_is_moved_with_a_warning_naming_the_new_key() -> None:
    registry: Registry[dict] = Registry("widget")

    def build(*, size: int = 1) -> dict:
        return {"size": size}

    build.renamed_kwargs = {"width": "size"}  # type: ignore[attr-defined]
    registry.register("box")(build)
    with pytest.warns(
        RenamedKeywordWarning, match=r"'width' is renamed 'size' \(widget.kwargs.size"
    ):
        assert registry.create("box", width=3) == {"size": 3}
    with pytest.warns(RenamedKeywordWarning):
        assert registry.canonical_kwargs("box", {"width": 3}) == {"size": 3}
    with pytest.raises(TypeError, match="both 'width' and its new name 'size'"):
        registry.create("box", width=3, size=2)


def test_all_three_by_class_path_train_through_fit() -> None:
    rng = np.random.default_rng(0)
    labels = pd.DataFrame(
        {"subject_id": [f"sub-{i:02d}" for i in range(16)], "age": rng.uniform(45, 80, 16)}
    )
    images = rng.normal(size=(16, 1, IMG, IMG)).astype(np.float32)
    config = TrainConfig.model_validate(
        {
            "seed": 0,
            "target": "age",
            "task": "regression",
            "architecture": {"name": f"{HERE}:TinyNet"},
            "objective": {"name": f"{HERE}:Huber"},
            "strategy": {"name": f"{HERE}:FreezeStem"},
            "trainer": {
                "max_epochs": 1,
                "batch_size": 8,
                "accelerator": "cpu",
                "enable_progress_bar": False,
            },
        }
    )
    source = create_architecture(f"{HERE}:TinyNet", img_size=[IMG, IMG])
    result = fit(config, images, labels, source={"state_dict": source.state_dict()})
    model = build_model(result.checkpoint)
    assert model.config["name"] == f"{HERE}:TinyNet"
    # The frozen stem is the source's, bit for bit, after training.
    assert torch.equal(model.encoder.stem.weight, source.encoder.stem.weight)
    stem = sum(p.numel() for p in model.encoder.stem.parameters())
    assert result.summary["trainable_params"] == result.summary["total_params"] - stem
