"""Reading a weights file safely: ``torch.load(weights_only=True)`` or safetensors, never code."""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from tlkedro.errors import ConfigurationError, MissingFileError
from tlkedro.tl.weights.formats import SourceFormat

_LISTED = 10
# Kedro's version folders (`AbstractVersionedDataset`): UTC timestamps, so their names sort by time.
_KEDRO_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}\.\d{3}Z")


class WeightsFileError(ConfigurationError, ValueError):
    """Raised when a weights file cannot be read as a state dict; the message names the file and why."""


def resolve_weights_file(path: str | Path) -> Path:
    """The weights file ``path`` names: the file itself, or the latest version of a versioned dataset.

    A versioned Kedro dataset such as a model (``data/06_models/pretrain/default/model.pt``) is a folder
    of version folders, each holding a file of the folder's name; like Kedro's own loading, the latest
    version is read. The load report then names the exact file.

    Raises:
        MissingFileError: If ``path`` is neither a file nor such a folder, saying which.
    """
    path = Path(path)
    if path.is_file():
        return path
    where = f"(a relative path is read from the folder the command runs in, {Path.cwd()})"
    if not path.is_dir():
        raise MissingFileError(
            f"weights file {str(path)!r} does not exist {where}: correct `init_from.file`"
        )
    versions = sorted(
        entry / path.name
        for entry in path.iterdir()
        if _KEDRO_VERSION.fullmatch(entry.name) and (entry / path.name).is_file()
    )
    if not versions:
        raise MissingFileError(
            f"weights file {str(path)!r} is a folder {where} and not a versioned Kedro dataset (no "
            f"<version>/{path.name} inside): correct `init_from.file`"
        )
    return versions[-1]


def sha256_of(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: Path, source_format: SourceFormat) -> dict[str, Tensor]:
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
