"""Input validation shared by the public functions.

Public functions validate and normalise their inputs here, then hand plain contiguous
arrays and floats to the private kernels, which assume valid input.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

import numpy as np


class DegenerateInputWarning(UserWarning):
    """A measure is undefined for this input (empty mask, empty ROI, ...); NaN is returned."""


def as_mask(mask, *, name: str = "mask", ndim: int = 3) -> np.ndarray:
    """Return ``mask`` as a C-contiguous bool array, checking its dimensionality.

    Accepts bool arrays and numeric arrays holding only 0 and 1 (any non-zero value of an
    integer label image is also accepted as True). Floating arrays must be free of NaN.
    The input is never modified; a copy is made only when needed.
    """
    arr = np.asarray(mask)
    if arr.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}D array (z, y, x); got {arr.ndim}D with shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    if arr.dtype != bool:
        if arr.dtype.kind == "f" and np.isnan(arr).any():
            raise ValueError(f"{name} contains NaN; a mask must be binary")
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a boolean or numeric array, not {arr.dtype}")
        arr = arr != 0
    return np.ascontiguousarray(arr)


def as_spacing(spacing, *, ndim: int = 3, name: str = "spacing") -> tuple[float, ...]:
    """Normalise ``spacing`` (scalar or one value per axis, mm) to a tuple of floats.

    Raises a ValueError naming the problem for missing, non-finite, non-positive or
    wrongly sized spacings.
    """
    if spacing is None:
        raise ValueError(f"{name} is required (voxel size in mm, scalar or per axis z, y, x)")
    if isinstance(spacing, Real) or np.ndim(spacing) == 0:
        values = (float(spacing),) * ndim
    else:
        values = tuple(float(v) for v in np.asarray(spacing, dtype=float).ravel())
        if len(values) != ndim:
            raise ValueError(
                f"{name} must be a scalar or have {ndim} values (z, y, x); got {len(values)}"
            )
    for v in values:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} values must be finite and positive; got {values}")
    return values


def as_roi(roi, shape: tuple[int, ...], *, name: str = "roi") -> np.ndarray | None:
    """Validate an optional region-of-interest mask of the given shape."""
    if roi is None:
        return None
    roi = as_mask(roi, name=name, ndim=len(shape))
    if roi.shape != tuple(shape):
        raise ValueError(f"{name} shape {roi.shape} differs from the mask shape {tuple(shape)}")
    return roi


def check_choice(value, choices, *, name: str):
    """Raise a ValueError listing the allowed values when ``value`` is not one of them."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}")
    return value


def non_negative_int(value, *, name: str, unit: str = "") -> int:
    """``value`` as an int; a ValueError naming ``name`` unless it is an integer >= 0.

    Booleans and whole floats (``2.0``) are refused: a count is written as an integer.
    ``unit`` (e.g. ``"voxels"``) is added to the message.

    >>> non_negative_int(3, name="seed")
    3
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        unit = f" ({unit})" if unit else ""
        raise ValueError(f"{name} must be a non-negative integer{unit}; got {value!r}")
    return int(value)


def degenerate(reason: str, *, stacklevel: int = 3) -> float:
    """Warn that a measure is undefined and return NaN."""
    warnings.warn(reason, DegenerateInputWarning, stacklevel=stacklevel)
    return math.nan
