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
INSIDE_SITES = 1  # outside = the "site" voxels (for Tb.N: the skeleton) and the segments
# joining neighbouring sites, sampled at their midpoints

TILE = 4  # voxels per tile edge (a tile's voxels fit one 64-bit mask)
BLOCK = 4  # tiles per block edge
BLOCK_VOXELS = BLOCK * TILE
TIE = 1e-6  # relative tolerance of "touching" (float32 radii)


# ---------------------------------------------------------------------------------------
# 1-D lower envelope of parabolas
# ---------------------------------------------------------------------------------------


@njit
def _envelope(f, n, step, site_before, site_after, out, pos, val, v, z):
    """out[q] = min_p f[p] + ((q - p) * step)**2 for q in 0..n-1 (f may hold inf).

    ``site_before``/``site_after``: the positions -1 / n hold virtual zero sites
    (background beyond the border). ``pos``/``val``/``v``/``z`` are scratch buffers of
    length n + 3.
    """
    m = 0
    if site_before:
        pos[m] = -1.0
        val[m] = 0.0
        m += 1
    for q in range(n):
        if f[q] < np.inf:
            pos[m] = q
            val[m] = f[q]
            m += 1
    if site_after:
        pos[m] = n
        val[m] = 0.0
        m += 1
    if m == 0:
        for q in range(n):
            out[q] = np.inf
        return
    # Work in grid units: the parabola of site p is (q - pos[p])**2 + val[p] / step**2, and
    # two parabolas cross where q = (height[b] - height[a]) / (2 (pos[b] - pos[a])) with
    # height = val / step**2 + pos**2.
    inv = 1.0 / (step * step)
    for t in range(m):
        val[t] = val[t] * inv + pos[t] * pos[t]
    k = 0
    v[0] = 0
    z[0] = -np.inf
    z[1] = np.inf
    for q in range(1, m):
        while True:
            p = v[k]
            s = (val[q] - val[p]) / (2.0 * (pos[q] - pos[p]))
            if s > z[k]:
                break
            k -= 1  # z[0] is -inf, so k never drops below 0
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = np.inf
    s2 = step * step
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        p = v[k]
        out[q] = (val[p] - pos[p] * pos[p] + (q - pos[p]) * (q - pos[p])) * s2


_BLOCK = 16  # columns gathered together so that strided passes read whole cache lines


_WINDOW_LIMIT = 48  # up to this many steps of reach, brute force beats the envelope


@njit(parallel=True)
def _pass_axis_window(arr, axis, step, edge_sites, reach):
    """In-place squared-distance pass along axis 0 or 1 by brute force over a window.

    out[q] = min over |p - q| <= halo of f[p] + ((q - p) step)²: exact for every value up
    to reach² (a minimum farther away is larger than that and can never decide a ball).
    The inner loop runs across a block of neighbouring lines, which vectorises.
    """
    n0, n1, n2 = arr.shape
    n = n0 if axis == 0 else n1
    outer = n1 if axis == 0 else n0
    halo = int(math.ceil(reach / step)) + 1
    weights = np.empty(2 * halo + 1, np.float32)
    for d in range(-halo, halo + 1):
        weights[d + halo] = (d * step) ** 2
    n_blocks = (n2 + _WIDE_BLOCK - 1) // _WIDE_BLOCK
    for task in prange(outer * n_blocks):
        o, blk = task // n_blocks, task % n_blocks
        c0 = blk * _WIDE_BLOCK
        width = min(_WIDE_BLOCK, n2 - c0)
        # rows -1 and n are the virtual background sites beyond the border
        buf = np.empty((n + 2, _WIDE_BLOCK), np.float32)
        border = 0.0 if edge_sites else np.inf
        for c in range(_WIDE_BLOCK):
            buf[0, c] = border
            buf[n + 1, c] = border
        for q in range(n):
            for c in range(width):
                buf[q + 1, c] = arr[q, o, c0 + c] if axis == 0 else arr[o, q, c0 + c]
            for c in range(width, _WIDE_BLOCK):
                buf[q + 1, c] = 0.0
        result = np.empty(_WIDE_BLOCK, np.float32)
        for q in range(n):
            for c in range(_WIDE_BLOCK):
                result[c] = buf[q + 1, c]  # padding columns hold 0 and stay 0
            # a point farther away than the root of the current value cannot lower it:
            # each group of lanes scans only as far as its largest value needs
            for g in range(0, _WIDE_BLOCK, _LANES):
                largest = 0.0
                for c in range(g, g + _LANES):
                    largest = max(largest, result[c])
                if largest <= 0.0:
                    continue
                reach_q = halo
                if largest < np.inf:
                    reach_q = min(halo, int(math.sqrt(largest) / step) + 1)
                for t in range(max(-1, q - reach_q), min(n, q + reach_q) + 1):
                    w = weights[t - q + halo]
                    for c in range(g, g + _LANES):
                        value = buf[t + 1, c] + w
                        if value < result[c]:
                            result[c] = value
            for c in range(width):
                if axis == 0:
                    arr[q, o, c0 + c] = result[c]
                else:
                    arr[o, q, c0 + c] = result[c]


_WIDE_BLOCK = 32
_LANES = 8  # float32 lanes of one AVX2 vector


@njit(parallel=True)
def _pass_axis(arr, axis, step, edge_sites, reach):
    """In-place squared-distance pass of ``arr`` (3-D float32) along axis 0 or 1.

    Only stretches of a line near points that are still inside (value > 0) are
    processed: a minimum more than ``reach`` (mm) away can never decide a ball, so each
    stretch is extended by that much and long runs of outside points are skipped.
    """
    n0, n1, n2 = arr.shape
    n = n0 if axis == 0 else n1
    outer = n1 if axis == 0 else n0
    halo = int(math.ceil(reach / step)) + 1
    n_blocks = (n2 + _BLOCK - 1) // _BLOCK
    for task in prange(outer * n_blocks):
        o, blk = task // n_blocks, task % n_blocks
        c0 = blk * _BLOCK
        width = min(_BLOCK, n2 - c0)
        buf = np.empty((width, n), np.float64)
        out = np.empty(n, np.float64)
        pos = np.empty(n + 3, np.float64)
        val = np.empty(n + 3, np.float64)
        v = np.empty(n + 3, np.int64)
        z = np.empty(n + 4, np.float64)
        for q in range(n):
            for c in range(width):
                buf[c, q] = arr[q, o, c0 + c] if axis == 0 else arr[o, q, c0 + c]
        for c in range(width):
            line = buf[c]
            q = 0
            while q < n:
                if line[q] <= 0.0:
                    q += 1
                    continue
                last = q
                r = q + 1
                while r < n and r - last <= 2 * halo:
                    if line[r] > 0.0:
                        last = r
                    r += 1
                a = max(0, q - halo)
                b = min(n, last + halo + 1)
                _envelope(line[a:b], b - a, step, edge_sites and a == 0,
                          edge_sites and b == n, out, pos, val, v, z)
                for t in range(a, b):
                    line[t] = out[t - a]
                q = last + 1
        for q in range(n):
            for c in range(width):
                if axis == 0:
                    arr[q, o, c0 + c] = buf[c, q]
                else:
                    arr[o, q, c0 + c] = buf[c, q]


# ---------------------------------------------------------------------------------------
# Distances on the doubled grid
# ---------------------------------------------------------------------------------------


@njit
def _site_row(sites, k, j, w_lo, outside):
    """Which doubled points (k, j, w_lo + w) are a site voxel or the midpoint of two.

    A doubled point touches the 1, 2, 4 or 8 voxels around it and is the midpoint of each
    pair of opposite ones (differing along every axis where the point is half-way). Per
    (z, y) corner of the cell the row lies in, the voxel at x pairs with the opposite
    corner's voxel at x (even columns) or x + 1 (odd columns).
    """
    kz, jy = k & 1, j & 1
    z0, y0 = k >> 1, j >> 1
    for w in range(outside.shape[0]):
        i = w_lo + w
        x0, ix = i >> 1, i & 1
        hit = False
        for corner in range(4):
            dz, dy = corner >> 1, corner & 1
            if (dz and not kz) or (dy and not jy):
                continue
            if not ix and corner > (corner ^ ((kz << 1) | jy)):
                continue  # an even column meets each pair from both ends
            if (sites[z0 + dz, y0 + dy, x0]
                    and sites[z0 + (dz ^ kz), y0 + (dy ^ jy), x0 + ix]):
                hit = True
                break
        outside[w] = hit


@njit(parallel=True)
def _outside_distance_x(phase, mode, step, edge_site, w_lo, w_hi, i_lo, out):
    """Squared distance along x to the nearest outside point of the same doubled row.

    Outside points are searched in the doubled columns [w_lo, w_hi) only; the result is
    stored for columns [i_lo, i_lo + out.shape[2]). Distances to points beyond the window
    come out as inf, which is harmless when the window reaches one ball radius beyond the
    stored columns (larger values never decide a ball).
    """
    nk, nj, nb = out.shape
    nx = phase.shape[2]
    ni = 2 * nx - 1
    width = w_hi - w_lo
    for k in prange(nk):
        counts = np.empty(nx, np.int64)
        outside = np.empty(width, np.bool_)
        dist = np.empty(width, np.float64)
        for j in range(nj):
            if mode == INSIDE_SITES:
                _site_row(phase, k, j, w_lo, outside)
            else:
                # phase voxels in the 1, 2 or 4 voxel rows this doubled row lies between
                x_lo, x_hi = w_lo >> 1, min(nx, ((w_hi + 1) >> 1) + 1)
                counts[x_lo:x_hi] = 0
                rows = 0
                for zz in range(k >> 1, ((k + 1) >> 1) + 1):
                    for yy in range(j >> 1, ((j + 1) >> 1) + 1):
                        rows += 1
                        for x in range(x_lo, x_hi):
                            if phase[zz, yy, x]:
                                counts[x] += 1
                for w in range(width):
                    i = w_lo + w
                    if i & 1:
                        outside[w] = counts[i >> 1] + counts[(i >> 1) + 1] <= rows
                    else:
                        outside[w] = 2 * counts[i >> 1] <= rows
            last = -1.0 if (edge_site and w_lo == 0) else -np.inf
            for w in range(width):
                i = w_lo + w
                if outside[w]:
                    last = i
                    dist[w] = 0.0
                else:
                    d = (i - last) * step
                    dist[w] = d * d
            last = ni if (edge_site and w_hi == ni) else np.inf
            for w in range(width - 1, -1, -1):
                i = w_lo + w
                if outside[w]:
                    last = i
                else:
                    d = (last - i) * step
                    if d * d < dist[w]:
                        dist[w] = d * d
            for b in range(nb):
                out[k, j, b] = dist[i_lo + b - w_lo]


def doubled_distance_sq(phase, mode, spacing, edge_sites, i_lo, i_hi, reach):
    """Squared distance (mm²) to the nearest outside point, doubled columns [i_lo, i_hi).

    The block spans the whole doubled grid along z and y. ``reach`` (mm) bounds every
    ball radius; ``edge_sites`` says per axis whether the image border is background.
    """
    nz, ny, nx = phase.shape
    ni = 2 * nx - 1
    hz, hy, hx = spacing
    halo = int(math.ceil(2.0 * reach / hx)) + 2
    w_lo, w_hi = max(0, i_lo - halo), min(ni, i_hi + halo)
    out = np.empty((2 * nz - 1, 2 * ny - 1, i_hi - i_lo), np.float32)
    _outside_distance_x(phase, mode, hx / 2.0, edge_sites[2], w_lo, w_hi, i_lo, out)
    for axis, h in ((1, hy), (0, hz)):
        step = h / 2.0
        if reach / step <= _WINDOW_LIMIT:
            _pass_axis_window(out, axis, step, edge_sites[axis], reach)
        else:
            _pass_axis(out, axis, step, edge_sites[axis], reach)
    return out


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
    _row_pass(out, spacing[2], edge_sites[2])
    for axis in (1, 0):
        # a reach longer than the line: every line is one whole-line envelope
        reach = (out.shape[axis] + 1) * spacing[axis]
        _pass_axis(out, axis, spacing[axis], edge_sites[axis], reach)
    return out


@njit(parallel=True)
def _row_pass(arr, step, edge_sites):
    """In-place squared-distance pass of ``arr`` along x (axis 2) over whole rows."""
    n0, n1, n = arr.shape
    for row in prange(n0 * n1):
        a, b = row // n1, row % n1
        f = np.empty(n, np.float64)
        out = np.empty(n, np.float64)
        pos = np.empty(n + 3, np.float64)
        val = np.empty(n + 3, np.float64)
        v = np.empty(n + 3, np.int64)
        z = np.empty(n + 4, np.float64)
        for q in range(n):
            f[q] = arr[a, b, q]
        _envelope(f, n, step, edge_sites, edge_sites, out, pos, val, v, z)
        for q in range(n):
            arr[a, b, q] = out[q]


# ---------------------------------------------------------------------------------------
# Painting
# ---------------------------------------------------------------------------------------


@njit(parallel=True)
def paint(targets, keys, nj2, ni2, hz, hy, hx, cube_overlap, n_chunks):
    """Squared radius of the largest ball covering each target voxel (0 where none).

    ``keys`` are the centres packed by :func:`_pack` (squared radius in mm² above a flat
    doubled-grid index with row lengths ``nj2``/``ni2``), sorted ascending; they are
    visited from the largest radius down, so the first ball that covers a voxel is its
    largest. A ball covers a voxel when it contains the voxel centre (``cube_overlap``
    False) or when its interior meets the voxel's cube (True).

    The volume is cut into ``n_chunks`` slabs along z, painted in parallel; pass one per
    thread. The slabs hold equal numbers of target voxels (to a layer of tiles), because
    numba hands each thread an equal share of the chunks: with four chunks of two 16-voxel
    layers per thread, a 168-slice scan gave one thread 8 of its 11 layers and painted
    1.8x slower. Every slab keeps, per 4x4x4 tile, a 64-bit mask of its voxels
    still unpainted, and per block of (up to) 4x4x4 tiles the number of tiles not yet
    finished; blocks start at the slab's first tile layer, so no block is shared between
    threads. Most balls paint nothing (6 in 7 on trabecular marrow), so a ball skips
    finished blocks and tiles, and the tiles its sphere misses, before it looks at any
    voxel.
    """
    nz, ny, nx = targets.shape
    out = np.zeros((nz, ny, nx), np.float32)
    tz = (nz + TILE - 1) // TILE
    ty = (ny + TILE - 1) // TILE
    tx = (nx + TILE - 1) // TILE
    by = (ty + BLOCK - 1) // BLOCK
    bx = (tx + BLOCK - 1) // BLOCK
    unpainted = np.zeros((tz, ty, tx), np.uint64)
    per_layer = np.zeros(tz, np.int64)  # target voxels per layer of tiles
    for a in prange(tz):
        for z in range(a * TILE, min(nz, a * TILE + TILE)):
            for y in range(ny):
                for x in range(nx):
                    if targets[z, y, x]:
                        bit = ((z & 3) << 4) | ((y & 3) << 2) | (x & 3)
                        unpainted[a, y >> 2, x >> 2] |= np.uint64(1) << np.uint64(bit)
                        per_layer[a] += 1
    chunk_start = _balanced_layers(per_layer, n_chunks)
    # block layers: each chunk's tile layers in runs of BLOCK from its first one
    block_start = np.empty(tz + 1, np.int64)
    block_of_layer = np.empty(tz, np.int64)
    chunk_block = np.empty(n_chunks + 1, np.int64)
    nb = 0
    for chunk in range(n_chunks):
        chunk_block[chunk] = nb
        for t in range(chunk_start[chunk], chunk_start[chunk + 1]):
            if (t - chunk_start[chunk]) % BLOCK == 0:
                block_start[nb] = t
                nb += 1
            block_of_layer[t] = nb - 1
    chunk_block[n_chunks] = nb
    block_start[nb] = tz
    live = np.zeros((nb, by, bx), np.int32)  # unfinished tiles per block
    for b in prange(nb):
        for t in range(block_start[b], block_start[b + 1]):
            for j in range(ty):
                for i in range(tx):
                    if unpainted[t, j, i] != 0:
                        live[b, j // BLOCK, i // BLOCK] += 1
    half = 0.5 if cube_overlap else 0.0
    for chunk in prange(n_chunks):
        if chunk_start[chunk] >= chunk_start[chunk + 1]:
            continue
        z_lo_chunk = chunk_start[chunk] * TILE
        z_hi_chunk = min(nz, chunk_start[chunk + 1] * TILE) - 1
        left = 0
        for a in range(chunk_block[chunk], chunk_block[chunk + 1]):
            for b in range(by):
                for c in range(bx):
                    left += live[a, b, c]
        word = np.empty(1, np.uint32)
        for n in range(keys.shape[0] - 1, -1, -1):
            if left == 0:
                break
            c = np.int64(keys[n] & np.uint64(0xFFFFFFFF))
            word[0] = np.uint32(keys[n] >> np.uint64(32))
            r2 = np.float64(word.view(np.float32)[0])
            ck = c // (ni2 * nj2)
            cz = ck * 0.5
            r = math.sqrt(r2)
            z0 = max(z_lo_chunk, int(math.floor(cz - half - r / hz)))
            z1 = min(z_hi_chunk, int(math.ceil(cz + half + r / hz)))
            if z0 > z1:
                continue
            ci = c % ni2
            cj = (c // ni2) % nj2
            cy = cj * 0.5
            cx = ci * 0.5
            y0 = max(0, int(math.floor(cy - half - r / hy)))
            y1 = min(ny - 1, int(math.ceil(cy + half + r / hy)))
            x0 = max(0, int(math.floor(cx - half - r / hx)))
            x1 = min(nx - 1, int(math.ceil(cx + half + r / hx)))
            # squared radii are float32: treat differences below 1 ppm as exact ties
            limit = r2 * (1.0 - TIE) if cube_overlap else r2 * (1.0 + TIE)
            for bz_ in range(block_of_layer[z0 >> 2], block_of_layer[z1 >> 2] + 1):
                t0 = max(z0 >> 2, block_start[bz_])
                t1 = min(z1 >> 2, block_start[bz_ + 1] - 1)
                for by_ in range(y0 // BLOCK_VOXELS, y1 // BLOCK_VOXELS + 1):
                    for bx_ in range(x0 // BLOCK_VOXELS, x1 // BLOCK_VOXELS + 1):
                        if live[bz_, by_, bx_] == 0:
                            continue
                        finished = _paint_block(
                            out, unpainted, t0, t1, by_, bx_, y0, y1, x0, x1,
                            cz, cy, cx, half, hz, hy, hx, r2, limit, cube_overlap)
                        live[bz_, by_, bx_] -= finished
                        left -= finished
    return out


@njit
def _balanced_layers(per_layer, n_chunks):
    """First tile layer of each of ``n_chunks`` runs of layers with about equal sums
    (a last entry closes the final run)."""
    n = per_layer.size
    total = 0
    for a in range(n):
        total += per_layer[a]
    start = np.empty(n_chunks + 1, np.int64)
    start[0] = 0
    running = 0
    a = 0
    for chunk in range(1, n_chunks):
        goal = total * chunk // n_chunks
        # a layer goes to the earlier run when its middle comes before the goal
        while a < n and 2 * running + per_layer[a] <= 2 * goal:
            running += per_layer[a]
            a += 1
        start[chunk] = a
    start[n_chunks] = n
    return start


@njit(inline="always")
def _paint_block(out, unpainted, t0, t1, by_, bx_, y0, y1, x0, x1, cz, cy, cx, half,
                 hz, hy, hx, r2, limit, cube_overlap):
    """Paint one ball into the tiles of one block (tile layers t0..t1); returns the
    number of tiles finished."""
    finished = 0
    for tz_ in range(t0, t1 + 1):
        gz = max(abs(cz - min(max(cz, 4.0 * tz_), 4.0 * tz_ + 3.0)) - half, 0.0) * hz
        for ty_ in range(max(y0 >> 2, by_ * BLOCK), min(y1 >> 2, by_ * BLOCK + BLOCK - 1) + 1):
            gy = max(abs(cy - min(max(cy, 4.0 * ty_), 4.0 * ty_ + 3.0)) - half, 0.0) * hy
            gzy = gz * gz + gy * gy
            if gzy >= limit:
                continue
            for tx_ in range(max(x0 >> 2, bx_ * BLOCK),
                             min(x1 >> 2, bx_ * BLOCK + BLOCK - 1) + 1):
                mask = unpainted[tz_, ty_, tx_]
                if mask == 0:
                    continue
                gx = max(abs(cx - min(max(cx, 4.0 * tx_), 4.0 * tx_ + 3.0)) - half, 0.0) * hx
                if gzy + gx * gx >= limit:
                    continue  # the ball misses the tile's voxels
                # the tile's voxels the ball covers, found without branches: with a branch
                # per voxel, which mispredicts along the sphere's rim, painting took 1.6x
                # as long
                cover = np.uint64(0)
                for row in range(16):
                    vz = max(abs(((tz_ << 2) | (row >> 2)) - cz) - half, 0.0) * hz
                    vy = max(abs(((ty_ << 2) | (row & 3)) - cy) - half, 0.0) * hy
                    gzy2 = vz * vz + vy * vy
                    for dx in range(4):
                        vx = max(abs(((tx_ << 2) | dx) - cx) - half, 0.0) * hx
                        d2 = gzy2 + vx * vx
                        inside = (d2 < limit) if cube_overlap else (d2 <= limit)
                        cover |= np.uint64(inside) << np.uint64(4 * row + dx)
                painted = mask & cover
                if painted == 0:
                    continue
                for row in range(16):
                    nibble = (painted >> np.uint64(4 * row)) & np.uint64(15)
                    if nibble == 0:
                        continue
                    z = (tz_ << 2) | (row >> 2)
                    y = (ty_ << 2) | (row & 3)
                    for dx in range(4):
                        if (nibble >> np.uint64(dx)) & np.uint64(1):
                            out[z, y, (tx_ << 2) | dx] = r2
                mask &= ~cover
                unpainted[tz_, ty_, tx_] = mask
                if mask == 0:
                    finished += 1
    return finished


# ---------------------------------------------------------------------------------------
# Ridge by discrete containment
# ---------------------------------------------------------------------------------------


@njit(parallel=True)
def ridge_centres_discrete(d2, i0, ii_lo, ii_hi, scale, nj2, ni2, cube_overlap, shells,
                           shell_lut, lut_scale, need, offsets):
    """Centres of ``d2`` whose voxels no neighbour's ball covers, in columns [ii_lo, ii_hi).

    ``d2`` holds squared radii on a grid whose point (k, j, ii) is the doubled-grid point
    ``scale * (k, j, ii + i0)`` (scale 1: a column block of the doubled grid; scale 2:
    the voxel centres). A ball is dropped when the ball of one of the neighbours at
    ``offsets`` (grid steps) covers every *voxel* it covers. ``shells[p]`` holds, for
    centre parity class ``p``, the sorted distinct coverage distances of voxels around a
    centre; a ball of squared radius ``r2`` covers the voxels of the first
    ``searchsorted(shells[p], r2)`` shells (``shell_lut[p, int(r2 * lut_scale)]`` is a
    lower bound of that count), and ``need[p, s, n]`` is the squared radius a ball at
    neighbour ``n`` must exceed to cover those too. Returns the kept centres as
    :func:`pack` keys.
    """
    nk, nj, ni = d2.shape
    flat = d2.ravel()
    steps = np.empty(offsets.shape[0], np.int64)
    reach = 0
    for n in range(offsets.shape[0]):
        steps[n] = (offsets[n, 0] * nj + offsets[n, 1]) * ni + offsets[n, 2]
        reach = max(reach, abs(offsets[n, 0]), abs(offsets[n, 1]), abs(offsets[n, 2]))
    keep = np.zeros((nk, nj, ii_hi - ii_lo), np.bool_)
    counts = np.zeros(nk, np.int64)
    for k in prange(nk):
        c = 0
        hint = 0  # the neighbour that covered the previous ball of the row
        for j in range(nj):
            for ii in range(ii_lo, ii_hi):
                r2 = d2[k, j, ii]
                if r2 <= 0.0 or r2 == np.inf:
                    continue
                interior = (reach <= k < nk - reach and reach <= j < nj - reach
                            and reach <= ii < ni - reach)
                i = ii + i0
                parity = (((k & 1) << 2) | ((j & 1) << 1) | (i & 1)) if scale == 1 else 0
                kept, hint = _keep_discrete(flat, (k * nj + j) * ni + ii, r2, parity,
                                            interior, d2, k, j, ii, cube_overlap, shells,
                                            shell_lut, lut_scale, need, offsets, steps, hint)
                if kept:
                    keep[k, j, ii - ii_lo] = True
                    c += 1
        counts[k] = c
    starts = np.zeros(nk + 1, np.int64)
    for t in range(nk):
        starts[t + 1] = starts[t] + counts[t]
    keys = np.empty(starts[-1], np.uint64)
    for k in prange(nk):
        c = starts[k]
        bits = np.empty(1, np.float32)
        for j in range(nj):
            for ii in range(ii_lo, ii_hi):
                if keep[k, j, ii - ii_lo]:
                    bits[0] = d2[k, j, ii]
                    index = (k * scale * nj2 + j * scale) * ni2 + (ii + i0) * scale
                    keys[c] = _pack(bits, index)
                    c += 1
    return keys


@njit
def _pack(bits, index):
    # a positive float32 orders like its bit pattern read as an unsigned integer
    return (np.uint64(bits.view(np.uint32)[0]) << np.uint64(32)) | np.uint64(index)


@njit(inline="always")
def _keep_discrete(flat, p, r2, parity, interior, d2, kk, j, i, cube_overlap, shells,
                   shell_lut, lut_scale, need, offsets, steps, hint):
    """Whether no neighbour's ball covers the voxels of this ball, and which one did.

    Returns ``(keep, covering)``: ``covering`` is the neighbour that covers the ball when
    it is dropped, else ``hint``. Neighbouring points are mostly covered from the same
    side, so the neighbour ``hint`` (the last one that covered) is tried first.
    """
    # Count the shells the ball covers, erring towards more than paint() paints (which
    # is g < r2 (1 - TIE) for cube overlap, g <= r2 (1 + TIE) for centre containment) but
    # never counting the exact ties g == r2 that cube overlap leaves out.
    row = shells[parity]
    b = int(r2 * lut_scale)
    s = shell_lut[parity, min(b, shell_lut.shape[1] - 1)]
    if cube_overlap:
        bound = r2 * (1.0 - 0.5 * TIE)
        while row[s] < bound:
            s += 1
    else:
        bound = r2 * (1.0 + 2.0 * TIE)
        while row[s] <= bound:
            s += 1
    if s == 0 or s > need.shape[1]:
        return True, hint
    table = need[parity, s - 1]
    other = _neighbour(flat, p, d2, kk, j, i, interior, offsets, steps, hint)
    if _covers(other, r2, offsets[hint, 3], table[hint]):
        return False, hint
    for n in range(offsets.shape[0]):
        if n != hint:
            other = _neighbour(flat, p, d2, kk, j, i, interior, offsets, steps, n)
            if _covers(other, r2, offsets[n, 3], table[n]):
                return False, n
    return True, hint


@njit(inline="always")
def _neighbour(flat, p, d2, k, j, i, interior, offsets, steps, n):
    """Squared radius at neighbour ``n`` of point ``p`` = (k, j, i); -1 beyond the grid."""
    if interior:
        return flat[p + steps[n]]
    nk, nj, ni = d2.shape
    k2 = k + offsets[n, 0]
    j2 = j + offsets[n, 1]
    i2 = i + offsets[n, 2]
    if 0 <= k2 < nk and 0 <= j2 < nj and 0 <= i2 < ni:
        return d2[k2, j2, i2]
    return -1.0


@njit(inline="always")
def _covers(other, r2, later, needed):
    """Whether a neighbour ball of squared radius ``other`` makes this one redundant.

    It must be at least as large (equal radii: only an earlier point wins, so ties never
    drop both balls) and reach the farthest voxel ``needed`` with room to spare beyond
    the tie tolerance of paint(), so rounding can keep a redundant ball, never drop a
    needed one.
    """
    if other < r2 or other == np.inf or (other == r2 and later > 0):
        return False  # an unbounded ball is never painted, so it cannot stand in
    return other * (1.0 - 2.0 * TIE) > needed


# ---------------------------------------------------------------------------------------
# statistics of a map over a selection, without copying the selected values
# ---------------------------------------------------------------------------------------

_STAT_CHUNKS = 64  # fixed, so that the partial sums (and the result) do not depend on threads


@njit(parallel=True)
def masked_moments(values, where):
    """(n, mean, sum of squared deviations, max, n NaN) of the numbers in ``values[where]``.

    ``values`` and ``where`` are 1-D; NaNs are counted apart and left out of the rest.

    Two passes (mean, then deviations) over a fixed split of the array; the partial sums
    are added in chunk order, so the result is the same for any number of threads.
    """
    size = values.size
    step = (size + _STAT_CHUNKS - 1) // _STAT_CHUNKS
    counts = np.zeros(_STAT_CHUNKS, np.int64)
    sums = np.zeros(_STAT_CHUNKS)
    highs = np.full(_STAT_CHUNKS, -np.inf)
    nans = np.zeros(_STAT_CHUNKS, np.int64)
    for c in prange(_STAT_CHUNKS):
        for k in range(c * step, min(size, (c + 1) * step)):
            if where[k]:
                v = np.float64(values[k])
                if math.isnan(v):
                    nans[c] += 1
                    continue
                counts[c] += 1
                sums[c] += v
                if v > highs[c]:
                    highs[c] = v
    n = 0
    total = 0.0
    high = -np.inf
    n_nan = 0
    for c in range(_STAT_CHUNKS):
        n += counts[c]
        total += sums[c]
        high = max(high, highs[c])
        n_nan += nans[c]
    mean = total / n if n > 0 else np.nan
    squares = np.zeros(_STAT_CHUNKS)
    for c in prange(_STAT_CHUNKS):
        for k in range(c * step, min(size, (c + 1) * step)):
            if where[k]:
                d = np.float64(values[k]) - mean
                if not math.isnan(d):
                    squares[c] += d * d
    deviation = 0.0
    for c in range(_STAT_CHUNKS):
        deviation += squares[c]
    return n, mean, deviation, high, n_nan
