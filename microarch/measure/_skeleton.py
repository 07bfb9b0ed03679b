"""Topology-preserving 3D thinning to a surface skeleton (plates) or a curve skeleton (rods).

The bone is 26-connected and the marrow 6-connected; everything beyond the image border
is marrow (background). Thinning deletes *simple* voxels only -- voxels whose removal
changes no component, tunnel or cavity (Bertrand & Malandain 1994) -- so the skeleton has
the same Euler characteristic, number of components and number of cavities as the input.

Algorithm
---------
Each iteration peels the six face directions in turn (z+, z-, y+, y-, x+, x-). A peel
deletes the simple voxels whose face neighbour in its direction is marrow and whose
opposite face neighbour is bone (a voxel one voxel thin along the peel direction lies on
a mid-surface and stays). Within a peel, voxels are deleted one parity subfield
(z%2, y%2, x%2) at a time: voxels of one subfield are never 26-adjacent, so deleting them
together equals deleting them one by one in any order, and the result is the same for
any thread count.

Shape is kept with *isthmuses* (Couprie & Bertrand 2016): a voxel whose marrow
neighbours fall into two or more parts (``T6bar >= 2``) lies inside a sheet, one whose
bone neighbours do (``T26 >= 2``) inside a curve. A voxel that stays an isthmus long
enough is anchored and never deleted. "Long enough" is at least ``persistence``
iterations and at least ``persistence_ratio`` times the number of iterations it took to
appear (rounded up to whole iterations, so that every direction is peeled equally often
meanwhile): a sheet born from a strut of thickness t must outlast the t/2 iterations
that made it, so it survives only if the strut is about (1 + ratio) times wider than
thick.
This makes the plate/rod distinction roughly independent of the resolution and removes
spurs and narrow sheet fragments from surface roughness. Finally, redundant corner
voxels of digital curves (simple, not ends, away from surfaces) are removed, so that
curves are one voxel thin and branch only at true branch points.

Conventions
-----------
* A plate ``2k + 1`` voxels thick thins to its middle layer. A plate ``2k`` voxels thick
  has two middle layers; the z+ peel comes before the z- peel, so the layer with the
  *smaller* index along the plate normal is kept (likewise for y and x).
* Free edges of plates and free ends of rods recede by about one thickness (half while
  thinning, half while the isthmus persists).
* Mirror images give the mirrored skeleton wherever the skeleton is uniquely centred
  (odd thicknesses). A 90° rotation changes which direction is peeled first; a free
  sheet edge may then keep or lose one row, so the rotated skeleton stays within one
  voxel of the original but is not always identical.

References
----------
Bertrand G, Malandain G (1994) A new characterization of three-dimensional simple
points. Pattern Recognit Lett 15:169-175. doi:10.1016/0167-8655(94)90046-9
Couprie M, Bertrand G (2016) Asymmetric parallel 3D thinning scheme and algorithms based on
isthmuses. Pattern Recognit Lett 76:22-31. doi:10.1016/j.patrec.2015.03.014
Palágyi K, Kuba A (1998) A 3D 6-subiteration thinning algorithm for extracting medial
lines. Pattern Recognit Lett 19:613-627. doi:10.1016/S0167-8655(98)00031-2
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from microarch._shared.validation import as_mask, check_choice

KINDS = ("surface", "curve")
DEFAULT_PERSISTENCE = 1  # iterations
DEFAULT_PERSISTENCE_RATIO = 1.0


def surface_skeleton(mask, *, kind="surface", persistence=DEFAULT_PERSISTENCE,
                     persistence_ratio=DEFAULT_PERSISTENCE_RATIO):
    """Thin the bone to one-voxel-thin mid-surfaces (plates) and mid-lines (rods).

    Parameters
    ----------
    mask : (Z, Y, X) array_like of bool
        Bone mask; non-zero values are bone. Voxels beyond the image are marrow.
    kind : {"surface", "curve"}
        ``"surface"`` keeps mid-surfaces of plates and mid-lines of rods (the skeleton
        for plate/rod analysis and for the direct Tb.N). ``"curve"`` keeps mid-lines
        only: plates thin further, to lines around their holes or to single voxels.
    persistence : int, optional
        Iterations (of six directional peels) a voxel must stay an isthmus before it
        is kept for good. Larger values shorten spurs and free edges more.
    persistence_ratio : float, optional
        It must also stay an isthmus for this multiple of the iterations it took to
        become one; a strut then thins to a surface only if it is about
        ``1 + persistence_ratio`` times wider than thick. 0 disables the rule.

    Returns
    -------
    (Z, Y, X) ndarray of bool
        The skeleton: a subset of the mask with the same Euler characteristic, the same
        number of 26-connected components and the same number of cavities.

    Notes
    -----
    A plate ``n`` voxels thick thins to its middle layer; for even ``n`` to the lower
    (smaller index) of the two middle layers. Voxel size plays no role: thinning works
    on the voxel grid. The module documentation describes the algorithm.

    References
    ----------
    Bertrand G, Malandain G (1994) Pattern Recognit Lett 15:169-175.
    doi:10.1016/0167-8655(94)90046-9
    Couprie M, Bertrand G (2016) Pattern Recognit Lett 76:22-31.
    doi:10.1016/j.patrec.2015.03.014

    Examples
    --------
    A plate 3 voxels thick thins to its middle layer:

    >>> import numpy as np
    >>> plate = np.zeros((5, 12, 12), bool)
    >>> plate[1:4, 1:11, 1:11] = True
    >>> skeleton = surface_skeleton(plate)
    >>> np.flatnonzero(skeleton.any(axis=(1, 2))).tolist()
    [2]

    A ring keeps its hole:

    >>> ring = np.zeros((5, 12, 12), bool)
    >>> ring[1:4, 1:11, 1:11] = True
    >>> ring[:, 4:8, 4:8] = False
    >>> from microarch.measure import euler_characteristic
    >>> euler_characteristic(surface_skeleton(ring, kind="curve"))
    0
    """
    mask = as_mask(mask)
    check_choice(kind, KINDS, name="kind")
    if isinstance(persistence, bool) or not isinstance(persistence, Integral):
        raise TypeError(f"persistence must be a non-negative integer; got {persistence!r}")
    if persistence < 0:
        raise ValueError(f"persistence must be a non-negative integer; got {persistence}")
    if isinstance(persistence_ratio, bool) or not isinstance(persistence_ratio, Real):
        raise TypeError(f"persistence_ratio must be a non-negative number; "
                        f"got {persistence_ratio!r}")
    if not math.isfinite(persistence_ratio) or persistence_ratio < 0:
        raise ValueError(f"persistence_ratio must be a non-negative number; "
                         f"got {persistence_ratio}")
    return _thin(mask, surfaces=kind == "surface", persistence=int(persistence),
                 ratio=float(persistence_ratio))


def _thin(mask, *, surfaces=True, curves=True, persistence=DEFAULT_PERSISTENCE,
          ratio=DEFAULT_PERSISTENCE_RATIO):
    """Thinning of a validated C-contiguous bool mask (see :func:`surface_skeleton`)."""
    from microarch._kernels.thinning import prune_corners, thin

    img = np.zeros(tuple(n + 2 for n in mask.shape), np.uint8)  # border = marrow
    img[1:-1, 1:-1, 1:-1] = mask
    strides = np.array([s // img.itemsize for s in img.strides], np.int64)
    index_type = np.empty(0, np.int32 if img.size < 2**31 else np.int64)
    thin(img.reshape(-1), strides, int(persistence), float(ratio), curves, surfaces,
         np.iinfo(np.int32).max, index_type)
    prune_corners(img.reshape(-1), strides)
    return (img[1:-1, 1:-1, 1:-1] & 1).astype(bool)
