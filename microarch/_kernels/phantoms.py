"""Kernels that rasterise the elements of a synthetic trabecular network.

An element is a *rod* (a capsule: every point within ``radius`` of a segment) or a *plate*
(every point within ``half_thickness`` of a planar convex polygon, so its rim is rounded).
Its signed depth at a point is ``radius - distance`` (mm): positive inside, 1-Lipschitz.
Off a plate's slab the kernels return ``half_thickness - |height|`` instead, an upper bound
of the depth with the same (negative) sign, which is all the callers need there.

Coordinates are physical (mm); voxel ``(i, j, k)`` has its centre at
``((i + 0.5) hz, (j + 0.5) hy, (k + 0.5) hx)``.

Geometry table ``geom`` (float64, one row per element):

- rod:   columns 0-2 first end, 3-5 second end, 15 radius
- plate: columns 0-2 polygon centre, 3-5 in-plane axis u, 6-8 in-plane axis v,
  9-11 normal, 15 half thickness; its polygon (in (u, v) coordinates about the centre)
  is ``poly[offsets[e]:offsets[e + 1]]``.

Parallel work is split into fixed z-slabs that do not depend on the thread count, and each
voxel is written by the one slab that holds it, so results are identical for any number of
threads. A voxel covered by several elements takes the deepest one; exact ties go to the
smaller element index.
"""

import math

import numpy as np
from numba import prange

from microarch._kernels._jit import njit

ROD = 0
PLATE = 1
SLAB = 4  # z-slices per work unit


# The helpers index ``geom[e, c]`` directly: taking a row view per voxel would touch the
# array's reference count, which costs more than the geometry and serialises threads.


@njit(inline="always")
def _rod_depth(geom, e, z, y, x):
    az, ay, ax = geom[e, 0], geom[e, 1], geom[e, 2]
    dz, dy, dx = geom[e, 3] - az, geom[e, 4] - ay, geom[e, 5] - ax
    qz, qy, qx = z - az, y - ay, x - ax
    length_sq = dz * dz + dy * dy + dx * dx
    t = 0.0
    if length_sq > 0.0:
        t = (qz * dz + qy * dy + qx * dx) / length_sq
        if t < 0.0:
            t = 0.0
        elif t > 1.0:
            t = 1.0
    rz, ry, rx = qz - t * dz, qy - t * dy, qx - t * dx
    return geom[e, 15] - math.sqrt(rz * rz + ry * ry + rx * rx)


@njit(inline="always")
def _plate_depth(geom, e, poly, start, stop, z, y, x):
    half = geom[e, 15]
    qz, qy, qx = z - geom[e, 0], y - geom[e, 1], x - geom[e, 2]
    h = qz * geom[e, 9] + qy * geom[e, 10] + qx * geom[e, 11]
    if abs(h) >= half:
        # Off the slab: the distance is at least |h|, so this bound is exact in sign and
        # never below the true depth (all the callers need).
        return half - abs(h)
    a = qz * geom[e, 3] + qy * geom[e, 4] + qx * geom[e, 5]
    b = qz * geom[e, 6] + qy * geom[e, 7] + qx * geom[e, 8]
    # Crossing-number point-in-polygon test and distance to the rim, in the plate plane.
    inside = False
    rim_sq = np.inf
    a0, b0 = poly[stop - 1, 0], poly[stop - 1, 1]
    for k in range(start, stop):
        a1, b1 = poly[k, 0], poly[k, 1]
        if (b0 > b) != (b1 > b) and a < a0 + (b - b0) * (a1 - a0) / (b1 - b0):
            inside = not inside
        ea, eb = a1 - a0, b1 - b0
        pa, pb = a - a0, b - b0
        length_sq = ea * ea + eb * eb
        t = 0.0
        if length_sq > 0.0:
            t = (pa * ea + pb * eb) / length_sq
            if t < 0.0:
                t = 0.0
            elif t > 1.0:
                t = 1.0
        da, db = pa - t * ea, pb - t * eb
        d_sq = da * da + db * db
        rim_sq = min(rim_sq, d_sq)
        a0, b0 = a1, b1
    if inside:
        return half - abs(h)
    return half - math.sqrt(h * h + rim_sq)


@njit(inline="always")
def _depth(is_rod, geom, e, poly, start, stop, z, y, x):
    if is_rod:
        return _rod_depth(geom, e, z, y, x)
    return _plate_depth(geom, e, poly, start, stop, z, y, x)


@njit(parallel=True)
def render_labels(shape, spacing, kind, geom, poly, offsets, lo, hi, labels, depth):
    """Write 1 + the index of the deepest element covering each voxel centre into ``labels``.

    ``lo``/``hi`` (int64, n x 3) are the inclusive voxel index bounds of each element.
    ``labels`` (int32) must be zero and ``depth`` (float32) anything on entry.
    """
    nz, _ny, _nx = shape[0], shape[1], shape[2]
    hz, hy, hx = spacing[0], spacing[1], spacing[2]
    n_slabs = (nz + SLAB - 1) // SLAB
    n_elements = kind.shape[0]
    for s in prange(n_slabs):
        z_lo = s * SLAB
        z_hi = min(nz, z_lo + SLAB) - 1
        for e in range(n_elements):
            i0 = max(lo[e, 0], z_lo)
            i1 = min(hi[e, 0], z_hi)
            if i0 > i1:
                continue
            is_rod = kind[e] == ROD
            start, stop = offsets[e], offsets[e + 1]
            for i in range(i0, i1 + 1):
                z = (i + 0.5) * hz
                for j in range(lo[e, 1], hi[e, 1] + 1):
                    y = (j + 0.5) * hy
                    for k in range(lo[e, 2], hi[e, 2] + 1):
                        x = (k + 0.5) * hx
                        d = np.float32(_depth(is_rod, geom, e, poly, start, stop, z, y, x))
                        if d < 0.0:
                            continue
                        if labels[i, j, k] == 0 or d > depth[i, j, k]:
                            labels[i, j, k] = e + 1
                            depth[i, j, k] = d
                        # equal depth: the earlier (smaller) element keeps the voxel


@njit(parallel=True)
def render_coverage(shape, spacing, kind, geom, poly, offsets, lo, hi, upsample, bits):
    """OR into ``bits`` (uint64) one bit per covered sub-voxel sample (upsample**3 <= 64).

    Sample ``(a, b, c)`` of a voxel sits at offset ``((a + 0.5) / upsample - 0.5)`` voxels
    along z (b along y, c along x) and owns bit ``(a * upsample + b) * upsample + c``.
    A voxel whose centre depth exceeds the half-diagonal is fully covered; one deeper than
    minus the half-diagonal outside is not touched (depth is 1-Lipschitz).
    """
    nz = shape[0]
    hz, hy, hx = spacing[0], spacing[1], spacing[2]
    half_diagonal = 0.5 * math.sqrt(hz * hz + hy * hy + hx * hx)
    n_samples = upsample * upsample * upsample
    full = np.uint64(0xFFFFFFFFFFFFFFFF)
    if n_samples < 64:
        full = (np.uint64(1) << np.uint64(n_samples)) - np.uint64(1)
    n_slabs = (nz + SLAB - 1) // SLAB
    n_elements = kind.shape[0]
    for s in prange(n_slabs):
        z_lo = s * SLAB
        z_hi = min(nz, z_lo + SLAB) - 1
        for e in range(n_elements):
            i0 = max(lo[e, 0], z_lo)
            i1 = min(hi[e, 0], z_hi)
            if i0 > i1:
                continue
            is_rod = kind[e] == ROD
            start, stop = offsets[e], offsets[e + 1]
            for i in range(i0, i1 + 1):
                for j in range(lo[e, 1], hi[e, 1] + 1):
                    for k in range(lo[e, 2], hi[e, 2] + 1):
                        if bits[i, j, k] == full:
                            continue
                        z = (i + 0.5) * hz
                        y = (j + 0.5) * hy
                        x = (k + 0.5) * hx
                        d = _depth(is_rod, geom, e, poly, start, stop, z, y, x)
                        if d >= half_diagonal:
                            bits[i, j, k] = full
                            continue
                        if d <= -half_diagonal:
                            continue
                        word = bits[i, j, k]
                        bit = 0
                        for a in range(upsample):
                            zs = z + ((a + 0.5) / upsample - 0.5) * hz
                            for b in range(upsample):
                                ys = y + ((b + 0.5) / upsample - 0.5) * hy
                                for c in range(upsample):
                                    flag = np.uint64(1) << np.uint64(bit)
                                    bit += 1
                                    if word & flag:
                                        continue  # covered by an earlier element
                                    xs = x + ((c + 0.5) / upsample - 0.5) * hx
                                    d = _depth(is_rod, geom, e, poly, start, stop, zs, ys, xs)
                                    if d >= 0.0:
                                        word |= flag
                        bits[i, j, k] = word


@njit(parallel=True)
def popcount_fraction(bits, n_samples, out):
    """out = (number of set bits) / n_samples, voxel by voxel (float32)."""
    flat_bits = bits.ravel()
    flat_out = out.ravel()
    for p in prange(flat_bits.shape[0]):
        w = flat_bits[p]
        count = 0
        while w != np.uint64(0):
            w &= w - np.uint64(1)
            count += 1
        flat_out[p] = count / n_samples


@njit
def first_covered(shape, spacing, kind, geom, poly, offsets, lo, hi, elements):
    """Flat index of the first voxel centre inside each listed element (-1: none)."""
    ny, nx = shape[1], shape[2]
    hz, hy, hx = spacing[0], spacing[1], spacing[2]
    out = np.full(elements.shape[0], -1, dtype=np.int64)
    for n in range(elements.shape[0]):
        e = elements[n]
        is_rod = kind[e] == ROD
        start, stop = offsets[e], offsets[e + 1]
        found = False
        for i in range(lo[e, 0], hi[e, 0] + 1):
            for j in range(lo[e, 1], hi[e, 1] + 1):
                for k in range(lo[e, 2], hi[e, 2] + 1):
                    z, y, x = (i + 0.5) * hz, (j + 0.5) * hy, (k + 0.5) * hx
                    if _depth(is_rod, geom, e, poly, start, stop, z, y, x) >= 0.0:
                        out[n] = (i * ny + j) * nx + k
                        found = True
                        break
                if found:
                    break
            if found:
                break
    return out


@njit
def first_voxel_of_label(labels, n_labels):
    """Flat index of the first voxel holding each label 1..n_labels (-1: none)."""
    flat = labels.ravel()
    first = np.full(n_labels + 1, -1, dtype=np.int64)
    for p in range(flat.shape[0]):
        label = flat[p]
        if label > 0 and first[label] < 0:
            first[label] = p
    return first
