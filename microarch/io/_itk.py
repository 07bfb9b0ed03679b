"""NIfTI, MetaImage (MHA/MHD), NRRD and DICOM through SimpleITK.

SimpleITK orders axes and spacing (x, y, z); numpy arrays from ``GetArrayFromImage`` are
(z, y, x). The conversion happens here, at the io edge, and nowhere else.

Calibration metadata written by `write_image`
---------------------------------------------
MetaImage (``.mha``) header keys, one per field::

    microarch_units              what the stored values are ("native", "mg HA/cm³", "mm", ...)
    microarch_mu_scaling         Calibration.mu_scaling
    microarch_density_slope      Calibration.density_slope      (mg HA/cm³ per 1/cm)
    microarch_density_intercept  Calibration.density_intercept  (mg HA/cm³)
    microarch_mu_water           Calibration.mu_water           (1/cm)
    microarch_density_unit       Calibration.density_unit
    microarch_calibration_data   Calibration.description

Text values are percent-encoded (``mg HA/cm%C2%B3``) because MetaImage headers are ASCII.
NIfTI keeps no free key/value pairs, so the same fields go, shortened, into the 80-byte
``descrip`` field (written by SimpleITK from ``ITK_FileNotes``)::

    microarch u=native ms=8192 ds=1603.51904 di=-391.209015 mw=0.2409

with ``u`` units (percent-encoded), ``ms`` mu_scaling, ``ds``/``di`` density slope and
intercept, ``mw`` mu_water, ``du`` density unit when it is not mg HA/cm³.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from ._scan import (
    BINARY_UNITS,
    DENSITY_UNITS,
    HU_UNITS,
    NATIVE_UNITS,
    Calibration,
    ScanFormatError,
)
from ._scanco import StoredVolume, float32_decimal, mask_units

_PREFIX = "microarch_"
_DESCRIP_TAG = "microarch"
_NIFTI_DESCRIP_MAX = 79
_SAFE = " /.-+,:()_"
# A zlib/deflate stream expands at most ~1032-fold; anything claiming more is a lie.
_MAX_INFLATION = 1100

SITK_IO = {"nifti": "NiftiImageIO", "metaimage": "MetaImageIO", "nrrd": "NrrdImageIO",
           "dicom": "GDCMImageIO"}
FORMAT_NAMES = {"nifti": "NIfTI", "metaimage": "MetaImage", "nrrd": "NRRD",
                "dicom": "DICOM", "dicom-series": "DICOM series"}


def _fail(path, problem: str) -> ScanFormatError:
    return ScanFormatError(f"{path}: {problem}")


def _sitk():
    import SimpleITK

    return SimpleITK


# --------------------------------------------------------------------------------------
# metadata <-> calibration
# --------------------------------------------------------------------------------------


def _number_text(value: float) -> str:
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def calibration_fields(units: str | None, calibration: Calibration | None) -> dict:
    """The microarch metadata fields (without prefix) for ``units`` and ``calibration``."""
    fields = {}
    if units is not None:
        fields["units"] = units
    if calibration is not None:
        fields["mu_scaling"] = _number_text(calibration.mu_scaling)
        if calibration.density_slope is not None:
            fields["density_slope"] = _number_text(calibration.density_slope)
        if calibration.density_intercept is not None:
            fields["density_intercept"] = _number_text(calibration.density_intercept)
        if calibration.mu_water is not None:
            fields["mu_water"] = _number_text(calibration.mu_water)
        fields["density_unit"] = calibration.density_unit
        if calibration.description:
            fields["calibration_data"] = calibration.description
    return fields


_DESCRIP_KEYS = {"units": "u", "mu_scaling": "ms", "density_slope": "ds",
                 "density_intercept": "di", "mu_water": "mw", "density_unit": "du"}


def encode_descrip(fields: dict) -> str:
    """The NIfTI ``descrip`` text for microarch fields (raises if it exceeds 79 characters)."""
    parts = [_DESCRIP_TAG]
    for name, short in _DESCRIP_KEYS.items():
        if name not in fields:
            continue
        if name == "density_unit" and fields[name] == DENSITY_UNITS:
            continue
        parts.append(f"{short}={quote(str(fields[name]), safe=_SAFE.replace(' ', ''))}")
    text = " ".join(parts)
    if len(text) > _NIFTI_DESCRIP_MAX:
        raise ValueError(
            f"units and calibration need {len(text)} characters, more than the NIfTI "
            f"header's {_NIFTI_DESCRIP_MAX}; write an .mha file instead"
        )
    return text


def decode_descrip(text: str) -> dict:
    """Inverse of `encode_descrip`; {} for descriptions not written by microarch."""
    tokens = text.strip().split()
    if not tokens or tokens[0] != _DESCRIP_TAG:
        return {}
    short_to_name = {short: name for name, short in _DESCRIP_KEYS.items()}
    fields = {}
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if sep and key in short_to_name:
            fields[short_to_name[key]] = unquote(value)
    return fields


def _fields_to_calibration(path, fields: dict, source: str) -> Calibration | None:
    if not any(k in fields for k in ("mu_scaling", "density_slope", "mu_water")):
        return None

    def number(key):
        if key not in fields:
            return None
        try:
            return float(fields[key])
        except ValueError:
            raise _fail(path, f"calibration field {key}={fields[key]!r} is not a number") from None

    try:
        return Calibration(
            mu_scaling=number("mu_scaling") or 1.0,
            density_slope=number("density_slope"),
            density_intercept=number("density_intercept"),
            mu_water=number("mu_water"),
            density_unit=fields.get("density_unit") or DENSITY_UNITS,
            description=fields.get("calibration_data") or None,
            source=source,
        )
    except ValueError as err:
        raise _fail(path, f"invalid calibration metadata: {err}") from None


# --------------------------------------------------------------------------------------
# size checks before SimpleITK allocates
# --------------------------------------------------------------------------------------


def _metaimage_header(path: Path) -> dict:
    header = {}
    with open(path, "rb") as handle:
        head = handle.read(65536)
    consumed = 0
    for raw in head.split(b"\n"):
        consumed += len(raw) + 1
        key, sep, value = raw.decode("latin-1").partition("=")
        if not sep:
            continue
        header[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            header["_header_bytes"] = consumed
            break
    return header


def _data_bytes(path: Path, kind: str, reader) -> tuple[int, bool]:
    """(bytes the file holds for pixel data, whether they may be compressed)."""
    size = os.path.getsize(path)
    if kind == "nifti":
        with open(path, "rb") as handle:
            compressed = handle.read(2) == b"\x1f\x8b"
        if compressed:
            return size, True
        try:
            offset = int(float(reader.GetMetaData("vox_offset")))
        except (RuntimeError, ValueError):
            offset = 0
        return size - max(offset, 0), False
    if kind == "metaimage":
        header = _metaimage_header(path)
        compressed = header.get("CompressedData", "False").lower() == "true"
        data_file = header.get("ElementDataFile", "LOCAL")
        if data_file.upper() == "LOCAL":
            return size - header.get("_header_bytes", 0), compressed
        if "%" in data_file or data_file.upper().startswith("LIST"):
            return size, True  # file-pattern series: leave the checks to SimpleITK
        data_path = path.parent / data_file
        if not data_path.is_file():
            raise _fail(path, f"MetaImage data file {data_file!r} not found beside it")
        return os.path.getsize(data_path), compressed
    if kind == "nrrd":
        with open(path, "rb") as handle:
            head = handle.read(65536)
        text = head.decode("latin-1").lower()
        compressed = any(f"encoding: {e}" in text for e in ("gz", "gzip", "bz2", "bzip2"))
        for line in text.splitlines():
            if line.startswith(("data file:", "datafile:")):
                return size, True  # detached data: leave the checks to SimpleITK
        end = head.find(b"\n\n")
        return size - (end + 2 if end >= 0 else 0), compressed
    return size, True


def _check_claimed_size(path: Path, kind: str, reader) -> None:
    size = reader.GetSize()
    if any(int(n) < 1 for n in size):
        raise _fail(path, f"impossible image size {tuple(size)} (x, y, z)")
    n_voxels = math.prod(int(n) for n in size)
    claimed = n_voxels * reader.GetNumberOfComponents() * _pixel_bytes(reader)
    available, compressed = _data_bytes(path, kind, reader)
    limit = available * _MAX_INFLATION if compressed else available
    if claimed > limit:
        raise _fail(
            path,
            f"header claims {tuple(size)} (x, y, z) voxels = {claimed} bytes of data, "
            f"more than the file holds ({available} bytes): truncated or corrupt",
        )
    if kind == "metaimage" and compressed:
        header = _metaimage_header(path)
        stated = header.get("CompressedDataSize")
        if stated is not None and header.get("ElementDataFile", "").upper() == "LOCAL":
            try:
                stated = int(stated)
            except ValueError:
                raise _fail(path, f"CompressedDataSize {stated!r} is not a number") from None
            if stated > available:
                raise _fail(path, f"compressed data of {stated} bytes, file holds "
                                  f"{available}: truncated")
    # SimpleITK pads a truncated gzip stream silently; check the stream is whole first.
    if kind == "nifti" and compressed:
        try:
            offset = int(float(reader.GetMetaData("vox_offset")))
        except (RuntimeError, ValueError):
            offset = 352
        if not _gzip_holds(path, offset + claimed, start=0):
            raise _fail(path, "gzip stream is truncated or corrupt")
    if kind == "nrrd" and compressed:
        with open(path, "rb") as handle:
            head = handle.read(65536)
        end = head.find(b"\n\n")
        if end >= 0 and b"gz" in head[:end].lower() and not _gzip_holds(path, claimed, end + 2):
            raise _fail(path, "gzip stream is truncated or corrupt")


def _gzip_holds(path: Path, expected: int, start: int) -> bool:
    """True when the gzip stream from ``start`` inflates to ``expected`` bytes.

    The trailer's ISIZE (length mod 2**32) answers at once for well-formed files; only
    when it disagrees is the stream inflated to count (and to catch corruption).
    """
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() - start < 18:
            return False
        handle.seek(-4, os.SEEK_END)
        if int.from_bytes(handle.read(4), "little") == expected % 2**32:
            return True
        handle.seek(start)
        total = 0
        try:
            with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
                while chunk := stream.read(1 << 22):
                    total += len(chunk)
        except (OSError, EOFError, zlib.error):
            return False
    return total >= expected


def _pixel_bytes(reader) -> int:
    sitk = _sitk()
    pixel = reader.GetPixelID()
    sizes = {
        sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2,
        sitk.sitkUInt32: 4, sitk.sitkInt32: 4, sitk.sitkUInt64: 8, sitk.sitkInt64: 8,
        sitk.sitkFloat32: 4, sitk.sitkFloat64: 8,
    }
    return sizes.get(pixel, 1)


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


_EXTENSIONS = {
    "nifti": (".nii", ".nii.gz", ".hdr", ".img", ".img.gz"),
    "metaimage": (".mha", ".mhd"),
    "nrrd": (".nrrd", ".nhdr"),
}


def read_itk(path, kind: str) -> StoredVolume:
    """Read a NIfTI / MetaImage / NRRD / single DICOM file via SimpleITK."""
    path = Path(path)
    suffixes = _EXTENSIONS.get(kind)
    if suffixes is None or path.name.lower().endswith(suffixes):
        return _read_itk_file(path, path, kind)
    # SimpleITK's IO classes insist on their extensions; a file named by content (e.g.
    # "scan.nii;1") is linked under a proper name in a private temporary folder.
    with tempfile.TemporaryDirectory(prefix="microarch-io-") as folder:
        alias = Path(folder) / ("scan" + _alias_suffix(path, kind))
        _link(path, alias)
        if kind == "metaimage":
            data_file = _metaimage_header(path).get("ElementDataFile", "LOCAL")
            if data_file.upper() != "LOCAL" and "%" not in data_file \
                    and not data_file.upper().startswith("LIST"):
                _link(path.parent / data_file, Path(folder) / data_file)
        return _read_itk_file(path, alias, kind)


def _alias_suffix(path: Path, kind: str) -> str:
    if kind == "nifti":
        with open(path, "rb") as handle:
            return ".nii.gz" if handle.read(2) == b"\x1f\x8b" else ".nii"
    if kind == "metaimage":
        data_file = _metaimage_header(path).get("ElementDataFile", "LOCAL")
        return ".mha" if data_file.upper() == "LOCAL" else ".mhd"
    return ".nrrd"


def _link(source: Path, alias: Path) -> None:
    try:
        os.symlink(source.resolve(), alias)
    except OSError:  # no symlinks (some Windows setups): a private copy instead
        shutil.copyfile(source, alias)


def _read_itk_file(path: Path, source: Path, kind: str) -> StoredVolume:
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(source))
    reader.SetImageIO(SITK_IO[kind])
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise _fail(path, f"cannot read {FORMAT_NAMES[kind]} header: {_short(err)}") from None
    _check_claimed_size(path, kind, reader)
    try:
        image = reader.Execute()
    except (RuntimeError, MemoryError) as err:
        raise _fail(path, f"cannot read {FORMAT_NAMES[kind]} data: {_short(err)}") from None
    stored = _stored_from_sitk(path, image, kind, image)
    if kind == "dicom":
        tags = {key: str(value) for key, value in stored.meta.items() if "|" in key}
        stored.kind = _dicom_kind(tags, stored)
    return stored


def read_dicom_series(folder) -> StoredVolume:
    """Read the one DICOM series in ``folder`` via SimpleITK / GDCM."""
    sitk = _sitk()
    folder = Path(folder)
    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as err:
        raise _fail(folder, f"cannot scan folder for DICOM: {_short(err)}") from None
    if not series:
        raise _fail(folder, "folder holds no DICOM series")
    if len(series) > 1:
        raise _fail(
            folder,
            f"folder holds {len(series)} DICOM series ({', '.join(series)}); "
            "put each series in its own folder",
        )
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise _fail(folder, f"cannot read DICOM series: {_short(err)}") from None
    tags = {key: reader.GetMetaData(0, key) for key in reader.GetMetaDataKeys(0)}
    stored = _stored_from_sitk(folder, image, "dicom-series", None)
    stored.meta.update({f"dicom {k}": v.strip() for k, v in tags.items()})
    stored.meta["dicom_files"] = len(names)
    stored.kind = _dicom_kind(tags, stored)
    return stored


def _dicom_kind(tags: dict, stored: StoredVolume) -> str:
    # GDCM applies Rescale Slope/Intercept on read; for CT that yields HU by definition.
    modality = tags.get("0008|0060", "").strip().upper()
    if stored.kind == "mask":
        return stored.kind
    if modality == "CT" and "0028|1052" in tags:
        return HU_UNITS
    return stored.kind


def _short(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if "ERROR" in line or "rror" in line] or lines
    return (useful[-1] if useful else type(err).__name__)[:300]


def _stored_from_sitk(path, image, kind: str, metadata_source) -> StoredVolume:
    sitk = _sitk()
    if image.GetDimension() != 3:
        raise _fail(
            path, f"{image.GetDimension()}D image; microarch reads 3D volumes (z, y, x)"
        )
    array = sitk.GetArrayFromImage(image)
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    origin = tuple(float(o) for o in reversed(image.GetOrigin()))
    if kind == "nifti":  # the NIfTI header keeps both in float32
        spacing = tuple(float32_decimal(s) for s in spacing)
        origin = tuple(float32_decimal(o) for o in origin)
    meta = {"format": FORMAT_NAMES[kind], "direction": tuple(image.GetDirection()),
            "pixel_type": image.GetPixelIDTypeAsString()}
    fields = {}
    if metadata_source is not None:
        for key in metadata_source.GetMetaDataKeys():
            value = metadata_source.GetMetaData(key)
            meta[key] = value
            if key.startswith(_PREFIX):
                fields[key[len(_PREFIX):]] = unquote(value)
        if kind == "nifti" and "descrip" in meta:
            fields.update(decode_descrip(meta["descrip"]))
    calibration = _fields_to_calibration(path, fields, f"{FORMAT_NAMES[kind]} metadata")
    stored_units = fields.get("units")
    if image.GetNumberOfComponentsPerPixel() > 1:
        kind_label = "vector"
    elif stored_units is None:
        # Nothing says what the values are: integer images with at most two values
        # (one of them 0) are masks, everything else is uncalibrated grey.
        is_mask = array.dtype.kind in "biu" and mask_units(array) == BINARY_UNITS
        kind_label = "mask" if is_mask else "grey"
    elif stored_units in ("", NATIVE_UNITS):
        kind_label = "grey"
    elif stored_units in (BINARY_UNITS, "labels"):
        kind_label = "mask"
    else:
        kind_label = stored_units
    return StoredVolume(array, spacing, origin, meta, calibration, kind_label,
                        FORMAT_NAMES[kind])


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------

WRITE_SUFFIXES = (".nii.gz", ".nii", ".mha")


def write_sitk(path: Path, array: np.ndarray, spacing, origin, fields: dict, extra: dict) -> None:
    """Write ``array`` (z, y, x) with spacing/origin (z, y, x) and metadata via SimpleITK."""
    sitk = _sitk()
    name = path.name.lower()
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    image.SetOrigin(tuple(float(o) for o in reversed(origin)))
    if name.endswith(".mha"):
        for key, value in fields.items():
            # MetaImage headers are ASCII: "mg HA/cm³" is stored percent-encoded.
            image.SetMetaData(_PREFIX + key, quote(str(value), safe=_SAFE))
        for key, value in extra.items():
            image.SetMetaData(key, str(value))
        compress = True
    else:
        if extra:
            raise ValueError(
                f"NIfTI cannot store free metadata {sorted(extra)}; only units and "
                "calibration fit its header. Write an .mha file to keep them."
            )
        if fields:
            image.SetMetaData("ITK_FileNotes", encode_descrip(fields))
        compress = name.endswith(".gz")
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(path))
    writer.SetUseCompression(compress)
    try:
        writer.Execute(image)
    except RuntimeError as err:
        raise OSError(f"{path}: SimpleITK could not write the file: {_short(err)}") from None


def read_raw_bytes_header(path: Path, n_bytes: int) -> bytes:
    """First ``n_bytes`` of a file, decompressed when it is gzip (for format detection)."""
    with open(path, "rb") as handle:
        head = handle.read(n_bytes)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as handle:
                return handle.read(n_bytes)
        except (OSError, EOFError):
            return b""
    return head
