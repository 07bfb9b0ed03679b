"""The `Scan` container, the `Calibration` record and the io error types.

Units and formulas (HR-pQCT convention, identical in ITKIOScanco ``itkScancoImageIO.cxx``,
aimio-py ``calibration.py`` and ORMIR-XCT ``hrpqct_rescale.py``):

==========================  =========================================================
linear attenuation (1/cm)   mu = native / mu_scaling
density (mg HA/cm³)         rho = density_slope * mu + density_intercept
Hounsfield units            HU = 1000 * (mu - mu_water) / mu_water   (mu_air = 0)
==========================  =========================================================

Every conversion here is one affine map composed from these three lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

#: Unit label of calibrated density images.
DENSITY_UNITS = "mg HA/cm³"
#: Unit label of stored scanner values (Scanco "native" integers, or values of unknown meaning).
NATIVE_UNITS = "native"
#: Unit label of two-valued masks (e.g. Scanco segmentations holding {0, 127}).
BINARY_UNITS = "binary"
#: Unit label of integer label images with more than two values.
LABEL_UNITS = "labels"
#: Unit label of multi-component (vector) AIMs.
VECTOR_UNITS = "vector"
#: Unit label of Hounsfield units.
HU_UNITS = "HU"
#: Unit label of linear attenuation.
MU_UNITS = "1/cm"

# Spellings of the density unit found in Scanco logs and headers, mapped to ours.
_DENSITY_SPELLINGS = {
    "mg ha/ccm": DENSITY_UNITS,
    "mg ha/cm3": DENSITY_UNITS,
    "mg ha/cm^3": DENSITY_UNITS,
    "mg ha/cm³": DENSITY_UNITS,
    "mgha/ccm": DENSITY_UNITS,
    "mgha/cm3": DENSITY_UNITS,
    "mg/ccm": DENSITY_UNITS,
    "mg/cm3": DENSITY_UNITS,
    "mg/cm³": DENSITY_UNITS,
}

# Quantities a Calibration converts between, with the unit label each one carries.
_QUANTITY_UNITS = {
    "native": NATIVE_UNITS,
    "mu": MU_UNITS,
    "hu": HU_UNITS,
    "density": DENSITY_UNITS,
}


class ScanFormatError(ValueError):
    """A scan file cannot be read: wrong or unknown format, corrupt or truncated content.

    The message names the file and the problem. Subclass of ``ValueError``.
    """


class CalibrationError(ScanFormatError):
    """Calibrated values were asked for, but the file (or the caller) gives no calibration.

    Raised, for instance, when ``read_scan(path)`` (``units="density"``) meets a grey-scale
    scan stored with ``MuScaling`` 1 and no density slope. Subclass of `ScanFormatError` so
    that a cohort loop catching `ScanFormatError` also skips such scans; catch
    `CalibrationError` first to handle it separately (e.g. re-read with ``units="native"``).
    """


def normalise_density_unit(unit: str | None) -> str:
    """Return our spelling (``"mg HA/cm³"``) for Scanco's spellings of the density unit."""
    if unit is None:
        return DENSITY_UNITS
    text = " ".join(str(unit).split())
    return _DENSITY_SPELLINGS.get(text.lower(), text or DENSITY_UNITS)


def _finite_or_none(value, name: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"calibration {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"calibration {name} must be finite, got {value!r}")
    return number


@dataclass(frozen=True)
class Calibration:
    """Conversion between stored scanner values and physical units for one scan.

    Attributes
    ----------
    mu_scaling : float
        Stored (native) value per 1/cm of linear attenuation; 8192 on clinical Scanco
        scanners. 1 means "arbitrary units" (no attenuation scaling).
    density_slope : float or None
        Density per unit linear attenuation, mg HA/cm³ per 1/cm (Scanco ``Density: slope``).
    density_intercept : float or None
        Density at zero attenuation, mg HA/cm³ (Scanco ``Density: intercept``).
    mu_water : float or None
        Linear attenuation of water, 1/cm (Scanco ``HU: mu water``); needed for HU only.
    density_unit : str
        Unit of the density scale, normalised to ``"mg HA/cm³"`` for Scanco's spellings.
    description : str or None
        Scanco's free-text ``Calibration Data`` (e.g. ``"68 kVp, BH: 200 mg HA/ccm, ..."``).
    source : str
        Where the numbers came from (``"AIM processing log"``, ``"ISQ header"``, ...).

    Notes
    -----
    With ``a = density_slope / mu_scaling`` and ``b = density_intercept``::

        mu      = native / mu_scaling                      [1/cm]
        density = a * native + b                           [mg HA/cm³]
        HU      = 1000 * native / (mu_scaling * mu_water) - 1000

    These are the relations of ITKIOScanco (``src/itkScancoImageIO.cxx``, KitwareMedical/
    ITKIOScanco) and aimio-py (``py_aimio/calibration.py``). Conversions return float32.

    Examples
    --------
    >>> cal = Calibration(mu_scaling=8192, density_slope=1603.51904,
    ...                   density_intercept=-391.209015, mu_water=0.2409)
    >>> round(float(cal.to_density(3633)), 1)    # native 3633 ~ the 320 mg HA/cm³ threshold
    319.9
    >>> round(float(cal.to_native(320.0)))
    3633
    >>> round(float(cal.to_hu(3633)), 1)
    840.9
    """

    mu_scaling: float = 1.0
    density_slope: float | None = None
    density_intercept: float | None = None
    mu_water: float | None = None
    density_unit: str = DENSITY_UNITS
    description: str | None = None
    source: str = ""

    def __post_init__(self):
        mu_scaling = _finite_or_none(self.mu_scaling, "mu_scaling")
        if mu_scaling is None or mu_scaling <= 0:
            raise ValueError(f"calibration mu_scaling must be positive, got {self.mu_scaling!r}")
        object.__setattr__(self, "mu_scaling", mu_scaling)
        for name in ("density_slope", "density_intercept", "mu_water"):
            object.__setattr__(self, name, _finite_or_none(getattr(self, name), name))
        if self.density_slope == 0:
            raise ValueError("calibration density_slope must be non-zero")
        if self.mu_water is not None and self.mu_water <= 0:
            raise ValueError(f"calibration mu_water must be positive, got {self.mu_water!r}")
        object.__setattr__(self, "density_unit", normalise_density_unit(self.density_unit))

    @property
    def has_density(self) -> bool:
        """True when slope and intercept are known, so native values convert to density."""
        return self.density_slope is not None and self.density_intercept is not None

    @property
    def has_hu(self) -> bool:
        """True when mu_water is known, so values convert to Hounsfield units."""
        return self.mu_water is not None

    @property
    def has_mu(self) -> bool:
        """True when native values carry an attenuation scaling (mu_scaling > 1)."""
        return self.mu_scaling > 1

    def _to_mu(self, quantity: str) -> tuple[float, float]:
        """(scale, offset) with mu = scale * value + offset, for values of ``quantity``."""
        if quantity == "native":
            return 1.0 / self.mu_scaling, 0.0
        if quantity == "mu":
            return 1.0, 0.0
        if quantity == "hu":
            self._require("hu")
            return self.mu_water / 1000.0, self.mu_water
        if quantity == "density":
            self._require("density")
            return 1.0 / self.density_slope, -self.density_intercept / self.density_slope
        raise ValueError(
            f"unknown quantity {quantity!r}; use one of {', '.join(map(repr, _QUANTITY_UNITS))}"
        )

    def _require(self, quantity: str) -> None:
        if quantity == "density" and not self.has_density:
            raise CalibrationError(
                "this calibration has no density slope/intercept, so values cannot be "
                "converted to or from density"
            )
        if quantity == "hu" and not self.has_hu:
            raise CalibrationError(
                "this calibration has no mu_water, so values cannot be converted to or from HU"
            )

    def affine(self, from_quantity: str, to_quantity: str) -> tuple[float, float]:
        """Return ``(scale, offset)`` such that ``to = scale * from + offset``.

        Quantities are ``"native"``, ``"mu"`` (1/cm), ``"hu"`` and ``"density"``.

        Examples
        --------
        >>> Calibration(mu_scaling=8192, density_slope=1600.0, density_intercept=-400.0
        ...             ).affine("native", "density")
        (0.1953125, -400.0)
        """
        in_scale, in_offset = self._to_mu(from_quantity)
        out_scale, out_offset = self._to_mu(to_quantity)  # also validates to_quantity
        # Invert mu = out_scale * to + out_offset, then compose.
        scale = in_scale / out_scale
        offset = (in_offset - out_offset) / out_scale
        return scale, offset

    def convert(self, values, from_quantity: str, to_quantity: str) -> np.ndarray:
        """Convert ``values`` between quantities; returns a new float32 array.

        Parameters
        ----------
        values : array_like
            Input values (never modified).
        from_quantity, to_quantity : {"native", "mu", "hu", "density"}
            What ``values`` hold and what to return.
        """
        scale, offset = self.affine(from_quantity, to_quantity)
        arr = np.asarray(values)
        out = np.empty(arr.shape, dtype=np.float32)
        # One multiply and one add in float32 keeps peak memory at the output array;
        # values beyond float32 (only in corrupt float data) become inf without warning.
        with np.errstate(over="ignore", invalid="ignore"):
            np.multiply(arr, np.float32(scale), out=out, dtype=np.float32, casting="unsafe")
            out += np.float32(offset)
        return out

    def to_density(self, values, *, from_quantity: str = "native") -> np.ndarray:
        """Density (float32, ``density_unit``) of ``values`` (native by default)."""
        return self.convert(values, from_quantity, "density")

    def to_hu(self, values, *, from_quantity: str = "native") -> np.ndarray:
        """Hounsfield units (float32) of ``values`` (native by default)."""
        return self.convert(values, from_quantity, "hu")

    def to_mu(self, values, *, from_quantity: str = "native") -> np.ndarray:
        """Linear attenuation in 1/cm (float32) of ``values`` (native by default)."""
        return self.convert(values, from_quantity, "mu")

    def to_native(self, values, *, from_quantity: str = "density") -> np.ndarray:
        """Native scanner values (float32, not rounded) of ``values`` (density by default).

        Useful to express a density threshold in stored units:
        ``round(cal.to_native(320.0))``.
        """
        return self.convert(values, from_quantity, "native")

    def as_dict(self) -> dict:
        """Plain dict of the fields (for JSON sidecars and provenance)."""
        return {
            "mu_scaling": self.mu_scaling,
            "density_slope": self.density_slope,
            "density_intercept": self.density_intercept,
            "mu_water": self.mu_water,
            "density_unit": self.density_unit,
            "description": self.description,
            "source": self.source,
        }


@dataclass(frozen=True, eq=False)
class Scan:
    """A volume read from disk, in numpy axis order (z, y, x).

    Attributes
    ----------
    image : ndarray
        The voxel values, axes (z, y, x). float32 in ``units`` for calibrated density,
        HU or attenuation; the stored dtype for ``"native"``, ``"binary"``, ``"labels"``.
    spacing : tuple of 3 floats
        Voxel size in mm, (z, y, x).
    units : str
        What ``image`` holds: ``"mg HA/cm³"``, ``"HU"``, ``"1/cm"``, ``"native"`` (stored
        values, uncalibrated), ``"binary"`` (two-valued mask as stored, e.g. {0, 127}),
        ``"labels"``, ``"vector"``, or the unit a map was written with (e.g. ``"mm"``).
    calibration : Calibration or None
        The file's calibration (or the one passed to `read_scan`); None if it has none.
    meta : dict
        Header fields; for AIM files ``meta["processing_log"]`` is the parsed log
        (key -> value, numbers converted, last occurrence wins) and
        ``meta["processing_log_text"]`` the raw text.
    path : pathlib.Path or None
        The file (or DICOM folder) read.
    origin : tuple of 3 floats or None
        Physical position of voxel (0, 0, 0) in mm, (z, y, x), where the file defines one.
    format : str
        Container read, e.g. ``"AIM v020"``, ``"ISQ"``, ``"NIfTI"``, ``"MetaImage"``.

    Examples
    --------
    `read_scan` makes these; one can be built by hand, e.g. for a phantom:

    >>> scan = Scan(image=np.zeros((2, 3, 4), np.float32), spacing=(0.0607,) * 3,
    ...             units="mg HA/cm³")
    >>> scan.shape, scan.is_mask
    ((2, 3, 4), False)
    >>> scan.replace(units="native").units
    'native'
    """

    image: np.ndarray
    spacing: tuple[float, float, float]
    units: str
    calibration: Calibration | None = None
    meta: dict = field(default_factory=dict)
    path: Path | None = None
    origin: tuple[float, float, float] | None = None
    format: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``image``, (z, y, x)."""
        return tuple(self.image.shape)

    @property
    def is_mask(self) -> bool:
        """True for two-valued masks (``units == "binary"``)."""
        return self.units == BINARY_UNITS

    def replace(self, **changes) -> Scan:
        """Return a copy with some fields replaced (``dataclasses.replace``)."""
        return replace(self, **changes)

    def __repr__(self) -> str:
        return (
            f"Scan(shape={self.shape}, dtype={self.image.dtype}, units={self.units!r}, "
            f"spacing={self.spacing}, format={self.format!r}, path={str(self.path)!r})"
        )
