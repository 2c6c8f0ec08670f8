"""The weights formats: one declaration per published layout (where its state dict sits, the regex rules
renaming its keys into a ``TLModel``'s, its head, the architectures it fits), and timm's checkpoint
filters for the formats that timm loads."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from timm.models import convnext, densenet, swin_transformer, vision_transformer
from torch import Tensor

from tlkedro.tl.registry import Registry


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
TIMM_FILTERS: dict[str, Callable[..., dict[str, Tensor]]] = {
    "timm.models.vision_transformer": vision_transformer.checkpoint_filter_fn,
    "timm.models.swin_transformer": swin_transformer.checkpoint_filter_fn,
    "timm.models.convnext": convnext.checkpoint_filter_fn,
    "timm.models.densenet": densenet._filter_torchvision_pretrained,
}


def list_source_formats() -> list[str]:
    """The names ``format`` may take."""
    return SOURCE_FORMATS.names()


def fits(source_format: SourceFormat, architecture: str) -> bool:
    return source_format.fits is None or re.search(source_format.fits, architecture) is not None
