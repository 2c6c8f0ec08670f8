"""TransferModule: optimizer from the strategy's trainable groups, schedules, loss terms and logging."""

from __future__ import annotations

import dataclasses

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from tlkedro.tl.config import OptimizerConfig, SchedulerConfig
from tlkedro.tl.module import TransferModule
from tlkedro.tl.objectives import Objective, TaskInfo, create_objective
from tlkedro.tl.strategies import Strategy, create_strategy

AGES = TaskInfo(
    task="regression", target_mean=60.0, target_std=10.0, target_min=45.0, target_max=80.0
)
SEX = TaskInfo(task="classification", num_classes=2)


pytestmark = pytest.mark.usefixtures("single_thread")


class TinyNet(nn.Module):
    """The parts of a TLModel the module uses: an encoder and a head."""

    def __init__(self, num_outputs: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(4, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


class EpochCounter(L.Callback):
    def __init__(self) -> None:
        self.epochs = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs += 1


@dataclasses.dataclass
class ConstantPenalty(Strategy):
    """Trains from scratch with a penalty of 5 and one callback."""

    name = "constant_penalty"
    counter: EpochCounter = dataclasses.field(default_factory=EpochCounter)

    def prepare(self, model: nn.Module, source_state: dict | None) -> nn.Module:
        return model

    def penalty(self, model: nn.Module) -> Tensor:
        return torch.tensor(5.0)

    def callbacks(self) -> list[L.Callback]:
        return [self.counter]


class OutputMean:
    name = "output_mean"

    def __call__(
        self, model: nn.Module, inputs: Tensor, outputs: Tensor, targets: Tensor
    ) -> Tensor:
        return outputs.mean()


def make_module(
    info: TaskInfo = SEX,
    objective: Objective | None = None,
    strategy: Strategy | None = None,
    optimizer: OptimizerConfig | None = None,
    scheduler: SchedulerConfig | None = None,
    net: nn.Module | None = None,
) -> TransferModule:
    return TransferModule(
        net or TinyNet(2 if info.task == "classification" else 1),
        objective or create_objective("cross_entropy" if info.task == "classification" else "mse"),
        strategy or create_strategy("scratch"),
        optimizer or OptimizerConfig(name="adamw", lr=1e-2, weight_decay=1e-3),
        scheduler or SchedulerConfig(name="cosine"),
        info,
    )


def trainer(max_epochs: int = 1) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def loader(info: TaskInfo, n: int = 16) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 1, 8, 8, generator=generator)
    if info.task == "classification":
        targets = torch.arange(n) % 2
    else:
        targets = torch.linspace(45.0, 80.0, n)
    return DataLoader(TensorDataset(images, targets), batch_size=4)


def test_optimizer_gets_only_trainable_parameters_and_a_cosine_schedule() -> None:
    module = make_module()
    module.model.encoder.requires_grad_(False)
    module.trainer = trainer(max_epochs=4)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [group["name"] for group in optimizer.param_groups] == ["head"]
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {
        id(p) for p in module.model.head.parameters()
    }
    assert optimizer.param_groups[0]["weight_decay"] == 1e-3
    assert (
        isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) and scheduler.T_max == 4
    )


def test_sgd_with_momentum_and_a_plateau_schedule_on_the_validation_loss() -> None:
    module = make_module(
        optimizer=OptimizerConfig(name="momentum", lr=0.1, momentum=0.5),
        scheduler=SchedulerConfig(name="plateau", kwargs={"factor": 0.5}),
    )
    configured = module.configure_optimizers()
    assert isinstance(configured["optimizer"], torch.optim.SGD)
    group = configured["optimizer"].param_groups[0]
    assert group["momentum"] == 0.5 and group["nesterov"] is False
    assert configured["lr_scheduler"]["monitor"] == "val/loss"
    assert configured["lr_scheduler"]["scheduler"].factor == 0.5


def test_optimizer_names_and_kwargs_are_timms() -> None:
    module = make_module(
        optimizer=OptimizerConfig(name="sgd", lr=0.1, kwargs={"dampening": 0.0}),
        scheduler=SchedulerConfig(name="none"),
    )
    group = module.configure_optimizers().param_groups[0]
    assert group["nesterov"] is True and group["momentum"] == 0.9
    lamb = make_module(
        optimizer=OptimizerConfig(name="lamb"), scheduler=SchedulerConfig(name="none")
    )
    assert type(lamb.configure_optimizers()).__name__ == "Lamb"


def test_no_schedule_gives_the_bare_optimizer() -> None:
    configured = make_module(
        optimizer=OptimizerConfig(name="adam"), scheduler=SchedulerConfig(name="none")
    )
    assert isinstance(configured.configure_optimizers(), torch.optim.Adam)


def test_a_fully_frozen_model_is_an_error() -> None:
    module = make_module()
    module.model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        module.configure_optimizers()


def test_training_loss_adds_auxiliary_terms_and_the_strategy_penalty() -> None:
    strategy = ConstantPenalty()
    objective = Objective(
        create_objective("cross_entropy").primary, auxiliary=[(0.1, OutputMean())]
    )
    module = make_module(objective=objective, strategy=strategy)
    run = trainer(max_epochs=2)
    run.fit(module, train_dataloaders=loader(SEX), val_dataloaders=loader(SEX))
    metrics = {name: float(value) for name, value in run.callback_metrics.items()}
    assert metrics["train/loss_penalty"] == 5.0
    parts = (
        metrics["train/loss_primary"]
        + metrics["train/loss_output_mean"]
        + metrics["train/loss_penalty"]
    )
    assert metrics["train/loss"] == pytest.approx(parts, rel=1e-5)
    assert {"val/loss", "val/auroc", "val/auprc", "val/balanced_accuracy", "train/accuracy"} <= set(
        metrics
    )
    assert strategy.counter.epochs == 2  # the strategy's callbacks reach the trainer


@pytest.mark.filterwarnings(
    "ignore:The variance of predictions"
)  # constant predictions: Pearson r is nan
def test_regression_metrics_are_in_the_target_units() -> None:
    net = TinyNet(1)
    nn.init.zeros_(net.head.weight)
    nn.init.zeros_(net.head.bias)  # output 0: every prediction is the training mean, 60 years
    module = make_module(info=AGES, net=net)
    (metrics,) = trainer().validate(module, dataloaders=loader(AGES), verbose=False)
    ages = torch.linspace(45.0, 80.0, 16)
    assert metrics["val/mae"] == pytest.approx((ages - 60.0).abs().mean().item(), rel=1e-5)
    assert metrics["val/loss"] == pytest.approx(
        (((ages - 60.0) / 10.0) ** 2).mean().item(), rel=1e-5
    )
