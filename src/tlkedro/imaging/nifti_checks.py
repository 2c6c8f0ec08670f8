"""Check that a NIfTI file holds one complete, finite, non-empty 3D volume with a plausible geometry.

nibabel parses the header; the voxel data are checked in one streaming pass: the decompressed bytes are
read in fixed-size chunks into one reused buffer and reduced to a minimum and a maximum, which also
reveal NaN and infinite values. Memory therefore stays constant whatever the image size, nothing is
converted to float64, and the cost is close to decompressing the file once (``gzip -dc``). Loading the
whole volume through nibabel's array proxy instead (``np.asanyarray(img.dataobj)``) holds it in memory,
as float64 when the header scales it, and measured about four times slower on the IXI subset (small
uint8 files with a scale factor), where opening through ``indexed_gzip`` costs more than decompressing.
The stdlib ``gzip`` stream is used because it reports truncation and corruption as distinct errors,
where ``indexed_gzip`` returns short reads.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import nibabel as nib
import numpy as np
from nibabel.spatialimages import HeaderDataError

# 1 MiB measured fastest (the chunk stays in cache between decompression and min/max) and keeps the
# peak at about 4 MiB per file, whatever its size.
CHUNK_BYTES = 1 << 20
# Voxel sizes differ by less than this factor between axes in any real scan; a larger condition
# number means the affine collapses (or nearly collapses) an axis.
_MAX_AFFINE_CONDITION = 1e6
_NUMERIC_KINDS = "biuf"


class InvalidScanError(ValueError):
    """A file that cannot be used as a 3D scan.

    Args:
        path: The file.
        code: Short slug for the kind of problem (e.g. ``truncated``), listed in docs/data.md.
        reason: A sentence a person understands, without the path.
    """

    def __init__(self, path: str | os.PathLike[str], code: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.code = code
        self.reason = reason

    def __reduce__(self) -> tuple[type[InvalidScanError], tuple[str, str, str]]:
        # Rejections travel back from worker processes; the default reduce would pass only the message.
        return type(self), (self.path, self.code, self.reason)


def check_readable(path: Path) -> None:
    """That a file opens and holds at least one byte (the first check of a 2D image or a series).

    Raises:
        InvalidScanError: With code ``unreadable`` or ``zero_byte``.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as stream:
            stream.read(1)
    except OSError as exc:
        raise InvalidScanError(
            path, "unreadable", f"cannot be read ({exc.strerror or exc})"
        ) from exc
    if size == 0:
        raise InvalidScanError(path, "zero_byte", "is empty (0 bytes)")


@dataclass(frozen=True)
class ScanInfo:
    """Geometry of a valid scan.

    Attributes:
        shape: Voxels along the three array axes (a trailing single volume dropped).
        voxel_mm: Voxel size along each array axis, from the affine.
        orientation: nibabel axis codes joined, e.g. ``"RAS"`` or ``"PSR"``.
    """

    shape: tuple[int, int, int]
    voxel_mm: tuple[float, float, float]
    orientation: str


def check_nifti(
    path: str | os.PathLike[str],
    *,
    voxel_size_range: tuple[float, float] = (0.1, 10.0),
    chunk_bytes: int = CHUNK_BYTES,
) -> ScanInfo:
    """Check one ``.nii`` or ``.nii.gz`` file, reading its data once in chunks.

    Args:
        path: The file.
        voxel_size_range: Smallest and largest plausible voxel size in mm (inclusive).
        chunk_bytes: Size of the read buffer; bounds the memory used whatever the image size.

    Returns:
        The scan's shape, voxel size and orientation.

    Raises:
        InvalidScanError: The file is unusable; ``code`` says why (see docs/data.md for the list).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        reason = f"cannot be opened ({exc.strerror or exc})"
        raise InvalidScanError(path, "unreadable", reason) from None
    if size == 0:
        raise InvalidScanError(path, "zero_byte", "is empty (0 bytes)")
    compressed = path.name.lower().endswith(".gz")
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise InvalidScanError(path, "not_nifti", "is not named .nii or .nii.gz")
    try:
        with gzip.open(path, "rb") if compressed else path.open("rb") as stream:
            header = _read_header(path, stream)
            info = _check_geometry(path, header, voxel_size_range)
            _check_voxels(path, stream, header, chunk_bytes, compressed)
    except HeaderDataError as exc:
        raise InvalidScanError(
            path, "invalid_header", f"has an invalid NIfTI header ({exc})"
        ) from None
    except OSError as exc:
        raise InvalidScanError(
            path, "unreadable", f"cannot be read ({exc.strerror or exc})"
        ) from None
    return info


def _read_header(path: Path, stream: BinaryIO) -> nib.Nifti1Header:
    try:
        # Read one header size at a time: no data byte may be consumed before the header says
        # where the data start.
        block = stream.read(nib.Nifti1Header.sizeof_hdr)
        klass: type[nib.Nifti1Header] | None = nib.Nifti1Header
        if not klass.may_contain_header(block):
            block += stream.read(nib.Nifti2Header.sizeof_hdr - len(block))
            klass = nib.Nifti2Header if nib.Nifti2Header.may_contain_header(block) else None
    except gzip.BadGzipFile as exc:
        reason = f"is named .gz but is not gzip-compressed ({exc})"
        raise InvalidScanError(path, "not_nifti", reason) from None
    except EOFError:
        reason = "ends inside the NIfTI header (file cut short)"
        raise InvalidScanError(path, "truncated", reason) from None
    except zlib.error as exc:
        raise InvalidScanError(path, "corrupt", f"has corrupt compressed data ({exc})") from None
    if klass is None:
        # An uncompressed file cut inside its header still starts with the header's size.
        sizes = {int.from_bytes(block[:4], order) for order in ("little", "big")}
        if len(block) >= 4 and any(size in sizes and len(block) < size for size in (348, 540)):
            reason = f"ends inside the NIfTI header ({len(block)} bytes)"
            raise InvalidScanError(path, "truncated", reason)
        raise InvalidScanError(path, "not_nifti", "has no NIfTI-1 or NIfTI-2 header")
    header = klass(block, check=True)
    header.get_slope_inter()  # raises for a valid slope with a non-finite intercept
    if header.get_data_offset() < header.single_vox_offset:
        raise InvalidScanError(
            path,
            "invalid_header",
            f"declares its data at byte {header.get_data_offset()}, inside the header "
            f"(a single-file NIfTI needs at least {header.single_vox_offset})",
        )
    return header


def _check_geometry(
    path: Path, header: nib.Nifti1Header, voxel_size_range: tuple[float, float]
) -> ScanInfo:
    shape = header.get_data_shape()
    shape_text = "x".join(map(str, shape))
    if len(shape) < 3 or min(shape[:3]) < 2:
        raise InvalidScanError(path, "not_3d", f"is not a 3D volume (shape {shape_text})")
    n_volumes = math.prod(shape[3:])
    if n_volumes != 1:
        reason = f"holds {n_volumes} volumes (shape {shape_text}); one 3D volume is expected"
        raise InvalidScanError(path, "multi_volume", reason)
    dtype = header.get_data_dtype()
    if dtype.kind not in _NUMERIC_KINDS:
        reason = f"stores {dtype} voxels; a real-valued scalar type is expected"
        raise InvalidScanError(path, "unsupported_dtype", reason)
    affine = header.get_best_affine()
    if not np.isfinite(affine).all() or np.linalg.cond(affine[:3, :3]) > _MAX_AFFINE_CONDITION:
        reason = f"has a singular or non-finite affine {affine[:3].round(4).tolist()}"
        raise InvalidScanError(path, "singular_affine", reason)
    voxel_mm = tuple(float(v) for v in nib.affines.voxel_sizes(affine))
    low, high = voxel_size_range
    if not all(low <= v <= high for v in voxel_mm):
        sizes = " x ".join(f"{v:g}" for v in voxel_mm)
        reason = f"has voxels of {sizes} mm, outside the plausible range [{low:g}, {high:g}] mm"
        raise InvalidScanError(path, "bad_voxel_size", reason)
    return ScanInfo(
        shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        voxel_mm=voxel_mm,  # type: ignore[arg-type]
        orientation="".join(nib.aff2axcodes(affine)),
    )


def _check_voxels(
    path: Path, stream: BinaryIO, header: nib.Nifti1Header, chunk_bytes: int, compressed: bool
) -> None:
    dtype = header.get_data_dtype()
    expected = math.prod(header.get_data_shape()) * dtype.itemsize
    chunk = max(chunk_bytes - chunk_bytes % dtype.itemsize, dtype.itemsize)  # whole voxels only
    buffer = memoryview(bytearray(min(expected, chunk)))
    low = high = None
    n_nan = n_inf = done = 0
    try:
        _skip(stream, int(header.get_data_offset()) - stream.tell(), buffer)
        while done < expected:
            wanted = min(len(buffer), expected - done)
            got = _fill(stream, buffer[:wanted])
            done += got
            if got < wanted:
                raise EOFError
            values = np.frombuffer(buffer[:got], dtype=dtype)
            # min and max are two cheap passes that also reveal NaN (min is NaN) and infinities;
            # counting them, the costly part, happens only in a chunk that has some.
            chunk_low, chunk_high = values.min(), values.max()
            if dtype.kind == "f" and not (np.isfinite(chunk_low) and np.isfinite(chunk_high)):
                n_nan += int(np.isnan(values).sum())
                n_inf += int(np.isinf(values).sum())
            else:
                low = chunk_low if low is None else min(low, chunk_low)
                high = chunk_high if high is None else max(high, chunk_high)
        if compressed:
            # Reading to the end makes gzip verify the stream's length and CRC trailer.
            while _fill(stream, buffer):
                pass
    except EOFError:
        where = (
            "the end of the compressed stream"
            if done == expected
            else (f"the {expected} data bytes its header declares")
        )
        raise InvalidScanError(path, "truncated", f"is cut short: it ends before {where}") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise InvalidScanError(path, "corrupt", f"has corrupt compressed data ({exc})") from None
    if n_nan:
        infinite = f" and {n_inf} infinite ones" if n_inf else ""
        raise InvalidScanError(path, "nan_voxels", f"contains {n_nan} NaN voxels{infinite}")
    if n_inf:
        raise InvalidScanError(path, "inf_voxels", f"contains {n_inf} infinite voxels")
    slope, inter = header.get_slope_inter()
    slope, inter = (1.0, 0.0) if slope is None else (slope, inter or 0.0)
    if low * slope + inter == 0 and high * slope + inter == 0:
        raise InvalidScanError(path, "all_zero", "has only zero voxels")


def _fill(stream: BinaryIO, view: memoryview) -> int:
    """Read into ``view`` until it is full or the stream ends; the number of bytes read."""
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _skip(stream: BinaryIO, n_bytes: int, buffer: memoryview) -> None:
    """Read past ``n_bytes`` of header extensions through ``buffer`` (gzip streams seek slowly)."""
    while n_bytes > 0:
        wanted = min(n_bytes, len(buffer))
        if _fill(stream, buffer[:wanted]) < wanted:
            raise EOFError
        n_bytes -= wanted


def check_nifti_result(
    path: str | os.PathLike[str], *, voxel_size_range: tuple[float, float] = (0.1, 10.0)
) -> ScanInfo | InvalidScanError:
    """``check_nifti`` returning the rejection instead of raising it, for process pools.

    It lives here rather than in ``ingest`` so that pool workers import only this light module.
    """
    try:
        return check_nifti(path, voxel_size_range=voxel_size_range)
    except InvalidScanError as exc:
        return exc
