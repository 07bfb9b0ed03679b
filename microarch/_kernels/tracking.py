"""Kernel of the connection tracker's presence test (:mod:`microarch.longitudinal`).

A connection of element ``e`` between junctions ``a`` and ``b`` is present in a visit when
one 26-connected component of that visit's bone inside the element's *tube* touches the
end regions of both junctions. The tube is every voxel whose owner code is ``-e`` or one
of the element's junctions, within the element's box; components are not followed out of
the box. Inputs are trusted; coordinates are on the owner map's grid.
"""

import numpy as np

from microarch._kernels._jit import njit


@njit
def presence(owner, bone, origin, boxes, element_of, junction_ptr, junctions, row_ptr,
             rows, junction_a, junction_b, end_ptr, ends, present, seen, base):
    """Mark ``present[r]`` for the connections whose two ends one component links.

    ``element_of[k]`` is the k-th element, ``boxes[k]`` its box (lo, hi on the owner
    grid), ``junctions[junction_ptr[k]:junction_ptr[k + 1]]`` its junctions and
    ``rows[row_ptr[k]:row_ptr[k + 1]]`` its connections. ``ends[end_ptr[j]:end_ptr[j + 1]]``
    are junction ``j``'s end voxels. ``bone`` is the visit's mask on the full grid, where
    the owner grid starts at ``origin``. ``seen`` (int64, owner's shape) holds component
    stamps above ``base``, so it is never cleared; returns the next free stamp.
    """
    of_element = np.zeros(end_ptr.size, np.int64)  # junction id -> element stamp
    label = np.zeros(ends.shape[0], np.int64)  # component of each end voxel, 0: none
    stack = np.empty((min(1 << 16, owner.size), 3), np.int64)  # grows when needed
    for k in range(element_of.size):
        e = element_of[k]
        for t in range(junction_ptr[k], junction_ptr[k + 1]):
            of_element[junctions[t]] = k + 1
        z0, y0, x0 = boxes[k, 0], boxes[k, 1], boxes[k, 2]
        z1, y1, x1 = boxes[k, 3], boxes[k, 4], boxes[k, 5]
        count = 0
        for t in range(junction_ptr[k], junction_ptr[k + 1]):
            j = junctions[t]
            for i in range(end_ptr[j], end_ptr[j + 1]):
                label[i] = 0
                z, y, x = ends[i, 0], ends[i, 1], ends[i, 2]
                if not (z0 <= z < z1 and y0 <= y < y1 and x0 <= x < x1):
                    continue
                if not _in_tube(owner, bone, origin, z, y, x, e, k, of_element):
                    continue
                if seen[z, y, x] <= base:
                    count += 1
                    stack = _flood(owner, bone, origin, z, y, x, e, k, of_element, z0, y0,
                                   x0, z1, y1, x1, seen, base + count, stack)
                label[i] = seen[z, y, x]
        for t in range(row_ptr[k], row_ptr[k + 1]):
            r = rows[t]
            present[r] = _share_label(junction_a[r], junction_b[r], end_ptr, label)
        base += count
    return base


@njit(inline="always")
def _in_tube(owner, bone, origin, z, y, x, e, k, of_element):
    if not bone[z + origin[0], y + origin[1], x + origin[2]]:
        return False
    code = owner[z, y, x]
    return code == -e or (code > 0 and of_element[code] == k + 1)


@njit
def _flood(owner, bone, origin, z, y, x, e, k, of_element, z0, y0, x0, z1, y1, x1, seen,
           stamp, stack):
    """Stamp the 26-connected tube-and-bone component of (z, y, x) within the box."""
    seen[z, y, x] = stamp
    stack[0, 0], stack[0, 1], stack[0, 2] = z, y, x
    size = 1
    while size > 0:
        size -= 1
        cz, cy, cx = stack[size, 0], stack[size, 1], stack[size, 2]
        for dz in range(-1, 2):
            qz = cz + dz
            if not z0 <= qz < z1:
                continue
            for dy in range(-1, 2):
                qy = cy + dy
                if not y0 <= qy < y1:
                    continue
                for dx in range(-1, 2):
                    qx = cx + dx
                    if not x0 <= qx < x1 or seen[qz, qy, qx] == stamp:
                        continue
                    if not _in_tube(owner, bone, origin, qz, qy, qx, e, k, of_element):
                        continue
                    seen[qz, qy, qx] = stamp
                    if size == stack.shape[0]:
                        grown = np.empty((2 * size, 3), np.int64)
                        grown[:size] = stack
                        stack = grown
                    stack[size, 0], stack[size, 1], stack[size, 2] = qz, qy, qx
                    size += 1
    return stack


@njit(inline="always")
def _share_label(a, b, end_ptr, label):
    for i in range(end_ptr[a], end_ptr[a + 1]):
        if label[i] == 0:
            continue
        for m in range(end_ptr[b], end_ptr[b + 1]):
            if label[m] == label[i]:
                return True
    return False
