"""``TLModel``, the architecture registry, and the pieces the architecture families share.

Every registered builder returns a ``TLModel``: an ``encoder`` (a timm or MONAI network with its
classifier removed, or one of the small plain networks of this package) whose ordered ``stage_names``
the transfer-learning strategies freeze, truncate and slim, a parameter-free ``pool`` that turns the
encoder's output into ``(B, num_features)`` features, and a linear ``head``.

Builders are registered with ``register_architecture``, which records the resolved keyword arguments as
the model's ``config`` (so ``create_architecture(**model.config)`` rebuilds it) and handles the keyword
every architecture shares, ``cut_at`` (``truncate_at`` before; the old name still works for one release).
A builder outside the package is named by class path (``mypkg.nets:build_net``) and gets the same
handling plus ``check_architecture`` on every model it builds.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tlkedro.tl.architectures.shapes import spatial_size
from tlkedro.tl.architectures.surgery import truncate_in_place
from tlkedro.tl.registry import ContractError, Registry

ARCHITECTURES: Registry[TLModel] = Registry("architecture")

# The builder keyword arguments of each registered name, for error messages that list what is accepted.
_ACCEPTED: dict[str, tuple[str, ...]] = {}


class TLModel(nn.Module):
    """An encoder with named stages, a global pooling and a linear head.

    ``forward(x) = head(head_drop(forward_features(x)))``; ``head_drop`` is the builder's ``dropout``
    (identity in eval mode). Parameter names are stable: ``encoder.layer3.1.conv1.weight``,
    ``head.weight``. A model with covariates (``add_covariates``) concatenates per-subject scalars,
    standardised with statistics it stores, to the pooled features before the head.

    Args:
        encoder: The feature extractor; its output goes through ``pool``.
        stage_names: Module paths inside ``encoder`` of its stages, input side first.
        spatial_dims: 2 for slices, 3 for volumes.
        input_size: Spatial size of an example input, used for the dummy forward passes that infer the
            feature size (and by the analysis tools).
        in_channels: Channels of the input.
        num_outputs: Outputs of the head.
        dropout: Dropout probability before the head.
        pool: Parameter-free module mapping the encoder output to ``(B, num_features)``; identity when the
            encoder pools itself (timm networks built with ``num_classes=0``).

    Attributes:
        config: ``{"name": ..., **kwargs}`` rebuilding this model with ``create_architecture``; set by the
            registry.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        stage_names: Sequence[str],
        spatial_dims: int,
        input_size: Sequence[int],
        in_channels: int,
        num_outputs: int,
        dropout: float = 0.0,
        pool: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if len(input_size) != spatial_dims:
            raise ValueError(
                f"input_size {tuple(input_size)} does not have {spatial_dims} spatial dimensions"
            )
        self.encoder = encoder
        self.pool = pool if pool is not None else nn.Identity()
        self.stage_names = tuple(stage_names)
        for stage in self.stage_names:
            encoder.get_submodule(stage)  # a misspelt stage fails here, when the builder is written
        self.spatial_dims = spatial_dims
        self.input_size = tuple(input_size)
        self.in_channels = in_channels
        self.config: dict[str, Any] = {}
        self.num_features = self.infer_num_features()
        self.num_outputs = num_outputs
        self.head_drop = nn.Dropout(dropout)
        self.num_covariates = 0
        self.head = nn.Linear(self.num_features, num_outputs)

    def example_input(self, batch_size: int = 1) -> Tensor:
        """Zeros of shape ``(batch_size, in_channels, *input_size)`` on the model's device."""
        device = next(self.encoder.parameters()).device
        return torch.zeros(batch_size, self.in_channels, *self.input_size, device=device)

    def example_features(self) -> Tensor:
        """``forward_features`` of ``example_input()`` in eval mode, without gradients."""
        # Eval mode: the batch statistics of a single zero image would divide by zero in BatchNorm.
        with eval_mode(self), torch.no_grad():
            return self.forward_features(self.example_input())

    def infer_num_features(self) -> int:
        """The feature size, measured on ``example_features()``."""
        features = self.example_features()
        if features.ndim != 2:
            raise ValueError(
                f"the encoder and pool give features of shape {tuple(features.shape)}, not (B, C)"
            )
        return features.shape[1]

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features before the head, ``(B, num_features)``."""
        return self.pool(self.encoder(x))

    def forward(self, x: Tensor, covariates: Tensor | None = None) -> Tensor:
        """Head outputs, ``(B, num_outputs)``.

        Args:
            x: The images.
            covariates: ``(B, num_covariates)`` raw covariate values (a model with covariates only).
                ``None`` stands for the training mean of each, i.e. a subject of average head size: what
                the analysis tools (complexity, saliency) that feed images alone get.
        """
        return self.head_outputs(self.forward_features(x), covariates)

    def head_outputs(self, features: Tensor, covariates: Tensor | None = None) -> Tensor:
        """The head's outputs from pooled ``features``, with the covariates as ``forward`` takes them."""
        features = self.head_drop(features)
        if self.num_covariates:
            if covariates is None:
                covariates = self.covariate_mean.expand(len(features), -1)
            standardised = (covariates.to(features) - self.covariate_mean) / self.covariate_std
            features = torch.cat([features, standardised], dim=1)
        elif covariates is not None:
            raise ValueError(
                f"this model takes no covariates; got {tuple(covariates.shape)} (add_covariates first)"
            )
        return self.head(features)

    def add_covariates(self, count: int) -> None:
        """Widen the head by ``count`` covariate inputs, with a fresh head and identity standardisation.

        ``set_covariate_statistics`` then sets the training rows' mean and standard deviation; they are
        buffers, so checkpoints carry them and the model standardises raw values by itself.
        """
        if count < 1 or self.num_covariates:
            raise ValueError(f"add_covariates needs a count >= 1, once; got {count}")
        self.num_covariates = count
        self.register_buffer("covariate_mean", torch.zeros(count))
        self.register_buffer("covariate_std", torch.ones(count))
        self.reset_head(self.num_outputs)
        if self.config:
            self.config["num_covariates"] = count

    def set_covariate_statistics(self, mean: Tensor, std: Tensor) -> None:
        """The mean and standard deviation the covariates are standardised with (the training rows')."""
        if mean.shape != (self.num_covariates,) or std.shape != (self.num_covariates,):
            raise ValueError(
                f"covariate statistics must have shape ({self.num_covariates},); got "
                f"{tuple(mean.shape)} and {tuple(std.shape)}"
            )
        if not (torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError(f"covariate standard deviations must be positive; got {std.tolist()}")
        self.covariate_mean.copy_(mean)
        self.covariate_std.copy_(std)

    def reset_head(self, num_outputs: int) -> None:
        """Replace the head by a freshly initialised one with ``num_outputs`` outputs."""
        weight = self.head.weight
        self.head = nn.Linear(
            self.num_features + self.num_covariates,
            num_outputs,
            device=weight.device,
            dtype=weight.dtype,
        )
        self.num_outputs = num_outputs
        if self.config:
            self.config["num_outputs"] = num_outputs


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for a block, then restore every submodule's own training flag.

    Restoring each flag, rather than calling ``model.train()``, keeps layers that were deliberately in
    eval mode (frozen BatchNorm) as they were.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


class GlobalAvgPool(nn.Module):
    """Mean over all spatial dimensions: ``(B, C, *spatial) -> (B, C)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).mean(dim=2)


def register_architecture(name: str) -> Callable[[Callable[..., TLModel]], Callable[..., TLModel]]:
    """Decorator registering a ``TLModel`` builder as ``name``.

    The registered callable validates the keyword arguments against the builder's signature, records the
    resolved arguments (defaults included) as ``model.config`` and accepts two more keyword arguments,
    ``cut_at`` (see ``surgery.truncate``) and ``num_covariates`` (``TLModel.add_covariates``).

    Args:
        name: The registry key (``create_architecture(name, ...)``).
    """

    def decorator(builder: Callable[..., TLModel]) -> Callable[..., TLModel]:
        ARCHITECTURES.register(name)(_configured(name, builder, checked=False))
        _ACCEPTED[name] = tuple(inspect.signature(builder).parameters)
        return builder

    return decorator


def _configured(
    name: str, builder: Callable[..., TLModel], *, checked: bool
) -> Callable[..., TLModel]:
    """``builder`` with its keyword arguments validated, ``config`` recorded and ``cut_at`` applied;
    ``checked``: every model it builds must also pass ``check_architecture``."""
    signature = inspect.signature(builder)
    accepted = tuple(signature.parameters)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())

    def build(*, cut_at: str | None = None, num_covariates: int = 0, **kwargs: Any) -> TLModel:
        unknown = [] if takes_any else sorted(set(kwargs) - set(accepted))
        if "width_factors" in unknown:
            raise ValueError(
                f"Architecture {name!r} does not support width_factors; these do: "
                f"{', '.join(n for n, kw in sorted(_ACCEPTED.items()) if 'width_factors' in kw)}"
            )
        if unknown:
            raise TypeError(
                f"Architecture {name!r} got unexpected arguments {unknown}; it accepts "
                f"{', '.join(accepted)} and cut_at"
            )
        bound = signature.bind(**kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        for parameter in signature.parameters.values():
            if parameter.kind is parameter.VAR_KEYWORD:  # flattened, so that config rebuilds it
                arguments.update(arguments.pop(parameter.name, {}))
        model = builder(**arguments)
        if checked:
            check_architecture(model, name, kwargs)
        # A copy: the caller's dicts (width_factors) must not alias the config of the model.
        model.config = {"name": name, **copy.deepcopy(arguments)}
        if cut_at is not None:
            truncate_in_place(model, cut_at)
        if num_covariates:
            model.add_covariates(num_covariates)
        return model

    # A family registers functools.partials of one builder; the documentation is the builder's.
    build.__doc__ = getattr(builder, "func", builder).__doc__
    build.renamed_kwargs = {"truncate_at": "cut_at"}  # type: ignore[attr-defined]
    return build


def _from_class_path(path: str, builder: Any) -> Callable[..., TLModel]:
    if not callable(builder):
        raise ContractError(
            f"architecture {path!r} is a {type(builder).__name__}, not a builder: name a TLModel "
            "subclass or a function returning a TLModel"
        )
    return _configured(path, builder, checked=True)


ARCHITECTURES.accept_class_paths(_from_class_path)


def check_architecture(model: Any, name: str, kwargs: Mapping[str, Any] | None = None) -> None:
    """Check that ``model`` is a ``TLModel`` the strategies and training can use.

    What is checked: it is a ``TLModel``; it has an encoder with parameters and a linear head on
    ``num_features``; every stage name resolves inside the encoder; ``forward_features`` of a batch of
    two ``example_input`` images is ``(2, num_features)`` and ``forward`` is ``(2, num_outputs)``; and the
    channels, input size and outputs that ``kwargs`` asked for are the model's.

    Args:
        model: What the builder returned.
        name: The builder's name or class path, for the message.
        kwargs: The keyword arguments it was built with.

    Raises:
        ContractError: Listing every problem found.
    """
    if not isinstance(model, TLModel):
        raise ContractError(
            f"architecture {name!r} returned a {type(model).__name__}, not a TLModel: wrap the network "
            "as TLModel(encoder, stage_names=..., spatial_dims=..., input_size=..., in_channels=..., "
            "num_outputs=...) (docs/architectures.md, 'Your own architecture')"
        )
    kwargs = dict(kwargs or {})
    problems: list[str] = []
    for attribute in (
        "encoder",
        "head",
        "stage_names",
        "num_features",
        "num_outputs",
        "input_size",
    ):
        if not hasattr(model, attribute):
            problems.append(f"no attribute {attribute!r} (was TLModel.__init__ called?)")
    if problems:
        raise ContractError(f"architecture {name!r}: " + "; ".join(problems))
    if not any(True for _ in model.encoder.parameters()):
        problems.append("the encoder has no parameters, so there is nothing to transfer")
    if not isinstance(model.head, nn.Linear) or model.head.in_features != model.num_features:
        problems.append(f"the head must be an nn.Linear on the {model.num_features} features")
    if not model.stage_names:
        problems.append("stage_names is empty; name the encoder's stages, input side first")
    for stage in model.stage_names:
        try:
            model.encoder.get_submodule(stage)
        except AttributeError:
            problems.append(f"stage {stage!r} is not a module of the encoder")
    if "in_channels" in kwargs and model.in_channels != kwargs["in_channels"]:
        problems.append(f"asked for in_channels={kwargs['in_channels']}, has {model.in_channels}")
    if kwargs.get("img_size") is not None:
        wanted = spatial_size(kwargs["img_size"], model.spatial_dims)
        if model.input_size != wanted:
            problems.append(f"asked for img_size={list(wanted)}, has input_size {model.input_size}")
    if "num_outputs" in kwargs and model.num_outputs != kwargs["num_outputs"]:
        problems.append(f"asked for num_outputs={kwargs['num_outputs']}, has {model.num_outputs}")
    if not problems:
        problems.extend(_forward_problems(model))
    if problems:
        raise ContractError(f"architecture {name!r} does not fit: " + "; ".join(problems))


def _forward_problems(model: TLModel) -> list[str]:
    shape = (2, model.in_channels, *model.input_size)
    with eval_mode(model), torch.no_grad():
        try:  # the user's forward: any failure is the finding
            x = model.example_input(batch_size=2)
            features = model.forward_features(x)
        except Exception as error:
            return [f"forward_features on an input of shape {shape} failed: {error!r}"]
        if tuple(features.shape) != (2, model.num_features):
            return [f"forward_features gave {tuple(features.shape)}, not (2, {model.num_features})"]
        try:
            outputs = model(x)
        except Exception as error:
            return [f"forward on an input of shape {shape} failed: {error!r}"]
    if tuple(outputs.shape) != (2, model.num_outputs):
        return [f"forward gave {tuple(outputs.shape)}, not (2, {model.num_outputs})"]
    return []


def create_architecture(name: str, **kwargs: Any) -> TLModel:
    """Build the architecture registered as ``name``, or named by class path.

    Args:
        name: A registered name (see ``list_architectures``) or a class path ``package.module:Name`` of
            a ``TLModel`` subclass or a function returning one.
        **kwargs: The builder's keyword arguments (``in_channels``, ``num_outputs``, ``img_size``,
            ``dropout``, ``cut_at``, and per architecture ``width_factors``, ``spatial_dims``, ...).

    Raises:
        UnknownComponentError: If ``name`` is neither registered nor an importable class path; the
            message lists the valid names.
        ContractError: If a builder named by class path builds a model that does not fit
            (``check_architecture``).
        TypeError: If a keyword argument is not accepted; the message lists those that are.
        ValueError: If ``width_factors`` is given to an architecture that cannot slim its stages.
    """
    return ARCHITECTURES.create(name, **kwargs)


def list_architectures() -> list[str]:
    """The registered architecture names, sorted."""
    return ARCHITECTURES.names()
