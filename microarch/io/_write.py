"""`write_image` (NIfTI / MHA through SimpleITK) and `write_aim` (Scanco AIM v020)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from .._shared.validation import as_spacing
from ._scan import BINARY_UNITS, NATIVE_UNITS, Calibration

_META_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
# MetaImage header words that user metadata must not overwrite.
_METAIMAGE_RESERVED = {
    "objecttype", "objectsubtype", "ndims", "name", "id", "parentid", "comment",
    "transformtype", "binarydata", "binarydatabyteordermsb", "elementbyteordermsb",
    "compresseddata", "compresseddatasize", "transformmatrix", "offset", "position",
    "origin", "orientation", "rotation", "centerofrotation", "anatomicalorientation",
    "elementspacing", "elementsize", "dimsize", "headersize", "modality", "sequenceid",
    "elementmin", "elementmax", "elementnumberofchannels", "elementtype",
    "elementdatafile", "color",
}
_WRITE_SUFFIXES = (".nii.gz", ".nii", ".mha")


def _as_volume(array, name="array") -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be 3D (z, y, x); got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    return arr


def _as_origin(origin) -> tuple[float, float, float]:
    if origin is None:
        return (0.0, 0.0, 0.0)
    values = tuple(float(v) for v in np.asarray(origin, dtype=float).ravel())
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"origin must be 3 finite numbers (z, y, x) in mm; got {origin!r}")
    return values


def _output_path(path) -> Path:
    path = Path(os.fspath(path))
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file name")
    return path


def write_image(path, array, *, spacing, origin=None, meta=None, units=None,
                calibration=None) -> Path:
    """Write a mask or map as compressed NIfTI (``.nii.gz``) or MetaImage (``.mha``).

    Parameters
    ----------
    path : str or path-like
        Output file ending in ``.nii.gz`` (compressed), ``.nii`` or ``.mha`` (compressed).
    array : ndarray
        Volume with axes (z, y, x). bool masks are written as uint8 (0/1); other dtypes
        are kept (float32 for maps, int16 for native grey values).
    spacing : float or sequence of 3 floats
        Voxel size in mm, (z, y, x).
    origin : sequence of 3 floats, optional
        Position of voxel (0, 0, 0) in mm, (z, y, x); default (0, 0, 0).
    meta : dict, optional
        Extra ``key: value`` pairs for the ``.mha`` header (keys: letters, digits, ``_.-``,
        not MetaImage header words). NIfTI has no room for them: passing any raises.
    units : str, optional
        What the values are (``"native"``, ``"mg HA/cm³"``, ``"mm"``, ``"binary"``, ...).
        Defaults to ``"binary"`` for bool masks and ``"native"`` when ``calibration`` is
        given; recorded so that `read_scan` returns the right ``Scan.units``.
    calibration : Calibration, optional
        Calibration of native values; recorded so that `read_scan` on this file returns
        density (see the module docstring of ``microarch.io._itk`` for the keys).

    Returns
    -------
    pathlib.Path
        The file written.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from microarch.io import read_scan, write_image
    >>> mask = np.zeros((4, 5, 6), dtype=bool); mask[1:3, 1:4, 2:5] = True
    >>> path = write_image(os.path.join(tempfile.mkdtemp(), "mask.nii.gz"), mask,
    ...                    spacing=(0.08, 0.06, 0.06), origin=(1.0, 2.0, 3.0))
    >>> back = read_scan(path)
    >>> back.units, back.image.dtype, int(back.image.sum()), back.spacing, back.origin
    ('binary', dtype('uint8'), 18, (0.08, 0.06, 0.06), (1.0, 2.0, 3.0))
    """
    from ._itk import calibration_fields, write_sitk

    path = _output_path(path)
    name = path.name.lower()
    if not name.endswith(_WRITE_SUFFIXES):
        raise ValueError(
            f"{path}: write_image writes {', '.join(_WRITE_SUFFIXES)}; got {path.name!r}"
        )
    arr = _as_volume(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
        units = BINARY_UNITS if units is None else units
    if arr.dtype.kind not in "iuf" or arr.dtype == np.float16:
        raise TypeError(f"cannot write {arr.dtype} images; use an integer or float32/64 array")
    voxel = as_spacing(spacing)
    position = _as_origin(origin)
    if calibration is not None and not isinstance(calibration, Calibration):
        raise TypeError(f"calibration must be a microarch.io.Calibration, not {type(calibration)}")
    if units is None and calibration is not None:
        units = NATIVE_UNITS
    if units is not None and (not isinstance(units, str) or not units.strip()
                              or "\n" in units):
        raise ValueError(f"units must be a non-empty one-line string, got {units!r}")
    extra = {}
    for key, value in (meta or {}).items():
        if not isinstance(key, str) or not _META_KEY.match(key) \
                or key.lower() in _METAIMAGE_RESERVED or key.startswith("microarch_"):
            raise ValueError(
                f"meta key {key!r} is not allowed: use letters, digits and _.- and avoid "
                "MetaImage header words and the microarch_ prefix"
            )
        text = str(value)
        if "\n" in text or "\r" in text or not text.isascii():
            raise ValueError(f"meta value for {key!r} must be a single line of ASCII text")
        extra[key] = text
    fields = calibration_fields(units, calibration)
    write_sitk(path, np.ascontiguousarray(arr), voxel, position, fields, extra)
    return path


def write_aim(path, array, *, spacing, calibration=None, origin=None, meta=None,
              created_by=None, when=None) -> Path:
    """Write a Scanco AIM v020 file (uncompressed int16 or int8 data).

    Parameters
    ----------
    path : str or path-like
        Output file (conventionally ``.AIM``).
    array : ndarray
        Volume with axes (z, y, x). bool masks are stored as int8 with True = 127 (Scanco's
        segmentation value); int8, and uint8 up to 127, as int8 (type 0x00010001); other
        integers within int16 as int16 native values (type 0x00020002). Floats are refused:
        convert density with ``np.rint(calibration.to_native(density)).astype(np.int16)``.
    spacing : float or sequence of 3 floats
        Voxel size in mm, (z, y, x); stored as VAX F-floats (float32 precision).
    calibration : Calibration, optional
        Written to the processing log as Scanco does (``Mu_Scaling``, ``Density: unit``,
        ``Density: slope``, ``Density: intercept``, ``HU: mu water``); without it the log
        says ``Mu_Scaling 1`` (uncalibrated).
    origin : sequence of 3 floats, optional
        Position of voxel (0, 0, 0) in mm, (z, y, x). AIM stores it in whole voxels
        (``position``), so it must be a multiple of ``spacing``.
    meta : dict, optional
        Extra processing-log entries ``{key: value}`` (e.g. ``{"Index Measurement": 12}``).
    created_by : str, optional
        The processing log's creator line; default ``"microarch <version> (write_aim)"``.
    when : datetime.datetime, optional
        The time stamped into the processing log; default now. Fix both to write
        byte-identical files (e.g. for reproducible test data).

    Returns
    -------
    pathlib.Path
        The file written.

    Notes
    -----
    The layout follows ITKIOScanco's ``AIMHeaderIO::WriteHeader`` (pre-header 20/140/log/
    data/0, VAX F-float element size); aimio-py 0.4.1 and itk-ioscanco 1.0.1 read these
    files (see ``tests/io/test_io_peers.py``).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from microarch.io import read_scan, write_aim
    >>> mask = np.zeros((3, 4, 5), dtype=bool); mask[1, 1:3, 1:4] = True
    >>> path = write_aim(os.path.join(tempfile.mkdtemp(), "SEG.AIM"), mask, spacing=0.082)
    >>> scan = read_scan(path)
    >>> scan.units, scan.image.dtype, sorted(np.unique(scan.image).tolist()), scan.format
    ('binary', dtype('int8'), [0, 127], 'AIM v020')
    """
    from microarch import __version__

    from ._scanco import encode_aim_v020

    path = _output_path(path)
    arr = _as_volume(array)
    voxel = as_spacing(spacing)
    if calibration is not None and not isinstance(calibration, Calibration):
        raise TypeError(f"calibration must be a microarch.io.Calibration, not {type(calibration)}")
    position = (0, 0, 0)
    if origin is not None:
        in_voxels = np.asarray(_as_origin(origin)) / np.asarray(voxel)
        rounded = np.rint(in_voxels)
        if np.any(np.abs(in_voxels - rounded) > 1e-3) or np.any(np.abs(rounded) >= 2**31):
            raise ValueError(
                f"AIM stores the origin in whole voxels; origin {origin} is not a multiple "
                f"of spacing {voxel}"
            )
        position = tuple(int(v) for v in rounded[::-1])  # (x, y, z)
    header, data = encode_aim_v020(
        arr, spacing=voxel, position=position, calibration=calibration, extra=meta,
        created_by=created_by or f"microarch {__version__} (write_aim)", when=when,
    )
    with open(path, "wb") as handle:
        handle.write(header)
        handle.write(memoryview(data.reshape(-1)).cast("B"))
    return path
