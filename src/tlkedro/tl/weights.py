"""Pretrained weights from a file in a published layout, mapped onto a ``TLModel``'s encoder with a report.

Users download weights themselves; ``load_source_weights(model, path, format)`` reads them offline and
returns a source checkpoint that every strategy consumes as it consumes a tlkedro source model
(``strategy.prepare(model, source["state_dict"])``), plus a ``LoadReport``: the matched, missing and
unexpected keys, the source's own head layers that were dropped, shape mismatches, how the input
channels were adapted, the share of the encoder's parameters that came from the file, and the file's
sha256. A load that fills less than ``min_match`` of the encoder's parameters fails with that report,
rather than training from a silent partial load.

Each format is declared once in ``SOURCE_FORMATS``: where the state dict sits in the file, regex rules
that rename its keys into the model's (``encoder.layer1.0.conv1.weight``), which keys are the source's
head, and which architectures it fits. The 2D timm and torchvision formats are loaded by timm's own
pretrained-config mechanism (``timm.models.load_pretrained`` with ``pretrained_cfg["file"]``, what
``timm.create_model(pretrained=True, pretrained_cfg_overlay=dict(file=path))`` runs), so timm's per-model
checkpoint filters (torchvision key names, position-embedding resampling) and its input-convolution
adaptation apply. Files are read with ``torch.load(weights_only=True)`` or safetensors: never code.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import timm.models
import torch
from timm.models import convnext, densenet, swin_transformer, vision_transformer
from torch import Tensor

from tlkedro.tl.architectures import TLModel
from tlkedro.tl.registry import Registry

DEFAULT_MIN_MATCH = 0.9
_LISTED = 10


class WeightsFileError(ValueError):
    """Raised when a weights file cannot be read as a state dict; the message names the file and why."""


class WeightsMismatchError(ValueError):
    """Raised when a file fills too little of the encoder; ``report`` says what matched and what did not."""

    def __init__(self, message: str, report: LoadReport) -> None:
        super().__init__(message)
        self.report = report


@dataclasses.dataclass(frozen=True)
class SourceFormat:
    """A published layout of weights and how its keys map onto a ``TLModel``.

    Attributes:
        name: The ``format`` value that selects it.
        description: What files it reads, for docs and errors.
        unwrap: Keys of a file's outer dict that may hold the state dict, tried in order; a file without
            any of them is the state dict itself.
        rename: ``(pattern, replacement)`` regex rules applied in order to every key (``re.sub``, first
            match only); the result is the model's key, ``encoder.`` prefix included.
        head: Patterns of renamed keys that are the source's own head or task layers: dropped and
            listed as such, not as unexpected.
        fits: Pattern the architecture name must match; ``None``: any.
        hint: Advice added to a failed load's message.
        by_timm: Load through timm's pretrained-config mechanism instead of ``rename``.
    """

    name: str
    description: str
    unwrap: tuple[str, ...] = ("state_dict",)
    rename: tuple[tuple[str, str], ...] = ()
    head: tuple[str, ...] = ()
    fits: str | None = None
    hint: str = ""
    by_timm: bool = False


SOURCE_FORMATS: Registry[SourceFormat] = Registry("weights format")


def _declare(source_format: SourceFormat) -> None:
    SOURCE_FORMATS.register(source_format.name)(source_format)  # type: ignore[arg-type]


_TIMM_HINT = (
    "Was the file saved from the timm model this architecture wraps, with the same arguments "
    "(e.g. width_factors, patch_size)?"
)
_declare(
    SourceFormat(
        "timm",
        "a timm model's state dict (.pth, .bin or .safetensors), e.g. from the Hugging Face hub",
        fits=r"^(resnet18|resnet34|resnet50|densenet121|efficientnet_b0|convnext_tiny|vit_tiny|"
        r"vit_small|swin_tiny)$",
        hint=_TIMM_HINT,
        by_timm=True,
    )
)
_declare(
    SourceFormat(
        "torchvision",
        "a torchvision.models state dict; timm's ResNet keys are torchvision's and timm's DenseNet "
        "filter renames torchvision's, so only those two families fit",
        fits=r"^(resnet18|resnet34|resnet50|densenet121)$",
        hint=_TIMM_HINT,
        by_timm=True,
    )
)
_declare(
    SourceFormat(
        "medicalnet",
        "a MedicalNet (Med3D) ResNet checkpoint: {'state_dict': {'module.conv1.weight': ...}} with a "
        "segmentation head conv_seg and no fc",
        rename=((r"^(module\.)?", "encoder."),),
        head=(r"^encoder\.conv_seg\.",),
        fits=r"^resnet(10|18|34|50)_3d$",
        hint=(
            "MedicalNet's ResNets need MONAI's shortcut settings in architecture.kwargs: shortcut_type A "
            "and bias_downsample true for depths 18 and 34, shortcut_type B and bias_downsample false "
            "for 10 and 50 (monai.networks.nets.resnet.get_medicalnet_pretrained_resnet_args)."
        ),
    )
)
_declare(
    SourceFormat(
        "monai",
        "a plain state dict of monai.networks.nets.ResNet, DenseNet121 or ViT (model.state_dict())",
        unwrap=("state_dict", "model"),
        rename=((r"^", "encoder."),),
        head=(
            r"^encoder\.fc\.",
            r"^encoder\.class_layers\.out\.",
            r"^encoder\.classification_head\.",
            r"^encoder\.cls_token$",
        ),
        fits=r"_3d$",
        hint="Was the file saved from the MONAI network this architecture wraps, at the same widths?",
    )
)
_declare(
    SourceFormat(
        "lightning",
        "a Lightning checkpoint: {'state_dict': {'model.…' or 'backbone.…': ...}} around a tlkedro, "
        "timm-layout or MONAI network",
        rename=(
            (r"^(model|backbone)\.(?!encoder\.)", "encoder."),
            (r"^(model|backbone)\.", ""),
        ),
        head=(
            r"^head\.",
            r"^encoder\.(fc|head|classifier|classification_head|class_layers\.out)\.",
        ),
        hint="Keys of the network must start with 'model.' or 'backbone.'.",
    )
)
_declare(
    SourceFormat(
        "tlkedro",
        "a tlkedro model checkpoint ({'config', 'state_dict', 'meta'}), e.g. from another project",
        head=(r"^head\.",),
        hint="Was the source model built with the same architecture and arguments?",
    )
)

# timm's checkpoint filter for each timm model module (what timm.create_model passes to load_pretrained
# as pretrained_filter_fn; timm does not keep it on the model). ResNet and EfficientNet need none.
_TIMM_FILTERS: dict[str, Callable[..., dict[str, Tensor]]] = {
    "timm.models.vision_transformer": vision_transformer.checkpoint_filter_fn,
    "timm.models.swin_transformer": swin_transformer.checkpoint_filter_fn,
    "timm.models.convnext": convnext.checkpoint_filter_fn,
    "timm.models.densenet": densenet._filter_torchvision_pretrained,
}


@dataclasses.dataclass
class LoadReport:
    """What a load took from a weights file and what it left.

    Attributes:
        file: The file read.
        sha256: Its SHA-256, so a run records exactly which weights it started from.
        format: The ``SOURCE_FORMATS`` name.
        architecture: The target model's architecture name.
        matched: Encoder keys filled from the file.
        missing: Encoder keys the file did not fill; they keep the model's initialisation.
        unexpected: Keys of the file that are not in the encoder (after renaming).
        dropped: Keys of the source's own head or task layers, left out on purpose.
        shape_mismatches: ``key: file (...) model (...)`` for keys whose shapes differ.
        adapted: How tensors were changed to fit: the input convolution's channels, timm's resampling.
        matched_fraction: Share of the encoder's parameter elements filled from the file.
        min_match: The share below which the load fails.
    """

    file: str
    sha256: str
    format: str
    architecture: str
    matched: list[str]
    missing: list[str]
    unexpected: list[str]
    dropped: list[str]
    shape_mismatches: list[str]
    adapted: list[str]
    matched_fraction: float
    min_match: float

    def as_dict(self) -> dict[str, Any]:
        """Plain types, for a checkpoint's meta or a run record."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """A few lines for a log or an error: the counts, and the first keys of each list."""
        lines = [
            f"{self.file} (format {self.format}, sha256 {self.sha256[:12]}) into {self.architecture!r}: "
            f"{self.matched_fraction:.1%} of the encoder's parameters matched (at least "
            f"{self.min_match:.0%} needed)"
        ]
        for what in ("missing", "unexpected", "dropped", "shape_mismatches", "adapted"):
            keys = getattr(self, what)
            if keys:
                more = f", ... ({len(keys) - _LISTED} more)" if len(keys) > _LISTED else ""
                lines.append(
                    f"  {len(keys)} {what.replace('_', ' ')}: {', '.join(keys[:_LISTED])}{more}"
                )
        return "\n".join(lines)


def list_source_formats() -> list[str]:
    """The names ``format`` may take."""
    return SOURCE_FORMATS.names()


def load_source_weights(
    model: TLModel, path: str | Path, format: str, min_match: float = DEFAULT_MIN_MATCH
) -> tuple[dict[str, Any], LoadReport]:
    """Map a weights file onto ``model``'s encoder: a source checkpoint for the strategies, and its report.

    Args:
        model: A model built as the one to train will be (same architecture, keyword arguments, input
            channels and size); it is not changed.
        path: The weights file.
        format: A ``SOURCE_FORMATS`` name (``list_source_formats()``).
        min_match: The least share of the encoder's parameter elements the file must fill, in (0, 1].

    Returns:
        ``({"config": model.config, "state_dict": {encoder key: tensor}, "meta": {"source_weights":
        report.as_dict()}}, report)``. The state dict holds every encoder key: those the file filled and,
        for the ``missing`` ones, the model's own initialisation, so strategies load it as they load a
        tlkedro source model's.

    Raises:
        UnknownComponentError: If ``format`` is not a format; the message lists them.
        ValueError: If the format does not fit the architecture, or ``min_match`` is out of range.
        FileNotFoundError: If ``path`` does not exist.
        WeightsFileError: If the file is not a readable state dict in that format.
        WeightsMismatchError: If less than ``min_match`` of the encoder was filled; it carries the report.
    """
    source_format = SOURCE_FORMATS.get(format)
    if not 0 < min_match <= 1:
        raise ValueError(f"min_match must be in (0, 1], got {min_match}")
    architecture = str(model.config.get("name", type(model).__name__))
    if source_format.fits is not None and not re.search(source_format.fits, architecture):
        fitting = [n for n in list_source_formats() if _fits(SOURCE_FORMATS.get(n), architecture)]
        raise ValueError(
            f"weights format {format!r} is for {source_format.description}; it does not fit "
            f"architecture {architecture!r}. Formats that do: {', '.join(fitting)}"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    sha256 = _sha256(path)
    if source_format.by_timm:
        state, lists = _through_timm(model, path, source_format)
    else:
        state, lists = _by_rules(model, _read_state_dict(path, source_format), source_format)
    encoder_state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    lists["missing"] = sorted(encoder_state.keys() - state.keys())
    parameters = {f"encoder.{k}": p.numel() for k, p in model.encoder.named_parameters()}
    filled = sum(n for key, n in parameters.items() if key in state)
    report = LoadReport(
        file=str(path),
        sha256=sha256,
        format=format,
        architecture=architecture,
        matched=sorted(state),
        matched_fraction=filled / max(1, sum(parameters.values())),
        min_match=min_match,
        **{what: lists.get(what, []) for what in _LISTS},
    )
    if report.matched_fraction < min_match:
        raise WeightsMismatchError(
            f"The weights file {str(path)!r} does not fit the encoder of {architecture!r} as format "
            f"{format!r}: {report.matched_fraction:.1%} of its parameters matched, {min_match:.0%} "
            f"needed. {source_format.hint}\n{report.describe()}",
            report,
        )
    source_state = {
        key: (state[key] if key in state else value.detach().clone())
        for key, value in encoder_state.items()
    }
    checkpoint = {
        "config": copy.deepcopy(model.config),
        "state_dict": source_state,
        "meta": {"source_weights": report.as_dict()},
    }
    return checkpoint, report


_LISTS = ("missing", "unexpected", "dropped", "shape_mismatches", "adapted")


def _fits(source_format: SourceFormat, architecture: str) -> bool:
    return source_format.fits is None or re.search(source_format.fits, architecture) is not None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_state_dict(path: Path, source_format: SourceFormat) -> dict[str, Tensor]:
    """The file's state dict, unwrapped as the format says; only tensors and plain types are read."""
    with path.open("rb") as file:
        magic = file.read(2)
    # torch.save writes a zip archive ("PK"), or before PyTorch 1.6 a pickle (protocol 2: b"\x80\x02")
    is_torch = magic == b"PK" or magic[:1] == b"\x80"
    try:
        if path.suffix == ".safetensors":
            content: Any = safetensors.torch.load_file(str(path), device="cpu")
        else:
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not is_torch:
            raise WeightsFileError(
                f"weights file {str(path)!r} is not a PyTorch or safetensors file"
            ) from None
        refused = str(error).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise WeightsFileError(
            f"weights file {str(path)!r} holds objects other than tensors and plain types, which are "
            f"not loaded because loading them would run code from the file ({refused}). Save its "
            "state dict alone, e.g. torch.save(torch.load(path, weights_only=False)['state_dict'], "
            "new_path), where you trust the file"
        ) from None
    except (
        Exception
    ) as error:  # torch and safetensors raise several types for a file that is not theirs
        raise WeightsFileError(
            f"weights file {str(path)!r} is not a PyTorch or safetensors file: "
            f"{type(error).__name__}: {error}"
        ) from None
    if isinstance(content, Mapping):
        for key in source_format.unwrap:
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
    if not isinstance(content, Mapping) or not content:
        raise WeightsFileError(
            f"weights file {str(path)!r} holds a {type(content).__name__}, not a state dict "
            f"(format {source_format.name!r} looks in {', '.join(source_format.unwrap) or 'the file'})"
        )
    not_tensors = [str(k) for k, v in content.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise WeightsFileError(
            f"weights file {str(path)!r} is not a state dict as format {source_format.name!r} reads "
            f"it: {', '.join(not_tensors[:_LISTED])} are not tensors"
        )
    return dict(content)


def _by_rules(
    model: TLModel, file_state: Mapping[str, Tensor], source_format: SourceFormat
) -> tuple[dict[str, Tensor], dict[str, list[str]]]:
    """The file's tensors renamed into the model's keys, with the stem's input channels adapted."""
    wanted = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    stem = _input_convolution(model)
    state: dict[str, Tensor] = {}
    lists: dict[str, list[str]] = {what: [] for what in _LISTS}
    sources: dict[str, str] = {}
    for source_key, tensor in file_state.items():
        key = source_key
        for pattern, replacement in source_format.rename:
            key = re.sub(pattern, replacement, key, count=1)
        if key in sources:
            raise WeightsFileError(
                f"format {source_format.name!r} maps both {sources[key]!r} and {source_key!r} of the "
                f"weights file to {key!r}"
            )
        sources[key] = source_key
        if any(re.search(pattern, key) for pattern in source_format.head):
            lists["dropped"].append(source_key)
        elif key not in wanted:
            lists["unexpected"].append(source_key)
        elif tensor.shape == wanted[key].shape:
            state[key] = tensor.to(wanted[key].dtype)
        elif key == stem and _only_channels_differ(tensor, wanted[key]):
            state[key] = _adapt_input_channels(tensor, wanted[key].shape[1]).to(wanted[key].dtype)
            lists["adapted"].append(_adaptation(key, tensor.shape[1], wanted[key].shape[1]))
        else:
            lists["shape_mismatches"].append(
                f"{key}: file {tuple(tensor.shape)}, model {tuple(wanted[key].shape)}"
            )
    return state, {what: sorted(keys) for what, keys in lists.items()}


def _input_convolution(model: TLModel) -> str | None:
    """Key of the encoder's first convolution-like weight (the stem or patch embedding), if any."""
    for name, param in model.encoder.named_parameters():
        if param.ndim >= 3:
            return f"encoder.{name}"
    return None


def _only_channels_differ(source: Tensor, target: Tensor) -> bool:
    return source.ndim == target.ndim and source.shape[:1] + source.shape[2:] == (
        target.shape[:1] + target.shape[2:]
    )


def _adapt_input_channels(weight: Tensor, in_channels: int) -> Tensor:
    """timm's ``adapt_input_conv`` (one channel: the sum over the source channels; more: the source
    channels repeated and rescaled), for 2D and, through a 4D view, 3D convolutions."""
    out, source_channels, *kernel = weight.shape
    flat = weight.reshape(out, source_channels, kernel[0], -1)
    adapted = timm.models.adapt_input_conv(in_channels, flat, base_chans=source_channels)
    return adapted.reshape(out, in_channels, *kernel)


def _adaptation(key: str, source_channels: int, in_channels: int) -> str:
    how = (
        "summed over the file's channels"
        if in_channels == 1
        else f"the file's channels repeated and scaled by {source_channels}/{in_channels}"
    )
    return (
        f"{key}: {source_channels} -> {in_channels} input channels, {how} (timm adapt_input_conv)"
    )


def _through_timm(
    model: TLModel, path: Path, source_format: SourceFormat
) -> tuple[dict[str, Tensor], dict[str, list[str]]]:
    """Load the file with timm's pretrained-config mechanism into a copy of the timm encoder."""
    encoder = model.encoder
    pretrained_cfg = getattr(encoder, "pretrained_cfg", None)
    if not pretrained_cfg:
        raise ValueError(
            f"weights format {source_format.name!r} needs a timm encoder; {type(encoder).__name__} is not"
        )
    file_state = _read_state_dict(path, source_format)  # for the report: what timm is given
    target = copy.deepcopy(encoder)
    result: list[Any] = []
    target.register_load_state_dict_post_hook(lambda _, keys: result.append(keys))
    cfg = {**pretrained_cfg, "file": str(path), "state_dict": None, "custom_load": False}
    try:
        timm.models.load_pretrained(
            target,
            pretrained_cfg=cfg,
            num_classes=0,  # the encoders are built without a classifier: timm drops the file's
            in_chans=model.in_channels,
            filter_fn=_TIMM_FILTERS.get(type(encoder).__module__),
            strict=False,
        )
    except RuntimeError as error:  # size mismatches raise even with strict=False
        wanted = encoder.state_dict()
        mismatches = [
            f"encoder.{k}: file {tuple(v.shape)}, model {tuple(wanted[k].shape)}"
            for k, v in file_state.items()
            if k in wanted and v.shape != wanted[k].shape
        ]
        raise WeightsFileError(
            f"timm could not load the weights file {str(path)!r} into {model.config.get('name')!r} as "
            f"format {source_format.name!r}: {error}. {source_format.hint}"
            + (f" Shape mismatches: {', '.join(mismatches[:_LISTED])}" if mismatches else "")
        ) from None
    keys = result[-1]
    loaded = target.state_dict()
    missing = set(keys.missing_keys)
    state = {f"encoder.{k}": v for k, v in loaded.items() if k not in missing}
    classifier = pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    head = tuple(f"{name}." for name in classifier)
    lists = {
        "unexpected": sorted(keys.unexpected_keys),
        "dropped": sorted(k for k in file_state if k.startswith(head)),
        "adapted": sorted(
            _timm_adaptation(k, file_state[k], v, model)
            for k, v in loaded.items()
            if k not in missing and k in file_state and file_state[k].shape != v.shape
        ),
    }
    return state, lists


def _timm_adaptation(key: str, source: Tensor, loaded: Tensor, model: TLModel) -> str:
    if f"encoder.{key}" == _input_convolution(model) and _only_channels_differ(source, loaded):
        return _adaptation(f"encoder.{key}", source.shape[1], model.in_channels)
    return (
        f"encoder.{key}: {tuple(source.shape)} -> {tuple(loaded.shape)}, resampled by timm's "
        "checkpoint filter"
    )
