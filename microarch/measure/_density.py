"""Volumetric bone mineral densities and compartment sizes (Tt/Tb/Ct.BMD, volumes, areas)."""

from __future__ import annotations

import math

import numpy as np

from microarch._shared.validation import as_mask, as_roi, as_spacing, degenerate


def _as_density_image(image):
    arr = np.asarray(image)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"image must be a real numeric array (mg HA/cm³), not {arr.dtype}")
    if arr.ndim != 3:
        raise ValueError(f"image must be a 3D array (z, y, x); got {arr.ndim}D with shape "
                         f"{arr.shape}")
    if arr.size == 0:
        raise ValueError(f"image is empty: shape {arr.shape}")
    return arr


def _slice_count(mask):
    """Number of z-slices that hold at least one voxel of ``mask`` (int64)."""
    return int(np.count_nonzero(mask.any(axis=(1, 2))))


_MASK_NAMES = {"Tt": "periosteal", "Tb": "trabecular", "Ct": "cortical"}


def _mean_density(image, mask, name):
    values = image[mask]
    if values.size == 0:
        compartment = _MASK_NAMES[name.split(".")[0]]
        return degenerate(f"{name} undefined: the {compartment} mask is empty", stacklevel=4)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError(f"image holds NaN or infinite voxels inside the mask used for {name}; "
                         "replace or exclude them first")
    return float(values.mean(dtype=np.float64))


def density(image, *, spacing, periosteal, trabecular=None, cortical=None):
    """Mean volumetric densities and sizes of the total, trabecular and cortical compartments.

    ``X.BMD`` is the mean of ``image`` over compartment X's voxels (Tt = periosteal, Tb =
    trabecular, Ct = cortical; the compartments include their marrow and pores, as in
    Scanco's evaluation). ``X.V`` is the compartment volume and ``X.Ar`` its mean
    cross-sectional area: the volume divided by the height of the slices that hold
    periosteal voxels, so ``Tt.Ar = Tb.Ar + Ct.Ar`` for nested masks.

    When only one of ``trabecular`` and ``cortical`` is given, the other is the
    periosteal mask minus it. When neither is given, the Tb and Ct values are NaN.

    Parameters
    ----------
    image : (Z, Y, X) array_like
        Density image, mg HA/cm³ (e.g. ``Scan.image``).
    spacing : float or sequence of 3 floats
        Voxel size in mm (z, y, x).
    periosteal : (Z, Y, X) array_like of bool
        Total (periosteal) compartment.
    trabecular, cortical : (Z, Y, X) array_like of bool, optional
        Trabecular and cortical compartments (:func:`microarch.segment.compartments`).

    Returns
    -------
    dict
        ``"Tt.BMD"``, ``"Tb.BMD"``, ``"Ct.BMD"`` (mg HA/cm³, or the image's unit),
        ``"Tt.V"``, ``"Tb.V"``, ``"Ct.V"`` (mm³), ``"Tt.Ar"``, ``"Tb.Ar"``, ``"Ct.Ar"``
        (mm²). An empty mask gives a NaN density with a :class:`DegenerateInputWarning`;
        an empty periosteal mask also gives NaN areas.

    Raises
    ------
    ValueError
        Wrong shapes, or NaN / infinite image voxels inside a mask.

    References
    ----------
    Whittier DE et al. (2020) Guidelines for the assessment of bone density and
    microarchitecture in vivo using high-resolution peripheral quantitative computed
    tomography. Osteoporos Int 31:1607-1627. doi:10.1007/s00198-020-05438-5

    Examples
    --------
    >>> import numpy as np
    >>> image = np.full((2, 4, 4), 100.0)
    >>> image[:, :, :2] = 900.0
    >>> periosteal = np.ones((2, 4, 4), bool)
    >>> cortical = np.zeros((2, 4, 4), bool)
    >>> cortical[:, :, :2] = True
    >>> d = density(image, spacing=0.5, periosteal=periosteal, cortical=cortical)
    >>> d["Tt.BMD"], d["Ct.BMD"], d["Tb.BMD"], d["Tt.V"], d["Tt.Ar"]
    (500.0, 900.0, 100.0, 4.0, 4.0)
    """
    image = _as_density_image(image)
    spacing = as_spacing(spacing)
    periosteal = as_mask(periosteal, name="periosteal")
    if periosteal.shape != image.shape:
        raise ValueError(f"periosteal shape {periosteal.shape} differs from the image shape "
                         f"{image.shape}")
    trabecular = as_roi(trabecular, image.shape, name="trabecular")
    cortical = as_roi(cortical, image.shape, name="cortical")
    if trabecular is None and cortical is not None:
        trabecular = periosteal & ~cortical
    elif cortical is None and trabecular is not None:
        cortical = periosteal & ~trabecular

    voxel_volume = spacing[0] * spacing[1] * spacing[2]
    height = _slice_count(periosteal) * spacing[0]
    out = {}
    masks = {"Tt": periosteal, "Tb": trabecular, "Ct": cortical}
    counts = {}
    for prefix, mask in masks.items():
        if mask is None:
            out[f"{prefix}.BMD"] = math.nan
            counts[prefix] = None
        else:
            out[f"{prefix}.BMD"] = _mean_density(image, mask, f"{prefix}.BMD")
            counts[prefix] = int(np.count_nonzero(mask))
    for prefix in masks:
        out[f"{prefix}.V"] = math.nan if counts[prefix] is None else counts[prefix] * voxel_volume
    for prefix in masks:
        out[f"{prefix}.Ar"] = (math.nan if counts[prefix] is None or height == 0
                               else counts[prefix] * voxel_volume / height)
    return out
