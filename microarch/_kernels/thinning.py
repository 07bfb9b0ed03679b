"""Kernels for topology-preserving 3D thinning (26-connected object, 6-connected background).

Neighbourhood codes
-------------------
The 3x3x3 neighbourhood of a voxel is a 27-bit integer: bit ``9*dz + 3*dy + dx`` (each of
dz, dy, dx in 0..2, the centre is bit 13) is set when that voxel is object. Connected
components inside the neighbourhood are found by flood filling with bit shifts (a
26-dilation is three separable 3-tap dilations; a 6-dilation is the union of six shifts),
so the topological numbers cost a few dozen integer operations and need no lookup table.

Topological numbers (Bertrand & Malandain 1994, Pattern Recognit Lett 15:169-175,
doi:10.1016/0167-8655(94)90046-9):

* ``T26`` -- the number of 26-components of the object in N26*(x) (the 26 neighbours);
* ``T6bar`` -- the number of 6-components of the background in N18(x) that are 6-adjacent
  to x (contain one of its 6 face neighbours).

A voxel is *simple* (deleting it changes no component, tunnel or cavity) iff both are 1.
It is a 1D isthmus (on a curve) when ``T26 >= 2`` and a 2D isthmus (on a surface) when
``T6bar >= 2`` (Couprie & Bertrand 2016, doi:10.1016/j.patrec.2015.03.014). Isthmuses are
never simple. :func:`count_tunnels` counts the loops the object makes around the centre
(6-components of the background in N26*, minus one), used to classify skeleton voxels.

Arrays: the thinning works on a C-contiguous uint8 image padded by one background voxel on
every side, addressed by flat indices. Inputs are trusted.
"""

import numpy as np
from numba import prange

from microarch._kernels._jit import njit

FULL = (1 << 27) - 1
CENTRE = 1 << 13

OBJECT = np.uint8(1)  # voxel is object
ANCHORED = np.uint8(2)  # object voxel kept for good (an isthmus that persisted)
LISTED = np.uint8(4)  # object voxel is on the border list
DIRTY = np.uint8(8)  # a neighbour was deleted since the voxel was last examined
PEELS = 6  # directional peels per iteration


def _bits(predicate):
    total = 0
    for dz in range(3):
        for dy in range(3):
            for dx in range(3):
                if predicate(dz, dy, dx):
                    total |= 1 << (9 * dz + 3 * dy + dx)
    return total


X_LOW = _bits(lambda z, y, x: x == 0)
X_HIGH = _bits(lambda z, y, x: x == 2)
Y_LOW = _bits(lambda z, y, x: y == 0)
Y_HIGH = _bits(lambda z, y, x: y == 2)
Z_HIGH = _bits(lambda z, y, x: z == 2)
# N18(x) without x: every neighbour except the 8 corners
N18 = _bits(lambda z, y, x: (z != 1) + (y != 1) + (x != 1) in (1, 2))
FACES = _bits(lambda z, y, x: (z != 1) + (y != 1) + (x != 1) == 1)
NOT_X_LOW, NOT_X_HIGH = FULL & ~X_LOW, FULL & ~X_HIGH
NOT_Y_LOW, NOT_Y_HIGH = FULL & ~Y_LOW, FULL & ~Y_HIGH
NOT_Z_HIGH = FULL & ~Z_HIGH


@njit(inline="always")
def dilate26(s):
    """26-dilation of a set of neighbourhood bits, clipped to the 3x3x3 block."""
    t = s | ((s & NOT_X_HIGH) << 1) | ((s & NOT_X_LOW) >> 1)
    t = t | ((t & NOT_Y_HIGH) << 3) | ((t & NOT_Y_LOW) >> 3)
    t = t | ((t & NOT_Z_HIGH) << 9) | (t >> 9)
    return t & FULL


@njit(inline="always")
def dilate6(s):
    """6-dilation of a set of neighbourhood bits, clipped to the 3x3x3 block."""
    t = s | ((s & NOT_X_HIGH) << 1) | ((s & NOT_X_LOW) >> 1)
    t |= ((s & NOT_Y_HIGH) << 3) | ((s & NOT_Y_LOW) >> 3)
    t |= ((s & NOT_Z_HIGH) << 9) | (s >> 9)
    return t & FULL


@njit
def offsets26(strides):
    """Flat-index offsets of the 3x3x3 neighbourhood, in neighbourhood-code bit order."""
    sz, sy = strides[0], strides[1]
    offsets = np.empty(27, np.int64)
    for dz in range(3):
        for dy in range(3):
            for dx in range(3):
                offsets[9 * dz + 3 * dy + dx] = (dz - 1) * sz + (dy - 1) * sy + (dx - 1)
    return offsets


@njit
def count_object_components(code, cap):
    """Number of 26-components of the object in N26* (at most ``cap``)."""
    rest = code & FULL & ~CENTRE
    count = 0
    while rest != 0 and count < cap:
        comp = rest & -rest
        while True:
            grown = dilate26(comp) & rest
            if grown == comp:
                break
            comp = grown
        rest &= ~comp
        count += 1
    return count


@njit
def count_background_components(code, cap):
    """Number of 6-components of the background in N18 6-adjacent to x (at most ``cap``)."""
    background = ~code & N18
    seeds = background & FACES
    count = 0
    while seeds != 0 and count < cap:
        comp = seeds & -seeds
        while True:
            grown = dilate6(comp) & background
            if grown == comp:
                break
            comp = grown
        seeds &= ~comp
        background &= ~comp
        count += 1
    return count


@njit
def topological_numbers(code):
    """(T26, T6bar) of the centre of a neighbourhood code, each capped at 3."""
    return count_object_components(code, 3), count_background_components(code, 3)


@njit
def count_tunnels(code):
    """Tunnels of the object in N26*: 6-components of its complement in N26*, minus 1.

    By Alexander duality on the sphere that N26* surrounds: a plane through the centre
    leaves two background parts (one tunnel), a curve none, sheets meeting three or more.
    """
    background = ~code & FULL & ~CENTRE
    count = 0
    while background != 0:
        comp = background & -background
        while True:
            grown = dilate6(comp) & background
            if grown == comp:
                break
            comp = grown
        background &= ~comp
        count += 1
    return count - 1 if count > 0 else 0


@njit(inline="always")
def is_simple(code):
    # T6bar first: it is cheaper and rules out the interior (no background neighbour)
    if count_background_components(code, 2) != 1:
        return False
    return count_object_components(code, 2) == 1


@njit(inline="always")
def popcount(v):
    count = 0
    while v:
        v &= v - 1
        count += 1
    return count


@njit(inline="always")
def neighbourhood_code(img, p, offsets):
    code = 0
    for b in range(27):
        if img[p + offsets[b]] & 1:
            code |= 1 << b
    return code


@njit(parallel=True)
def topology_codes(codes):
    """(T26, T6bar) for an array of neighbourhood codes (used by the tests)."""
    out = np.empty((codes.size, 2), np.int64)
    for i in prange(codes.size):
        t26, t6 = topological_numbers(codes[i])
        out[i, 0] = t26
        out[i, 1] = t6
    return out


# ---------------------------------------------------------------------------------------
# Thinning
# ---------------------------------------------------------------------------------------


@njit(inline="always")
def _on_border(img, p, offsets):
    if not img[p] & OBJECT:
        return False
    for b in (4, 10, 12, 14, 16, 22):
        if not img[p + offsets[b]] & OBJECT:
            return True
    return False


@njit(parallel=True)
def _initial_border(img, offsets, plane, index_type):
    """Flat indices (in raster order) of the object voxels that have a background face
    neighbour, and the number of object voxels. ``plane`` is the z stride; the planes are
    scanned in parallel."""
    n_planes = img.size // plane
    border_counts = np.zeros(n_planes + 1, np.int64)
    object_counts = np.zeros(n_planes, np.int64)
    # the first and last planes are padding: background only
    for z in prange(1, n_planes - 1):
        k = 0
        objects = 0
        for p in range(z * plane, (z + 1) * plane):
            if img[p] & OBJECT:
                objects += 1
                if _on_border(img, p, offsets):
                    k += 1
        border_counts[z + 1] = k
        object_counts[z] = objects
    for z in range(n_planes):
        border_counts[z + 1] += border_counts[z]
    border = np.empty(border_counts[n_planes], index_type.dtype)
    for z in prange(1, n_planes - 1):
        k = border_counts[z]
        for p in range(z * plane, (z + 1) * plane):
            if _on_border(img, p, offsets):
                border[k] = p
                k += 1
    # flags only after every plane is read: LISTED does not touch the OBJECT bit, but a
    # plane's neighbours are read by other threads
    for i in prange(border.size):
        img[border[i]] |= LISTED | DIRTY
    return border, object_counts.sum()


@njit(parallel=True)
def _anchor_isthmuses(img, border, born, n, isthmus, step, persistence, ratio):
    """Track how long border voxels have been isthmuses; anchor those that persisted.

    ``born[i]`` is the peel at which voxel ``border[i]`` last became an isthmus (-1: it
    is not one). Only voxels whose neighbourhood changed (DIRTY) are re-examined;
    ``isthmus`` holds their state from :func:`_examine_isthmuses`. Each entry touches
    only its own voxel's flags, so the entries are processed in parallel.
    """
    for i in prange(n):
        p = border[i]
        flags = img[p]
        if not flags & OBJECT or flags & ANCHORED:
            continue
        if flags & DIRTY:
            if not isthmus[i]:
                born[i] = -1
            elif born[i] < 0:
                born[i] = step
            flags &= ~DIRTY
        if born[i] >= 0 and step - born[i] >= _wait(born[i], persistence, ratio):
            flags |= ANCHORED
        img[p] = flags


@njit(parallel=True)
def _examine_isthmuses(img, border, n, offsets, curves, surfaces):
    """Whether each DIRTY, unanchored border voxel is an isthmus now (read-only pass)."""
    isthmus = np.zeros(n, np.bool_)
    for i in prange(n):
        p = border[i]
        flags = img[p]
        if flags & OBJECT and not flags & ANCHORED and flags & DIRTY:
            code = neighbourhood_code(img, p, offsets)
            isthmus[i] = ((surfaces and count_background_components(code, 2) >= 2)
                          or (curves and count_object_components(code, 2) >= 2))
    return isthmus


@njit(inline="always")
def _wait(born, persistence, ratio):
    """Peels an isthmus born at peel ``born`` must last: whole iterations, so that every
    direction is peeled equally often meanwhile whatever the peel it was born at."""
    iterations = max(persistence, int(np.ceil(ratio * (born // PEELS))))
    return PEELS * iterations


@njit(parallel=True)
def _delete_simple(img, candidates, lo, hi, deleted, offsets, step, keep_thin):
    """Delete the simple candidates[lo:hi] (one subfield: no two are 26-adjacent).

    With ``keep_thin`` a voxel whose neighbour opposite to the peel direction is also
    background (one voxel thin along this direction) stays: it lies on a mid-surface.
    The candidates are examined in parallel: each reads only its neighbours, which lie in
    other subfields and do not change meanwhile, and writes only itself.
    """
    for i in prange(lo, hi):
        p = candidates[i]
        if keep_thin and not img[p - step] & OBJECT:
            continue
        if is_simple(neighbourhood_code(img, p, offsets)):
            img[p] = 0
            deleted[i] = 1


_LIST_CHUNKS = 64  # fixed, so that list order does not depend on the thread count


@njit(inline="always")
def _chunk(c, n):
    size = (n + _LIST_CHUNKS - 1) // _LIST_CHUNKS
    return c * size, min(n, (c + 1) * size)


@njit(inline="always")
def _kept(flags):
    return flags & OBJECT and not flags & ANCHORED


@njit(parallel=True)
def _compact(img, border, born, n, border_out, born_out):
    """Copy the border entries still to thin (not deleted, not anchored) to
    ``border_out``/``born_out`` in order; return how many. Anchored voxels leave the list.

    Parallel in two passes over fixed chunks: count, then write at the chunk's offset.
    """
    counts = np.zeros(_LIST_CHUNKS + 1, np.int64)
    for c in prange(_LIST_CHUNKS):
        lo, hi = _chunk(c, n)
        k = 0
        for i in range(lo, hi):
            if _kept(img[border[i]]):
                k += 1
        counts[c + 1] = k
    for c in range(_LIST_CHUNKS):
        counts[c + 1] += counts[c]
    for c in prange(_LIST_CHUNKS):
        lo, hi = _chunk(c, n)
        m = counts[c]
        for i in range(lo, hi):
            p = border[i]
            if _kept(img[p]):
                border_out[m] = p
                born_out[m] = born[i]
                m += 1
            elif img[p] & OBJECT:
                img[p] &= ~LISTED
    return counts[_LIST_CHUNKS]


@njit(parallel=True)
def _candidates(img, border, n, step, sz, sy, out):
    """The border voxels whose face neighbour at ``step`` is background, written to
    ``out`` grouped by subfield, in list order within a group; returns the 9 group
    boundaries (group ``s`` is ``out[starts[s]:starts[s + 1]]``)."""
    counts = np.zeros((_LIST_CHUNKS, 8), np.int64)
    for c in prange(_LIST_CHUNKS):
        lo, hi = _chunk(c, n)
        for i in range(lo, hi):
            p = border[i]
            if not img[p + step] & OBJECT:
                counts[c, _subfield(p, sz, sy)] += 1
    starts = np.zeros(9, np.int64)
    fill = np.empty((_LIST_CHUNKS, 8), np.int64)
    for s in range(8):
        position = starts[s]
        for c in range(_LIST_CHUNKS):
            fill[c, s] = position
            position += counts[c, s]
        starts[s + 1] = position
    for c in prange(_LIST_CHUNKS):
        lo, hi = _chunk(c, n)
        for i in range(lo, hi):
            p = border[i]
            if not img[p + step] & OBJECT:
                s = _subfield(p, sz, sy)
                out[fill[c, s]] = p
                fill[c, s] += 1
    return starts


@njit(parallel=True)
def thin(img, strides, persistence, ratio, curves, surfaces, max_iterations, index_type):
    """Thin the padded uint8 image in place (bit 0 = object); return the iteration count.

    An iteration is six directional peels (z+, z-, y+, y-, x+, x-). Before each peel the
    border voxels that became isthmuses at peel ``b`` (in iteration ``b // 6``) and still
    are, ``max(persistence, ceil(ratio * (b // 6)))`` iterations later, are anchored (2D
    isthmuses only with ``surfaces``, 1D only with ``curves``). A peel deletes the simple,
    unanchored voxels whose face neighbour in its direction is background (with ``surfaces``: and whose
    opposite face neighbour is object), one parity subfield (z%2, y%2, x%2) at a time:
    voxels of one subfield are never 26-adjacent, so deleting them together equals
    deleting them one by one, and the result depends neither on the visiting order nor
    on the thread count. Stops after an iteration without deletion.

    ``index_type`` is an empty array whose dtype (int32 or int64) holds the flat indices.
    """
    sz, sy = strides[0], strides[1]
    offsets = offsets26(strides)
    directions = np.array([sz, -sz, sy, -sy, 1, -1], np.int64)

    start, total = _initial_border(img, offsets, sz, index_type)
    # every object voxel enters the list at most once
    border = np.empty(total, index_type.dtype)
    born = np.full(total, -1, np.int32)
    n = start.size
    border[:n] = start
    spare_border = np.empty(total, index_type.dtype)
    spare_born = np.empty(total, np.int32)
    candidates = np.empty(total, index_type.dtype)
    deleted = np.zeros(total, np.uint8)

    iteration = 0
    peel = 0
    while iteration < max_iterations:
        removed = 0
        for d in range(6):
            # parallel passes are called from here, a parallel kernel: called from a
            # serial one, numba runs them on one thread
            isthmus = _examine_isthmuses(img, border, n, offsets, curves, surfaces)
            _anchor_isthmuses(img, border, born, n, isthmus, peel, persistence, ratio)
            n = _compact(img, border, born, n, spare_border, spare_born)
            border, spare_border = spare_border, border
            born, spare_born = spare_born, born
            step = directions[d]
            starts = _candidates(img, border, n, step, sz, sy, candidates)
            m = starts[8]
            deleted[:m] = 0
            for s in range(8):
                _delete_simple(img, candidates, starts[s], starts[s + 1], deleted,
                               offsets, step, surfaces)
            for i in range(m):
                if deleted[i]:
                    removed += 1
                    p = candidates[i]
                    for b in range(27):
                        q = p + offsets[b]
                        if img[q] & OBJECT and not img[q] & ANCHORED:
                            img[q] |= DIRTY
                            # face neighbours of a deleted voxel are now border voxels
                            if (b == 4 or b == 10 or b == 12 or b == 14 or b == 16
                                    or b == 22) and not img[q] & LISTED:
                                img[q] |= LISTED
                                border[n] = q
                                born[n] = -1
                                n += 1
            peel += 1
        iteration += 1
        if removed == 0:
            break
    return iteration


@njit
def _group_by_subfield(points, n, sz, sy, out):
    """Write ``points[:n]`` to ``out[:n]`` grouped by subfield, keeping their order within
    a group; return the 9 group boundaries (group ``s`` is ``out[starts[s]:starts[s + 1]]``)."""
    starts = np.zeros(9, np.int64)
    for i in range(n):
        starts[_subfield(points[i], sz, sy) + 1] += 1
    for s in range(8):
        starts[s + 1] += starts[s]
    fill = starts[:8].copy()
    for i in range(n):
        s = _subfield(points[i], sz, sy)
        out[fill[s]] = points[i]
        fill[s] += 1
    return starts


@njit(inline="always")
def _subfield(p, sz, sy):
    z = p // sz
    rest = p - z * sz
    y = rest // sy
    x = rest - y * sy
    return (z & 1) * 4 + (y & 1) * 2 + (x & 1)


@njit
def prune_corners(img, strides):
    """Delete redundant voxels of thin curves; return how many were deleted.

    Thinning can leave the corner voxel of a digital curve that is simple but was anchored
    before its neighbours thinned: three mutually adjacent voxels then read as a branch.
    A voxel is deleted when it is simple, has two or more neighbours that form one
    26-component without a tunnel (so it is neither a curve end nor inside a surface or
    curve) and no neighbour lies inside a surface (surface edges are kept). Deletion
    goes one parity subfield at a time until nothing changes, so the order does not
    matter. ``img`` is a padded flat uint8 volume (bit 0 = object), modified in place.
    """
    sz, sy = strides[0], strides[1]
    offsets = offsets26(strides)
    # the object voxels grouped by subfield, each group in raster order
    raster = np.flatnonzero(img & OBJECT)
    points = np.empty(raster.size, np.int64)
    starts = _group_by_subfield(raster, raster.size, sz, sy, points)
    total = 0
    while True:
        removed = 0
        for s in range(8):
            for i in range(starts[s], starts[s + 1]):
                p = points[i]
                if not img[p] & OBJECT:
                    continue
                code = neighbourhood_code(img, p, offsets)
                if popcount(code & ~CENTRE) < 2 or not is_simple(code):
                    continue
                if count_tunnels(code) != 0:
                    continue
                near_surface = False
                for b in range(27):
                    q = p + offsets[b]
                    if (b != 13 and img[q] & OBJECT
                            and count_tunnels(neighbourhood_code(img, q, offsets)) >= 1):
                        near_surface = True
                        break
                if not near_surface:
                    img[p] = 0
                    removed += 1
        total += removed
        if removed == 0:
            return total
