"""Read scanner files into calibrated density; write masks and maps.

Entry points
------------
`read_scan`
    Scanco AIM (v020, v030, every type code of the domain spec §2.3, including run-length
    compressed masks) and ISQ, read in pure numpy; NIfTI, MetaImage, NRRD and DICOM series
    through SimpleITK; multi-page TIFF through tifffile. Returns a `Scan` whose ``image`` has
    axes (z, y, x) and, for grey-scale scans, holds float32 density in mg HA/cm³.
`write_image`
    Masks and maps as compressed NIfTI or MHA, with spacing, origin, units and calibration.
`write_aim`
    A genuine Scanco AIM v020 file (int16 or int8), calibration in its processing log.

Units
-----
=================  ===================================================================
``"mg HA/cm³"``    density (float32), from the scan's own calibration
``"native"``       stored scanner values, untouched (Scanco int16 "native" units)
``"HU"``           Hounsfield units (float32)
``"1/cm"``         linear attenuation (float32)
``"binary"``       a two-valued mask exactly as stored (Scanco: {0, 127}); never calibrated
``"labels"``       an integer label image as stored (more than two values)
``"vector"``       multi-component AIM data as stored, shape (z, y, x, 3)
=================  ===================================================================

Calibration formulas
--------------------
Scanco stores ``native = mu * mu_scaling`` (mu: linear attenuation in 1/cm, mu_scaling
8192 on XtremeCT I and II). With the per-scan ``Density: slope`` a and ``Density: intercept``
b of the AIM processing log (or the ISQ calibration header)::

    mu      = native / mu_scaling                       [1/cm]
    density = a * mu + b = (a / mu_scaling) * native + b   [mg HA/cm³]
    HU      = 1000 * (mu - mu_water) / mu_water          (mu_air taken as 0)

as implemented in ITKIOScanco ``src/itkScancoImageIO.cxx`` (KitwareMedical/ITKIOScanco),
aimio-py ``py_aimio/calibration.py`` and ORMIR-XCT ``core/util/hrpqct_rescale.py``
(domain spec ``domain-hrpqct.md`` §1.2). A file with ``Mu_Scaling 1`` and no density
slope is uncalibrated: asking it for density raises `CalibrationError`, never guesses.

Format references
-----------------
Scanco's manuals are not public. The AIM and ISQ layouts follow the ITKIOScanco sources
(``src/itkAIMHeaderIO.cxx``, ``src/itkISQHeaderIO.cxx``, ``src/itkScancoImageIO.cxx``,
``src/itkScancoDataManipulation.cxx``; Apache-2.0), cross-checked with Numerics88/AimIO
(``source/AimIO.cxx``, ``source/Compression.cxx``; MIT) and with real files
(BonelabData, ORMIR-XCT test data). The readers here are written from those
descriptions in numpy; no code is copied.

Where the peer readers disagree (checked voxel for voxel in ``tests/io/test_io_peers.py``)
--------------------------------------------------------------------------------------------
* itk-ioscanco 1.0.1 converts int16 grey values to Hounsfield units on read whenever
  ``MuScaling > 1`` and casts them back to int16, truncating towards zero: for
  ``aluminum.aim`` it returns -2057 ... 4223 "HU" where the exact values are -2057.3 ...
  4223.9. It is not wrong about the formula, it loses the fraction (up to 1 HU, i.e.
  ~1.4 mg HA/cm³ there). It also cannot read BonelabData ``test25a.aim``: that file stores
  the compressed-data byte count big-endian and ITKIOScanco trusts the count ("File is
  truncated"); the count is redundant with the pre-header, so we ignore it (as AimIO
  does). It would also turn a calibrated mask into "HU" (it rescales char data too);
  here masks are never calibrated.
* aimio-py 0.4.1 mis-reads ``test_isq.ISQ`` (ORMIR-XCT test data): a handful of voxels
  from flat index 15372 on (the file's last, partial 512-byte block) come back as large
  values that change from run to run (-27231, 11921, 32576, 7360, ...), i.e. uninitialised
  memory, where the file's bytes, itk-ioscanco and the same cube stored as
  ``test_aim.AIM`` all hold 0 or 1. aimio-py is wrong there. Its ISQ density helper also
  applies the header's rescale slope to native values without dividing by mu_scaling,
  unlike its own AIM helper and ITKIOScanco; we divide (the slope is per 1/cm).
* Run-length int8 (0x00080002) pairs are (value, length) in AimIO and (length, value) in
  ITKIOScanco; we take the order whose run lengths add up to the voxel count.
* float32 AIM data: AimIO decodes VAX F-floats, ITKIOScanco IEEE; we decode v020 as VAX
  and v030 as IEEE unless the log's ``Minimum/Maximum data value`` says otherwise.

Origins
-------
AIM: ``origin = position * element size`` (ITKIOScanco and aimio-py's ``origin``; aimio-py
also reports a half-voxel-shifted "vtkbone" origin). SimpleITK formats: the origin as
SimpleITK reports it (LPS for NIfTI), axes reversed to (z, y, x); the direction matrix is
kept in ``meta["direction"]`` and the array is not reoriented. ISQ and TIFF: unknown (None).

Errors
------
`ScanFormatError` (a ``ValueError``) names the file and the problem: empty, truncated,
wrong magic, impossible dimensions or offsets, unknown type codes, a header claiming more
data than the file holds. Sizes are checked against the file size before any buffer is
allocated. `CalibrationError` (subclass of `ScanFormatError`) means calibrated units were
asked of a scan without the needed calibration.
"""

from ._read import read_scan
from ._scan import Calibration, CalibrationError, Scan, ScanFormatError
from ._write import write_aim, write_image

__all__ = [
    "Calibration",
    "CalibrationError",
    "Scan",
    "ScanFormatError",
    "read_scan",
    "write_aim",
    "write_image",
]
