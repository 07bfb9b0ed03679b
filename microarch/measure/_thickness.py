"""Local thickness (Hildebrand & Rüegsegger 1997): Tb.Th, Tb.Sp and their maps.

The local thickness at a point of a structure is the diameter of the largest ball that
lies inside the structure and contains the point. Two conventions are offered:

``"continuous"`` (default)
    The voxels stand for the continuous object they were sampled from. Its surface is
    the level 1/2 of the trilinear interpolation of the mask, so a face between a bone
    and a marrow voxel lies half-way between their centres. Ball centres are taken on a
    grid twice as fine as the voxels (voxel centres and the points half-way between
    them), radii are the exact distances to that surface sampled on the same fine grid,
    and a ball counts for a voxel when it overlaps the voxel's cube. A plate n voxels
    thick then measures exactly n voxel sizes, for odd and even n. Digitised rods and
    spheres measure 5-10 % below their nominal diameter (for 8-16 voxels; more for
    smaller ones): the staircase of their digitised surface dents the largest inscribed
    ball by about 0.3 voxel (see ``benchmarks/`` for the numbers per shape).

``"bonej"``
    BoneJ's / Fiji LocalThickness' convention, for users comparing with it: distances to
    the nearest background voxel *centre*, ball centres on voxel centres, a voxel is
    covered when its centre is inside the ball, followed by BoneJ's clean-up of the
    boundary voxels and masking. A plate n voxels thick measures n for even n and n + 1
    for odd n. Unlike BoneJ, distances are physical, so anisotropic voxels are handled.

The image border either continues the structure (``edge="continue"``, the default:
nothing beyond the image is seen) or is background (``edge="background"``).

References
----------
Hildebrand T, Rüegsegger P (1997) A new method for the model-independent assessment of
thickness in three-dimensional images. J Microsc 185:67-75.
doi:10.1046/j.1365-2818.1997.1340694.x
Felzenszwalb PF, Huttenlocher DP (2012) Distance transforms of sampled functions. Theory
Comput 8:415-428. doi:10.4086/toc.2012.v008a019
Dougherty R, Kunzelmann KH (2007) Computing local thickness of 3D structures with
ImageJ. Microsc Microanal 13(S02):1678-1679. doi:10.1017/S1431927607074430
"""

from __future__ import annotations

import math

import numpy as np

from microarch._shared.validation import (
    as_mask,
    as_spacing,
    check_choice,
    degenerate,
)

CONVENTIONS = ("continuous", "bonej")
EDGES = ("continue", "background")

# Doubled-grid distance blocks are sized to stay within this many bytes per voxel.
_SLAB_BYTES_PER_VOXEL = 4
# Balls are tested for containment in the balls of neighbours this many steps away.
_NEIGHBOUR_RADIUS = 1
# Room left for the ridge keys of the blocks still to come, over a linear extrapolation.
_KEY_HEADROOM = 1.1
_SHELL_LUT_SIZE = 1 << 16
# Containment tables list at most this many voxel offsets per parity class; larger
# balls are simply kept (exact, only slower).
_MAX_TABLE_OFFSETS = 2_000_000


def local_thickness(mask, *, spacing, convention="continuous", edge="continue"):
    """Local thickness map: the diameter (mm) of the largest ball inside the structure.

    Parameters
    ----------
    mask : (Z, Y, X) array_like of bool
        The structure (bone for Tb.Th; marrow for Tb.Sp).
    spacing : float or sequence of 3 floats
        Voxel size in mm, (z, y, x). Anisotropic voxels are measured in physical space.
    convention : {"continuous", "bonej"}
        How the digitised structure is read; see the module docstring. ``"continuous"``
        measures an n-voxel plate as exactly n voxels.
    edge : {"continue", "background"}
        Whether the structure continues beyond the image border (nothing outside is
        seen) or the border is background.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        Local thickness diameter in mm inside the structure, 0 outside it. If the
        structure fills the image and continues beyond it (``edge="continue"``), the
        thickness is unbounded: the map is NaN inside, with a warning.

    References
    ----------
    Hildebrand T, Rüegsegger P (1997) J Microsc 185:67-75.
    doi:10.1046/j.1365-2818.1997.1340694.x

    Examples
    --------
    A plate 3 voxels thick at 0.1 mm voxels is 0.3 mm thick everywhere:

    >>> import numpy as np
    >>> plate = np.zeros((7, 6, 6), bool)
    >>> plate[2:5] = True
    >>> lt = local_thickness(plate, spacing=0.1)
    >>> np.unique(lt[plate]).round(6)
    array([0.3], dtype=float32)
    """
    mask = as_mask(mask)
    spacing = as_spacing(spacing)
    check_choice(convention, CONVENTIONS, name="convention")
    check_choice(edge, EDGES, name="edge")
    if not mask.any():
        return np.zeros(mask.shape, np.float32)
    radius2 = _ball_radius_sq(mask, spacing, convention=convention, edge=edge)
    if radius2 is None:
        degenerate("local thickness undefined: the structure fills the image and "
                   "continues beyond it (edge='continue'); use edge='background'")
        out = np.zeros(mask.shape, np.float32)
        out[mask] = np.nan
        return out
    thickness = np.sqrt(radius2, out=radius2)
    thickness *= 2.0
    if convention == "bonej":
        thickness = _bonej_clean_up(thickness)
    return thickness


def _ball_radius_sq(phase, spacing, *, convention, edge, sites=None, targets=None):
    """Squared radius (mm²) of the largest covering ball at each target voxel.

    ``phase`` is the structure. With ``sites`` given, ``phase`` is None: the outside is
    the set of site voxel centres (the mid-axes for Tb.N), the structure everything else.
    ``targets`` (default the structure) are the voxels whose value is wanted, e.g. only
    those inside a volume of interest; the others come out 0 and cost nothing to paint.
    Returns None when nothing is outside (unbounded thickness).
    """
    from microarch._kernels import thickness as kernels

    edge_sites = (edge == "background",) * 3
    if sites is None:
        outside_voxels = ~phase
        mode, field = kernels.INSIDE_ISO, phase
    else:
        outside_voxels = sites
        mode, field = kernels.INSIDE_SITES, sites
    if not outside_voxels.any() and edge == "continue":
        return None

    nz, ny, nx = field.shape
    nj2, ni2 = 2 * ny - 1, 2 * nx - 1
    hz, hy, hx = spacing
    cube_overlap = convention == "continuous"
    # No ball reaches farther than the distance from a voxel to the nearest outside
    # voxel plus half a voxel diagonal (centres also lie between voxels).
    voxel_d2 = kernels.voxel_distance_sq(outside_voxels, spacing, edge_sites)
    del outside_voxels
    reach = math.sqrt(float(voxel_d2.max())) + 0.5 * math.sqrt(hz * hz + hy * hy + hx * hx)
    scale = 2 if convention == "bonej" else 1
    offsets = _neighbour_offsets(_NEIGHBOUR_RADIUS)
    tables = _containment_tables(spacing, reach, scale=scale, cube_overlap=cube_overlap,
                                 offsets=offsets) + (offsets,)
    if (2 * nz - 1) * nj2 * ni2 > 2**32:
        raise ValueError(f"volume of shape {field.shape} is too large (over 2**30 voxels)")
    if convention == "bonej":
        keys = kernels.ridge_centres_discrete(voxel_d2, 0, 0, nx, 2, nj2, ni2, False, *tables)
        del voxel_d2
    else:
        del voxel_d2
        keys = _doubled_ridge(field, mode, spacing, edge_sites, reach, tables)  # cube overlap
    keys.sort()  # by squared radius, in place
    n_chunks = _numba_threads()  # paint() balances one chunk per thread
    if targets is None:
        targets = phase if sites is None else ~sites
    return kernels.paint(targets, keys, nj2, ni2, hz, hy, hx, cube_overlap, n_chunks)


def _doubled_ridge(field, mode, spacing, edge_sites, reach, tables):
    """Ridge centres of the doubled grid, computed in blocks of columns to bound memory.

    Each block spans the whole grid along z and y and a range of x columns, plus the
    neighbouring columns the containment test looks at.
    """
    from microarch._kernels import thickness as kernels

    nz, ny, nx = field.shape
    nj2, ni2 = 2 * ny - 1, 2 * nx - 1
    column_bytes = 4 * (2 * nz - 1) * nj2
    margin = _NEIGHBOUR_RADIUS
    width = max(_SLAB_BYTES_PER_VOXEL * field.size // column_bytes - 2 * margin, 8)
    # The keys go straight into one buffer sized from the blocks seen so far (the keys
    # can take 6 bytes per voxel; collecting blocks and concatenating them would double it).
    keys = np.empty(0, np.uint64)
    n_keys = 0
    for i_lo in range(0, ni2, width):
        i_hi = min(i_lo + width, ni2)
        lo, hi = max(0, i_lo - margin), min(ni2, i_hi + margin)
        d2 = kernels.doubled_distance_sq(field, mode, spacing, edge_sites, lo, hi, reach)
        block = kernels.ridge_centres_discrete(d2, lo, i_lo - lo, i_hi - lo, 1, nj2, ni2, True,
                                               *tables)
        del d2
        if n_keys + block.size > keys.size:
            expected = (n_keys + block.size) * ni2 / i_hi * _KEY_HEADROOM
            grown = np.empty(max(int(expected), n_keys + block.size), np.uint64)
            grown[:n_keys] = keys[:n_keys]
            keys = grown
        keys[n_keys:n_keys + block.size] = block
        n_keys += block.size
        del block
    return keys[:n_keys]


def _neighbour_offsets(radius):
    """Grid offsets within ``radius`` steps (Chebyshev), nearest first, with a 4th column
    that is negative for offsets earlier in raster order (they win ties)."""
    r = range(-radius, radius + 1)
    offsets = [(a, b, c) for a in r for b in r for c in r if (a, b, c) != (0, 0, 0)]
    offsets.sort(key=lambda o: (o[0] ** 2 + o[1] ** 2 + o[2] ** 2, o))
    return np.array([(a, b, c, -1 if (a, b, c) < (0, 0, 0) else 1) for a, b, c in offsets],
                    dtype=np.int64)


def _containment_tables(spacing, reach, *, scale, cube_overlap, offsets):
    """Shell radii and neighbour coverage needs for the discrete ridge test.

    For each parity class of a centre (which of z, y, x are half-way between voxel
    centres; only class 0 when ``scale`` is 2, i.e. centres on voxel centres) list the
    voxels within ``reach`` by their coverage distance g (squared; to the voxel cube for
    ``cube_overlap``, else to its centre). A ball of squared radius r2 covers the voxels
    with g < r2 (cube) or g <= r2 (centre), i.e. a prefix of the sorted list. For every
    neighbour offset, ``need`` is the largest g of that prefix seen from the neighbour.
    """
    h = np.asarray(spacing, float)
    delta = offsets[:, :3] * (scale / 2.0)  # neighbour offsets in voxel units
    half = 0.5 if cube_overlap else 0.0
    parities = 8 if scale == 1 else 1
    volume = np.prod([2 * reach / hh + 5 for hh in h])
    if volume > _MAX_TABLE_OFFSETS:
        reach *= (_MAX_TABLE_OFFSETS / volume) ** (1 / 3)
    extent = [math.ceil(reach / hh) + 2 for hh in h]
    grids = np.meshgrid(*[np.arange(-e, e + 1) for e in extent], indexing="ij")
    base = np.stack([g.ravel() for g in grids], axis=1).astype(float)

    def coverage(offsets):
        gap = np.maximum(np.abs(offsets) - half, 0.0) * h
        return (gap * gap).sum(axis=-1)

    tables = []
    for parity in range(parities):
        shift = np.array([(parity >> 2) & 1, (parity >> 1) & 1, parity & 1]) * 0.5
        offsets = base - shift  # voxel centres relative to the ball centre
        g = coverage(offsets)
        keep = g <= reach * reach
        offsets, g = offsets[keep], g[keep]
        order = np.argsort(g, kind="stable")
        offsets, g = offsets[order], g[order]
        # shells: groups of equal g; a ball covers whole shells
        last_of_shell = np.r_[np.nonzero(np.diff(g) > 0)[0], g.size - 1]
        seen = np.stack([np.maximum.accumulate(coverage(offsets - d))[last_of_shell]
                         for d in delta])
        tables.append((g[last_of_shell], seen))
    width = max(t[0].size for t in tables)
    shells = np.full((parities, width + 1), np.inf)
    need = np.full((parities, width, len(delta)), np.inf)
    for parity, (radii, seen) in enumerate(tables):
        shells[parity, : radii.size] = radii
        need[parity, : radii.size, :] = seen.T
    # shell_lut[p, b]: number of shells below b / lut_scale, a lower bound that leaves the
    # kernel only a short scan instead of a binary search
    lut_scale = _SHELL_LUT_SIZE / max(reach * reach, 1e-30)
    bins = np.arange(_SHELL_LUT_SIZE + 1) / lut_scale
    shell_lut = np.stack([np.searchsorted(row, bins, side="left") for row in shells])
    return shells, shell_lut.astype(np.int32), lut_scale, need.astype(np.float32)


def _numba_threads():
    import numba

    return numba.get_num_threads()


def _bonej_clean_up(thickness):
    """BoneJ's clean-up: boundary voxels take the mean of their interior neighbours.

    A voxel of the map is on the boundary when one of its 26 neighbours inside the image
    is zero; it is replaced by the mean of the neighbours that are non-zero and not on the
    boundary themselves (kept if there are none). Mirrors Fiji's
    ``Clean_Up_Local_Thickness``.
    """
    from scipy import ndimage as ndi

    nonzero = thickness > 0
    # cval=1: beyond the image is not zero, as in Fiji
    boundary = nonzero & ~ndi.binary_erosion(nonzero, np.ones((3, 3, 3)), border_value=1)
    interior = nonzero & ~boundary
    weights = interior.astype(np.float64)
    kernel = np.ones((3, 3, 3))
    kernel[1, 1, 1] = 0
    sums = ndi.correlate(np.where(interior, thickness, 0.0), kernel, mode="constant")
    counts = ndi.correlate(weights, kernel, mode="constant")
    out = thickness.copy()
    replace = boundary & (counts > 0)
    out[replace] = (sums[replace] / counts[replace]).astype(np.float32)
    return out


def thickness_statistics(thickness, *, where=None, ddof=1):
    """Mean, SD and maximum of a local-thickness map over the voxels in ``where``.

    Parameters
    ----------
    thickness : ndarray
        Local thickness map (mm), e.g. from :func:`local_thickness`.
    where : ndarray of bool, optional
        Voxels to summarise (default: all non-zero voxels of the map).
    ddof : int
        Delta degrees of freedom of the SD: 1 (sample SD, BoneJ2) or 0 (population,
        BoneJ1 / ORMIR).

    Returns
    -------
    dict
        ``{"mean": ..., "sd": ..., "max": ..., "n": ...}``; NaN when no voxel is selected.

    Examples
    --------
    >>> import numpy as np
    >>> thickness_statistics(np.array([0.0, 0.2, 0.4]))["mean"]
    0.30000000000000004
    """
    from microarch._kernels.thickness import masked_moments

    thickness = np.asarray(thickness)
    where = thickness > 0 if where is None else np.asarray(where, bool)
    if where.shape != thickness.shape:
        raise ValueError(f"where has shape {where.shape}; the map has {thickness.shape}")
    # summed in place: a copy of the selected values would cost 8 bytes per voxel
    n, mean, squares, high, n_nan = masked_moments(thickness.ravel(), where.ravel())
    if n == 0 or n_nan:  # a NaN makes every statistic NaN, as in numpy
        return {"mean": math.nan, "sd": math.nan, "max": math.nan, "n": int(n + n_nan)}
    sd = math.sqrt(squares / (n - ddof)) if n > ddof else math.nan
    return {"mean": float(mean), "sd": sd, "max": float(high), "n": int(n)}
