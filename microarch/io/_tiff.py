"""Multi-page TIFF stacks through tifffile.

Voxel size, where the file carries one (in this order):

1. OME-TIFF ``Pixels`` attributes ``PhysicalSizeX/Y/Z`` with their units (default µm);
2. ImageJ hyperstacks: ``spacing`` (z) and ``unit`` from the ImageJ description, x and y
   from the ``XResolution``/``YResolution`` tags (pixels per unit).

Plain TIFF resolution tags give x and y only (and usually mean printer dots per inch), so
they are not trusted: without one of the two sources above the caller passes ``spacing=``.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from ._scan import ScanFormatError
from ._scanco import StoredVolume, mask_units

# length unit -> mm
_UNIT_MM = {
    "mm": 1.0, "millimeter": 1.0, "millimetre": 1.0,
    "cm": 10.0, "centimeter": 10.0, "m": 1000.0, "meter": 1000.0,
    "um": 1e-3, "µm": 1e-3, "μm": 1e-3, "micron": 1e-3, "microns": 1e-3,
    "micrometer": 1e-3, "\\u00b5m": 1e-3, "nm": 1e-6, "nanometer": 1e-6,
}
_MAX_INFLATION = 1100


def _fail(path, problem: str) -> ScanFormatError:
    return ScanFormatError(f"{path}: {problem}")


def _unit_mm(unit) -> float | None:
    if unit is None:
        return None
    return _UNIT_MM.get(str(unit).strip().lower())


def _positive(values) -> bool:
    return all(v is not None and math.isfinite(v) and v > 0 for v in values)


def _ome_spacing(tif) -> tuple[float, float, float] | None:
    text = tif.ome_metadata
    if not text:
        return None
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return None
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] != "Pixels":
            continue
        sizes = []
        for axis in ("Z", "Y", "X"):
            value = element.get(f"PhysicalSize{axis}")
            factor = _unit_mm(element.get(f"PhysicalSize{axis}Unit", "µm"))
            try:
                sizes.append(float(value) * factor if value and factor else None)
            except ValueError:
                sizes.append(None)
        return tuple(sizes) if _positive(sizes) else None
    return None


def _imagej_spacing(tif) -> tuple[float, float, float] | None:
    metadata = tif.imagej_metadata
    if not metadata:
        return None
    factor = _unit_mm(metadata.get("unit"))
    z = metadata.get("spacing")
    if factor is None or z is None:
        return None
    page = tif.pages.first
    sizes = []
    for tag_name in ("YResolution", "XResolution"):
        tag = page.tags.get(tag_name)
        if tag is None:
            return None
        numerator, denominator = tag.value
        if not numerator or not denominator:
            return None
        sizes.append(denominator / numerator * factor)
    try:
        spacing = (float(z) * factor, *sizes)
    except (TypeError, ValueError):
        return None
    return spacing if _positive(spacing) else None


def read_tiff(path) -> StoredVolume:
    """Read a (multi-page) grey-scale TIFF as (z, y, x)."""
    import tifffile

    path = Path(path)
    size = os.path.getsize(path)
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise _fail(path, "TIFF holds no image series")
            series = tif.series[0]
            shape = tuple(int(n) for n in series.shape)
            dtype = np.dtype(series.dtype)
            claimed = math.prod(shape) * dtype.itemsize
            compressed = any(int(page.compression) != 1 for page in tif.pages[:1])
            if claimed > (size * _MAX_INFLATION if compressed else size):
                raise _fail(path, f"TIFF claims {shape} voxels, more than the file can hold")
            spacing = _ome_spacing(tif) or _imagej_spacing(tif)
            axes = series.axes
            array = series.asarray()
            meta = {"format": "TIFF", "axes": axes, "pages": len(tif.pages),
                    "is_imagej": bool(tif.is_imagej), "is_ome": bool(tif.is_ome)}
    except ScanFormatError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, KeyError, IndexError,
            struct.error) as err:
        raise _fail(path, f"cannot read TIFF: {err}") from None
    squeezed = array
    while squeezed.ndim > 3 and squeezed.shape[0] == 1:
        squeezed = squeezed[0]
    if squeezed.ndim == 2:
        squeezed = squeezed[None]
    if squeezed.ndim != 3 or "S" in axes:
        raise _fail(
            path,
            f"TIFF series has shape {array.shape} (axes {axes!r}); microarch reads one "
            "grey-scale stack (z, y, x), not colour or multi-channel images",
        )
    kind = "mask" if (squeezed.dtype.kind in "biu" and mask_units(squeezed) == "binary") \
        else "grey"
    return StoredVolume(squeezed, spacing, None, meta, None, kind, "TIFF")
