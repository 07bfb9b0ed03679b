"""Cortical bone measures: Ct.Th, Ct.Po, Ct.V, Ct.Ar, Ct.Pm."""

from __future__ import annotations

import math

import numpy as np

from microarch._shared.validation import as_mask, as_roi, as_spacing, degenerate

#: Default smallest pore kept for Ct.Po, mm³ (about 4.5 voxels at 60.7 µm, 1.8 at 82 µm):
#: smaller non-bone specks inside the cortex are noise, not Haversian canals.
MIN_PORE_VOLUME = 0.001


def _pores(cortical, bone, min_voxels):
    """Non-bone voxels of the cortical compartment in 6-connected pieces of >= min_voxels."""
    from scipy import ndimage as ndi

    pores = cortical & ~bone
    if min_voxels > 1 and pores.any():
        labels, n = ndi.label(pores)
        sizes = np.bincount(labels.ravel(), minlength=n + 1).astype(np.int64)
        keep = sizes >= min_voxels
        keep[0] = False
        pores = keep[labels]
    return pores


def _mean_perimeter(periosteal, hy, hx):
    """Mean length (mm) of the periosteal outline over the slices that hold it.

    Per slice, holes are filled and the mask is smoothed by a Gaussian of one pixel;
    the outline length is then the integral of the gradient magnitude of the smoothed
    indicator (the co-area formula: the mean length of its level lines, i.e. of the
    0.5 iso-line of a smooth edge). On a digitised circle or ellipse of radius >= 8
    pixels this is within 0.6 % of the true perimeter, also for anisotropic pixels;
    plain marching squares on the staircase measures about 5 % too long.
    """
    from scipy import ndimage as ndi

    rows = np.flatnonzero(periosteal.any(axis=(0, 2)))
    cols = np.flatnonzero(periosteal.any(axis=(0, 1)))
    present = periosteal.any(axis=(1, 2))
    crop = periosteal[present][:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    crop = np.pad(crop, ((0, 0), (4, 4), (4, 4)))
    plane = np.zeros((3, 3, 3), bool)
    plane[1] = ndi.generate_binary_structure(2, 1)
    labels, n = ndi.label(~crop, structure=plane)
    outside = np.zeros(n + 1, bool)
    outside[labels[:, 0, 0]] = True  # the padded corner is outside in every slice
    outside[0] = False
    filled = ~outside[labels]
    del labels
    smooth = ndi.gaussian_filter(filled.astype(np.float32), (0.0, 1.0, 1.0), mode="constant")
    grad_y = np.gradient(smooth, hy, axis=1)
    grad_x = np.gradient(smooth, hx, axis=2)
    per_slice = np.hypot(grad_y, grad_x).sum(axis=(1, 2), dtype=np.float64) * hy * hx
    return float(per_slice.mean())


def cortical(cortical_mask, *, spacing, periosteal=None, bone=None,
             min_pore_volume=MIN_PORE_VOLUME):
    """Cortical thickness, porosity, volume, area and periosteal perimeter.

    - ``"Ct.Th"``: mean local thickness (diameter of the largest inscribed ball,
      :func:`microarch.measure.local_thickness`) over the cortical compartment, pores
      included, the direct XtremeCT II definition; ``"Ct.Th.SD"`` its SD (ddof 1).
    - ``"Ct.Po"``: cortical porosity as a *fraction*: pore volume / (pore volume +
      cortical bone volume) (Burghardt et al. 2010). Pores are the non-``bone`` voxels
      of the cortical compartment in 6-connected pieces of at least ``min_pore_volume``
      mm³; ``"Ct.Po.V"`` is their volume (mm³). NaN without ``bone``.
    - ``"Ct.V"``: compartment volume, mm³.
    - ``"Ct.Ar"``: mean cross-sectional area, mm²: ``Ct.V`` divided by the height of the
      slices that hold periosteal voxels (cortical ones without ``periosteal``).
    - ``"Ct.Pm"``: mean periosteal perimeter per slice, mm, over the slices that hold
      periosteal voxels: the outline length of the hole-filled periosteal mask smoothed
      by a Gaussian of one pixel (within 0.6 % of the true perimeter for radii of 8
      pixels or more). NaN without ``periosteal``.

    Parameters
    ----------
    cortical_mask : (Z, Y, X) array_like of bool
        Cortical compartment (:func:`microarch.segment.compartments`).
    spacing : float or sequence of 3 floats
        Voxel size in mm (z, y, x).
    periosteal : (Z, Y, X) array_like of bool, optional
        Periosteal (total) compartment, for Ct.Ar's slice count and Ct.Pm.
    bone : (Z, Y, X) array_like of bool, optional
        Segmented bone, for Ct.Po.
    min_pore_volume : float
        Smallest pore counted, mm³ (0.001; 0 keeps every pore voxel).

    Returns
    -------
    dict
        ``"Ct.Th"``, ``"Ct.Th.SD"`` (mm), ``"Ct.Po"`` (fraction), ``"Ct.Po.V"``,
        ``"Ct.V"`` (mm³), ``"Ct.Ar"`` (mm²), ``"Ct.Pm"`` (mm). An empty cortical mask
        gives NaN with a :class:`DegenerateInputWarning`.

    References
    ----------
    Burghardt AJ, Buie HR, Laib A, Majumdar S, Boyd SK (2010) Reproducibility of direct
    quantitative measures of cortical bone microarchitecture of the distal radius and
    tibia by HR-pQCT. Bone 47:519-528. doi:10.1016/j.bone.2010.05.034
    Hildebrand T, Rüegsegger P (1997) A new method for the model-independent assessment
    of thickness in three-dimensional images. J Microsc 185:67-75.
    doi:10.1046/j.1365-2818.1997.1340694.x

    Examples
    --------
    A 4-voxel wall (0.4 mm) with one pore voxel column:

    >>> import numpy as np
    >>> wall = np.zeros((6, 10, 10), bool)
    >>> wall[:, :, 3:7] = True
    >>> bone = wall.copy()
    >>> bone[:, 5, 4] = False
    >>> ct = cortical(wall, spacing=0.1, bone=bone, min_pore_volume=0)
    >>> round(ct["Ct.Th"], 3), round(ct["Ct.Po"], 4), round(ct["Ct.V"], 3)
    (0.4, 0.025, 0.24)
    """
    mask = as_mask(cortical_mask, name="cortical_mask")
    spacing = as_spacing(spacing)
    periosteal = as_roi(periosteal, mask.shape, name="periosteal")
    bone = as_roi(bone, mask.shape, name="bone")
    min_pore_volume = float(min_pore_volume)
    if not math.isfinite(min_pore_volume) or min_pore_volume < 0:
        raise ValueError(f"min_pore_volume must be >= 0 mm³; got {min_pore_volume}")

    voxel_volume = spacing[0] * spacing[1] * spacing[2]
    n_voxels = int(np.count_nonzero(mask))
    out = {"Ct.Th": math.nan, "Ct.Th.SD": math.nan, "Ct.Po": math.nan, "Ct.Po.V": math.nan,
           "Ct.V": n_voxels * voxel_volume, "Ct.Ar": math.nan, "Ct.Pm": math.nan}
    reference = periosteal if periosteal is not None else mask
    n_slices = int(np.count_nonzero(reference.any(axis=(1, 2))))
    if n_slices:
        out["Ct.Ar"] = out["Ct.V"] / (n_slices * spacing[0])
    if periosteal is not None and n_slices:
        out["Ct.Pm"] = _mean_perimeter(periosteal, spacing[1], spacing[2])
    if n_voxels == 0:
        out["Ct.Th"] = degenerate("Ct.Th and Ct.Po undefined: the cortical mask is empty")
        return out

    from microarch.measure._thickness import local_thickness, thickness_statistics

    stats = thickness_statistics(local_thickness(mask, spacing=spacing), where=mask)
    out["Ct.Th"], out["Ct.Th.SD"] = stats["mean"], stats["sd"]
    if bone is not None:
        min_voxels = math.ceil(min_pore_volume / voxel_volume - 1e-9)
        pores = _pores(mask, bone, min_voxels)
        n_pores = int(np.count_nonzero(pores))
        n_bone = int(np.count_nonzero(mask & bone))
        out["Ct.Po.V"] = n_pores * voxel_volume
        out["Ct.Po"] = (n_pores / (n_pores + n_bone) if n_pores + n_bone
                        else degenerate("Ct.Po undefined: no bone and no pore in the cortex"))
    return out
