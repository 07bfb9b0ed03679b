"""Direct trabecular number Tb.N (Hildebrand et al. 1999).

Tb.N is the inverse of the mean distance between the mid-axes of the structure: the bone
is thinned to its skeleton of mid-surfaces (plates) and mid-lines (rods), and the
Hildebrand-Rüegsegger local thickness is measured in the space *between* the skeleton
voxels, taking the skeleton as infinitely thin (distances run from skeleton voxel centre
to skeleton voxel centre). For parallel plates repeating every s mm, every voxel between
two mid-planes lies in a ball of diameter s, so Tb.N = 1/s exactly. Tb.1/N.SD is the SD
of that spacing map.

References
----------
Hildebrand T, Laib A, Müller R, Dequeker J, Rüegsegger P (1999) Direct three-dimensional
morphometric analysis of human cancellous bone: microstructural data from spine, femur,
iliac crest, and calcaneus. J Bone Miner Res 14:1167-1174. doi:10.1359/jbmr.1999.14.7.1167
Laib A, Rüegsegger P (1999) Calibration of trabecular bone structure measurements of
in vivo three-dimensional peripheral quantitative computed tomography with
28-µm-resolution microcomputed tomography. Bone 24:35-39.
doi:10.1016/S8756-3282(98)00159-8
"""

from __future__ import annotations

import math

import numpy as np

from microarch._shared.validation import as_mask, as_roi, as_spacing, check_choice, degenerate
from microarch.measure._thickness import EDGES, _ball_radius_sq, thickness_statistics


def mid_axis_spacing(mask, *, spacing, edge="continue", skeleton=None, region=None,
                     where=None):
    """Local spacing of the mid-axes: diameter map (mm) of the space between them.

    Parameters
    ----------
    mask : (Z, Y, X) array_like of bool
        Bone mask.
    spacing : float or sequence of 3 floats
        Voxel size in mm (z, y, x).
    edge : {"continue", "background"}
        Whether the space continues beyond the image border.
    skeleton : (Z, Y, X) array_like of bool, optional
        A precomputed skeleton of ``mask`` (e.g. from :func:`microarch.measure.surface_skeleton`).
    region : (Z, Y, X) array_like of bool, optional
        Where the structure lives (e.g. the periosteal envelope): outside it counts as
        mid-axis too, so no ball reaches out of it and nothing outside is computed.
    where : (Z, Y, X) array_like of bool, optional
        The voxels whose spacing is wanted (default all); others come out 0.

    Returns
    -------
    spacing_map : ndarray of float32
        Diameter of the largest ball between skeleton voxels covering each voxel (mm); 0 on
        the skeleton. NaN everywhere if the bone has no skeleton voxel (empty bone).
    skeleton : ndarray of bool
        The skeleton used.
    """
    mask = as_mask(mask)
    spacing = as_spacing(spacing)
    check_choice(edge, EDGES, name="edge")
    if skeleton is None:
        skeleton = _skeleton(mask, spacing, edge)
    else:
        skeleton = as_roi(skeleton, mask.shape, name="skeleton")
    if not skeleton.any():
        return np.full(mask.shape, np.nan, np.float32), skeleton
    sites = skeleton
    if region is not None:
        sites = skeleton | ~as_roi(region, mask.shape, name="region")
    targets = ~sites if where is None else as_roi(where, mask.shape, name="where") & ~sites
    radius2 = _ball_radius_sq(None, spacing, convention="continuous", edge=edge,
                              sites=sites, targets=targets)
    spacing_map = np.sqrt(radius2, out=radius2)
    spacing_map *= 2.0
    return spacing_map, skeleton


def _skeleton(mask, spacing, edge):
    """Surface skeleton; with ``edge="continue"`` the structure is first continued beyond
    the image border (edge voxels repeated) so that mid-planes reach the border instead of
    retracting from it as from a free edge."""
    from microarch._kernels.thickness import voxel_distance_sq
    from microarch.measure._skeleton import surface_skeleton

    if edge != "continue" or not mask.any():
        return surface_skeleton(mask)
    # Thinning retracts a mid-surface by about the structure's thickness from a free edge;
    # pad deeper than that so the retraction happens outside the image.
    radius = np.sqrt(voxel_distance_sq(~mask, (1.0, 1.0, 1.0), (True, True, True)).max())
    pad = 2 * int(np.ceil(radius)) + 3
    padded = np.pad(mask, pad, mode="edge")
    core = (slice(pad, -pad),) * 3
    return np.ascontiguousarray(surface_skeleton(padded)[core])


def trabecular_number(mask, *, spacing, roi=None, edge="continue", return_sd=False):
    """Direct trabecular number Tb.N (1/mm): inverse mean distance between mid-axes.

    Parameters
    ----------
    mask : (Z, Y, X) array_like of bool
        Bone mask.
    spacing : float or sequence of 3 floats
        Voxel size in mm (z, y, x).
    roi : (Z, Y, X) array_like of bool, optional
        Volume of interest; the skeleton and the spacing map are computed on the whole
        image, the mean is taken over the ROI's non-skeleton voxels.
    edge : {"continue", "background"}
        Whether the structure continues beyond the image border.
    return_sd : bool
        Also return Tb.1/N.SD (mm), the SD of the mid-axis spacing.

    Returns
    -------
    float or (float, float)
        Tb.N in 1/mm (and Tb.1/N.SD in mm); NaN with a warning when the bone or the ROI
        is empty.

    References
    ----------
    Hildebrand T et al. (1999) J Bone Miner Res 14:1167-1174. doi:10.1359/jbmr.1999.14.7.1167

    Examples
    --------
    Plates every 8 voxels of 0.1 mm: Tb.N = 1 / 0.8 mm = 1.25 /mm.

    >>> import numpy as np
    >>> z = np.arange(48) % 8
    >>> plates = np.broadcast_to(((z >= 3) & (z < 5))[:, None, None], (48, 12, 12))
    >>> round(trabecular_number(plates, spacing=0.1, edge="continue",
    ...                         roi=np.pad(np.ones((32, 12, 12), bool), ((8, 8), (0, 0), (0, 0)))), 4)
    1.25
    """
    mask = as_mask(mask)
    roi = as_roi(roi, mask.shape)
    nan = (math.nan, math.nan) if return_sd else math.nan
    if not mask.any():
        degenerate("Tb.N undefined: the bone mask is empty")
        return nan
    if roi is not None and not roi.any():
        degenerate("Tb.N undefined: the ROI is empty")
        return nan
    spacing_map, skeleton = mid_axis_spacing(mask, spacing=spacing, edge=edge)
    where = ~skeleton if roi is None else roi & ~skeleton
    stats = thickness_statistics(spacing_map, where=where)
    if not stats["n"] or not np.isfinite(stats["mean"]) or stats["mean"] <= 0:
        degenerate("Tb.N undefined: no space between mid-axes inside the ROI")
        return nan
    number = 1.0 / stats["mean"]
    return (number, stats["sd"]) if return_sd else number
