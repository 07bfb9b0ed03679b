"""Plate/rod decomposition of trabecular bone (Individual Trabecula Segmentation, ITS).

Pipeline (after Liu et al. 2008, who build on Saha's digital topological analysis):

1. **Skeleton.** Topology-preserving thinning to one-voxel-thin mid-surfaces of plates
   and mid-lines of rods (:func:`microarch.measure._skeleton.surface_skeleton`).
2. **Classification** of each skeleton voxel from its 3x3x3 neighbourhood in the
   skeleton (:func:`classify_skeleton`): skeleton neighbours that loop around the voxel
   (one tunnel) put it inside a surface, more tunnels where sheets meet; otherwise two
   separate neighbour groups make a curve interior and more make a branch. One-sided
   voxels are surface edges next to a surface, else curve ends (one neighbour), curve
   interiors (two) or branches (three or more). Curve voxels touching a surface are
   surface-curve junctions.
3. **Splitting.** Junction voxels and the skeleton voxels next to them
   (``junction_reach`` = 1 step) form junction sites; the rest of the skeleton falls into
   26-connected elements: plates (surface voxels) and rods (curve voxels). Elements too
   small to be trabeculae are merged (see :func:`_merge_elements`): a rod shorter than
   ``max(5 voxels, its diameter)`` on a plate is a bump of that plate; such a rod with a
   free end on rods is a spur of the largest one; a plate patch smaller than twice its
   squared diameter joins the rod (or plate) it touches; two rods meeting alone at a site
   are one rod. A junction is a site touching two or more elements: plate-plate (P-P) if
   all are plates, rod-rod (R-R) if all are rods, plate-rod (P-R) otherwise. Site voxels
   then join the nearest element of their own kind (surface voxels the plates, curve
   voxels the rods; breadth-first through the skeleton).
4. **Reconstruction.** Each skeleton voxel outside the junction sites carries the
   largest ball centred on it that holds no marrow voxel centre. Each bone voxel takes
   the element of the largest ball whose interior contains its centre (equal radii: the
   nearest centre, then the first in flat-index order). Bone voxels no ball reaches -- near
   junctions, at the edges of plates thicker on one side -- are then labelled layer by
   layer from their already labelled 26-neighbours (the element with the most face,
   then edge, then corner contacts; ties to the smaller element id). Every bone voxel
   gets exactly one element, so pBV + rBV = BV exactly.

Measures
--------
* pBV/TV, rBV/TV: plate (rod) voxels inside the ROI over the ROI voxels. P/R = pBV/rBV.
* pTb.N, rTb.N (1/mm): as in ITS (Liu et al. 2008, 2010), the cube root of the number
  of plates (rods) per mm³, so that they scale like Tb.N; the plain count densities
  (1/mm³) are returned as ``"pTb.N.count"`` and ``"rTb.N.count"``.
* pTb.Th, rTb.Th (mm): mean local thickness (:func:`local_thickness`) of plate (rod)
  voxels inside the ROI.
* pTb.S (mm²): mean area of a plate's mid-surface. A one-voxel-thin digital surface has
  one voxel per column along the axis k that maximises ``h_k |n_k|`` (n its unit normal
  in mm, from the spread of the plate's skeleton voxels within 2 voxels), so each voxel
  stands for ``h_z h_y h_x / max_k(h_k |n_k|)`` of surface.
* rTb.l (mm): mean rod length, the longest shortest path through the rod's skeleton
  voxels (physical steps) plus one voxel's extent along the rod (voxels are cubes).
* P-P, P-R, R-R Junc.D (1/mm³): junctions per ROI volume.

Conventions
-----------
* Orientation: the thinning peels the six face directions in a fixed order, so on its
  own it is not invariant to turning the volume. The decomposition is therefore run in
  a canonical orientation: of the axis permutations and flips that map the voxel grid
  onto itself (48 for cubic voxels, fewer for anisotropic ones), the one giving the
  lexicographically smallest mask is used, and the labels are turned back.
  Turning or mirroring the input by any of these maps leaves every output unchanged
  (the labels turn with it); other rotations resample the object and are not covered.
* Bone is 26-connected, marrow 6-connected; beyond the image border is marrow, so plates
  and rods cut by the border end there (their skeletons recede from it).
* Thinning works on the voxel grid; voxel size enters the ball radii, thickness, rod
  lengths and plate areas, which are all physical (anisotropic voxels are honoured).
* ROI: the structure is decomposed where it is, on the whole mask; statistics are taken
  inside the ROI. An element counts with the fraction of its bone voxels inside the ROI
  and a junction with the fraction of its site voxels inside, so counts in adjacent ROIs
  add up. Volumes and thickness use the voxels inside; the mean plate area and rod
  length weight each element (measured whole) by its fraction inside.

References
----------
Liu XS, Sajda P, Saha PK, Wehrli FW, Bevill G, Keaveny TM, Guo XE (2008) Complete
volumetric decomposition of individual trabecular plates and rods and its morphological
correlations with anisotropic elastic moduli in human trabecular bone. J Bone Miner Res
23:223-235. doi:10.1359/jbmr.071009
Liu XS, Cohen A, Shane E, et al. (2010) Individual trabeculae segmentation (ITS)-based
morphological analysis of high-resolution peripheral quantitative computed tomography
images detects abnormal trabecular plate and rod microarchitecture in premenopausal
women with idiopathic osteoporosis. J Bone Miner Res 25:1496-1505. doi:10.1002/jbmr.50
Saha PK, Chaudhuri BB (1994) Detection of 3-D simple points for topology preserving
transformations with application to thinning. IEEE Trans Pattern Anal Mach Intell
16:1028-1032. doi:10.1109/34.329007
"""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np

from microarch._shared.progress import stage
from microarch._shared.validation import (
    as_mask,
    as_roi,
    as_spacing,
    degenerate,
    non_negative_int,
)
from microarch.measure._skeleton import _thin

#: Skeleton voxel classes written by :func:`classify_skeleton`.
SKELETON_CLASSES = {
    0: "background",
    1: "isolated",
    2: "curve end",
    3: "curve interior",
    4: "curve-curve junction",
    5: "surface edge",
    6: "surface interior",
    7: "surface-surface junction",
    8: "surface-curve junction",
}

MARROW, PLATE, ROD = 0, 1, 2

_log = logging.getLogger(__name__)

DEFAULT_JUNCTION_REACH = 1
DEFAULT_MIN_ROD_VOXELS = 5
DEFAULT_MIN_PLATE_ASPECT = 2.0
_SURFACE_CLASSES = (5, 6, 7)

_KEYS = ("pBV/TV", "rBV/TV", "P/R", "pTb.N", "rTb.N", "pTb.N.count", "rTb.N.count",
         "pTb.Th", "rTb.Th", "pTb.S", "rTb.l", "P-P Junc.D", "P-R Junc.D", "R-R Junc.D",
         "TV", "n.plates", "n.rods")


def _grid_symmetries(spacing):
    """(axis order, flips) of every map of the voxel grid onto itself: the axis
    permutations that keep the voxel size, each with every combination of flips."""
    orders = [order for order in itertools.permutations(range(3))
              if all(spacing[axis] == spacing[i] for i, axis in enumerate(order))]
    return [(order, flips) for order in orders
            for flips in itertools.product((False, True), repeat=3)]


def _turn(volume, symmetry):
    order, flips = symmetry
    turned = np.transpose(volume, order)
    return turned[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]


def _turn_back(volume, symmetry):
    order, flips = symmetry
    volume = volume[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    return np.ascontiguousarray(np.transpose(volume, np.argsort(order)))


def _canonical_symmetry(mask, spacing):
    """The grid symmetry that turns ``mask`` into the lexicographically smallest array of
    its orbit: every turned or mirrored copy of a mask maps to the same canonical volume.
    The ROI plays no part, so that the decomposition, and counts over adjacent ROIs,
    do not depend on it."""
    best, best_view = None, None
    for symmetry in _grid_symmetries(spacing):
        view = _turn(mask, symmetry)
        if best_view is None or _precedes(view, best_view):
            best, best_view = symmetry, view
    return best


def _turn_back_points(points, symmetry, turned_shape):
    """Voxel indices (N, 3) of the turned volume -> indices in the original volume."""
    order, flips = symmetry
    turned = np.array(points, np.int64)
    for axis, flipped in enumerate(flips):
        if flipped:
            turned[:, axis] = turned_shape[axis] - 1 - turned[:, axis]
    original = np.empty_like(turned)
    original[:, list(order)] = turned
    return original


def _precedes(a, b):
    """Whether bool array ``a`` sorts before ``b``: by shape, then plane by plane (packed
    bits), reading only as many planes as it takes to tell them apart."""
    if a.shape != b.shape:
        return a.shape < b.shape
    for plane_a, plane_b in zip(a, b):
        bits_a, bits_b = np.packbits(plane_a).tobytes(), np.packbits(plane_b).tobytes()
        if bits_a != bits_b:
            return bits_a < bits_b
    return False


def _padded(volume, dtype):
    out = np.zeros(tuple(n + 2 for n in volume.shape), dtype)
    out[1:-1, 1:-1, 1:-1] = volume
    return out


def _strides(shape):
    return np.array([shape[1] * shape[2], shape[2], 1], np.int64)


def classify_skeleton(skeleton):
    """Digital topological class of every voxel of a one-voxel-thin skeleton.

    Parameters
    ----------
    skeleton : (Z, Y, X) array_like of bool
        A thin skeleton, e.g. from :func:`surface_skeleton`.

    Returns
    -------
    (Z, Y, X) ndarray of uint8
        0 background, 1 isolated, 2 curve end, 3 curve interior, 4 curve-curve junction,
        5 surface edge, 6 surface interior, 7 surface-surface junction, 8 surface-curve
        junction (see :data:`SKELETON_CLASSES`).

    Notes
    -----
    From the skeleton voxels among the 26 neighbours of a voxel: if they loop around it
    (their complement in the 3x3x3 shell falls into two 6-connected parts: one tunnel)
    the voxel is inside a surface; more tunnels: sheets meet. Otherwise two 26-components
    make a curve interior, three or more a curve branch. Voxels with one side only are
    surface edges when they touch a surface, else curve ends; curve voxels touching a
    surface are surface-curve junctions.

    References
    ----------
    Saha PK, Chaudhuri BB (1994) IEEE Trans Pattern Anal Mach Intell 16:1028-1032.
    doi:10.1109/34.329007

    Examples
    --------
    A square sheet: interior voxels are surface interior, its rim is surface edge:

    >>> import numpy as np
    >>> sheet = np.zeros((3, 6, 6), bool)
    >>> sheet[1, 1:5, 1:5] = True
    >>> classify_skeleton(sheet)[1, 1:5, 1:5]
    array([[5, 5, 5, 5],
           [5, 6, 6, 5],
           [5, 6, 6, 5],
           [5, 5, 5, 5]], dtype=uint8)
    """
    from microarch._kernels.plate_rod import classify

    skeleton = as_mask(skeleton, name="skeleton")
    skel = _padded(skeleton, np.uint8)
    classes = np.zeros(skel.shape, np.uint8)
    points = np.flatnonzero(skel)
    classify(skel.reshape(-1), points, _strides(skel.shape), classes.reshape(-1))
    return np.ascontiguousarray(classes[1:-1, 1:-1, 1:-1])


class _Decomposition:
    """Elements, their kinds and junctions of one mask (padded volumes, flat indices).

    labels: element of every bone voxel (int32, padded; 0 marrow); bone: padded mask;
    points: flat indices of the skeleton voxels; is_plate/alive: per element id;
    pairs: unique (site, element) contacts; site_points/site_ids: the junction sites'
    voxels; point_classes: skeleton class of each point.
    """


def _decompose(mask, spacing, *, junction_reach=DEFAULT_JUNCTION_REACH,
               min_rod_voxels=DEFAULT_MIN_ROD_VOXELS, min_plate_aspect=DEFAULT_MIN_PLATE_ASPECT):
    """Skeleton, split into elements, and the bone reconstructed from them.

    ``mask`` is a validated bool array, ``spacing`` a triple of floats.
    """
    from microarch._kernels import plate_rod as kernels
    from microarch._kernels.thickness import voxel_distance_sq

    with stage(_log, "plate/rod: thinning"):
        skeleton = _thin(mask)
    skel = _padded(skeleton, np.uint8)
    del skeleton
    pshape = skel.shape
    strides = _strides(pshape)
    flat_skel = skel.reshape(-1)
    points = np.flatnonzero(flat_skel)

    # ball radius of every skeleton voxel: distance to the nearest marrow voxel centre
    bone = _padded(mask, bool)
    distance2 = voxel_distance_sq(~bone, spacing, (False, False, False))
    radius2 = distance2.reshape(-1)[points].astype(np.float64)
    del distance2

    classes = np.zeros(pshape, np.uint8)
    flat_classes = classes.reshape(-1)
    kernels.classify(flat_skel, points, strides, flat_classes)
    del skel, flat_skel
    labels = np.zeros(pshape, np.int32)
    flat_labels = labels.reshape(-1)
    n_elements, n_sites, is_plate = kernels.label_elements(
        flat_classes, points, strides, junction_reach, flat_labels)

    pairs = kernels.site_contacts(flat_labels, points, strides)
    pairs = np.unique(pairs, axis=0) if pairs.size else pairs.reshape(0, 2)
    point_labels = flat_labels[points]
    on_element = point_labels > 0
    sizes = np.bincount(point_labels[on_element], minlength=n_elements + 1)
    # mean ball diameter of each element, in voxel units
    voxel = float(np.prod(spacing)) ** (1 / 3)
    diameter = 2 * np.sqrt(radius2[on_element]) / voxel
    diameter = np.bincount(point_labels[on_element], weights=diameter,
                           minlength=n_elements + 1) / np.maximum(sizes, 1)
    point_classes = flat_classes[points]
    has_end = np.bincount(point_labels[on_element],
                          weights=point_classes[on_element] == 2, minlength=n_elements + 1) > 0
    target = _merge_elements(pairs, n_sites, is_plate, sizes, diameter, has_end,
                             min_rod_voxels, min_plate_aspect)
    if (target != np.arange(n_elements + 1)).any():
        point_labels[on_element] = target[point_labels[on_element]]
        flat_labels[points] = point_labels
        pairs[:, 1] = target[pairs[:, 1]]
        pairs = np.unique(pairs, axis=0)

    # junction sites; then their voxels join the nearest element of their kind
    site_points = points[~on_element]
    site_ids = -point_labels[~on_element]
    kernels.absorb_sites(flat_labels, points, strides, flat_classes, is_plate)
    point_labels = flat_labels[points]
    orphans = point_labels < 0
    if orphans.any():  # sites touching no element become elements of their own
        orphan_sites, new_ids = np.unique(-point_labels[orphans], return_inverse=True)
        point_labels[orphans] = n_elements + 1 + new_ids
        flat_labels[points] = point_labels
        surface = np.isin(flat_classes[points[orphans]], _SURFACE_CLASSES)
        votes = np.bincount(new_ids, weights=surface, minlength=orphan_sites.size)
        totals = np.bincount(new_ids, minlength=orphan_sites.size)
        is_plate = np.concatenate([is_plate, votes * 2 > totals])
        n_elements += orphan_sites.size
    point_classes = flat_classes[points]
    del classes, flat_classes
    is_plate = is_plate.copy()
    is_plate[0] = False
    alive = np.zeros(n_elements + 1, bool)
    alive[point_labels] = True

    # element geometry on the skeleton (before the labels spread into the bone)
    is_rod = alive & ~is_plate
    plates = alive & is_plate
    spacing_array = np.array(spacing, np.float64)
    area = kernels.plate_areas(flat_labels, points, strides, plates, n_elements,
                               spacing_array, 2)
    length = kernels.rod_lengths(flat_labels, points, strides, is_rod, n_elements,
                                 spacing_array)

    # reconstruction: largest covering ball, then nearest labelled voxel
    # junction voxels carry their element but paint no ball: where elements meet, the
    # volume goes to the element whose own skeleton is nearest
    order = np.argsort(-radius2, kind="stable")
    order = order[~np.isin(points[order], site_points)]
    offsets, offset_d2 = _ball_offsets(spacing, float(radius2.max()) if radius2.size else 0.0)
    kernels.paint_balls(flat_labels, bone.reshape(-1), points[order], radius2[order],
                        offsets, offset_d2, np.array(pshape, np.int64),
                        np.array(spacing, np.float64) ** 2)
    missing = kernels.grow_labels(flat_labels, bone.reshape(-1), strides)
    if missing:  # every bone component holds a skeleton voxel (topology is kept)
        raise RuntimeError(f"{missing} bone voxels were not reached by any skeleton element")

    result = _Decomposition()
    result.labels = labels
    result.bone = bone
    result.points = points
    result.point_classes = point_classes
    result.is_plate = is_plate
    result.alive = alive
    result.n_elements = n_elements
    result.pairs = pairs
    result.site_points = site_points
    result.site_ids = site_ids
    result.n_sites = n_sites
    result.strides = strides
    result.area = area
    result.length = length
    return result


def _merge_elements(pairs, n_sites, is_plate, sizes, diameter, has_end, min_rod_voxels,
                    min_plate_aspect):
    """Element id -> id of the element it merges into (itself if kept).

    Rules, in this order (diameters are mean ball diameters in voxels):

    1. A plate whose skeleton has fewer than ``min_plate_aspect * diameter**2`` voxels (a
       patch hardly wider than thick, as found where thick rods meet) joins the largest
       rod it touches, else the largest plate.
    2. A rod with fewer than ``max(min_rod_voxels, diameter)`` skeleton voxels is a bump
       when it touches a plate (it joins the largest plate it touches), and a spur when
       it has a free end and touches rods only (it joins the largest rod it touches).
    3. A site where exactly two rods (and nothing else) meet is no junction: a curve
       junction needs three branches, the third was a spur. The two rods become one.
       (Two plates may meet at a true junction: a plate continues around the line where
       another one abuts it.)
    """
    n_elements = sizes.size - 1
    parent = np.arange(n_elements + 1)
    if pairs.size == 0:
        return parent
    sizes = sizes.astype(np.int64).copy()

    def find(e):
        while parent[e] != e:
            parent[e] = parent[parent[e]]
            e = parent[e]
        return e

    def join(e, host):
        e, host = find(e), find(host)
        if e != host:
            parent[e] = host
            sizes[host] += sizes[e]

    order = np.argsort(pairs[:, 0], kind="stable")
    sites, members_all = pairs[order, 0], pairs[order, 1]
    bounds = np.searchsorted(sites, np.arange(1, n_sites + 2))
    site_members = [members_all[bounds[s]:bounds[s + 1]] for s in range(n_sites)]
    neighbours = [set() for _ in range(n_elements + 1)]
    n_sites_of = np.zeros(n_elements + 1, np.int64)
    for members in site_members:
        for e in members:
            neighbours[e].update(int(m) for m in members if m != e)
            n_sites_of[e] += 1
    small_plate = is_plate & (sizes < min_plate_aspect * diameter**2)
    short_rod = ~is_plate & (sizes < np.maximum(min_rod_voxels, diameter))
    small_plate[0] = short_rod[0] = False

    def largest(candidates):
        return max(candidates, key=lambda e: (sizes[e], -e))

    for e in np.flatnonzero(small_plate):
        near = neighbours[e]
        rods = [m for m in near if not is_plate[m] and not short_rod[m]]
        plates = [m for m in near if is_plate[m] and not small_plate[m]]
        if rods:
            join(e, largest(rods))
        elif plates:
            join(e, largest(plates))
    for e in np.flatnonzero(short_rod):
        near = neighbours[e]
        plates = [m for m in near if is_plate[m] and not small_plate[m]]
        rods = [m for m in near if not is_plate[m] and not short_rod[m]]
        if plates:
            join(e, largest(plates))
        elif rods and has_end[e] and n_sites_of[e] == 1:
            join(e, largest(rods))

    changed = True
    while changed:
        changed = False
        for members in site_members:
            roots = {find(int(m)) for m in members}
            if len(roots) == 2:
                a, b = sorted(roots)
                if not is_plate[a] and not is_plate[b]:
                    join(a, b) if (sizes[b], -b) > (sizes[a], -a) else join(b, a)
                    changed = True
    return np.array([find(e) for e in range(n_elements + 1)])


def _ball_offsets(spacing, max_radius2):
    """Integer voxel offsets with squared physical length < max_radius2, sorted by it."""
    reach = [math.floor(math.sqrt(max_radius2) / h) + 1 for h in spacing]
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    d2 = sum((offsets[:, a] * spacing[a]) ** 2 for a in range(3))
    keep = d2 < max_radius2
    offsets, d2 = offsets[keep], d2[keep]
    order = np.argsort(d2, kind="stable")
    return np.ascontiguousarray(offsets[order], dtype=np.int64), d2[order]


def _kind_volume(decomposition):
    """uint8 labels (0 marrow, 1 plate, 2 rod) on the unpadded grid."""
    from microarch._kernels.plate_rod import kind_map

    kinds = np.where(decomposition.is_plate, PLATE, ROD).astype(np.uint8)
    kinds[0] = MARROW
    return kind_map(decomposition.labels, kinds)


def plate_rod_labels(mask, *, spacing):
    """Label every bone voxel as plate (1) or rod (2); marrow is 0.

    Parameters
    ----------
    mask : (Z, Y, X) array_like of bool
        Bone mask.
    spacing : float or sequence of 3 floats
        Voxel size in mm, (z, y, x).

    Returns
    -------
    (Z, Y, X) ndarray of uint8
        0 marrow, 1 plate, 2 rod. Every bone voxel is either plate or rod.

    See Also
    --------
    plate_rod : the ITS parameters; the module documentation describes the method.

    Examples
    --------
    A plate crossed by a rod:

    >>> import numpy as np
    >>> bone = np.zeros((30, 30, 30), bool)
    >>> bone[13:16, 3:27, 3:27] = True      # plate, 3 voxels thick
    >>> bone[1:29, 14:16, 14:16] = True     # rod through it, 2x2 voxels
    >>> labels = plate_rod_labels(bone, spacing=0.08)
    >>> int(labels[14, 5, 5]), int(labels[4, 14, 14]), int(labels[25, 15, 15])
    (1, 2, 2)
    >>> bool(((labels > 0) == bone).all())
    True
    """
    mask = as_mask(mask)
    spacing = as_spacing(spacing)
    if not mask.any():
        return np.zeros(mask.shape, np.uint8)
    symmetry = _canonical_symmetry(mask, spacing)
    canonical = np.ascontiguousarray(_turn(mask, symmetry))
    return _turn_back(_kind_volume(_decompose(canonical, spacing)), symmetry)


def plate_rod(mask, *, spacing, roi=None, thickness=None, return_labels=False):
    """Individual trabecula segmentation (ITS): plate and rod parameters.

    Parameters
    ----------
    mask : (Z, Y, X) array_like of bool
        Bone mask.
    spacing : float or sequence of 3 floats
        Voxel size in mm, (z, y, x).
    roi : (Z, Y, X) array_like of bool, optional
        Volume of interest (e.g. the trabecular compartment). The structure is
        decomposed on the whole mask; statistics are taken inside the ROI (see Notes).
    thickness : (Z, Y, X) array_like of float, optional
        A local thickness map of the bone (mm) to reuse, e.g. from
        :func:`local_thickness`; computed (continuous convention) when omitted.
    return_labels : bool, optional
        Also return the plate/rod label volume of :func:`plate_rod_labels`.

    Returns
    -------
    dict
        ``"pBV/TV"``, ``"rBV/TV"`` (1), ``"P/R"`` (pBV/rBV), ``"pTb.N"``, ``"rTb.N"``
        (1/mm, cube root of count per volume), ``"pTb.N.count"``, ``"rTb.N.count"``
        (1/mm³), ``"pTb.Th"``, ``"rTb.Th"`` (mm, mean local thickness of plate/rod
        voxels), ``"pTb.S"`` (mm², mean plate area), ``"rTb.l"`` (mm, mean rod length),
        ``"P-P Junc.D"``, ``"P-R Junc.D"``, ``"R-R Junc.D"`` (1/mm³), ``"TV"`` (mm³),
        ``"n.plates"``, ``"n.rods"`` (counts inside the ROI, fractional at its edge).
        P/R is infinite when there are plates but no rods.
    (Z, Y, X) ndarray of uint8
        Only with ``return_labels``: 0 marrow, 1 plate, 2 rod.

    Notes
    -----
    Elements crossing the ROI border count with the fraction of their bone voxels
    inside; junctions with the fraction of their site voxels inside. Mean plate area
    and rod length weight each element (measured whole) by that fraction. pBV + rBV =
    BV exactly. Empty masks or ROIs give NaN with a :class:`DegenerateInputWarning`.

    References
    ----------
    Liu XS et al. (2008) J Bone Miner Res 23:223-235. doi:10.1359/jbmr.071009
    Liu XS et al. (2010) J Bone Miner Res 25:1496-1505. doi:10.1002/jbmr.50

    Examples
    --------
    Parallel plates, 3 voxels thick, 0.1 mm voxels:

    >>> import numpy as np
    >>> bone = np.zeros((30, 30, 30), bool)
    >>> for z in (5, 15, 25):
    ...     bone[z - 1:z + 2] = True
    >>> result = plate_rod(bone, spacing=0.1)
    >>> round(result["pBV/TV"], 3), round(result["rBV/TV"], 3), round(result["pTb.Th"], 2)
    (0.3, 0.0, 0.3)
    """
    from microarch._kernels.plate_rod import element_counts

    mask = as_mask(mask)
    spacing = as_spacing(spacing)
    roi = as_roi(roi, mask.shape)
    if thickness is not None:
        thickness = np.asarray(thickness)
        if thickness.shape != mask.shape:
            raise ValueError(f"thickness shape {thickness.shape} differs from the mask "
                             f"shape {mask.shape}")
    voxel_volume = spacing[0] * spacing[1] * spacing[2]
    roi_voxels = int(mask.size if roi is None else np.count_nonzero(roi))
    if roi_voxels == 0:
        return _nan_result("the ROI is empty", math.nan, mask, spacing, return_labels)
    tv = roi_voxels * voxel_volume
    bone_in_roi = mask if roi is None else mask & roi
    if not bone_in_roi.any():
        return _nan_result("no bone inside the ROI", tv, mask, spacing, return_labels)
    del bone_in_roi

    # decompose in the canonical orientation (see Conventions); the scalars do not
    # depend on it, the labels are turned back at the end
    symmetry = _canonical_symmetry(mask, spacing)
    mask = np.ascontiguousarray(_turn(mask, symmetry))
    if roi is not None:
        roi = np.ascontiguousarray(_turn(roi, symmetry))
    if thickness is not None:
        thickness = _turn(thickness, symmetry)

    d = _decompose(mask, spacing)
    n = d.n_elements
    flat_labels = d.labels.reshape(-1)
    use_roi = roi is not None
    roi_p = _padded(roi, bool) if use_roi else np.zeros((1, 1, 1), bool)
    total, inside = element_counts(flat_labels, d.bone.reshape(-1), roi_p.reshape(-1),
                                   use_roi, n)
    del d.bone
    fraction = np.divide(inside, total, out=np.zeros(n + 1), where=total > 0)
    is_plate, alive = d.is_plate, d.alive
    is_rod = alive & ~is_plate
    is_rod[0] = False
    plates = alive & is_plate
    area, length = d.area, d.length

    # junctions, each counted with the fraction of its site voxels inside the ROI
    junction = {"P-P": 0.0, "P-R": 0.0, "R-R": 0.0}
    if d.n_sites and d.pairs.size:
        if use_roi:
            site_inside = np.bincount(d.site_ids, weights=roi_p.reshape(-1)[d.site_points],
                                      minlength=d.n_sites + 1)
        else:
            site_inside = np.bincount(d.site_ids, minlength=d.n_sites + 1).astype(float)
        site_total = np.bincount(d.site_ids, minlength=d.n_sites + 1)
        site_fraction = np.divide(site_inside, site_total, out=np.zeros(d.n_sites + 1),
                                  where=site_total > 0)
        n_elements_at = np.bincount(d.pairs[:, 0], minlength=d.n_sites + 1)
        n_plates_at = np.bincount(d.pairs[:, 0], weights=is_plate[d.pairs[:, 1]],
                                  minlength=d.n_sites + 1)
        real = n_elements_at >= 2
        all_plates = real & (n_plates_at == n_elements_at)
        all_rods = real & (n_plates_at == 0)
        mixed = real & ~all_plates & ~all_rods
        junction["P-P"] = float(site_fraction[all_plates].sum())
        junction["R-R"] = float(site_fraction[all_rods].sum())
        junction["P-R"] = float(site_fraction[mixed].sum())
    kinds = _kind_volume(d)
    del d.labels, flat_labels

    plate_voxels = float(inside[plates].sum())
    rod_voxels = float(inside[is_rod].sum())
    n_plates = float(fraction[plates].sum())
    n_rods = float(fraction[is_rod].sum())

    result = dict.fromkeys(_KEYS, math.nan)
    result["TV"] = tv
    result["pBV/TV"] = plate_voxels / roi_voxels
    result["rBV/TV"] = rod_voxels / roi_voxels
    result["P/R"] = plate_voxels / rod_voxels if rod_voxels else math.inf
    result["pTb.N.count"] = n_plates / tv
    result["rTb.N.count"] = n_rods / tv
    result["pTb.N"] = result["pTb.N.count"] ** (1 / 3)
    result["rTb.N"] = result["rTb.N.count"] ** (1 / 3)
    result["n.plates"] = n_plates
    result["n.rods"] = n_rods
    if n_plates > 0:
        result["pTb.S"] = float((fraction[plates] * area[plates]).sum() / n_plates)
    if n_rods > 0:
        result["rTb.l"] = float((fraction[is_rod] * length[is_rod]).sum() / n_rods)
    result["P-P Junc.D"] = junction["P-P"] / tv
    result["P-R Junc.D"] = junction["P-R"] / tv
    result["R-R Junc.D"] = junction["R-R"] / tv

    # thickness last, when only the kind labels are left
    if thickness is None:
        from microarch.measure._thickness import local_thickness

        thickness = local_thickness(mask, spacing=spacing)
    for key, kind in (("pTb.Th", PLATE), ("rTb.Th", ROD)):
        selected = kinds == kind
        if roi is not None:
            selected &= roi
        if selected.any():
            result[key] = float(np.mean(thickness[selected], dtype=np.float64))
    return (result, _turn_back(kinds, symmetry)) if return_labels else result


def _nan_result(reason, tv, mask, spacing, return_labels):
    degenerate(f"plate/rod parameters undefined: {reason}", stacklevel=4)
    result = dict.fromkeys(_KEYS, math.nan)
    result["TV"] = tv
    if not return_labels:
        return result
    labels = plate_rod_labels(mask, spacing=spacing)
    return result, labels



def junction_graph(mask, *, spacing, min_rod_voxels=DEFAULT_MIN_ROD_VOXELS,
                   min_plate_aspect=DEFAULT_MIN_PLATE_ASPECT,
                   junction_reach=DEFAULT_JUNCTION_REACH):
    """Elements and junctions of the plate/rod decomposition, with their voxels.

    The graph behind :func:`plate_rod`: the same decomposition (skeleton, split at
    junctions, small elements merged, bone reconstructed; see the module
    documentation), returned with voxel positions so that individual trabeculae and
    junctions can be followed, e.g. across registered visits
    (:func:`microarch.longitudinal.track_connections`).

    Parameters
    ----------
    mask : (Z, Y, X) array_like of bool
        Bone mask.
    spacing : float or sequence of 3 floats
        Voxel size in mm, (z, y, x).
    min_rod_voxels : int, optional
        Rods with fewer skeleton voxels (and fewer than their diameter) are merged into
        the plate or rod they sit on (the merge rules of the module documentation).
    min_plate_aspect : float, optional
        Plates with fewer skeleton voxels than this times their squared diameter join
        the rod they touch; 0 keeps every plate.
    junction_reach : int, optional
        Skeleton steps around the junction voxels that join their site (the splitting
        step of the module documentation). 1, as in :func:`plate_rod`, merges junction
        voxels one step apart into one site; 0 keeps the sites to the junction voxels,
        so that the short trabeculae between close junctions survive as elements (what
        connection tracking needs at HR-pQCT resolution).

    Returns
    -------
    dict
        ``"labels"``: (Z, Y, X) int32, the element of every bone voxel (0 marrow); every
        bone voxel belongs to one element, as in :func:`plate_rod`.
        ``"is_plate"``: bool per element id (index 0 unused); ``"n_elements"``: int.
        ``"skeleton_voxels"``: (N, 3) int64 voxel indices (z, y, x) of the skeleton;
        ``"skeleton_element"``: (N,) int32 element of each skeleton voxel (junction
        voxels carry the element they were absorbed into);
        ``"skeleton_junction"``: (N,) int64 junction site (1, 2, ...) of each skeleton
        voxel, 0 off the sites; ``"skeleton_radius"``: (N,) float64 radius (mm) of the
        largest ball centred on each voxel that holds no marrow voxel centre.
        ``"n_junctions"``: int, the number of sites. ``"contacts"``: (M, 2) int64 unique
        ``(site, element)`` pairs of sites and the elements they touch. A site touching
        two or more elements is a junction: P-P if all are plates, R-R if all are rods,
        P-R otherwise; a site touching one element is none (the two rods of a rod-rod
        site merged into one rod, a bump absorbed by its plate).

    See Also
    --------
    plate_rod : the ITS parameters computed from this graph.

    Examples
    --------
    A plate crossed by a rod: the plate (element 1) and the rods above and below it
    (elements 2 and 3) meet at one junction site:

    >>> import numpy as np
    >>> bone = np.zeros((30, 30, 30), bool)
    >>> bone[13:16, 3:27, 3:27] = True      # plate, 3 voxels thick
    >>> bone[1:29, 14:16, 14:16] = True     # rod through it, 2x2 voxels
    >>> graph = junction_graph(bone, spacing=0.08)
    >>> graph["is_plate"].tolist()
    [False, True, False, False]
    >>> graph["contacts"].tolist()
    [[1, 1], [1, 2], [1, 3]]
    >>> bool(((graph["labels"] > 0) == bone).all())
    True
    """
    from microarch._kernels.thickness import voxel_distance_sq

    mask = as_mask(mask)
    spacing = as_spacing(spacing)
    junction_reach = non_negative_int(junction_reach, name="junction_reach",
                                      unit="skeleton steps")
    if not mask.any():
        return {"labels": np.zeros(mask.shape, np.int32), "is_plate": np.zeros(1, bool),
                "n_elements": 0, "skeleton_voxels": np.zeros((0, 3), np.int64),
                "skeleton_element": np.zeros(0, np.int32),
                "skeleton_junction": np.zeros(0, np.int64),
                "skeleton_radius": np.zeros(0), "n_junctions": 0,
                "contacts": np.zeros((0, 2), np.int64)}
    # the same canonical orientation as plate_rod (see Conventions)
    symmetry = _canonical_symmetry(mask, spacing)
    canonical = np.ascontiguousarray(_turn(mask, symmetry))
    d = _decompose(canonical, spacing, min_rod_voxels=min_rod_voxels,
                   min_plate_aspect=min_plate_aspect, junction_reach=int(junction_reach))
    padded_shape = d.labels.shape
    # skeleton voxels keep their own element while the balls are painted
    element = d.labels.reshape(-1)[d.points]
    junction = np.zeros(d.points.size, np.int64)
    junction[np.searchsorted(d.points, d.site_points)] = d.site_ids
    voxels = np.stack(np.unravel_index(d.points, padded_shape), axis=1) - 1
    # the ball radius, as the reconstruction uses it (the decomposition keeps no copy)
    distance2 = voxel_distance_sq(~_padded(canonical, bool), spacing, (False, False, False))
    radius = np.sqrt(distance2.reshape(-1)[d.points].astype(np.float64))
    del distance2
    voxels = _turn_back_points(voxels, symmetry, canonical.shape)
    in_raster_order = np.argsort(np.ravel_multi_index(voxels.T, mask.shape))
    return {"labels": _turn_back(d.labels[1:-1, 1:-1, 1:-1], symmetry),
            "is_plate": d.is_plate & d.alive, "n_elements": int(d.n_elements),
            "skeleton_voxels": voxels[in_raster_order].astype(np.int64),
            "skeleton_element": element[in_raster_order],
            "skeleton_junction": junction[in_raster_order],
            "skeleton_radius": radius[in_raster_order],
            "n_junctions": int(d.n_sites),
            "contacts": np.asarray(d.pairs, np.int64).reshape(-1, 2)}
