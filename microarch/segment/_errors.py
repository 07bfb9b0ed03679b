"""The typed error of :mod:`microarch.segment` and the input checks that raise it."""

from __future__ import annotations

import numpy as np


class SegmentationError(ValueError):
    """A scan cannot be segmented: empty, NaN or infinite voxels, no bone found, ...

    The message names the problem and what to do about it. It subclasses ValueError,
    so ``except ValueError`` also catches it.
    """


def as_image(image, *, name="image"):
    """Return ``image`` as a C-contiguous float32 (Z, Y, X) array, never modifying it.

    Raises TypeError for non-numeric data, ValueError for a wrong dimensionality and
    SegmentationError for an empty image or one with NaN or infinite voxels.
    """
    arr = np.asarray(image)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array (mg HA/cm³), not {arr.dtype}")
    if arr.ndim != 3:
        raise ValueError(
            f"{name} must be a 3D array (z, y, x); got {arr.ndim}D with shape {arr.shape}"
        )
    if arr.size == 0:
        raise SegmentationError(f"{name} is empty: shape {arr.shape}; nothing to segment")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.dtype.kind == "f":
        n_bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if n_bad:
            what = "all voxels are" if n_bad == arr.size else f"{n_bad} of {arr.size} voxels are"
            raise SegmentationError(
                f"{name}: {what} NaN or infinite; replace them (e.g. with the background "
                "density) or crop them away before segmenting"
            )
    return arr
