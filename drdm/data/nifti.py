"""NIfTI files: checked reading (:func:`load_nifti`), atomic writing (:func:`save_nifti`), affines.

Errors are :class:`~drdm.data.records.DataError` with a one-line message ``"<file>: <reason>"``.
"""
from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from .records import DataError, Record, check_image, check_label, data_error, first_line, label_dtype

__all__ = ["load_nifti", "save_nifti", "affine_from_spacing", "MAX_LOAD_MB", "max_load_bytes"]


def _squeeze_trailing(array: np.ndarray, spacing: tuple) -> tuple[np.ndarray, tuple]:
    """Drop trailing singleton axes beyond the second: (H, W, 1) -> (H, W), (H, W, D, 1) -> (H, W, D)."""
    while array.ndim > 2 and array.shape[-1] == 1:
        array = array[..., 0]
    return array, tuple(float(s) for s in spacing[:array.ndim])


# ---------------------------------------------------------------- NIfTI

#: what one loaded image may take in memory (MiB): the file's own array plus the float32 copy
#: returned; ``DRDM_MAX_LOAD_MB`` overrides it. A 512 x 512 x 1000 int16 CT needs 1.5 GiB.
MAX_LOAD_MB = 4096


def max_load_bytes() -> int:
    """The memory budget of one :func:`load_nifti` call in bytes (:data:`MAX_LOAD_MB`, or the
    ``DRDM_MAX_LOAD_MB`` environment variable)."""
    text = os.environ.get("DRDM_MAX_LOAD_MB")
    try:
        mb = float(text) if text else MAX_LOAD_MB
    except ValueError:
        raise DataError(f"DRDM_MAX_LOAD_MB must be a number of MiB, got {text!r}") from None
    return int(mb * 2 ** 20)


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:,.1f} MiB" if n >= 2 ** 20 else f"{n:,} bytes"


def _declared(path: Path, head: bytes):
    """``(shape, dtype, data offset)`` from a NIfTI-1/2 header, or a one-line :class:`DataError`."""
    import nibabel as nib
    klass = nib.Nifti2Header if int.from_bytes(head[:4], "little") == 540 or \
        int.from_bytes(head[:4], "big") == 540 else nib.Nifti1Header
    try:
        hdr = klass.from_fileobj(io.BytesIO(head[:klass.template_dtype.itemsize]), check=False)
        shape = tuple(int(s) for s in hdr.get_data_shape())
        dtype = np.dtype(hdr.get_data_dtype())
        offset = int(hdr.get_data_offset())
    except Exception as e:        # nibabel raises many kinds on a forged header
        raise data_error(path, f"unreadable NIfTI header ({first_line(e)})") from None
    if any(s < 0 for s in shape) or offset < 0:
        raise data_error(path, f"impossible header: shape {shape}, data offset {offset}")
    return shape, dtype, offset


def _sniff_nifti(path: Path) -> None:
    """Refuse non-NIfTI, broken gzip and over-large files with a clear reason before nibabel
    allocates anything: the header's declared array (shape x dtype) must fit the memory budget
    (:func:`max_load_bytes`) and must be held by the file (its size, or the gzip stream's length)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
            is_gz = magic == b"\x1f\x8b"
            if not is_gz:
                f.seek(0)
                head = f.read(544)
    except OSError as e:
        raise data_error(path, f"cannot read ({e.strerror or first_line(e)})") from None
    named_gz = path.name.lower().endswith(".gz")
    if named_gz and not is_gz:
        raise data_error(path, "not a NIfTI file (named .gz but not gzip-compressed)")
    if is_gz:
        if not named_gz:
            raise data_error(path, "not a NIfTI file (gzip data in a file not named .gz)")
        try:
            g = gzip.open(path, "rb")
            head = g.read(544)
        except (OSError, EOFError, zlib.error) as e:
            raise data_error(path, f"truncated or corrupt gzip ({first_line(e)})") from None
    try:
        size_le = int.from_bytes(head[:4], "little") if len(head) >= 4 else 0
        size_be = int.from_bytes(head[:4], "big") if len(head) >= 4 else 0
        nifti1 = 348 in (size_le, size_be) and len(head) >= 348 and head[344:348] in (b"n+1\0", b"ni1\0")
        nifti2 = 540 in (size_le, size_be) and len(head) >= 540 and head[4:8] in (b"n+2\0", b"ni2\0")
        if not (nifti1 or nifti2):
            what = "file too short for a header" if len(head) < 348 else "no NIfTI-1/2 header magic"
            raise data_error(path, f"not a NIfTI file ({what})")
        shape, dtype, offset = _declared(path, head)
        voxels = math.prod(shape)
        declared = voxels * dtype.itemsize
        need = declared + voxels * 4             # the file's array, then the float32 (or int) copy
        budget = max_load_bytes()
        if need > budget:
            raise data_error(path, f"the header declares a {' x '.join(map(str, shape))} {dtype.name} image "
                                   f"({_mib(declared)}); loading it needs about {_mib(need)}, over the "
                                   f"{_mib(budget)} budget (DRDM_MAX_LOAD_MB raises it)")
        if is_gz:
            # read to the end: the CRC-32 is checked (nibabel reads only what the header asks
            # for, and a corrupted payload would load as plausible numbers) and the length counted
            held = len(head)
            try:
                while chunk := g.read(1 << 22):
                    held += len(chunk)
            except (OSError, EOFError, zlib.error) as e:
                raise data_error(path, f"truncated or corrupt gzip ({first_line(e)})") from None
        else:
            held = path.stat().st_size
    finally:
        if is_gz:
            g.close()
    if max(held - offset, 0) < declared:
        raise data_error(path, f"truncated or corrupt NIfTI file: the header declares a {' x '.join(map(str, shape))} "
                               f"{dtype.name} image ({_mib(declared)}) but the file holds {_mib(max(held - offset, 0))} "
                               "of data (a cut file, or a forged header)")


def load_nifti(path, *, label: bool = False, allow_empty: bool = False):
    """Read a 2-D or 3-D NIfTI file (``.nii`` or ``.nii.gz``) with checks.

    Args:
        path: the file.
        label: read a label map: integer-valued, non-negative, returned as int16
            (int32 for values above 32767); empty maps are refused unless ``allow_empty``.

    Returns:
        ``(array, affine, spacing)``: the array in the file's voxel order (float32
        for images, int16/int32 for labels), the 4x4 affine (voxel -> mm), and the
        voxel size in mm per array axis. Trailing singleton axes beyond the second
        are dropped (``(H, W, 1)`` is read as 2-D).

    Raises:
        DataError: one line naming the file and the reason (not NIfTI, truncated or
        corrupt gzip, a header declaring more data than the file holds or than the memory
        budget allows (:func:`max_load_bytes`, checked before anything is allocated), 4-D,
        NaN/Inf, non-integer or negative labels, empty label map, out of memory).
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    path = Path(path)
    if not path.is_file():
        raise data_error(path, "no such file")
    _sniff_nifti(path)
    try:
        try:
            img = nib.load(str(path), mmap=False)
            data = np.asanyarray(img.dataobj)           # a fresh array (mmap=False)
        except (EOFError, zlib.error, OSError, ValueError, ImageFileError) as e:
            if path.name.lower().endswith(".gz"):
                raise data_error(path, f"truncated or corrupt gzip ({first_line(e)})") from None
            raise data_error(path, f"truncated or corrupt NIfTI file ({first_line(e)})") from None
        zooms = img.header.get_zooms()
        if data.ndim > 3 and any(s != 1 for s in data.shape[3:]):
            raise data_error(path, f"{data.ndim}-D image {tuple(data.shape)}; expected 2-D or 3-D")
        data, spacing = _squeeze_trailing(data, zooms)
        affine = np.asarray(img.affine, dtype=np.float64)
        if label:
            data = check_label(path, data, allow_empty=allow_empty)
        else:
            data = check_image(path, data)
    except MemoryError:
        raise data_error(path, "not enough memory to load it (MemoryError); free memory or lower "
                               "the image's size") from None
    return data, affine, spacing


def _as_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def save_nifti(path, array, affine=None, *, like=None, label: bool = False, vector: bool = False,
               overwrite: bool = False) -> Path:
    """Write a 2-D or 3-D array (or a field of vectors on such a grid) as NIfTI, atomically.

    The file is written to a temporary name in the same folder and moved into place
    (:func:`drdm.files.atomic_write`); on any error nothing is left behind. An
    existing file is never replaced unless ``overwrite=True``.

    Args:
        path: target ``.nii`` or ``.nii.gz``.
        array: numpy array or tensor, spatial only; with ``vector``, ``(*spatial, ndim)``.
        affine: 4x4 voxel -> mm; ``None`` takes ``like``'s affine (else identity).
        like: a NIfTI path, a nibabel image or a :class:`Record` whose header
            (orientation codes, units, description) is kept.
        label: store as an integer label map (uint8 when values fit, else int16/int32);
            values must be non-negative integers. Otherwise float32.
        vector: a displacement field: float32, intent ``vector``, the last axis holds the
            components (voxel sizes from the affine for the spatial axes, 1 for it).

    Returns:
        the written path.
    """
    import nibabel as nib
    from ..files import atomic_write

    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".nii.gz", ".nii")):
        raise data_error(path, "refusing to write: file name must end with .nii or .nii.gz")
    if path.exists() and not overwrite:
        raise data_error(path, "exists; pass overwrite=True to replace it")
    data = _as_numpy(array)
    if label:
        data = check_label(path, data, allow_empty=True)
        vmax = int(data.max()) if data.size else 0
        data = data.astype(np.uint8 if vmax <= 255 else label_dtype(vmax))
    elif vector:
        # (*spatial, ndim): a 2-D slice stored as (H, W, 1) keeps its 2 components
        if data.ndim not in (3, 4) or data.shape[-1] not in (2, 3) or data.shape[-1] > data.ndim - 1:
            raise data_error(path, f"vector field {tuple(data.shape)}; expected (*spatial, ndim) in 2-D or 3-D")
        data = np.ascontiguousarray(data, dtype=np.float32)
        if not np.isfinite(data).all():
            raise data_error(path, "NaN or Inf values")
    else:
        data = check_image(path, data)

    header = None
    like_affine = None
    if like is not None:
        if isinstance(like, Record):
            like_affine = like.affine
            if Path(like.path).is_file() and like.path.lower().endswith((".nii", ".nii.gz")):
                header = nib.load(like.path).header.copy()
        else:
            ref = like if hasattr(like, "header") else nib.load(str(like))
            header = ref.header.copy()
            like_affine = ref.affine
    if affine is None:
        affine = like_affine if like_affine is not None else np.eye(4)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise data_error(path, f"affine must be a finite 4x4 matrix, got shape {affine.shape}")

    img = nib.Nifti1Image(data, affine, header=header)
    img.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)        # store values as they are, no scaling
    spatial = data.ndim - 1 if vector else data.ndim
    img.header.set_zooms(_zooms_from_affine(affine, spatial) + ((1.0,) if vector else ()))
    if vector:
        img.header.set_intent("vector", (), name="ddf voxels")
    try:
        return atomic_write(path, lambda tmp: nib.save(img, tmp), overwrite=overwrite)
    except FileExistsError:
        raise data_error(path, "exists; pass overwrite=True to replace it") from None


def _zooms_from_affine(affine: np.ndarray, ndim: int) -> tuple[float, ...]:
    return tuple(float(np.linalg.norm(affine[:3, i])) or 1.0 for i in range(ndim))


def affine_from_spacing(spacing) -> np.ndarray:
    """A 4x4 voxel -> mm affine: the voxel sizes on the diagonal, no rotation, no offset."""
    a = np.eye(4)
    for i, s in enumerate(spacing[:3]):
        a[i, i] = float(s)
    return a

