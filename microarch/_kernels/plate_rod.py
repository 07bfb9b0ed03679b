"""Kernels for the plate/rod decomposition (Individual Trabecula Segmentation).

Volumes are C-contiguous and addressed by flat indices; skeleton maps are padded by one
empty voxel on every side so that neighbourhoods never leave the array. Inputs are
trusted; :mod:`microarch.measure._plate_rod` validates and drives.

Skeleton voxel classes (see :func:`classify`):

=====  =========================  ==============================================
code   class                      local configuration in the skeleton
=====  =========================  ==============================================
1      isolated                   no skeleton neighbour
2      curve end                  a single neighbour, away from surfaces
3      curve interior             two neighbours, not adjacent to each other
4      curve-curve junction       three or more neighbour groups, or more than two
                                  neighbours away from surfaces (a branch point)
5      surface edge               neighbours on one side, next to a surface
6      surface interior           neighbours loop around the voxel (one tunnel)
7      surface-surface junction   two or more tunnels (sheets meet)
8      surface-curve junction     a curve voxel next to a surface voxel
=====  =========================  ==============================================
"""

import numpy as np
from numba import prange

from microarch._kernels._jit import njit
from microarch._kernels.thinning import (
    CENTRE,
    count_object_components,
    count_tunnels,
    neighbourhood_code,
    offsets26,
    popcount,
)

ISOLATED = 1
CURVE_END = 2
CURVE = 3
CURVE_JUNCTION = 4
SURFACE_EDGE = 5
SURFACE = 6
SURFACE_JUNCTION = 7
SURFACE_CURVE_JUNCTION = 8
_UNDECIDED = 9  # one side only: a curve end or a surface edge, decided by the neighbours


@njit(inline="always")
def _is_surface_class(c):
    return c == SURFACE_EDGE or c == SURFACE or c == SURFACE_JUNCTION


@njit(inline="always")
def _is_curve_class(c):
    return c == CURVE_END or c == CURVE or c == CURVE_JUNCTION


@njit
def _local_class(skel, p, offsets):
    """Class of a skeleton voxel from its neighbourhood alone (one-sided: undecided)."""
    code = neighbourhood_code(skel, p, offsets)
    neighbours = popcount(code & ~CENTRE)
    if neighbours == 0:
        return ISOLATED
    tunnels = count_tunnels(code)
    if tunnels >= 2:
        return SURFACE_JUNCTION
    if tunnels == 1:
        return SURFACE
    components = count_object_components(code, 3)
    if components >= 3 or (components == 2 and neighbours >= 3):
        return CURVE_JUNCTION
    if components == 2:
        return CURVE
    # one 26-component: a curve end, a surface edge, or a branch point whose arms touch
    # each other diagonally; decided from the neighbours' classes
    return _UNDECIDED


@njit
def classify(skel, points, strides, classes):
    """Write the class code of each skeleton voxel ``points[i]`` into ``classes`` (flat).

    ``skel`` and ``classes`` are padded uint8 volumes (flat). Voxels with one side only
    are surface edges when they touch a surface (directly or through other such voxels);
    otherwise they are curve ends (one neighbour), curve interiors (two) or branch
    points (three or more, e.g. six arms meeting face to face). Curve voxels that touch
    a surface become surface-curve junctions.
    """
    offsets = offsets26(strides)
    n = points.size
    for i in range(n):
        classes[points[i]] = _local_class(skel, points[i], offsets)
    # one-sided voxels next to a surface are its edge (grow along chains of them)
    queue = np.empty(n, np.int64)
    head, tail = 0, 0
    for i in range(n):
        p = points[i]
        if classes[p] == _UNDECIDED:
            for b in range(27):
                c = classes[p + offsets[b]]
                if c == SURFACE or c == SURFACE_JUNCTION:
                    classes[p] = SURFACE_EDGE
                    queue[tail] = p
                    tail += 1
                    break
    while head < tail:
        p = queue[head]
        head += 1
        for b in range(27):
            q = p + offsets[b]
            if classes[q] == _UNDECIDED:
                classes[q] = SURFACE_EDGE
                queue[tail] = q
                tail += 1
    for i in range(n):
        p = points[i]
        if classes[p] == _UNDECIDED:
            neighbours = popcount(neighbourhood_code(skel, p, offsets) & ~CENTRE)
            if neighbours == 1:
                classes[p] = CURVE_END
            elif neighbours == 2:
                classes[p] = CURVE
            else:
                classes[p] = CURVE_JUNCTION
    # curve voxels touching a surface: where rods meet plates
    touching = np.zeros(n, np.bool_)
    for i in range(n):
        p = points[i]
        if _is_curve_class(classes[p]):
            for b in range(27):
                if _is_surface_class(classes[p + offsets[b]]):
                    touching[i] = True
                    break
    for i in range(n):
        if touching[i]:
            classes[points[i]] = SURFACE_CURVE_JUNCTION


@njit
def label_elements(classes, points, strides, junction_reach, labels):
    """Split the skeleton into elements at junctions; label elements and junction sites.

    Junction voxels (codes 4, 7, 8) and the skeleton voxels within ``junction_reach``
    steps of them form the junction regions. Elements are the 26-components of the
    rest; ``labels`` (padded int32, flat) gets 1..E for elements and -1..-J for the
    26-components of the junction regions. Returns (E, J, element_is_plate).
    """
    offsets = offsets26(strides)
    n = points.size
    queue = np.empty(n, np.int64)
    depth = np.zeros(n, np.int32)
    # junction regions: breadth-first growth from the junction voxels
    head, tail = 0, 0
    for i in range(n):
        c = classes[points[i]]
        if c == CURVE_JUNCTION or c == SURFACE_JUNCTION or c == SURFACE_CURVE_JUNCTION:
            labels[points[i]] = -1
            queue[tail] = points[i]
            tail += 1
    while head < tail:
        p = queue[head]
        d = depth[head]
        head += 1
        if d >= junction_reach:
            continue
        for b in range(27):
            q = p + offsets[b]
            if classes[q] != 0 and labels[q] == 0:
                labels[q] = -1
                queue[tail] = q
                depth[tail] = d + 1
                tail += 1
    # elements: components of the non-junction voxels
    n_elements = 0
    plate_votes = np.zeros(n + 1, np.int64)
    curve_votes = np.zeros(n + 1, np.int64)
    for i in range(n):
        p = points[i]
        if labels[p] != 0:
            continue
        n_elements += 1
        labels[p] = n_elements
        head, tail = 0, 1
        queue[0] = p
        while head < tail:
            u = queue[head]
            head += 1
            c = classes[u]
            if _is_surface_class(c):
                plate_votes[n_elements] += 1
            else:
                curve_votes[n_elements] += 1
            for b in range(27):
                q = u + offsets[b]
                if classes[q] != 0 and labels[q] == 0:
                    labels[q] = n_elements
                    queue[tail] = q
                    tail += 1
    # junction sites: components of the junction regions
    n_sites = 0
    for i in range(n):
        p = points[i]
        if labels[p] != -1:
            continue
        n_sites += 1
        site = -(n_sites + 1)  # -1 is the provisional mark; shifted back below
        labels[p] = site
        head, tail = 0, 1
        queue[0] = p
        while head < tail:
            u = queue[head]
            head += 1
            for b in range(27):
                q = u + offsets[b]
                if labels[q] == -1:
                    labels[q] = site
                    queue[tail] = q
                    tail += 1
    for i in range(n):
        p = points[i]
        if labels[p] < 0:
            labels[p] += 1
    is_plate = np.zeros(n_elements + 1, np.bool_)
    for e in range(1, n_elements + 1):
        is_plate[e] = plate_votes[e] > curve_votes[e]
    return n_elements, n_sites, is_plate


@njit
def site_contacts(labels, points, strides):
    """(site, element) pairs where a junction voxel touches an element voxel (with repeats)."""
    offsets = offsets26(strides)
    count = 0
    for i in range(points.size):
        p = points[i]
        if labels[p] < 0:
            for b in range(27):
                if labels[p + offsets[b]] > 0:
                    count += 1
    pairs = np.empty((count, 2), np.int64)
    k = 0
    for i in range(points.size):
        p = points[i]
        if labels[p] < 0:
            for b in range(27):
                e = labels[p + offsets[b]]
                if e > 0:
                    pairs[k, 0] = -labels[p]
                    pairs[k, 1] = e
                    k += 1
    return pairs


@njit
def absorb_sites(labels, points, strides, classes, is_plate):
    """Give every junction voxel (label < 0) the element of its nearest element voxel.

    Breadth-first from the element voxels, first through junction voxels of the same
    kind only (surface voxels join plates, curve voxels join rods), then through the
    rest. Junction voxels that touch no element keep their negative label.
    """
    offsets = offsets26(strides)
    n = points.size
    queue = np.empty(n, np.int64)
    for phase in range(2):
        head, tail = 0, 0
        for i in range(n):
            p = points[i]
            if labels[p] > 0:
                for b in range(27):
                    if labels[p + offsets[b]] < 0:
                        queue[tail] = p
                        tail += 1
                        break
        while head < tail:
            p = queue[head]
            head += 1
            plate = is_plate[labels[p]]
            for b in range(27):
                q = p + offsets[b]
                if labels[q] >= 0:
                    continue
                if phase == 0 and _is_surface_class(classes[q]) != plate:
                    continue
                labels[q] = labels[p]
                queue[tail] = q
                tail += 1


# ---------------------------------------------------------------------------------------
# Reconstruction of the bone volume from the skeleton
# ---------------------------------------------------------------------------------------


@njit
def paint_balls(labels, mask, centres, radius2, offsets, offset_d2, shape, h2):
    """Each bone voxel takes the element of the largest skeleton ball that covers it.

    ``labels`` and ``mask`` are flat volumes of ``shape``; ``labels`` holds the element of
    every skeleton voxel (kept as is) and 0 elsewhere. ``centres`` (flat indices) are
    sorted by decreasing ``radius2`` (mm²); ``offsets`` (k, 3) are voxel offsets sorted by
    their squared physical length ``offset_d2`` (``h2``: squared voxel size, mm²). A
    voxel is covered when its centre lies
    strictly inside the ball. The largest ball covering a voxel wins; among equal balls
    the one with the nearest centre, then the one first in ``centres``. While painting,
    ``labels`` holds ``-(i + 1)`` for a voxel painted by ``centres[i]``; the element ids
    are filled in at the end.
    """
    nz, ny, nx = shape
    for i in range(centres.size):
        c = centres[i]
        r2 = radius2[i]
        cz = c // (ny * nx)
        cy = (c // nx) % ny
        cx = c % nx
        for k in range(offset_d2.size):
            if offset_d2[k] >= r2:
                break
            z = cz + offsets[k, 0]
            y = cy + offsets[k, 1]
            x = cx + offsets[k, 2]
            if z < 0 or z >= nz or y < 0 or y >= ny or x < 0 or x >= nx:
                continue
            v = (z * ny + y) * nx + x
            if not mask[v]:
                continue
            owner = labels[v]
            if owner == 0:
                labels[v] = -(i + 1)
            elif owner < 0:
                j = -owner - 1
                if radius2[j] == r2 and offset_d2[k] < _distance2(v, centres[j], ny, nx, h2):
                    labels[v] = -(i + 1)
    for v in range(labels.size):
        if labels[v] < 0:
            labels[v] = labels[centres[-labels[v] - 1]]


@njit(inline="always")
def _distance2(v, c, ny, nx, h2):
    """Squared physical distance between the flat voxels v and c."""
    dz = v // (ny * nx) - c // (ny * nx)
    dy = (v // nx) % ny - (c // nx) % ny
    dx = v % nx - c % nx
    return dz * dz * h2[0] + dy * dy * h2[1] + dx * dx * h2[2]


@njit
def grow_labels(labels, mask, strides):
    """Give the bone voxels no ball reached the element of their labelled neighbours.

    ``labels`` and ``mask`` are padded flat volumes (the padding is not bone). Layer by
    layer, each unlabelled bone voxel next to voxels labelled in earlier layers takes the
    element with the largest adjacency weight among them (face 3, edge 2, corner 1;
    ties: the smaller element id). Returns the number of bone voxels left unlabelled
    (bone not connected to any labelled voxel).
    """
    offsets = offsets26(strides)
    weights = np.empty(27, np.int64)
    for b in range(27):
        dz, dy, dx = b // 9 - 1, (b // 3) % 3 - 1, b % 3 - 1
        weights[b] = 4 - (abs(dz) + abs(dy) + abs(dx))
    pending_count = 0
    for v in range(mask.size):
        if mask[v] and labels[v] == 0:
            pending_count += 1
    pending = np.empty(pending_count, np.int64)
    k = 0
    for v in range(mask.size):
        if mask[v] and labels[v] == 0:
            pending[k] = v
            k += 1
    chosen = np.zeros(pending_count, np.int32)
    candidates = np.empty(27, np.int32)
    scores = np.empty(27, np.int64)
    while pending_count > 0:
        for i in range(pending_count):
            v = pending[i]
            m = 0
            for b in range(27):
                e = labels[v + offsets[b]]
                if e <= 0:
                    continue
                found = False
                for j in range(m):
                    if candidates[j] == e:
                        scores[j] += weights[b]
                        found = True
                        break
                if not found:
                    candidates[m] = e
                    scores[m] = weights[b]
                    m += 1
            best = 0
            best_score = 0
            for j in range(m):
                if scores[j] > best_score or (scores[j] == best_score and candidates[j] < best):
                    best = candidates[j]
                    best_score = scores[j]
            chosen[i] = best
        # commit the layer, keep the rest pending
        kept = 0
        for i in range(pending_count):
            if chosen[i] > 0:
                labels[pending[i]] = chosen[i]
            else:
                pending[kept] = pending[i]
                kept += 1
        if kept == pending_count:
            break
        pending_count = kept
    return pending_count


@njit
def element_counts(labels, mask, roi, use_roi, n_elements):
    """Bone voxels of each element, in total and inside the ROI."""
    total = np.zeros(n_elements + 1, np.int64)
    inside = np.zeros(n_elements + 1, np.int64)
    for v in range(labels.size):
        if mask[v]:
            e = labels[v]
            total[e] += 1
            if not use_roi or roi[v]:
                inside[e] += 1
    return total, inside


# ---------------------------------------------------------------------------------------
# Element geometry: rod length and plate area
# ---------------------------------------------------------------------------------------


@njit
def rod_lengths(labels, points, strides, is_rod, n_elements, spacing):
    """Length (mm) of each rod: the longest shortest path through its skeleton voxels.

    Computed by the double sweep (Dijkstra from any voxel to the farthest one, then from
    there) with steps weighted by their physical length; exact for trees such as curves.
    One voxel's extent along the end-to-end direction is added, so that a straight rod
    of n voxels is n voxels long (voxels are cubes, not points).
    """
    offsets = offsets26(strides)
    sz, sy = strides[0], strides[1]
    steps = np.empty(27)
    for dz in range(3):
        for dy in range(3):
            for dx in range(3):
                steps[9 * dz + 3 * dy + dx] = np.sqrt(((dz - 1) * spacing[0]) ** 2
                                                      + ((dy - 1) * spacing[1]) ** 2
                                                      + ((dx - 1) * spacing[2]) ** 2)
    # group the skeleton voxels of each rod
    n = points.size
    start = np.zeros(n_elements + 2, np.int64)
    for i in range(n):
        e = labels[points[i]]
        if is_rod[e]:
            start[e + 1] += 1
    for e in range(n_elements + 1):
        start[e + 1] += start[e]
    members = np.empty(start[n_elements + 1], np.int64)
    fill = start.copy()
    for i in range(n):
        e = labels[points[i]]
        if is_rod[e]:
            members[fill[e]] = points[i]
            fill[e] += 1
    lengths = np.zeros(n_elements + 1)
    for e in range(1, n_elements + 1):
        if not is_rod[e] or start[e + 1] == start[e]:
            continue
        group = members[start[e]: start[e + 1]]  # sorted: points are sorted
        end, _ = _farthest(labels, group, group[0], e, offsets, steps)
        other_end, length = _farthest(labels, group, end, e, offsets, steps)
        # voxel centres to voxel faces: add one voxel's extent along the rod
        extra = min(spacing[0], spacing[1], spacing[2])
        if other_end != end:
            u = np.empty(3)
            u[0] = (other_end // sz - end // sz) * spacing[0]
            u[1] = ((other_end % sz) // sy - (end % sz) // sy) * spacing[1]
            u[2] = ((other_end % sy) - (end % sy)) * spacing[2]
            norm = np.sqrt((u * u).sum())
            extra = np.inf
            for a in range(3):
                if u[a] != 0.0:
                    extra = min(extra, spacing[a] * norm / abs(u[a]))
        lengths[e] = length + extra
    return lengths


@njit
def _farthest(labels, group, source, element, offsets, steps):
    """Dijkstra within one element's voxels (sorted flat indices ``group``)."""
    m = group.size
    dist = np.full(m, np.inf)
    done = np.zeros(m, np.bool_)
    dist[np.searchsorted(group, source)] = 0.0
    # small groups: a simple O(m^2) selection would be slow for long rods; use a heap
    heap_d = np.empty(27 * m + 1)
    heap_i = np.empty(27 * m + 1, np.int64)
    size = 0
    size = _push(heap_d, heap_i, size, 0.0, np.searchsorted(group, source))
    best_i, best_d = np.searchsorted(group, source), 0.0
    while size > 0:
        d, i, size = _pop(heap_d, heap_i, size)
        if done[i]:
            continue
        done[i] = True
        if d > best_d:
            best_d, best_i = d, i
        p = group[i]
        for b in range(27):
            if b == 13:
                continue
            q = p + offsets[b]
            if labels[q] != element:
                continue
            j = np.searchsorted(group, q)
            if j >= m or group[j] != q:  # bone voxel of the element, not skeleton
                continue
            nd = d + steps[b]
            if nd < dist[j]:
                dist[j] = nd
                size = _push(heap_d, heap_i, size, nd, j)
    return group[best_i], best_d


@njit
def _push(heap_d, heap_i, size, d, i):
    k = size
    heap_d[k] = d
    heap_i[k] = i
    while k > 0:
        parent = (k - 1) // 2
        if heap_d[parent] <= heap_d[k]:
            break
        heap_d[parent], heap_d[k] = heap_d[k], heap_d[parent]
        heap_i[parent], heap_i[k] = heap_i[k], heap_i[parent]
        k = parent
    return size + 1


@njit
def _pop(heap_d, heap_i, size):
    d, i = heap_d[0], heap_i[0]
    size -= 1
    heap_d[0] = heap_d[size]
    heap_i[0] = heap_i[size]
    k = 0
    while True:
        left = 2 * k + 1
        if left >= size:
            break
        child = left
        if left + 1 < size and heap_d[left + 1] < heap_d[left]:
            child = left + 1
        if heap_d[k] <= heap_d[child]:
            break
        heap_d[k], heap_d[child] = heap_d[child], heap_d[k]
        heap_i[k], heap_i[child] = heap_i[child], heap_i[k]
        k = child
    return d, i, size


@njit(parallel=True)
def plate_areas(labels, points, strides, is_plate, n_elements, spacing, reach):
    """Area (mm²) of each plate's mid-surface (``labels`` set on skeleton voxels only).

    A one-voxel-thin digital surface has one voxel per column along the axis k that
    maximises ``h_k |n_k|`` (n the unit normal in mm, h the voxel size), so each voxel
    stands for ``h_z h_y h_x / max_k(h_k |n_k|)`` of surface. The normal is the direction
    of least spread of the plate's own skeleton voxels within ``reach`` voxels. The
    voxels' shares are computed in parallel and summed in the order of ``points``.
    """
    sz, sy = strides[0], strides[1]
    nz, ny, nx = labels.size // sz, sz // sy, sy
    hz, hy, hx = spacing[0], spacing[1], spacing[2]
    volume = hz * hy * hx
    share = np.zeros(points.size)
    for i in prange(points.size):
        p = points[i]
        e = labels[p]
        if not is_plate[e]:
            continue
        pz = p // sz
        py = (p - pz * sz) // sy
        px = p - pz * sz - py * sy
        # covariance of the neighbouring voxels of the same plate (physical units)
        count = 0
        s0 = s1 = s2 = 0.0
        c00 = c01 = c02 = c11 = c12 = c22 = 0.0
        for dz in range(-reach, reach + 1):
            if not 0 <= pz + dz < nz:
                continue
            for dy in range(-reach, reach + 1):
                if not 0 <= py + dy < ny:
                    continue
                for dx in range(-reach, reach + 1):
                    if not 0 <= px + dx < nx or labels[p + dz * sz + dy * sy + dx] != e:
                        continue
                    v0, v1, v2 = dz * hz, dy * hy, dx * hx
                    count += 1
                    s0 += v0
                    s1 += v1
                    s2 += v2
                    c00 += v0 * v0
                    c01 += v0 * v1
                    c02 += v0 * v2
                    c11 += v1 * v1
                    c12 += v1 * v2
                    c22 += v2 * v2
        if count >= 3:
            n2 = count * count
            cov = np.empty((3, 3))
            cov[0, 0] = c00 / count - s0 * s0 / n2
            cov[0, 1] = cov[1, 0] = c01 / count - s0 * s1 / n2
            cov[0, 2] = cov[2, 0] = c02 / count - s0 * s2 / n2
            cov[1, 1] = c11 / count - s1 * s1 / n2
            cov[1, 2] = cov[2, 1] = c12 / count - s1 * s2 / n2
            cov[2, 2] = c22 / count - s2 * s2 / n2
            _, vecs = np.linalg.eigh(cov)
            best = max(hz * abs(vecs[0, 0]), hy * abs(vecs[1, 0]), hx * abs(vecs[2, 0]))
        else:  # too few voxels for a normal: take the largest voxel face
            best = min(hz, hy, hx)
        share[i] = volume / best
    areas = np.zeros(n_elements + 1)
    for i in range(points.size):
        areas[labels[points[i]]] += share[i]
    return areas


@njit
def kind_map(labels, kinds):
    """uint8 ``kinds[labels]`` on the interior of a padded label volume (unpadded out)."""
    nz, ny, nx = labels.shape
    out = np.empty((nz - 2, ny - 2, nx - 2), np.uint8)
    for z in range(1, nz - 1):
        for y in range(1, ny - 1):
            for x in range(1, nx - 1):
                out[z - 1, y - 1, x - 1] = kinds[labels[z, y, x]]
    return out
