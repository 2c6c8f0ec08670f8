"""A folder of NIfTI files as one Kedro dataset, read lazily and written in parallel, atomically and safely."""

from __future__ import annotations

import fnmatch
import gzip
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import nibabel as nib
import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from tlkedro import provenance
from tlkedro.parallel import MIN_ITEMS_FOR_POOL, run_recipes

logger = logging.getLogger(__name__)

# Written into every folder this dataset creates. Saving into an existing, non-empty folder without it
# is refused: that folder holds someone's data, and a collection must never overwrite it.
MARKER = ".tlkedro-collection"
# Written (atomically) by a save once every file is in place, and removed when a save starts: a collection
# that this dataset writes exists only with it, so one interrupted halfway does not count as finished.
COMPLETE = ".tlkedro-collection-complete"
# nibabel's own default for .nii.gz: higher levels cost far more time than they save space.
_GZIP_LEVEL = 1
TABLE_SUFFIX = ".tsv"


@dataclass(frozen=True)
class NiftiRef:
    """A NIfTI file that has not been opened yet; picklable, so it can travel to worker processes.

    Attributes:
        path: Absolute path of the file.
    """

    path: Path

    def load(self) -> nib.Nifti1Image:
        """Open the file; the voxels stay on disk (nibabel array proxy) until they are read."""
        return nib.load(self.path)

    @property
    def sidecar_path(self) -> Path:
        """The BIDS-style JSON sidecar beside the file: ``<name without .nii[.gz]>.json``."""
        return sidecar_path(self.path)

    def sidecar(self) -> dict[str, Any]:
        """The sidecar's content; ``{}`` when the file has none."""
        path = self.sidecar_path
        return json.loads(path.read_text()) if path.is_file() else {}


def sidecar_path(path: Path) -> Path:
    """``<folder>/<name>.json`` for ``<folder>/<name>.nii`` or ``<folder>/<name>.nii.gz``."""
    name = path.name.removesuffix(".gz").removesuffix(".nii")
    return path.with_name(f"{name}.json")


class NiftiCollectionDataset(AbstractDataset[Mapping[str, Any], dict[str, NiftiRef]]):
    """The NIfTI files under a folder that match a glob, keyed by their path relative to the folder.

    Loading lists the files without opening them, so a damaged file reaches ingestion, which quarantines
    it, instead of failing the load. Saving takes ``{relative_path: image or recipe}``, where a recipe is
    a picklable zero-argument callable returning a nibabel image, or an image and a JSON-able dictionary
    written beside it as its BIDS-style sidecar (``<name>.json``; :meth:`NiftiRef.sidecar` reads it back),
    or, for a key ending in ``.tsv``, a recipe returning a ``pandas.DataFrame``, written tab-separated
    without its index (the ROI time series of the synthetic cohort, docs/timeseries.md):
    recipes are evaluated in a process pool (see :mod:`tlkedro.parallel`) and each worker writes its own
    file, so memory stays bounded however many images there are. Every file is written to a temporary
    name in its folder and then renamed, so an interrupted run never leaves a half-written ``.nii.gz``.

    Reuse: a recipe with a ``fingerprint`` attribute (a string naming everything its result depends on)
    is not evaluated when its file is already there with a sidecar holding the same ``fingerprint``; its
    result is written with that fingerprint in the sidecar (image first, sidecar last, so a sidecar is
    only ever beside a complete image). A different fingerprint means a stale file: it is recomputed.

    A save replaces the collection: files matching ``glob`` that an earlier save wrote and that the new
    mapping lacks are removed, with their sidecars. It only ever writes into a folder that it created
    (marked by a ``.tlkedro-collection`` file) or that is empty. Such a folder exists (``exists()``, as
    ``--only-missing-outputs`` asks) only once a save has finished (a ``.tlkedro-collection-complete``
    file, written last); a folder of someone else's files exists when a file matches ``glob``.

    Example catalog entry::

        synthetic_images:
          type: tlkedro.datasets.NiftiCollectionDataset
          path: data/01_raw/synthetic/ukb
          glob: "*/T1/T1_brain_to_MNI.nii.gz"

    Args:
        path: Root folder of the collection.
        glob: Pattern of the files, relative to ``path`` (``**`` matches any number of folders).
        workers: Processes used to save; ``None`` uses every available core.
        min_items_for_pool: Saves of fewer files run in this process (see :mod:`tlkedro.parallel`);
            lower it where each file costs seconds, such as a registration.
    """

    def __init__(
        self,
        path: str,
        glob: str,
        workers: int | None = None,
        min_items_for_pool: int = MIN_ITEMS_FOR_POOL,
    ) -> None:
        self._root = Path(path)
        self._glob = glob
        self._workers = workers
        self._min_items_for_pool = min_items_for_pool

    def load(self) -> dict[str, NiftiRef]:
        if not self._root.is_dir():
            raise DatasetError(
                f"NIfTI collection folder {self._root} does not exist (or is not a folder)."
            )
        root = self._root.resolve()
        files = (p for p in root.glob(self._glob) if p.is_file())
        return {p.relative_to(root).as_posix(): NiftiRef(p) for p in sorted(files)}

    def save(self, data: Mapping[str, Any]) -> None:
        for key, item in data.items():
            self._check_item(key, item)
        self._claim_folder()
        root = self._root.resolve()
        (root / COMPLETE).unlink(missing_ok=True)
        stale = set(self.load()) - set(data)
        todo = {key: item for key, item in data.items() if not _is_current(root / key, item)}
        if len(todo) < len(data):
            logger.info(
                "%s: %d of %d files reused (same fingerprint), %d to compute",
                self._root,
                len(data) - len(todo),
                len(data),
                len(todo),
            )
        jobs = (_WriteJob(root / key, item) for key, item in todo.items())
        for _ in run_recipes(
            jobs,
            workers=self._workers,
            desc=f"Writing {self._root}",
            total=len(todo),
            min_items_for_pool=self._min_items_for_pool,
        ):
            pass
        for key in stale:
            sidecar_path(root / key).unlink(missing_ok=True)
            _remove_with_empty_parents(root / key, root)
        _write_atomically(root / COMPLETE, json.dumps({"files": len(data)}).encode())

    def _exists(self) -> bool:
        if not self._root.is_dir():
            return False
        if (self._root / MARKER).exists():
            return (self._root / COMPLETE).is_file()
        return any(p.is_file() for p in self._root.glob(self._glob))

    def fingerprint(self) -> str:
        """A digest of the matching files' names, sizes and modification times (contents unread).

        What :mod:`tlkedro.freshness` takes as the collection's content where it is raw data; cheap for
        thousands of scans.
        """
        if not self._root.is_dir():
            return "absent"
        root = self._root.resolve()
        listing = []
        for path in sorted(p for p in root.glob(self._glob) if p.is_file()):
            stat = path.stat()
            listing.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
        return provenance.fingerprint(listing)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._root), "glob": self._glob, "workers": self._workers}

    def _check_item(self, key: str, item: Any) -> None:
        path = PurePosixPath(key)
        if (
            path.is_absolute()
            or ".." in path.parts
            or not _glob_matches(path.parts, PurePosixPath(self._glob).parts)
        ):
            raise DatasetError(
                f"Cannot save {key!r} into {self._root}: keys must be relative paths inside the folder "
                f"that match the dataset's glob {self._glob!r} (otherwise loading would not find them "
                "again). Do the catalog entry's glob and the layout of the data agree?"
            )
        if key.endswith(TABLE_SUFFIX):
            if not callable(item):
                raise DatasetError(
                    f"Cannot save {key!r} into {self._root}: a {TABLE_SUFFIX} file needs a recipe (a "
                    f"zero-argument callable returning a DataFrame), got {type(item).__name__}."
                )
            return
        if not key.endswith((".nii", ".nii.gz")):
            raise DatasetError(
                f"Cannot save {key!r} into {self._root}: the file name must end in .nii, .nii.gz "
                f"or {TABLE_SUFFIX}."
            )
        if not (isinstance(item, nib.Nifti1Image) or callable(item)):
            raise DatasetError(
                f"Cannot save {key!r} into {self._root}: expected a nibabel Nifti1Image or a recipe "
                f"(a zero-argument callable returning one), got {type(item).__name__}."
            )

    def _claim_folder(self) -> None:
        marker = self._root / MARKER
        if self._root.exists() and not marker.exists():
            if not self._root.is_dir():
                raise DatasetError(
                    f"Refusing to write NIfTI files to {self._root}: it is not a folder."
                )
            if any(self._root.iterdir()):
                raise DatasetError(
                    f"Refusing to write NIfTI files into {self._root}: the folder is not empty and was not "
                    f"created by tlkedro (it has no {MARKER} file), so it may hold someone's data. "
                    "Point the catalog entry at a new or empty folder."
                )
        self._root.mkdir(parents=True, exist_ok=True)
        marker.write_text(
            "Written by tlkedro.datasets.NiftiCollectionDataset; safe to overwrite.\n"
        )


def _remove_with_empty_parents(path: Path, root: Path) -> None:
    """Remove a file and the folders above it that it leaves empty, up to (not including) ``root``."""
    path.unlink()
    for folder in path.parents:
        if folder == root or any(folder.iterdir()):
            break
        folder.rmdir()


def _glob_matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether path parts match pathlib-style glob parts, ``**`` standing for any number of folders."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_matches(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return (
        bool(parts)
        and fnmatch.fnmatchcase(parts[0], pattern[0])
        and _glob_matches(parts[1:], pattern[1:])
    )


@dataclass(frozen=True)
class _WriteJob:
    """Materialise one image (evaluating its recipe, in a worker) and write it atomically."""

    path: Path
    item: nib.Nifti1Image | Callable[[], nib.Nifti1Image | tuple[nib.Nifti1Image, dict]]

    def __call__(self) -> None:
        result = self.item if isinstance(self.item, nib.Nifti1Image) else self.item()
        if self.path.name.endswith(TABLE_SUFFIX):
            if not isinstance(result, pd.DataFrame):
                raise DatasetError(
                    f"The recipe for {self.path} returned {type(result).__name__}, not a DataFrame."
                )
            _write_atomically(self.path, result.to_csv(sep="\t", index=False).encode())
            return
        image, sidecar = result if isinstance(result, tuple) else (result, None)
        if not isinstance(image, nib.Nifti1Image):
            raise DatasetError(
                f"The recipe for {self.path} returned {type(image).__name__}, not a Nifti1Image."
            )
        fingerprint = getattr(self.item, "fingerprint", None)
        if fingerprint is not None:
            sidecar = {**(sidecar or {}), "fingerprint": fingerprint}
        # A stale sidecar must not outlive the image it described, even if this write is interrupted.
        sidecar_path(self.path).unlink(missing_ok=True)
        payload = image.to_bytes()
        if self.path.name.endswith(".gz"):
            payload = gzip.compress(payload, compresslevel=_GZIP_LEVEL, mtime=0)
        _write_atomically(self.path, payload)
        if sidecar is not None:
            _write_atomically(sidecar_path(self.path), json.dumps(sidecar, indent=1).encode())


def _is_current(path: Path, item: Any) -> bool:
    """Whether ``path`` already holds the result of a fingerprinted recipe (see the class docstring)."""
    fingerprint = getattr(item, "fingerprint", None)
    if fingerprint is None or not path.is_file():
        return False
    try:
        return NiftiRef(path).sidecar().get("fingerprint") == fingerprint
    except (OSError, ValueError):  # an unreadable sidecar: recompute
        return False


def _write_atomically(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name matches no NIfTI glob, and os.replace within one folder is atomic.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
