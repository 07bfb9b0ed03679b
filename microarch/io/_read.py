"""`read_scan`: detect the container by its bytes, read it, express it in the asked units."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from .._shared.validation import as_spacing, check_choice
from ._scan import (
    DENSITY_UNITS,
    HU_UNITS,
    MU_UNITS,
    NATIVE_UNITS,
    VECTOR_UNITS,
    Calibration,
    CalibrationError,
    Scan,
    ScanFormatError,
)
from ._scanco import ISQ_MAGIC, mask_units, read_aim, read_isq

UNIT_CHOICES = ("density", "native", "hu", "mu")
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# stored unit label -> quantity a Calibration converts
_STORED_QUANTITY = {DENSITY_UNITS: "density", HU_UNITS: "hu", MU_UNITS: "mu"}
_QUANTITY_LABEL = {"hu": HU_UNITS, "mu": MU_UNITS}


def detect_format(path) -> str:
    """Name the container of ``path`` from its first bytes (never from its extension alone).

    Returns one of ``"aim"``, ``"isq"``, ``"nifti"``, ``"metaimage"``, ``"nrrd"``, ``"tiff"``,
    ``"dicom"`` (one file) or ``"dicom-series"`` (a folder).
    """
    from ._itk import read_raw_bytes_header

    path = Path(path)
    if path.is_dir():
        return "dicom-series"
    with open(path, "rb") as handle:
        head = handle.read(560)
    if not head:
        raise ScanFormatError(f"{path}: file is empty")
    if head.startswith(ISQ_MAGIC):
        return "isq"
    if head.startswith(b"AIMDATA_V"):  # v030, or a version read_aim will name
        return "aim"
    if len(head) >= 8:
        first, second = struct.unpack("<2i", head[:8])
        if first in (16, 20) and second in (92, 96, 140):
            return "aim"  # v010/v011 are refused with a clear message by read_aim
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    nifti_head = read_raw_bytes_header(path, 544) if head[:2] == b"\x1f\x8b" else head
    if _is_nifti(nifti_head):
        return "nifti"
    if _is_metaimage(head):
        return "metaimage"
    described = head[:16]
    raise ScanFormatError(
        f"{path}: unrecognised file format (first bytes {described!r}); readable are Scanco "
        "AIM/ISQ, NIfTI, MetaImage, NRRD, TIFF and DICOM (a folder holding one series)"
    )


def _is_nifti(head: bytes) -> bool:
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return head[:4] in (struct.pack("<i", 348), struct.pack(">i", 348))
    if len(head) >= 540 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return head[:4] in (struct.pack("<i", 540), struct.pack(">i", 540))
    return False


def _is_metaimage(head: bytes) -> bool:
    text = head.decode("latin-1", errors="replace")
    keys = {line.partition("=")[0].strip() for line in text.splitlines() if "=" in line}
    return bool(keys & {"ObjectType", "NDims"}) and bool(keys & {"NDims", "DimSize"})


def _reader(kind: str):
    if kind == "aim":
        return read_aim
    if kind == "isq":
        return read_isq
    if kind == "tiff":
        from ._tiff import read_tiff

        return read_tiff
    if kind == "dicom-series":
        from ._itk import read_dicom_series

        return read_dicom_series
    from ._itk import read_itk

    return lambda path: read_itk(path, kind)


def read_scan(path, *, spacing=None, units="density", calibration=None) -> Scan:
    """Read a scan file (or DICOM folder) into a `Scan` with axes (z, y, x).

    Parameters
    ----------
    path : str or path-like
        A Scanco AIM (v020, v030) or ISQ file, NIfTI (``.nii``, ``.nii.gz``), MetaImage
        (``.mha``, ``.mhd``), NRRD, a (multi-page) TIFF, or a folder holding one DICOM
        series. The container is recognised by its first bytes, so VMS version suffixes
        (``scan.AIM;1``) and odd extensions are fine. The file is only read.
    spacing : float or sequence of 3 floats, optional
        Voxel size in mm, (z, y, x). Overrides the file's voxel size (which is kept in
        ``meta["file_spacing"]``); required for files without one (most TIFFs).
    units : {"density", "native", "hu", "mu"}
        What grey-scale scans are returned in: ``"density"`` (mg HA/cm³, float32, the
        default), ``"native"`` (stored values untouched), ``"hu"`` (Hounsfield units,
        float32) or ``"mu"`` (linear attenuation, 1/cm, float32). Masks, label images,
        vectors and maps stored in other units (e.g. mm) are always returned as stored;
        ``Scan.units`` says what they are (``"binary"``, ``"labels"``, ``"vector"``, ...).
    calibration : Calibration, optional
        Use this calibration instead of the file's (e.g. for a NIfTI exported without it).

    Returns
    -------
    Scan
        ``image`` (z, y, x), ``spacing`` (mm), ``units``, ``calibration``, ``meta``,
        ``path``, ``origin``, ``format``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ScanFormatError
        The file is empty, truncated, of an unknown format or corrupt, or has no voxel size
        and ``spacing`` was not given.
    CalibrationError
        Calibrated units were asked for a grey-scale scan without the needed calibration
        (e.g. an AIM with ``Mu_Scaling 1``). Subclass of `ScanFormatError`.

    Notes
    -----
    Masks are recognised by their storage, never calibrated: AIM char types (int8/uint8,
    run-length binary 0x00150001, run-length int8 0x00080002, packed bits 0x00060001) or a
    processing log whose last ``Parameter name`` is ``Segmented Objects``; in other
    formats, integer images holding at most two values, one of them 0 (unless the file's
    microarch metadata says otherwise). A mask is ``"binary"`` with at most two values
    (e.g. {0, 127}), ``"labels"`` with more.

    Density follows the file's own calibration (domain spec §1.2; ITKIOScanco
    ``itkScancoImageIO.cxx``): ``density = slope / mu_scaling * native + intercept``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from microarch.io import Calibration, read_scan, write_aim
    >>> cal = Calibration(mu_scaling=8192, density_slope=1603.51904,
    ...                   density_intercept=-391.209015, mu_water=0.2409)
    >>> native = np.full((2, 3, 4), 3633, dtype=np.int16)
    >>> folder = tempfile.mkdtemp()
    >>> path = write_aim(os.path.join(folder, "scan.aim"), native, spacing=0.0607,
    ...                  calibration=cal)
    >>> scan = read_scan(path)
    >>> scan.units, scan.image.dtype, scan.shape, round(float(scan.image[0, 0, 0]), 1)
    ('mg HA/cm³', dtype('float32'), (2, 3, 4), 319.9)
    >>> raw = read_scan(path, units="native")
    >>> raw.units, raw.image.dtype, int(raw.image.max())
    ('native', dtype('int16'), 3633)
    """
    check_choice(units, UNIT_CHOICES, name="units")
    if calibration is not None and not isinstance(calibration, Calibration):
        raise TypeError(f"calibration must be a microarch.io.Calibration, not {type(calibration)}")
    path = Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    kind = detect_format(path)
    stored = _reader(kind)(path)

    if calibration is not None:
        stored.calibration = calibration
        stored.meta["calibration_from"] = "caller"
    if spacing is not None:
        stored.meta["file_spacing"] = stored.spacing
        voxel = as_spacing(spacing)
    elif stored.spacing is None:
        raise ScanFormatError(
            f"{path}: the {stored.format} file gives no usable voxel size; "
            "pass spacing=(z, y, x) in mm"
        )
    else:
        voxel = tuple(float(s) for s in stored.spacing)

    image, label = _in_units(path, stored, units)
    return Scan(
        image=image,
        spacing=voxel,
        units=label,
        calibration=stored.calibration,
        meta=stored.meta,
        path=path,
        origin=stored.origin,
        format=stored.format,
    )


def _in_units(path, stored, units: str) -> tuple[np.ndarray, str]:
    image, kind = stored.image, stored.kind
    if kind == "mask":
        return image, mask_units(image)
    if kind == "vector":
        return image, VECTOR_UNITS
    stored_label = NATIVE_UNITS if kind == "grey" else kind
    if units == "native":
        return image, stored_label
    quantity = "native" if kind == "grey" else _STORED_QUANTITY.get(kind)
    if quantity is None:
        # A map in its own units (e.g. thickness in mm): nothing to calibrate.
        return image, stored_label
    calibration = stored.calibration
    if quantity == units:
        label = calibration.density_unit if (units == "density" and calibration) else kind
        return image.astype(np.float32, copy=False), label
    if calibration is None:
        raise CalibrationError(
            f"{path}: {stored.format} grey-scale image without a calibration "
            f"({_calibration_hint(stored)}), so it cannot be given in {units!r} units; "
            "read it with units='native', or pass calibration=Calibration(...)"
        )
    try:
        converted = calibration.convert(image, quantity, units)
    except CalibrationError as err:
        raise CalibrationError(f"{path}: {err}; read it with units='native'") from None
    label = calibration.density_unit if units == "density" else _QUANTITY_LABEL[units]
    return converted, label


def _calibration_hint(stored) -> str:
    log = stored.meta.get("processing_log")
    if isinstance(log, dict):
        return f"Mu_Scaling {log.get('Mu_Scaling', 'missing')}, no density slope"
    if "mu_scaling" in stored.meta:
        return f"mu_scaling {stored.meta['mu_scaling']}, no density slope"
    return "no calibration metadata"
