"""TrainConfig accepts the project's parameter files and names the key of every mistake."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tlkedro.tl.config import TrainConfig, TrainerConfig

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"
PIPELINE_KEYS = ("variants", "sweeps", "init_from", "evaluate_on")


def base_parameters(name: str) -> dict[str, Any]:
    """The training keys of ``parameters_<name>.yml`` (without the pipeline-level ones)."""
    parameters = yaml.safe_load((CONF / f"parameters_{name}.yml").read_text())[name]
    return {key: value for key, value in parameters.items() if key not in PIPELINE_KEYS}


def errors(parameters: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    """The validation errors of ``parameters``, keyed by location."""
    with pytest.raises(ValidationError) as raised:
        TrainConfig.model_validate(parameters)
    return {error["loc"]: error for error in raised.value.errors()}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """The finetune base parameters with the dotted ``path`` set to ``value``."""
    parameters = copy.deepcopy(base_parameters("finetune"))
    *parents, last = path.split(".")
    node = parameters
    for key in parents:
        node = node[key]
    node[last] = value
    return parameters


@pytest.mark.parametrize("name", ["pretrain", "finetune"])
def test_base_parameter_files_validate_and_round_trip_through_json(name: str) -> None:
    config = TrainConfig.model_validate(base_parameters(name))
    assert config.data.augmentation[0].name == "RandAffine"
    assert TrainConfig.model_validate(config.model_dump(mode="json")) == config


def test_unknown_key_is_an_error_naming_it() -> None:
    found = errors(with_change("optimizer.learning_rate", 0.1))
    assert found[("optimizer", "learning_rate")]["type"] == "extra_forbidden"
    assert ("seeds",) in errors({**base_parameters("finetune"), "seeds": 3})


def test_bad_optimizer_name_suggests_the_closest_timm_ones() -> None:
    error = errors(with_change("optimizer.name", "adamww"))[("optimizer", "name")]
    assert error["input"] == "adamww"
    assert "Did you mean 'adamw'" in error["msg"] and "timm.optim.list_optimizers()" in error["msg"]


def test_optimizer_kwargs_are_checked_against_the_timm_optimizer() -> None:
    config = TrainConfig.model_validate(
        with_change("optimizer", {"name": "adam", "kwargs": {"betas": [0.8, 0.99]}})
    )
    assert config.optimizer.kwargs == {"betas": [0.8, 0.99]}
    error = errors(
        with_change("optimizer", {"name": "adam", "kwargs": {"lr": 0.1, "nesterov": True}})
    )
    message = error[("optimizer",)]["msg"]
    assert "['lr', 'nesterov']" in message and "betas" in message


def test_negative_learning_rate_is_rejected() -> None:
    error = errors(with_change("optimizer.lr", -1e-3))[("optimizer", "lr")]
    assert error["type"] == "greater_than"
    assert error["input"] == -1e-3


def test_unknown_augmentation_names_the_closest_monai_transform() -> None:
    found = errors(with_change("data.augmentation", [{"name": "RandAffine"}, {"name": "RandFlp"}]))
    assert list(found) == [("data", "augmentation", 1)]
    assert "RandFlip" in found[("data", "augmentation", 1)]["msg"]


def test_augmentation_kwargs_are_checked_by_monai() -> None:
    found = errors(
        with_change("data.augmentation", [{"name": "RandFlip", "kwargs": {"probability": 1}}])
    )
    assert "probability" in found[("data", "augmentation", 0)]["msg"]


def test_dictionary_transforms_are_not_array_augmentations() -> None:
    assert ("data", "augmentation", 0) in errors(
        with_change("data.augmentation", [{"name": "RandFlipd"}])
    )


def test_unknown_architecture_suggests_the_registered_name() -> None:
    message = errors(with_change("architecture.name", "resnet81"))[("architecture", "name")]["msg"]
    assert "Unknown architecture 'resnet81'" in message
    assert "resnet18" in message


def test_strategy_kwargs_are_checked() -> None:
    found = errors(
        with_change("strategy", {"name": "freeze_up_to", "kwargs": {"layers": "layer3"}})
    )
    assert "layer" in found[("strategy",)]["msg"]


def test_objective_kwargs_are_checked() -> None:
    found = errors(
        with_change("objective", {"name": "cross_entropy", "kwargs": {"smoothing": 0.1}})
    )
    assert "label_smoothing" in found[("objective",)]["msg"]


def test_objective_must_fit_the_task() -> None:
    (error,) = errors(with_change("objective.name", "mse")).values()
    assert "'mse' is for regression" in error["msg"]
    assert "cross_entropy" in error["msg"]


def test_num_outputs_is_not_an_architecture_kwarg() -> None:
    assert ("architecture", "kwargs") in errors(
        with_change("architecture.kwargs", {"num_outputs": 3})
    )


def test_scheduler_kwargs_set_by_the_module_are_rejected() -> None:
    error = errors(with_change("scheduler", {"name": "cosine", "kwargs": {"T_max": 5}}))[
        ("scheduler",)
    ]
    assert "T_max" in error["msg"]
    assert "eta_min" in error["msg"]
    config = TrainConfig.model_validate(
        with_change("scheduler", {"name": "plateau", "kwargs": {"factor": 0.5}})
    )
    assert config.scheduler.kwargs == {"factor": 0.5}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("data.val_fraction", 1.0),
        ("trainer.max_epochs", 0),
        ("trainer.limit_train_batches", 1.5),
        ("trainer.precision", "8-true"),
        ("task", "segmentation"),
    ],
)
def test_out_of_range_values_are_rejected_at_their_key(path: str, value: Any) -> None:
    assert tuple(path.split(".")) in errors(with_change(path, value))


def test_command_line_strings_are_coerced() -> None:
    parameters = base_parameters("finetune")
    parameters["seed"] = "7"
    parameters["optimizer"]["lr"] = "1e-4"
    parameters["trainer"].update(
        batch_size="16", devices="2", deterministic="false", limit_train_batches="0.5"
    )
    parameters["data"]["val_fraction"] = "0.3"
    config = TrainConfig.model_validate(parameters)
    assert config.seed == 7
    assert config.optimizer.lr == pytest.approx(1e-4)
    assert config.trainer.batch_size == 16
    assert config.trainer.devices == 2
    assert config.trainer.deterministic is False
    assert config.trainer.limit_train_batches == 0.5
    assert config.data.val_fraction == 0.3


def test_defaults_fill_what_a_notebook_leaves_out() -> None:
    config = TrainConfig(
        target="age", task="regression", architecture={"name": "resnet18"}, objective={"name": "l1"}
    )
    assert config.strategy.name == "scratch"
    assert config.trainer.precision == "auto"
    assert config.data.augmentation == []


def test_the_old_name_of_the_distributed_strategy_still_works_with_a_warning() -> None:
    with pytest.warns(
        FutureWarning, match=r"trainer\.strategy is deprecated; use trainer\.distributed"
    ):
        assert TrainerConfig(strategy="ddp_spawn").distributed == "ddp_spawn"
    with pytest.raises(ValueError, match="give trainer.distributed only"):
        TrainerConfig(strategy="ddp_spawn", distributed="auto")
