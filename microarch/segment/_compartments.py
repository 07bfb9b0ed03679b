"""Periosteal contour and cortical / trabecular compartments of HR-pQCT scans.

The automatic contouring follows the dual-threshold idea of Buie et al. (2007): the dense
(cortical-threshold) bone gives the periosteal envelope after a slice-wise dilation, hole
filling and erosion; the marrow cavity inside it (without the intracortical pores that
are not joined to it), closed over the trabeculae that touch the cortex, gives the
endosteal envelope. All radii are in mm, so one parameter set serves 61 µm (XtremeCT II)
and 82 µm (XtremeCT I) scans. The work is done in the bone's bounding box.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from microarch._shared.validation import DegenerateInputWarning, as_roi, as_spacing
from microarch.segment._errors import SegmentationError, as_image
from microarch.segment._morphology import (
    bounding_box,
    close_2d,
    dilate_2d,
    erode_2d,
    fill_holes_2d,
    largest_components,
    open_2d,
)
from microarch.segment._threshold import resolve_preset, smooth, threshold_smoothed

#: Default contouring radii (mm); see :func:`compartments`.
CLOSE_RADIUS = 0.6
PORE_RADIUS = 0.0
ENDOSTEAL_CLOSE_RADIUS = 0.3
# marrow regions at least this fraction of the largest one belong to the cavity
_CAVITY_FRACTION = 0.1


@dataclass(frozen=True, eq=False)
class Compartments:
    """Masks of one scan, all bool arrays on the scan's grid.

    Attributes
    ----------
    periosteal : ndarray of bool
        Everything inside the periosteal (outer bone) surface: the total compartment.
    cortical : ndarray of bool
        The cortical compartment, pores included: periosteal minus trabecular.
    trabecular : ndarray of bool
        The trabecular compartment, inside the endosteal surface.
    bone : ndarray of bool
        Segmented bone inside the periosteal mask (trabecular threshold in the
        trabecular, cortical threshold in the cortical compartment).
    parameters : dict
        The parameters used, for provenance.

    The object also reads like a mapping: ``comp["cortical"]``, ``dict(comp)``.
    """

    periosteal: np.ndarray
    cortical: np.ndarray
    trabecular: np.ndarray
    bone: np.ndarray
    parameters: dict = field(default_factory=dict)

    _MASKS = ("periosteal", "cortical", "trabecular", "bone")

    def keys(self):
        return self._MASKS

    def __getitem__(self, key):
        if key not in self._MASKS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._MASKS)

    def __len__(self):
        return len(self._MASKS)


def _check_radius(value, name):
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite length >= 0 (mm); got {value}")
    return value


def _check_count(value, name):
    if int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a whole number >= 1; got {value}")
    return int(value)


def _periosteal_from_smoothed(smoothed, spacing, *, threshold, upper, close_radius,
                              n_components):
    dense = (smoothed >= threshold) & (smoothed <= upper)
    box = bounding_box(dense)
    if box is None:
        raise SegmentationError(
            f"no bone found: no voxel of the smoothed image lies in [{threshold:g}, "
            f"{upper:g}] mg HA/cm³ (image range {float(smoothed.min()):.4g} to "
            f"{float(smoothed.max()):.4g}). Is the image calibrated in mg HA/cm³?"
        )
    # work in the bone's bounding box, padded by the closing radius on every side
    dense = largest_components(np.ascontiguousarray(dense[box]), n_components, 26)
    in_plane = spacing[1:]
    width = _pad_width(close_radius, in_plane) if close_radius > 0 else 1
    padded = np.pad(dense, ((0, 0), (width, width), (width, width)))
    # dilate, fill the holes (the marrow cavity, now closed over cortical gaps), erode
    # back: the hole filling happens before the erosion could reopen the gaps
    filled = fill_holes_2d(dilate_2d(padded, close_radius, in_plane))
    inner = erode_2d(filled, close_radius, in_plane)[:, width:-width, width:-width]
    periosteal = np.zeros(smoothed.shape, bool)
    periosteal[box] = inner | dense
    return periosteal


def _pad_width(radius, spacing_yx):
    return math.ceil(radius / min(spacing_yx)) + 1


def periosteal_contour(image, *, spacing, threshold=None, sigma=None, support=None,
                       kernel=None, upper_threshold=None, close_radius=CLOSE_RADIUS,
                       n_components=1, preset="xct2"):
    """Automatic periosteal (outer bone surface) mask of an HR-pQCT scan.

    Steps, in the spirit of Buie et al. (2007): (1) Gaussian smoothing
    (:func:`gaussian_filter`); (2) threshold at the cortical level (450 mg HA/cm³);
    (3) keep the ``n_components`` largest 26-connected components (the radius, not the
    ulna); (4) in every slice, dilate by a disk of ``close_radius`` mm (bridging gaps in
    a thin or porous cortex), fill the holes (the marrow cavity) and erode by the same
    disk. The dense bone itself is always inside the result.

    Parameters
    ----------
    image : (Z, Y, X) array_like
        Grey-scale scan in mg HA/cm³.
    spacing : float or sequence of 3 floats
        Voxel size in mm (z, y, x); radii are converted with it.
    threshold : float, optional
        Dense-bone threshold, mg HA/cm³ (default: the preset's cortical threshold, 450).
    sigma, support, kernel, upper_threshold : optional
        Gaussian filter and upper threshold; default from ``preset``.
    close_radius : float
        Radius of the in-plane closing disk, mm (0.6). Gaps in the cortex narrower than
        twice this radius are bridged; concavities of the surface narrower than that are
        filled too.
    n_components : int
        Number of bones to keep (1 for radius or tibia, 2 for a joint).
    preset : {"xct2", "xct1"}
        Source of the defaults, see :data:`PRESETS`.

    Returns
    -------
    (Z, Y, X) ndarray of bool
        The periosteal mask.

    Raises
    ------
    SegmentationError
        Empty image, NaN or infinite voxels, or no voxel above the threshold.

    References
    ----------
    Buie HR, Campbell GM, Klinck RJ, MacNeil JA, Boyd SK (2007) Automatic segmentation of
    cortical and trabecular compartments based on a dual threshold technique for in vivo
    micro-CT bone analysis. Bone 41:505-515. doi:10.1016/j.bone.2007.07.007

    Examples
    --------
    A hollow square tube (cortex 2 voxels) is filled:

    >>> import numpy as np
    >>> image = np.full((3, 12, 12), 20.0)
    >>> image[:, 2:10, 2:10] = 1000.0
    >>> image[:, 4:8, 4:8] = 20.0
    >>> mask = periosteal_contour(image, spacing=0.082)
    >>> int(mask[1].sum()), bool(mask[1, 5, 5])
    (64, True)
    """
    image = as_image(image)
    spacing = as_spacing(spacing)
    params = resolve_preset(preset, sigma=sigma, support=support, kernel=kernel,
                            upper_threshold=upper_threshold)
    level = params["cortical_threshold"] if threshold is None else float(threshold)
    close_radius = _check_radius(close_radius, "close_radius")
    n_components = _check_count(n_components, "n_components")
    smoothed = smooth(image, params)
    return _periosteal_from_smoothed(smoothed, spacing, threshold=float(level),
                                     upper=float(params["upper_threshold"]),
                                     close_radius=close_radius, n_components=n_components)


def _endosteal(smoothed, periosteal, spacing, *, threshold, upper, pore_radius,
               close_radius, n_components, min_cortical_thickness):
    """Trabecular compartment: the cleaned, closed marrow cavity inside ``periosteal``."""
    trabecular = np.zeros(periosteal.shape, bool)
    box = bounding_box(periosteal, margin_yx=1)
    if box is None:
        return trabecular
    in_plane = spacing[1:]
    inside = np.ascontiguousarray(periosteal[box])
    values = smoothed[box]
    marrow = inside & ~((values >= threshold) & (values <= upper))
    # cut intracortical pores and the narrow channels that join them to the cavity
    marrow = open_2d(marrow, pore_radius, in_plane)
    # the cavity, also when a dense transverse layer splits it in two; pores are far
    # smaller than a tenth of it
    marrow = largest_components(marrow, n_components, 6, min_fraction=_CAVITY_FRACTION)
    if not marrow.any():
        return trabecular
    # absorb trabeculae that touch the endocortex; the cortex itself stays because a
    # disk fits in cortex plus surrounding soft tissue
    marrow = close_2d(marrow, close_radius, in_plane) & inside
    marrow = fill_holes_2d(marrow) & inside
    if min_cortical_thickness > 0:
        marrow &= erode_2d(inside, min_cortical_thickness, in_plane)
    trabecular[box] = marrow
    return trabecular


def compartments(image, *, spacing, periosteal=None, trabecular=None, cortical=None,
                 bone=None, preset="xct2", trabecular_threshold=None,
                 cortical_threshold=None, upper_threshold=None, sigma=None, support=None,
                 kernel=None, method=None, relative_threshold=None, min_size=None,
                 close_radius=CLOSE_RADIUS, pore_radius=PORE_RADIUS,
                 endosteal_close_radius=ENDOSTEAL_CLOSE_RADIUS, min_cortical_thickness=0.0,
                 n_components=1):
    """Periosteal, cortical and trabecular compartments and the bone mask of a scan.

    1. Periosteal mask: :func:`periosteal_contour` (unless ``periosteal`` is given).
    2. Endosteal surface (after Buie et al. 2007): inside the periosteal mask, the
       voxels of the smoothed image below the cortical threshold (450 mg HA/cm³) are
       marrow. The ``n_components`` largest 6-connected marrow regions (and any other
       holding a tenth of the largest one's volume) are the marrow cavity, so
       intracortical pores (not joined to it) stay in the cortex; an
       optional in-plane opening by ``pore_radius`` mm first cuts pores joined to the
       cavity by narrow channels. An in-plane closing by ``endosteal_close_radius`` mm
       absorbs the trabeculae that touch the cortex, and holes (dense trabeculae) are
       filled, slice by slice. That is the trabecular compartment.
    3. Cortical compartment = periosteal minus trabecular (it contains the pores).
    4. Bone: :func:`threshold_bone` with the trabecular threshold (320) in the
       trabecular and the cortical threshold (450) in the cortical compartment.

    The cortical threshold lies below the 50 % level of a cortex-marrow edge, so the
    compartment boundaries sit a fraction of a voxel into the marrow and soft tissue
    (about 0.3 voxel each for 1100 / 25 mg HA/cm³ and the standard Gaussian); that and
    the small fillets left where trabeculae join the endocortex make Ct.Th about 0.6-1
    voxel thicker than the true cortex on rendered phantoms, as with the standard
    protocol. Contouring fails in slices where the dense cortex has gaps wider than
    twice ``close_radius`` (very thin, porous shells): raise ``close_radius``, lower the
    contour threshold, or pass a corrected ``periosteal`` mask.

    Any mask you pass replaces the matching automatic step: a hand-corrected
    ``periosteal`` contour is used as is; with only ``trabecular`` (or only
    ``cortical``) given the other is periosteal minus it; with both and no
    ``periosteal``, the periosteal mask is their union. Passed masks are not modified.

    Parameters
    ----------
    image : (Z, Y, X) array_like
        Grey-scale scan in mg HA/cm³.
    spacing : float or sequence of 3 floats
        Voxel size in mm (z, y, x).
    periosteal, trabecular, cortical, bone : (Z, Y, X) array_like of bool, optional
        User-supplied masks (e.g. corrected contours read from an image file).
    preset : {"xct2", "xct1"}
        Default parameters, see :data:`PRESETS` and :func:`threshold_bone`.
    trabecular_threshold, cortical_threshold, upper_threshold, sigma, support, kernel, \
method, relative_threshold, min_size : optional
        Override the preset, as in :func:`threshold_bone`. The contouring always uses
        the Gaussian filter and the cortical threshold.
    close_radius : float
        Periosteal closing radius, mm (0.6).
    pore_radius : float
        Radius of an in-plane opening of the marrow that cuts pores joined to the cavity
        by channels narrower than twice the radius, mm (0: off; the pores not joined
        to the cavity are always left to the cortex). An opening also cuts thin marrow
        gaps between the cortex and trabeculae, which thickens the cortex.
    endosteal_close_radius : float
        Closing radius of the marrow cavity, mm (0.3): trabeculae up to about twice as
        thick that touch the cortex are assigned to the trabecular compartment.
    min_cortical_thickness : float
        If > 0, the trabecular compartment keeps at least this distance (mm) from the
        periosteal surface in every slice.
    n_components : int
        Number of bones (1 for radius or tibia).

    Returns
    -------
    Compartments
        ``periosteal``, ``cortical``, ``trabecular`` and ``bone`` bool masks on the
        image grid, plus ``parameters``.

    Raises
    ------
    SegmentationError
        Empty image, NaN or infinite voxels, no bone found, an empty user mask.

    References
    ----------
    Buie HR et al. (2007) Bone 41:505-515. doi:10.1016/j.bone.2007.07.007
    Burghardt AJ, Buie HR, Laib A, Majumdar S, Boyd SK (2010) Reproducibility of direct
    quantitative measures of cortical bone microarchitecture of the distal radius and
    tibia by HR-pQCT. Bone 47:519-528. doi:10.1016/j.bone.2010.05.034

    Examples
    --------
    A tube with a 3-voxel cortex (160 voxels per slice) around 156 marrow voxels:

    >>> import numpy as np
    >>> image = np.full((4, 24, 24), 20.0)
    >>> yy, xx = np.mgrid[:24, :24]
    >>> r = np.hypot(yy - 11.5, xx - 11.5)
    >>> image[:, r < 10] = 1000.0
    >>> image[:, r < 7] = 20.0
    >>> comp = compartments(image, spacing=0.082)
    >>> int(comp.cortical[2].sum()), int(comp.trabecular[2].sum())
    (160, 156)
    """
    image = as_image(image)
    spacing = as_spacing(spacing)
    params = resolve_preset(
        preset, trabecular_threshold=trabecular_threshold,
        cortical_threshold=cortical_threshold, upper_threshold=upper_threshold, sigma=sigma,
        support=support, kernel=kernel, method=method, relative_threshold=relative_threshold,
        min_size=min_size,
    )
    close_radius = _check_radius(close_radius, "close_radius")
    pore_radius = _check_radius(pore_radius, "pore_radius")
    endosteal_close_radius = _check_radius(endosteal_close_radius, "endosteal_close_radius")
    min_cortical_thickness = _check_radius(min_cortical_thickness, "min_cortical_thickness")
    n_components = _check_count(n_components, "n_components")
    user = {}
    for name, mask in (("periosteal", periosteal), ("trabecular", trabecular),
                       ("cortical", cortical), ("bone", bone)):
        mask = as_roi(mask, image.shape, name=name)
        if mask is not None and name != "bone" and not mask.any():
            raise SegmentationError(f"the {name} mask you passed is empty")
        user[name] = mask
    cort_level = params["cortical_threshold"]
    if cort_level is None:
        raise ValueError("cortical_threshold is required for contouring")
    cort_level = float(cort_level)
    upper = float(params["upper_threshold"])

    smoothed = smooth(image, params)
    periosteal = user["periosteal"]
    if periosteal is None:
        if user["trabecular"] is not None and user["cortical"] is not None:
            periosteal = user["trabecular"] | user["cortical"]
        else:
            periosteal = _periosteal_from_smoothed(
                smoothed, spacing, threshold=cort_level, upper=upper,
                close_radius=close_radius, n_components=n_components)
    trabecular, cortical = user["trabecular"], user["cortical"]
    if trabecular is None and cortical is None:
        trabecular = _endosteal(
            smoothed, periosteal, spacing, threshold=cort_level, upper=upper,
            pore_radius=pore_radius, close_radius=endosteal_close_radius,
            n_components=n_components, min_cortical_thickness=min_cortical_thickness)
        if not trabecular.any():
            warnings.warn("no marrow cavity found inside the periosteal mask: the "
                          "trabecular compartment is empty", DegenerateInputWarning,
                          stacklevel=2)
    if trabecular is None:
        trabecular = periosteal & ~cortical
    if cortical is None:
        cortical = periosteal & ~trabecular
    if user["bone"] is not None:
        bone_mask = user["bone"]
    else:
        bone_mask = threshold_smoothed(smoothed, params, trabecular=trabecular,
                                       cortical=cortical, image=image, spacing=spacing)
    used = dict(params, close_radius=close_radius, pore_radius=pore_radius,
                endosteal_close_radius=endosteal_close_radius,
                min_cortical_thickness=min_cortical_thickness, n_components=n_components,
                preset=preset, user_masks=tuple(k for k, v in user.items() if v is not None))
    return Compartments(
        periosteal=np.ascontiguousarray(periosteal, dtype=bool),
        cortical=np.ascontiguousarray(cortical, dtype=bool),
        trabecular=np.ascontiguousarray(trabecular, dtype=bool),
        bone=np.ascontiguousarray(bone_mask, dtype=bool),
        parameters=used,
    )
