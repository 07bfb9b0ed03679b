"""Slow, obviously-correct reference implementations for the measure kernels.

Each follows the written definition literally, with no cleverness, and is only usable on
small volumes.
"""

from __future__ import annotations

import itertools

import numpy as np

# --------------------------------------------------------------------------------------
# Local thickness
# --------------------------------------------------------------------------------------


def _doubled_points(shape):
    """All doubled-grid points (2 * shape - 1 per axis), as voxel-unit coordinates."""
    axes = [np.arange(2 * n - 1) / 2.0 for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def _interpolated_value(mask, point):
    """Trilinear interpolation of the 0/1 mask at a doubled-grid point."""
    ranges = [sorted({int(np.floor(c)), int(np.ceil(c))}) for c in point]
    block = mask[np.ix_(*ranges)].astype(float)
    return block.mean()


def local_thickness_continuous(mask, spacing, edge="continue"):
    """H&R local thickness under microarch's "continuous" convention, by brute force.

    Outside points: doubled-grid points where the trilinear interpolation of the mask is
    <= 1/2 (plus, for edge="background", the planes half a voxel beyond the image).
    Ball centres: all other doubled-grid points, radius = distance to the nearest
    outside point. A voxel takes the largest ball whose open interior meets its cube.
    """
    h = np.asarray(spacing, float) * np.ones(3)
    points = _doubled_points(mask.shape)
    inside = np.array([_interpolated_value(mask, p) > 0.5 for p in points])
    outside = points[~inside]
    if edge == "background":
        extra = []
        for axis in range(3):
            for value in (-0.5, mask.shape[axis] - 0.5):
                axes = [np.arange(-1, 2 * n) / 2.0 for n in mask.shape]
                axes[axis] = np.array([value])
                extra.append(np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3))
        outside = np.concatenate([outside, *extra])
    centres = points[inside]
    radius2 = np.array([(((outside - c) * h) ** 2).sum(1).min() for c in centres])
    out = np.zeros(mask.shape)
    for voxel in np.argwhere(mask):
        gap = np.maximum(np.abs(centres - voxel) - 0.5, 0.0) * h
        covers = (gap**2).sum(1) < radius2 * (1 - 1e-6)  # touching within 1 ppm: outside
        out[tuple(voxel)] = 2 * np.sqrt(radius2[covers].max())
    return out


def mid_axis_spacing(skeleton, spacing):
    """Local spacing between skeleton voxels (diameter map, mm), by brute force.

    Sites: the skeleton voxels and the midpoints of every pair of 26-adjacent skeleton
    voxels (the segments joining neighbouring skeleton voxels).
    Centres: every other doubled-grid point, radius = distance to the nearest site. A
    non-skeleton voxel takes the largest ball whose interior meets its cube.
    """
    h = np.asarray(spacing, float) * np.ones(3)
    skeleton = np.asarray(skeleton, bool)
    points = _doubled_points(skeleton.shape)
    voxels = np.argwhere(skeleton).astype(float)
    adjacent = np.abs(voxels[:, None, :] - voxels[None, :, :]).max(axis=-1) <= 1
    pairs = np.argwhere(adjacent)
    site_set = {tuple(p) for p in (voxels[pairs[:, 0]] + voxels[pairs[:, 1]]) / 2}
    is_site = np.array([tuple(p) in site_set for p in points])
    sites, centres = points[is_site], points[~is_site]
    radius2 = np.array([(((sites - c) * h) ** 2).sum(1).min() for c in centres])
    out = np.zeros(skeleton.shape)
    for voxel in np.argwhere(~skeleton):
        gap = np.maximum(np.abs(centres - voxel) - 0.5, 0.0) * h
        covers = (gap**2).sum(1) < radius2 * (1 - 1e-6)
        out[tuple(voxel)] = 2 * np.sqrt(radius2[covers].max())
    return out


def local_thickness_bonej(mask, spacing):
    """BoneJ-convention local thickness before clean-up, by brute force.

    Radius = distance from a foreground voxel centre to the nearest background voxel
    centre (the image border is not background); a voxel takes the largest ball that
    contains its centre.
    """
    h = np.asarray(spacing, float) * np.ones(3)
    fg = np.argwhere(mask)
    bg = np.argwhere(~mask)
    radius2 = np.array([(((bg - c) * h) ** 2).sum(1).min() for c in fg])
    out = np.zeros(mask.shape)
    for voxel in fg:
        covers = (((fg - voxel) * h) ** 2).sum(1) <= radius2 * (1 + 1e-6)
        out[tuple(voxel)] = 2 * np.sqrt(radius2[covers].max())
    return out


# --------------------------------------------------------------------------------------
# Euler characteristic
# --------------------------------------------------------------------------------------


def _cells_of_voxel(voxel):
    """All lattice cells (vertices, edges, faces, cube) of a closed voxel cube.

    A cell is identified by its lower corner and its extent along each axis (0 or 1).
    """
    z, y, x = voxel
    for extent in itertools.product((0, 1), repeat=3):
        for corner in itertools.product(*[(0, 1) if e == 0 else (0,) for e in extent]):
            yield (z + corner[0], y + corner[1], x + corner[2], *extent)


def _incident_voxels(cell):
    """Voxels whose closed cube contains the cell."""
    z, y, x, ez, ey, ex = cell
    for dz in ((0,) if ez else (-1, 0)):
        for dy in ((0,) if ey else (-1, 0)):
            for dx in ((0,) if ex else (-1, 0)):
                yield (z + dz, y + dy, x + dx)


def euler_by_cells(mask, roi=None):
    """(Edge-corrected) Euler characteristic by counting the cells of the bone's cubes.

    Without ``roi``: chi = V - E + F - C of the union of closed bone voxel cubes.
    With ``roi``: bone outside the ROI is dropped and each cell counts with the fraction
    of its incident voxels that lie inside the ROI (voxels beyond the image are outside).
    """
    mask = np.asarray(mask, bool)
    if roi is not None:
        roi = np.asarray(roi, bool)
        mask = mask & roi
    cells = set()
    for voxel in map(tuple, np.argwhere(mask)):
        cells.update(_cells_of_voxel(voxel))
    total = 0.0
    for cell in cells:
        dim = sum(cell[3:])
        incident = list(_incident_voxels(cell))
        if roi is None:
            weight = 1.0
        else:
            inside = sum(
                1 for v in incident
                if all(0 <= v[a] < mask.shape[a] for a in range(3)) and roi[v]
            )
            weight = inside / len(incident)
        total += (-1) ** dim * weight
    return total


def connection_presence(graph, bones, region, tolerance):
    """The connection tracker's presence test, one connection at a time.

    For each connection of element e between junctions a and b: label the 26-connected
    components of ``bone & tube`` in the box around the element's cells and the two end
    regions, where the tube is every voxel owned by e or by one of e's junctions; the
    connection is present when one component touches both end regions. The end region
    of a junction is its voxels grown by a cube of ``ceil(tolerance)`` voxels.
    """
    import math

    from scipy import ndimage as ndi

    from microarch.longitudinal._connections import _cells, _cube_offsets

    table = graph.connections
    present = np.zeros((len(bones), graph.n_connections), bool)
    if graph.n_connections == 0:
        return present
    shape = np.asarray(graph.shape)
    owner, origin = _cells(graph, region, tolerance * float(np.max(graph.spacing)))
    offsets = _cube_offsets(math.ceil(tolerance))

    def end_region(j):
        grown = (graph._junction_voxels[j][:, None, :] + offsets[None]).reshape(-1, 3)
        grown = grown[np.all((grown >= 0) & (grown < shape), axis=1)]
        return np.unique(grown, axis=0) - origin

    for r in range(graph.n_connections):
        e = int(table["element"][r])
        own = {int(table["junction_a"][s]) for s in np.flatnonzero(table["element"] == e)}
        own |= {int(table["junction_b"][s]) for s in np.flatnonzero(table["element"] == e)}
        tube = np.isin(owner, [-e, *own])
        cells = np.argwhere(tube)
        ends = {j: end_region(j) for j in own}
        points = np.concatenate([cells, *ends.values()])
        lo = np.maximum(points.min(axis=0), 0)
        hi = np.minimum(points.max(axis=0) + 1, owner.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        grid = tuple(slice(a + o, b + o) for a, b, o in zip(lo, hi, origin))
        for k, bone in enumerate(bones):
            labels, _ = ndi.label(bone[grid] & tube[box], np.ones((3, 3, 3), bool))
            touched = []
            for j in (int(table["junction_a"][r]), int(table["junction_b"][r])):
                p = ends[j] - lo
                p = p[np.all((p >= 0) & (p < hi - lo), axis=1)]
                touched.append(set(labels[tuple(p.T)].tolist()) - {0})
            present[k, r] = bool(touched[0] & touched[1])
    return present
