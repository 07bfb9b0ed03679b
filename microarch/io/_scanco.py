"""Scanco AIM (v020, v030) and ISQ: parse, decode and write, in pure numpy.

Format reference: KitwareMedical/ITKIOScanco (Apache-2.0) ``src/itkAIMHeaderIO.cxx``,
``src/itkISQHeaderIO.cxx``, ``src/itkScancoImageIO.cxx``, ``src/itkScancoDataManipulation.cxx``,
cross-checked with Numerics88/AimIO (MIT) ``source/AimIO.cxx`` and ``source/Compression.cxx``.
Scanco's own manuals are not public. No code is copied from either project.

Layout summary (all integers little-endian)::

    AIM v020  pre-header 5 x int32: 20, 140, log length, data length, associated length
              image struct (140 B): version, proc-log, data, id, reference, type (6 x int32);
              position, dimension, offset, sup-dimension, sup-position, sub-dimension,
              test-offset (3 x int32 each, x, y, z); element size (3 x VAX F-float, mm);
              associated-data descriptor (5 x int32)
    AIM v030  "AIMDATA_V030   \\0" (16 B), pre-header 5 x int64 (40, 224, ...),
              image struct (224 B): version, id, reference, type (4 x int32), the seven
              3-tuples as int64, element size as int64 in nm, associated data (4 x int32)
    both      then the processing log (text), then the image data, x fastest
    ISQ       512-byte header "CTDATA-HEADER_V1" ..., data offset (512-byte blocks) in its
              last int32; header size = (offset + 1) * 512; int16 data, x fastest

Every length, offset and dimension read from a header is checked against the file size
before any buffer is allocated, so a corrupt header gives `ScanFormatError`, never an
IndexError, a read past the end, or a huge allocation.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import struct
from pathlib import Path

import numpy as np

from ._scan import (
    BINARY_UNITS,
    DENSITY_UNITS,
    LABEL_UNITS,
    MU_UNITS,
    Calibration,
    ScanFormatError,
)

AIM_V030_MAGIC = b"AIMDATA_V030   \x00"
ISQ_MAGIC = b"CTDATA-HEADER_V1"
_BLOCK = 512

# type code -> (name, stored dtype, components, encoding)
# Codes and their meaning: ITKIOScanco ScancoImageIO::ParseAIMComponentType and
# AimIO Definitions.h (D1Tchar, D1Tshort, D1TbinCmp, D1TcharCmp, D3Tbit8, D1Tfloat).
AIM_TYPES: dict[int, tuple[str, str, int, str]] = {
    0x00020002: ("D1Tshort (int16)", "<i2", 1, "raw"),
    0x00010001: ("D1Tchar (int8)", "i1", 1, "raw"),
    0x00160001: ("D1Tuchar (uint8)", "u1", 1, "raw"),
    0x000D0001: ("uint8 (0x000d0001)", "u1", 1, "raw"),
    0x00170002: ("D1Tushort (uint16)", "<u2", 1, "raw"),
    0x00030004: ("D1Tint (int32)", "<i4", 1, "raw"),
    0x001A0004: ("D1Tfloat (float32)", "<u4", 1, "float"),
    0x00150001: ("D1TbinCmp (run-length binary)", "i1", 1, "bincmp"),
    0x00080002: ("D1TcharCmp (run-length int8)", "i1", 1, "charcmp"),
    0x00060001: ("D3Tbit8 (packed bits)", "i1", 1, "bit8"),
    0x00120003: ("3 x uint8 vector", "u1", 3, "raw"),
    0x00060003: ("3 x int8 vector", "i1", 3, "raw"),
}
# Types that hold masks or labels, never grey values: char storage (plain or compressed).
_MASK_ENCODINGS = {"bincmp", "charcmp", "bit8"}
_AIM_INT16 = 0x00020002
_AIM_INT8 = 0x00010001


def _fail(path, problem: str) -> ScanFormatError:
    return ScanFormatError(f"{path}: {problem}")


# --------------------------------------------------------------------------------------
# VAX / VMS number formats
# --------------------------------------------------------------------------------------


def vax_f_to_float(raw: np.ndarray) -> np.ndarray:
    """Decode VAX F-floats (4 bytes each, as stored on disk) to float64.

    VAX F: the 32-bit word is stored as two little-endian 16-bit halves, high half first;
    bits are sign (1), exponent (8, bias 128), fraction (23) with value
    ``(0.5 + fraction / 2**24) * 2**(exponent - 128)``. Exponent 0 is zero (reserved
    operand when the sign is set, returned as NaN).
    """
    word = np.frombuffer(np.ascontiguousarray(raw).tobytes(), dtype="<u4").astype(np.uint64)
    bits = ((word & 0xFFFF) << 16) | (word >> 16)
    sign = (bits >> 31).astype(bool)
    exponent = ((bits >> 23) & 0xFF).astype(np.int64)
    fraction = (bits & 0x7FFFFF).astype(np.float64)
    value = np.ldexp(0.5 + fraction / float(1 << 24), (exponent - 128).astype(np.int32))
    value = np.where(sign, -value, value)
    value = np.where(exponent == 0, np.where(sign, np.nan, 0.0), value)
    return value


def float_to_vax_f(value: float) -> bytes:
    """Encode one float as a VAX F-float (4 bytes, disk order). Inverse of `vax_f_to_float`."""
    value = float(value)
    if value == 0.0:
        return b"\x00\x00\x00\x00"
    if not math.isfinite(value):
        raise ValueError(f"cannot encode {value} as a VAX F-float")
    sign = 1 if value < 0 else 0
    mantissa, exponent = math.frexp(abs(value))  # abs(value) = mantissa * 2**exponent
    fraction = round((mantissa - 0.5) * (1 << 24))
    if fraction == (1 << 23):  # rounding carried into the hidden bit
        fraction = 0
        exponent += 1
    biased = exponent + 128
    if not 1 <= biased <= 255:
        raise ValueError(f"{value} is outside the VAX F-float range")
    bits = (sign << 31) | (biased << 23) | fraction
    return bytes([(bits >> 16) & 0xFF, (bits >> 24) & 0xFF, bits & 0xFF, (bits >> 8) & 0xFF])


def scanco_double(raw: bytes) -> float:
    """Decode an 8-byte VMS double from an ISQ calibration block.

    Word order as for F-floats, then read as an IEEE double and scaled by 1/4 (the layout
    ITKIOScanco ``DecodeDouble`` and aimio-py ``decode_scanco_double`` both use).
    """
    if len(raw) != 8:
        raise ValueError("a Scanco double needs 8 bytes")
    high = raw[0] << 16 | raw[1] << 24 | raw[2] | raw[3] << 8
    low = raw[4] << 16 | raw[5] << 24 | raw[6] | raw[7] << 8
    return struct.unpack("<d", struct.pack("<Q", (high << 32) | low))[0] * 0.25


def vms_date(raw: bytes) -> str | None:
    """ISO date of a VMS 64-bit time (100 ns ticks since 1858-11-17), None if implausible."""
    ticks = int.from_bytes(raw[:8], "little", signed=True)
    if ticks <= 0:
        return None
    try:
        when = _dt.datetime(1858, 11, 17) + _dt.timedelta(microseconds=ticks // 10)
    except OverflowError:
        return None
    return when.isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------------------
# Processing log
# --------------------------------------------------------------------------------------

_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][+-]?\d+)?$")
_FIELD_SPLIT = re.compile(r"\s{2,}")


def _number(token: str):
    if _INT_RE.match(token):
        return int(token)
    if _FLOAT_RE.match(token):
        return float(token.replace("d", "e").replace("D", "e"))
    return None


def convert_log_value(text: str):
    """Turn a log value into int, float, a tuple of numbers, or keep the stripped string."""
    text = text.strip()
    if not text:
        return ""
    single = _number(text)
    if single is not None:
        return single
    tokens = text.split()
    if len(tokens) > 1:
        numbers = [_number(t) for t in tokens]
        if all(n is not None for n in numbers):
            return tuple(numbers)
    return text


def parse_processing_log(text: str) -> dict:
    """Parse a Scanco processing log into ``{key: value}``.

    Lines starting with ``!`` are comments. Key and value are separated by two or more
    spaces (the convention ITKIOScanco's ``ReadProcessingLog`` relies on). Values become
    int, float or tuples of numbers where they are numeric. A key seen twice keeps its
    last value: IPL appends the statistics of each processing step, so the last
    ``Minimum data value`` describes the stored image.

    Examples
    --------
    >>> log = parse_processing_log(
    ...     "! comment\\nMu_Scaling                                       8192\\n"
    ...     "Density: slope                         1.63271997e+03\\n"
    ...     "Orig-ISQ-Dim-p                                   1708       1708        123\\n"
    ...     "Density: unit                 mg HA/ccm\\n")
    >>> log["Mu_Scaling"], log["Density: slope"], log["Orig-ISQ-Dim-p"], log["Density: unit"]
    (8192, 1632.71997, (1708, 1708, 123), 'mg HA/ccm')
    """
    entries: dict = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("!"):
            continue
        parts = _FIELD_SPLIT.split(stripped, maxsplit=1)
        key = parts[0].strip()
        value = parts[1] if len(parts) > 1 else ""
        entries[key] = convert_log_value(value)
    return entries


def _calibration_from_log(path, log: dict) -> Calibration | None:
    def number(key):
        value = log.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    mu_scaling = number("Mu_Scaling")
    slope = number("Density: slope")
    intercept = number("Density: intercept")
    mu_water = number("HU: mu water")
    if slope == 0:
        slope = None
    if mu_water is not None and mu_water <= 0:
        mu_water = None
    if (mu_scaling is None or mu_scaling <= 1) and slope is None:
        return None  # MuScaling 1 and no density scale: arbitrary units
    if slope is not None and intercept is None:
        intercept = 0.0
    unit = log.get("Density: unit")
    description = log.get("Calibration Data")
    try:
        return Calibration(
            mu_scaling=mu_scaling if mu_scaling is not None else 1.0,
            density_slope=slope,
            density_intercept=intercept,
            mu_water=mu_water,
            density_unit=str(unit) if unit not in (None, "") else DENSITY_UNITS,
            description=str(description) if description not in (None, "") else None,
            source="AIM processing log",
        )
    except ValueError as err:
        raise _fail(path, f"invalid calibration in the processing log: {err}") from None


# --------------------------------------------------------------------------------------
# Stored volume handed to read_scan
# --------------------------------------------------------------------------------------


class StoredVolume:
    """What a format reader found: stored values plus what they mean (internal)."""

    __slots__ = ("calibration", "format", "image", "kind", "meta", "origin", "spacing")

    def __init__(self, image, spacing, origin, meta, calibration, kind, format):
        self.image = image
        self.spacing = spacing  # (z, y, x) mm, or None when the file has no usable size
        self.origin = origin
        self.meta = meta
        self.calibration = calibration
        # "grey": scanner values (native); "mask": mask or labels; "vector";
        # anything else: the unit label of values already stored in physical units.
        self.kind = kind
        self.format = format


def mask_units(image: np.ndarray) -> str:
    """``"binary"`` for at most two values (one of them 0, or a single value), else labels."""
    if image.dtype == bool:
        return BINARY_UNITS
    if image.size == 0:
        return BINARY_UNITS
    if image.dtype.itemsize == 1:
        counts = np.bincount(image.reshape(-1).view(np.uint8), minlength=256)
        values = np.flatnonzero(counts)
        n_values = values.size
        has_zero = counts[0] > 0
    else:
        low, high = image.min(), image.max()
        if low == high:
            return BINARY_UNITS
        has_zero = low == 0 or (high == 0)
        if not has_zero:
            return LABEL_UNITS
        other = high if low == 0 else low
        n_values = 2 if np.all((image == 0) | (image == other)) else 3
    if n_values <= 1 or (n_values == 2 and has_zero):
        return BINARY_UNITS
    return LABEL_UNITS


def float32_decimal(value: float) -> float:
    """The shortest decimal that a float32 header value stands for (0.082, not 0.08200000226).

    AIM v020 (VAX F) and NIfTI keep voxel sizes in 32 bits; the scanner meant the short
    decimal, which maps to the very same float32.
    """
    value = float(value)
    if not math.isfinite(value):
        return value
    return float(str(np.float32(value)))


def _spacing_or_none(values) -> tuple[float, float, float] | None:
    """(z, y, x) from (x, y, z) element sizes; None unless all finite and positive."""
    values = [float(v) for v in values]
    if all(math.isfinite(v) and v > 0 for v in values):
        return (values[2], values[1], values[0])
    return None


# --------------------------------------------------------------------------------------
# AIM reading
# --------------------------------------------------------------------------------------


def _read_exact(handle, n_bytes: int, path, what: str) -> bytes:
    data = handle.read(n_bytes)
    if len(data) != n_bytes:
        raise _fail(path, f"file ends inside the {what} ({len(data)} of {n_bytes} bytes)")
    return data


def _check_dims(path, dims, what="dimensions") -> tuple[int, int, int]:
    dims = tuple(int(d) for d in dims)
    if any(d < 1 for d in dims):
        raise _fail(path, f"impossible {what} {dims} (x, y, z): every axis needs >= 1 voxel")
    if any(d >= 2**31 for d in dims):
        raise _fail(path, f"impossible {what} {dims} (x, y, z)")
    return dims


def read_aim(path) -> StoredVolume:
    """Parse an AIM v020 or v030 file into a `StoredVolume` (values as stored)."""
    path = Path(path)
    with open(path, "rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        if file_size == 0:
            raise _fail(path, "file is empty")
        first = handle.read(16)
        if first == AIM_V030_MAGIC or first.startswith(b"AIMDATA_V030"):
            version, int_size, magic_size = "AIM v030", 8, 16
        elif first.startswith(b"AIMDATA_V"):
            raise _fail(path, f"unsupported AIM version {first[:12]!r}")
        else:
            version, int_size, magic_size = "AIM v020", 4, 0
        handle.seek(magic_size)
        pre_size = 5 * int_size
        pre = _read_exact(handle, pre_size, path, "AIM pre-header")
        fmt = "<5q" if int_size == 8 else "<5i"
        pre_len, struct_len, log_len, data_len, assoc_len = struct.unpack(fmt, pre)
        expected_struct = 224 if int_size == 8 else 140
        if pre_len != pre_size:
            if int_size == 4 and pre_len == 16:
                raise _fail(path, "AIM v010/v011 files (16-byte pre-header) are not supported")
            raise _fail(path, f"not an AIM file: pre-header length {pre_len}, expected {pre_size}")
        if struct_len != expected_struct:
            raise _fail(
                path,
                f"unsupported {version} image header of {struct_len} bytes "
                f"(expected {expected_struct})",
            )
        for name, length in (("processing log", log_len), ("image data", data_len)):
            if length < 0:
                raise _fail(path, f"negative {name} length {length} in the pre-header")
        if assoc_len < 0:
            raise _fail(path, f"negative associated-data length {assoc_len} in the pre-header")
        header_end = magic_size + pre_len + struct_len + log_len
        if header_end + data_len > file_size:
            raise _fail(
                path,
                f"header claims {header_end + data_len} bytes (log {log_len}, data {data_len}) "
                f"but the file holds {file_size}: truncated or corrupt",
            )
        image_struct = _read_exact(handle, struct_len, path, "AIM image header")
        log_bytes = _read_exact(handle, log_len, path, "processing log")
        meta = _parse_aim_struct(path, image_struct, int_size)
        meta["format"] = version
        type_code = meta["type_code"]
        if type_code not in AIM_TYPES:
            raise _fail(path, f"unknown AIM data type code 0x{type_code & 0xFFFFFFFF:08x}")
        name, dtype, components, encoding = AIM_TYPES[type_code]
        meta["type_name"] = name
        log_text = log_bytes.replace(b"\x00", b"").decode("latin-1")
        log = parse_processing_log(log_text)
        meta["processing_log"] = log
        meta["processing_log_text"] = log_text
        meta["data_bytes"] = data_len
        dims = meta["dimensions_xyz"]
        image = _read_aim_data(
            path, handle, data_len, dims, meta["offset_xyz"], dtype, components, encoding,
            int_size, log, meta,
        )

    calibration = _calibration_from_log(path, log)
    if components > 1:
        kind = "vector"
    elif (encoding in _MASK_ENCODINGS or np.dtype(dtype).itemsize == 1
          or _log_says_segmented(log)):
        kind = "mask"
    else:
        kind = _logged_quantity(log) or "grey"
    element_size = meta["element_size_xyz"]
    if version == "AIM v020":
        element_size = tuple(float32_decimal(v) for v in element_size)
    spacing = _spacing_or_none(element_size)
    origin = None
    if spacing is not None:
        position = meta["position_xyz"]
        origin = tuple(float(position[2 - i]) * spacing[i] for i in range(3))
    return StoredVolume(image, spacing, origin, meta, calibration, kind, version)


def _log_says_segmented(log: dict) -> bool:
    # IPL records what the last step produced as "Parameter name" (or "Parameter (before)
    # name"); segmentations say "Segmented Objects".
    name = log.get("Parameter name", log.get("Parameter (before) name"))
    return isinstance(name, str) and name.strip().lower().startswith("segmented")


def _logged_quantity(log: dict) -> str | None:
    """Unit label of values IPL logged as already physical (unscaled), else None.

    IPL logs the quantity of the stored image as ``Parameter units`` and the factor it was
    multiplied by as ``Scaled by factor``: ``[1/cm]`` with factor 8192 is native data,
    ``[1/cm]`` with factor 1 is attenuation itself, ``[mg HA/ccm]`` with factor 1 is
    density (typical of float AIMs). Such values are not calibrated a second time.
    """
    units = log.get("Parameter units")
    factor = log.get("Scaled by factor", 1)
    if not isinstance(units, str) or factor != 1:
        return None
    text = units.strip().strip("[]").strip().lower()
    if text == "1/cm":
        return MU_UNITS
    if text.startswith(("mg ha", "mg/c")):
        return DENSITY_UNITS
    return None


def _parse_aim_struct(path, raw: bytes, int_size: int) -> dict:
    meta: dict = {}
    if int_size == 4:
        fields = struct.unpack("<6i21i", raw[:108])
        meta["version_field"], _, _, meta["id"], meta["reference"], type_code = fields[:6]
        tuples = [fields[6 + 3 * k : 9 + 3 * k] for k in range(7)]
        element_size = vax_f_to_float(np.frombuffer(raw[108:120], dtype=np.uint8))
        assoc = struct.unpack("<5i", raw[120:140])
    else:
        meta["version_field"], meta["id"], meta["reference"], type_code = struct.unpack(
            "<4i", raw[:16]
        )
        fields = struct.unpack("<24q", raw[16:208])
        tuples = [fields[3 * k : 3 + 3 * k] for k in range(7)]
        element_size = np.array(fields[21:24], dtype=np.float64) * 1e-6  # nm -> mm
        assoc = struct.unpack("<4i", raw[208:224])
    meta["type_code"] = type_code & 0xFFFFFFFF
    names = ("position", "dimensions", "offset", "sup_dimensions", "sup_position",
             "sub_dimensions", "test_offset")
    for name, values in zip(names, tuples):
        meta[f"{name}_xyz"] = tuple(int(v) for v in values)
    meta["dimensions_xyz"] = _check_dims(path, meta["dimensions_xyz"])
    offset = meta["offset_xyz"]
    if any(o < 0 or 2 * o >= d for o, d in zip(offset, meta["dimensions_xyz"])):
        raise _fail(
            path,
            f"impossible offset {offset} for dimensions {meta['dimensions_xyz']} (x, y, z): "
            "the border must be >= 0 and leave voxels inside",
        )
    meta["element_size_xyz"] = tuple(float(v) for v in element_size)
    meta["associated_data"] = tuple(int(v) for v in assoc)
    return meta


def _read_aim_data(path, handle, data_len, dims, offset, dtype, components, encoding,
                   int_size, log, meta) -> np.ndarray:
    nx, ny, nz = dims
    n_voxels = nx * ny * nz
    dtype = np.dtype(dtype)
    if encoding in ("raw", "float"):
        count = n_voxels * components
        n_bytes = count * dtype.itemsize
        if n_bytes > data_len:
            raise _fail(
                path,
                f"dimensions {dims} (x, y, z) need {n_bytes} bytes of "
                f"{meta['type_name']} data but the data block holds {data_len}",
            )
        values = np.empty(count, dtype=dtype)
        got = handle.readinto(memoryview(values).cast("B"))
        if got != n_bytes:
            raise _fail(path, f"file ends inside the image data ({got} of {n_bytes} bytes)")
        if encoding == "float":
            values = _decode_aim_float(values, meta, log)
        elif not dtype.isnative:
            values = values.astype(dtype.newbyteorder("="))
        shape = (nz, ny, nx) if components == 1 else (nz, ny, nx, components)
        return values.reshape(shape)

    compressed = _read_exact(handle, data_len, path, "compressed image data")
    inner = tuple(d - 2 * o for d, o in zip(dims, offset))
    expected = {n_voxels: dims}
    if inner != dims:
        expected[inner[0] * inner[1] * inner[2]] = inner
    if encoding == "bincmp":
        flat = _decode_bincmp(path, compressed, int_size, expected)
    elif encoding == "charcmp":
        flat = _decode_charcmp(path, compressed, int_size, expected)
    else:
        return _decode_bit8(path, compressed, dims)
    stored_dims = expected[flat.size]
    volume = flat.reshape(stored_dims[2], stored_dims[1], stored_dims[0])
    if stored_dims != dims:
        # AimIO convention: the compressed stream omits an `offset`-wide border of zeros.
        full = np.zeros((nz, ny, nx), dtype=volume.dtype)
        ox, oy, oz = offset
        full[oz : nz - oz, oy : ny - oy, ox : nx - ox] = volume
        meta["restored_offset_border"] = True
        return full
    return volume


def _decode_aim_float(words: np.ndarray, meta: dict, log: dict) -> np.ndarray:
    """float32 data: VAX F in v020, IEEE in v030, unless the log's data range says otherwise.

    AimIO converts D1Tfloat data from VAX F for every version, ITKIOScanco reads IEEE;
    the recorded ``Minimum/Maximum data value`` decides where they disagree.
    """
    as_ieee = words.view("<f4").astype(np.float32)
    as_vax = vax_f_to_float(words.view(np.uint8)).astype(np.float32)
    preferred, other = (as_vax, as_ieee) if meta["format"] == "AIM v020" else (as_ieee, as_vax)
    names = ("VAX F-float", "IEEE") if meta["format"] == "AIM v020" else ("IEEE", "VAX F-float")
    low, high = log.get("Minimum data value"), log.get("Maximum data value")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and words.size:

        def matches(candidate):
            finite = candidate[np.isfinite(candidate)]
            if finite.size == 0:
                return False
            tolerance = 1e-3 * max(1.0, abs(low), abs(high))
            return abs(finite.min() - low) <= tolerance and abs(finite.max() - high) <= tolerance

        if not matches(preferred) and matches(other):
            meta["float_encoding"] = names[1]
            return other
    meta["float_encoding"] = names[0]
    return preferred


def _check_decoded_total(path, total: int, expected: dict, what: str) -> None:
    if total not in expected:
        wanted = " or ".join(str(n) for n in expected)
        raise _fail(path, f"{what} expands to {total} voxels but the header needs {wanted}")


def _decode_bincmp(path, data: bytes, int_size: int, expected: dict) -> np.ndarray:
    """Run-length binary (D1TbinCmp, 0x00150001).

    Layout: a byte count (int32, or int64 in v030; ignored because some writers store it
    big-endian, e.g. BonelabData ``test25a.aim``), the two values, then one run length
    per byte. After each run the value flips, except after 255, which means
    "254 voxels and keep the value".
    """
    if len(data) < int_size + 2:
        raise _fail(path, "compressed binary data block is too short")
    values = np.frombuffer(data, dtype=np.int8, count=2, offset=int_size)
    runs = np.frombuffer(data, dtype=np.uint8, offset=int_size + 2)
    keeps = runs == 255
    lengths = np.where(keeps, 254, runs).astype(np.int64)
    _check_decoded_total(path, int(lengths.sum()), expected, "run-length binary data")
    flips = np.zeros(runs.size, dtype=np.int64)
    np.cumsum(~keeps[:-1], out=flips[1:])
    return np.repeat(values[flips % 2], lengths)


def _decode_charcmp(path, data: bytes, int_size: int, expected: dict) -> np.ndarray:
    """Run-length int8 (D1TcharCmp, 0x00080002): byte count, then 2-byte (value, length) pairs.

    AimIO writes (value, length); ITKIOScanco reads (length, value). The order whose run
    lengths add up to the voxel count wins, AimIO's first.
    """
    body = data[int_size:]
    if len(data) < int_size or len(body) % 2:
        raise _fail(path, "compressed int8 data block has a broken length")
    pairs = np.frombuffer(body, dtype=np.uint8).reshape(-1, 2)
    for value_col, length_col in ((0, 1), (1, 0)):
        lengths = pairs[:, length_col].astype(np.int64)
        if int(lengths.sum()) in expected:
            return np.repeat(pairs[:, value_col].view(np.int8), lengths)
    _check_decoded_total(path, int(pairs[:, 1].astype(np.int64).sum()), expected,
                         "run-length int8 data")
    raise AssertionError("unreachable")


def _decode_bit8(path, data: bytes, dims) -> np.ndarray:
    """Packed bits (D3Tbit8, 0x00060001): one byte per 2x2x2 block, then the value byte.

    Bit ``4*(z%2) + 2*(y%2) + (x%2)`` of block ``(z//2, y//2, x//2)`` is the voxel (AimIO
    Compression.cxx layout); a value byte of 0 means 127 (ITKIOScanco).
    """
    nx, ny, nz = dims
    cx, cy, cz = (nx + 1) // 2, (ny + 1) // 2, (nz + 1) // 2
    n_blocks = cx * cy * cz
    if len(data) < n_blocks + 1:
        raise _fail(path, f"packed-bit data needs {n_blocks + 1} bytes, block holds {len(data)}")
    blocks = np.frombuffer(data, dtype=np.uint8, count=n_blocks).reshape(cz, cy, cx)
    value = np.int8(np.frombuffer(data, dtype=np.int8, count=1, offset=n_blocks)[0] or 127)
    bits = np.unpackbits(blocks[..., None], axis=-1, bitorder="little")  # (cz, cy, cx, 8)
    bits = bits.reshape(cz, cy, cx, 2, 2, 2)  # bit index = 4*kz + 2*jy + ix
    volume = bits.transpose(0, 3, 1, 4, 2, 5).reshape(2 * cz, 2 * cy, 2 * cx)
    return (volume[:nz, :ny, :nx] * value).astype(np.int8)


# --------------------------------------------------------------------------------------
# ISQ reading
# --------------------------------------------------------------------------------------

_ISQ_INT_FIELDS = (
    # name, byte offset in the first 512-byte block
    ("data_type", 16), ("nr_of_bytes", 20), ("nr_of_blocks", 24), ("patient_index", 28),
    ("scanner_id", 32), ("slice_thickness_um", 68), ("slice_increment_um", 72),
    ("slice_1_pos_um", 76), ("min_data_value", 80), ("max_data_value", 84),
    ("mu_scaling", 88), ("nr_of_samples", 92), ("nr_of_projections", 96),
    ("scan_distance_um", 100), ("scanner_type", 104), ("sample_time_us", 108),
    ("index_measurement", 112), ("site", 116), ("reference_line_um", 120),
    ("reconstruction_alg", 124), ("energy_V", 168), ("intensity_uA", 172),
    ("data_offset_blocks", 508),
)


def read_isq(path) -> StoredVolume:
    """Parse an ISQ (``CTDATA-HEADER_V1``) file into a `StoredVolume` of int16 native values."""
    path = Path(path)
    with open(path, "rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        if file_size == 0:
            raise _fail(path, "file is empty")
        block = handle.read(_BLOCK)
        if not block.startswith(ISQ_MAGIC):
            raise _fail(path, "not an ISQ file (no CTDATA-HEADER_V1 magic)")
        if len(block) < _BLOCK:
            raise _fail(path, f"file ends inside the 512-byte ISQ header ({len(block)} bytes)")
        meta: dict = {"format": "ISQ"}
        for name, offset in _ISQ_INT_FIELDS:
            meta[name] = struct.unpack_from("<i", block, offset)[0]
        meta["creation_date"] = vms_date(block[36:44])
        dims = struct.unpack_from("<3i", block, 44)
        physical_um = struct.unpack_from("<3i", block, 56)
        meta["patient_name"] = block[128:168].split(b"\x00", 1)[0].decode("latin-1").strip()
        if meta["data_type"] != 3:
            kinds = {1: "RSQ raw projections", 6: "GOBJ", 9: "RAD radiograph"}
            what = kinds.get(meta["data_type"], f"data type {meta['data_type']}")
            raise _fail(path, f"ISQ {what} is not a supported image volume (type 3)")
        dims = _check_dims(path, dims)
        meta["dimensions_xyz"] = dims
        meta["dimensions_um_xyz"] = tuple(int(v) for v in physical_um)
        if meta["data_offset_blocks"] < 0:
            raise _fail(path, f"negative data offset {meta['data_offset_blocks']}")
        header_size = (meta["data_offset_blocks"] + 1) * _BLOCK
        n_bytes = dims[0] * dims[1] * dims[2] * 2
        if header_size + n_bytes > file_size:
            raise _fail(
                path,
                f"header ({header_size} bytes) and {dims} (x, y, z) int16 voxels need "
                f"{header_size + n_bytes} bytes but the file holds {file_size}: truncated",
            )
        meta["header_bytes"] = header_size
        extended = b""
        if header_size > _BLOCK:
            handle.seek(0)
            extended = _read_exact(handle, header_size, path, "ISQ extended header")
        handle.seek(header_size)
        values = np.empty(n_bytes // 2, dtype="<i2")
        got = handle.readinto(memoryview(values).cast("B"))
        if got != n_bytes:
            raise _fail(path, f"file ends inside the image data ({got} of {n_bytes} bytes)")
    if not values.dtype.isnative:
        values = values.astype(np.int16)
    image = values.reshape(dims[2], dims[1], dims[0])
    calibration_fields = _isq_calibration_block(extended) if extended else {}
    meta.update(calibration_fields)
    spacing = None
    if all(p > 0 for p in physical_um):
        spacing = tuple(physical_um[2 - i] / dims[2 - i] / 1000.0 for i in range(3))
    calibration = _calibration_from_isq(path, meta)
    return StoredVolume(image, spacing, None, meta, calibration, "grey", "ISQ")


def _isq_calibration_block(header: bytes) -> dict:
    """Read the "Calibration" sub-header of an ISQ extended header, if there is one.

    Geometry as in ITKIOScanco (the original ``ReadISQHeader`` of D. Gobbi): an optional
    ``MultiHeader`` block at 512 lists sub-headers in 128-byte entries (name at +8, size
    in blocks at +24); the calibration block follows the listed blocks. Inside it:
    description string at +28 (64 B), rescale type at +632, units at +648 (16 B), slope
    +664, intercept +672 and mu_water +688 (VMS doubles). aimio-py reads the same offsets
    for units, slope, intercept and mu_water.
    """
    size = len(header)
    if size < 4 * _BLOCK:
        return {}
    directory = _BLOCK
    skip = 1
    if header[directory + 8 : directory + 24] == b"MultiHeader     ":
        directory += _BLOCK
        skip += 1
    start = None
    for entry in range(4):
        at = directory + entry * 128
        if at + 28 > size:
            break
        blocks = struct.unpack_from("<i", header, at + 24)[0]
        if blocks < 0 or (1 + skip + blocks) * _BLOCK > size:
            break
        if header[at + 8 : at + 24] == b"Calibration     ":
            if blocks * _BLOCK >= 1024:
                start = (1 + skip) * _BLOCK
            break
        skip += blocks
    if start is None or start + 696 > size:
        return {}

    def text(at, length):
        return header[start + at : start + at + length].split(b"\x00", 1)[0].decode(
            "latin-1").strip()

    return {
        "calibration_data": text(28, 64),
        "rescale_type": struct.unpack_from("<i", header, start + 632)[0],
        "rescale_units": text(648, 16),
        "rescale_slope": scanco_double(header[start + 664 : start + 672]),
        "rescale_intercept": scanco_double(header[start + 672 : start + 680]),
        "mu_water": scanco_double(header[start + 688 : start + 696]),
    }


def _calibration_from_isq(path, meta: dict) -> Calibration | None:
    mu_scaling = meta.get("mu_scaling", 0)
    slope = meta.get("rescale_slope")
    intercept = meta.get("rescale_intercept")
    mu_water = meta.get("mu_water")

    def usable(x):
        return x is not None and math.isfinite(x) and x != 0

    if not usable(slope):
        slope = intercept = None
    elif not (intercept is not None and math.isfinite(intercept)):
        intercept = 0.0
    if not (usable(mu_water) and mu_water > 0):
        mu_water = None
    if mu_scaling <= 1 and slope is None:
        return None
    try:
        # The ISQ slope is per unit attenuation like the AIM "Density: slope", so it is
        # divided by mu_scaling (ITKIOScanco does the same); aimio-py applies it to
        # native values directly, which is off by the factor mu_scaling.
        return Calibration(
            mu_scaling=max(mu_scaling, 1),
            density_slope=slope,
            density_intercept=intercept,
            mu_water=mu_water,
            density_unit=meta.get("rescale_units") or DENSITY_UNITS,
            description=meta.get("calibration_data") or None,
            source="ISQ header",
        )
    except ValueError as err:
        raise _fail(path, f"invalid calibration in the ISQ header: {err}") from None


# --------------------------------------------------------------------------------------
# AIM writing
# --------------------------------------------------------------------------------------

_LOG_RULE = "!" + "-" * 79


def _vms_time(when: _dt.datetime) -> str:
    months = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    return (f"{when.day:2d}-{months[when.month - 1]}-{when.year:04d} "
            f"{when:%H:%M:%S}.{when.microsecond // 10000:02d}")


def _log_number(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return np.format_float_scientific(value, unique=True, exp_digits=2)


def _log_line(key: str, value) -> str:
    """One log line in Scanco's layout: key in 30 columns, numbers right-aligned."""
    if isinstance(value, (tuple, list)):
        cells = [_log_number(v) for v in value]
        return f"{key:<30}{cells[0]:>23}" + "".join(f"{c:>11}" for c in cells[1:])
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return f"{key:<30}{_log_number(value):>23}"
    return f"{key:<30}{value!s:<50}"


def _check_log_entry(key, value) -> None:
    if not isinstance(key, str) or not key.strip() or "  " in key or "\n" in key \
            or key.lstrip().startswith("!"):
        raise ValueError(
            f"processing-log key {key!r} must be non-empty text without newlines, "
            "double spaces or a leading '!'"
        )
    if "\n" in str(value) or "\r" in str(value):
        raise ValueError(f"processing-log value for {key!r} must be a single line")


def build_processing_log(*, calibration, minimum, maximum, extra=None, created_by="",
                         when=None) -> str:
    """Compose a processing log in Scanco's style (calibration lines as IPL writes them)."""
    when = when or _dt.datetime.now()
    lines = ["!", "! Processing Log", "!", _LOG_RULE,
             _log_line("Created by", created_by),
             _log_line("Time", _vms_time(when)),
             _LOG_RULE]
    if calibration is not None:
        unit = calibration.density_unit
        unit = "mg HA/ccm" if unit == DENSITY_UNITS else unit
        lines.append(_log_line("Mu_Scaling", calibration.mu_scaling))
        if calibration.description:
            lines.append(_log_line("Calibration Data", calibration.description))
        if calibration.has_density:
            lines += [
                _log_line("Calib. default unit type", "2 (Density)"),
                _log_line("Density: unit", unit),
                _log_line("Density: slope", calibration.density_slope),
                _log_line("Density: intercept", calibration.density_intercept),
            ]
        if calibration.mu_water is not None:
            lines.append(_log_line("HU: mu water", calibration.mu_water))
    else:
        lines.append(_log_line("Mu_Scaling", 1))
    lines.append(_LOG_RULE)
    if extra:
        for key, value in extra.items():
            _check_log_entry(key, value)
            lines.append(_log_line(key, value))
        lines.append(_LOG_RULE)
    lines += [_log_line("Minimum data value", float(minimum)),
              _log_line("Maximum data value", float(maximum)),
              _LOG_RULE]
    return "\n".join(line.rstrip() if line.startswith("!") else line for line in lines) + "\n"


def aim_storage(array: np.ndarray) -> tuple[np.ndarray, int]:
    """Choose the AIM storage for ``array``: (data to write, type code).

    bool -> int8 with True = 127 (Scanco's segmentation value); int8, and uint8 up to 127
    -> int8 (D1Tchar); other integers that fit int16 -> int16 (D1Tshort).
    """
    if array.dtype == bool:
        return np.where(array, np.int8(127), np.int8(0)), _AIM_INT8
    if array.dtype.kind not in "iu":
        raise TypeError(
            f"write_aim stores integers (int16 grey values or int8 masks), not {array.dtype}; "
            "convert density to native values first, e.g. "
            "np.rint(calibration.to_native(density)).astype(np.int16)"
        )
    if array.dtype == np.int8:
        return array, _AIM_INT8
    if array.size:
        low, high = int(array.min()), int(array.max())
    else:
        low = high = 0
    if array.dtype == np.uint8 and high <= 127:
        return array.astype(np.int8), _AIM_INT8
    if low < -32768 or high > 32767:
        raise ValueError(
            f"values {low}..{high} do not fit the int16 AIM type; AIM v020 writing supports "
            "int16 and int8 data"
        )
    return array.astype(np.int16, copy=False), _AIM_INT16


def encode_aim_v020(array: np.ndarray, *, spacing, position, calibration, extra, created_by,
                    when=None) -> tuple[bytes, np.ndarray]:
    """Header bytes and little-endian data of an uncompressed AIM v020 file of ``array``.

    The file is ``header + data.tobytes()``; the data is returned as an array so that the
    writer streams it without another copy.
    """
    data, type_code = aim_storage(array)
    nz, ny, nx = data.shape
    payload = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<"))
    low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
    log = build_processing_log(
        calibration=calibration, minimum=low, maximum=high, extra=extra,
        created_by=created_by, when=when,
    ).encode("latin-1")
    if payload.nbytes >= 2**31 or len(log) >= 2**31:
        raise ValueError("image too large for AIM v020 (2 GiB limit); split it")
    pre = struct.pack("<5i", 20, 140, len(log), payload.nbytes, 0)
    sz, sy, sx = spacing
    px, py, pz = position
    image_struct = struct.pack(
        "<6i21i",
        16, 0, 0, 0, 0, type_code,  # version field 16, as IPL writes it
        px, py, pz, nx, ny, nz, *([0] * 15),
    ) + float_to_vax_f(sx) + float_to_vax_f(sy) + float_to_vax_f(sz) + bytes(20)
    return pre + image_struct + log, payload
