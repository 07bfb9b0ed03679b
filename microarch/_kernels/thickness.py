"""Kernels for local thickness (Hildebrand & Rueegsegger 1997) by ball painting.

Geometry is on the *doubled grid*: index ``g`` along an axis is the position ``g / 2`` in
voxel units, so even indices are voxel centres and odd indices lie midway between two
voxels. Squared distances are physical (mm²). Arrays are C-contiguous; inputs are trusted.

Pipeline (driven by :mod:`microarch.measure._thickness`):

1. :func:`doubled_distance_sq` -- squared distance from every doubled-grid point of a
   z-slab to the nearest *outside* point (separable lower-envelope EDT of Felzenszwalb &
   Huttenlocher, one axis at a time).
2. :func:`ridge_centres` -- keep the points whose ball is not contained in the ball of a
   neighbouring point (contained balls can never raise any voxel's value).
3. :func:`paint` -- visit the balls from largest to smallest; each target voxel takes the
   first (largest) ball that covers it. Tiles of 4x4x4 voxels that are fully painted are
   skipped, which makes the big marrow balls cheap.
"""

import math

import numpy as np
from numba import prange

from microarch._kernels._jit import njit

INSIDE_ISO = 0  # inside = trilinear interpolation of the phase > 1/2
INSIDE_SITES = 1  # outside = centres of the "site" voxels only (for Tb.N: the skeleton)

TILE = 4
TIE = 1e-6  # relative tolerance of "touching" (float32 radii)


# ---------------------------------------------------------------------------------------
# 1-D lower envelope of parabolas
# ---------------------------------------------------------------------------------------


@njit
def _envelope(f, n, step, edge_sites, out, pos, val, v, z):
    """out[q] = min_p f[p] + ((q - p) * step)**2 for q in 0..n-1 (f may hold inf).

    With ``edge_sites`` the positions -1 and n hold virtual zero sites (background
    beyond the border). ``pos``/``val``/``v``/``z`` are scratch buffers of length n + 3.
    """
    m = 0
    if edge_sites:
        pos[m] = -1.0
        val[m] = 0.0
        m += 1
    for q in range(n):
        if f[q] < np.inf:
            pos[m] = q
            val[m] = f[q]
            m += 1
    if edge_sites:
        pos[m] = n
        val[m] = 0.0
        m += 1
    if m == 0:
        for q in range(n):
            out[q] = np.inf
        return
    s2 = step * step
    k = 0
    v[0] = 0
    z[0] = -np.inf
    z[1] = np.inf
    for q in range(1, m):
        while True:
            p = v[k]
            s = ((val[q] + s2 * pos[q] * pos[q]) - (val[p] + s2 * pos[p] * pos[p])) / (
                2.0 * s2 * (pos[q] - pos[p])
            )
            if s > z[k]:
                break
            k -= 1  # z[0] is -inf, so k never drops below 0
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = np.inf
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        p = v[k]
        d = (q - pos[p]) * step
        out[q] = val[p] + d * d


@njit(parallel=True)
def _pass_axis(arr, axis, step, edge_sites):
    """In-place squared-distance pass of ``arr`` (3-D float32) along ``axis``."""
    n0, n1, n2 = arr.shape
    if axis == 0:
        n, a, b = n0, n1, n2
    elif axis == 1:
        n, a, b = n1, n0, n2
    else:
        n, a, b = n2, n0, n1
    for row in prange(a):
        f = np.empty(n, np.float64)
        out = np.empty(n, np.float64)
        pos = np.empty(n + 3, np.float64)
        val = np.empty(n + 3, np.float64)
        v = np.empty(n + 3, np.int64)
        z = np.empty(n + 4, np.float64)
        for col in range(b):
            for q in range(n):
                if axis == 0:
                    f[q] = arr[q, row, col]
                elif axis == 1:
                    f[q] = arr[row, q, col]
                else:
                    f[q] = arr[row, col, q]
            _envelope(f, n, step, edge_sites, out, pos, val, v, z)
            for q in range(n):
                if axis == 0:
                    arr[q, row, col] = out[q]
                elif axis == 1:
                    arr[row, q, col] = out[q]
                else:
                    arr[row, col, q] = out[q]


# ---------------------------------------------------------------------------------------
# Distances on the doubled grid
# ---------------------------------------------------------------------------------------


@njit
def _is_outside(phase, mode, k, j, i):
    """Whether the doubled-grid point (k, j, i) lies outside the phase."""
    if mode == INSIDE_SITES:
        if (k | j | i) & 1:
            return False
        return phase[k >> 1, j >> 1, i >> 1]
    count = 0
    total = 0
    for zz in range(k >> 1, (k + 1 >> 1) + 1):
        for yy in range(j >> 1, (j + 1 >> 1) + 1):
            for xx in range(i >> 1, (i + 1 >> 1) + 1):
                total += 1
                if phase[zz, yy, xx]:
                    count += 1
    return 2 * count <= total


@njit(parallel=True)
def _outside_distance_x(phase, mode, k_lo, step, edge_site, out):
    """Squared distance along x to the nearest outside point of the same doubled row."""
    nk, nj, ni = out.shape
    for kk in prange(nk):
        k = k_lo + kk
        for j in range(nj):
            last = -1.0 if edge_site else -np.inf
            for i in range(ni):
                if _is_outside(phase, mode, k, j, i):
                    last = i
                    out[kk, j, i] = 0.0
                else:
                    d = (i - last) * step
                    out[kk, j, i] = d * d
            last = ni if edge_site else np.inf
            for i in range(ni - 1, -1, -1):
                d = (last - i) * step
                if d * d < out[kk, j, i]:
                    out[kk, j, i] = d * d
                if out[kk, j, i] == 0.0:
                    last = i


def doubled_distance_sq(phase, mode, spacing, edge_sites, k_lo, k_hi):
    """Squared distance (mm²) to the nearest outside point, doubled planes [k_lo, k_hi).

    ``edge_sites`` is a triple of bools: whether the image border along each axis is
    background. Along z the virtual sites only apply at the real image ends.
    """
    nz, ny, nx = phase.shape
    out = np.empty((k_hi - k_lo, 2 * ny - 1, 2 * nx - 1), np.float32)
    hz, hy, hx = spacing
    _outside_distance_x(phase, mode, k_lo, hx / 2.0, edge_sites[2], out)
    _pass_axis(out, 1, hy / 2.0, edge_sites[1])
    if k_lo == 0 and k_hi == 2 * nz - 1:
        _pass_axis(out, 0, hz / 2.0, edge_sites[0])
    else:
        # a slab: the z-border sites exist only where the slab meets the image border
        _pass_axis_z_partial(out, hz / 2.0, edge_sites[0] and k_lo == 0,
                             edge_sites[0] and k_hi == 2 * nz - 1)
    return out


@njit(parallel=True)
def _pass_axis_z_partial(arr, step, site_below, site_above):
    n, a, b = arr.shape
    for row in prange(a):
        m = n + 2
        f = np.empty(m, np.float64)
        out = np.empty(m, np.float64)
        pos = np.empty(m + 3, np.float64)
        val = np.empty(m + 3, np.float64)
        v = np.empty(m + 3, np.int64)
        z = np.empty(m + 4, np.float64)
        for col in range(b):
            f[0] = 0.0 if site_below else np.inf
            f[m - 1] = 0.0 if site_above else np.inf
            for q in range(n):
                f[q + 1] = arr[q, row, col]
            _envelope(f, m, step, False, out, pos, val, v, z)
            for q in range(n):
                arr[q, row, col] = out[q + 1]


@njit(parallel=True)
def _init_sites(sites, out):
    nz, ny, nx = sites.shape
    for z in prange(nz):
        for y in range(ny):
            for x in range(nx):
                out[z, y, x] = 0.0 if sites[z, y, x] else np.inf


def voxel_distance_sq(sites, spacing, edge_sites):
    """Squared distance (mm²) from every voxel centre to the nearest ``sites`` voxel."""
    out = np.empty(sites.shape, np.float32)
    _init_sites(sites, out)
    for axis in (2, 1, 0):
        _pass_axis(out, axis, spacing[axis], edge_sites[axis])
    return out


# ---------------------------------------------------------------------------------------
# Ridge: centres of balls not contained in a neighbour's ball
# ---------------------------------------------------------------------------------------


@njit(parallel=True)
def ridge_centres(d2, k_offset, kk_lo, kk_hi, gz, gy, gx, scale, nj2, ni2):
    """Centres in planes [kk_lo, kk_hi) of ``d2`` whose ball no 26-neighbour's contains.

    ``d2`` holds squared radii on a grid of steps (gz, gy, gx) mm whose point (kk, j, i)
    is the doubled-grid point ``scale * (kk + k_offset, j, i)`` (scale 1: ``d2`` is a
    slab of the doubled grid; scale 2: ``d2`` is on voxel centres). Returns the kept
    centres as flat doubled-grid indices (rows of ``nj2`` x ``ni2``) and squared radii.
    """
    nk, nj, ni = d2.shape
    counts = np.zeros(kk_hi - kk_lo, np.int64)
    for kk in prange(kk_lo, kk_hi):
        c = 0
        for j in range(nj):
            for i in range(ni):
                if _keep(d2, kk, j, i, gz, gy, gx):
                    c += 1
        counts[kk - kk_lo] = c
    starts = np.zeros(kk_hi - kk_lo + 1, np.int64)
    for t in range(kk_hi - kk_lo):
        starts[t + 1] = starts[t] + counts[t]
    index = np.empty(starts[-1], np.int64)
    radius2 = np.empty(starts[-1], np.float32)
    for kk in prange(kk_lo, kk_hi):
        c = starts[kk - kk_lo]
        k = (kk + k_offset) * scale
        for j in range(nj):
            for i in range(ni):
                if _keep(d2, kk, j, i, gz, gy, gx):
                    index[c] = (k * nj2 + j * scale) * ni2 + i * scale
                    radius2[c] = d2[kk, j, i]
                    c += 1
    return index, radius2


@njit
def _keep(d2, kk, j, i, gz, gy, gx):
    r2 = d2[kk, j, i]
    if r2 <= 0.0 or r2 == np.inf:
        return False
    r = math.sqrt(r2)
    nk, nj, ni = d2.shape
    for dk in range(-1, 2):
        k2 = kk + dk
        if k2 < 0 or k2 >= nk:
            continue
        for dj in range(-1, 2):
            j2 = j + dj
            if j2 < 0 or j2 >= nj:
                continue
            for di in range(-1, 2):
                i2 = i + di
                if i2 < 0 or i2 >= ni:
                    continue
                other = d2[k2, j2, i2]
                if other <= r2:
                    continue
                gap = math.sqrt((dk * gz) ** 2 + (dj * gy) ** 2 + (di * gx) ** 2)
                # contained when R' >= r + |c - c'| (internally tangent balls included;
                # the relative slack only absorbs rounding of exact ties)
                if math.sqrt(other) - gap >= r * (1.0 - 1e-7):
                    return False
    return True


# ---------------------------------------------------------------------------------------
# Painting
# ---------------------------------------------------------------------------------------


@njit(parallel=True)
def paint(targets, index, radius2, nj2, ni2, hz, hy, hx, cube_overlap, n_chunks):
    """Squared radius of the largest ball covering each target voxel (0 where none).

    ``index``/``radius2`` are the centres (flat doubled-grid index with row lengths
    ``nj2``/``ni2``, squared radius in mm²), sorted from the largest radius down. A ball covers a voxel when it contains the voxel centre
    (``cube_overlap`` False) or when its interior meets the voxel's cube (True).
    """
    nz, ny, nx = targets.shape
    out = np.zeros((nz, ny, nx), np.float32)
    tz = (nz + TILE - 1) // TILE
    ty = (ny + TILE - 1) // TILE
    tx = (nx + TILE - 1) // TILE
    remaining = np.zeros((tz, ty, tx), np.int32)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if targets[z, y, x]:
                    remaining[z // TILE, y // TILE, x // TILE] += 1
    half = 0.5 if cube_overlap else 0.0
    per_chunk = (tz + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        tile_z0 = chunk * per_chunk
        tile_z1 = min(tz, tile_z0 + per_chunk)
        if tile_z0 >= tile_z1:
            continue
        z_lo_chunk = tile_z0 * TILE
        z_hi_chunk = min(nz, tile_z1 * TILE) - 1
        left = 0
        for t in range(tile_z0, tile_z1):
            for a in range(ty):
                for b in range(tx):
                    left += remaining[t, a, b]
        for n in range(index.shape[0]):
            if left == 0:
                break
            c = index[n]
            r2 = np.float64(radius2[n])
            ci = c % ni2
            cj = (c // ni2) % nj2
            ck = c // (ni2 * nj2)
            cz = ck * 0.5
            cy = cj * 0.5
            cx = ci * 0.5
            r = math.sqrt(r2)
            z0 = max(z_lo_chunk, int(math.floor(cz - half - r / hz)))
            z1 = min(z_hi_chunk, int(math.ceil(cz + half + r / hz)))
            if z0 > z1:
                continue
            y0 = max(0, int(math.floor(cy - half - r / hy)))
            y1 = min(ny - 1, int(math.ceil(cy + half + r / hy)))
            x0 = max(0, int(math.floor(cx - half - r / hx)))
            x1 = min(nx - 1, int(math.ceil(cx + half + r / hx)))
            # squared radii are float32: treat differences below 1 ppm as exact ties
            limit = r2 * (1.0 - TIE) if cube_overlap else r2 * (1.0 + TIE)
            for tz_ in range(z0 // TILE, z1 // TILE + 1):
                for ty_ in range(y0 // TILE, y1 // TILE + 1):
                    for tx_ in range(x0 // TILE, x1 // TILE + 1):
                        if remaining[tz_, ty_, tx_] == 0:
                            continue
                        for z in range(max(z0, tz_ * TILE), min(z1, tz_ * TILE + TILE - 1) + 1):
                            gz = max(abs(z - cz) - half, 0.0) * hz
                            gz2 = gz * gz
                            if gz2 >= limit:
                                continue
                            for y in range(max(y0, ty_ * TILE), min(y1, ty_ * TILE + TILE - 1) + 1):
                                gy = max(abs(y - cy) - half, 0.0) * hy
                                gzy2 = gz2 + gy * gy
                                if gzy2 >= limit:
                                    continue
                                for x in range(max(x0, tx_ * TILE), min(x1, tx_ * TILE + TILE - 1) + 1):
                                    if out[z, y, x] != 0.0 or not targets[z, y, x]:
                                        continue
                                    gx = max(abs(x - cx) - half, 0.0) * hx
                                    d2 = gzy2 + gx * gx
                                    inside = d2 < limit if cube_overlap else d2 <= limit
                                    if inside:
                                        out[z, y, x] = r2
                                        remaining[tz_, ty_, tx_] -= 1
                                        left -= 1
    return out


# ---------------------------------------------------------------------------------------
# Ridge by discrete containment
# ---------------------------------------------------------------------------------------


@njit(parallel=True)
def ridge_centres_discrete(d2, k_offset, kk_lo, kk_hi, scale, nj2, ni2, shells, need, margin):
    """Like :func:`ridge_centres`, but a ball is dropped when a neighbour's ball covers
    every *voxel* it covers (not necessarily its whole continuous extent).

    ``shells[p]`` holds, for centre parity class ``p``, the sorted distinct "coverage
    distances" of voxels around a centre; a ball of squared radius ``r2`` covers the
    voxels of the first ``searchsorted(shells[p], r2)`` shells. ``need[p, s, n]`` is the
    squared radius a ball at neighbour ``n`` must exceed to cover those voxels too. The
    neighbour must also be larger, or equally large and earlier in index order, so ties
    never drop both balls.
    """
    nk, nj, ni = d2.shape
    counts = np.zeros(kk_hi - kk_lo, np.int64)
    for kk in prange(kk_lo, kk_hi):
        c = 0
        for j in range(nj):
            for i in range(ni):
                if _keep_discrete(d2, kk, j, i, k_offset, scale, shells, need, margin):
                    c += 1
        counts[kk - kk_lo] = c
    starts = np.zeros(kk_hi - kk_lo + 1, np.int64)
    for t in range(kk_hi - kk_lo):
        starts[t + 1] = starts[t] + counts[t]
    index = np.empty(starts[-1], np.int64)
    radius2 = np.empty(starts[-1], np.float32)
    for kk in prange(kk_lo, kk_hi):
        c = starts[kk - kk_lo]
        k = (kk + k_offset) * scale
        for j in range(nj):
            for i in range(ni):
                if _keep_discrete(d2, kk, j, i, k_offset, scale, shells, need, margin):
                    index[c] = (k * nj2 + j * scale) * ni2 + i * scale
                    radius2[c] = d2[kk, j, i]
                    c += 1
    return index, radius2


@njit
def _keep_discrete(d2, kk, j, i, k_offset, scale, shells, need, margin):
    r2 = d2[kk, j, i]
    if r2 <= 0.0 or r2 == np.inf:
        return False
    nk, nj, ni = d2.shape
    k = kk + k_offset
    if scale == 1:
        parity = ((k & 1) << 2) | ((j & 1) << 1) | (i & 1)
    else:
        parity = 0
    row = shells[parity]
    # number of shells the ball covers: shells[s] < r2 (padding at the end is inf)
    lo, hi = 0, row.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if row[mid] < r2:
            lo = mid + 1
        else:
            hi = mid
    s = lo
    if s == 0:
        return True
    n = 0
    for dk in range(-1, 2):
        k2 = kk + dk
        for dj in range(-1, 2):
            j2 = j + dj
            for di in range(-1, 2):
                i2 = i + di
                if dk == 0 and dj == 0 and di == 0:
                    continue
                slot = n
                n += 1
                if k2 < 0 or k2 >= nk or j2 < 0 or j2 >= nj or i2 < 0 or i2 >= ni:
                    continue
                other = d2[k2, j2, i2]
                if other < r2 or other == np.inf:
                    continue
                if other == r2 and slot >= 13:  # equal radii: only an earlier point wins
                    continue
                if s > need.shape[1]:
                    continue
                if other > need[parity, s - 1, slot] * margin:
                    return False
    return True
