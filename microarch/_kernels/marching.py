"""Marching cubes of a binary volume, driven by a case table (see microarch.measure._mesh).

The volume is a C-contiguous uint8 array of 0 and 1 whose outermost layer is 0, so the
surface is closed. The cube at (z, y, x) has its corners at (z + dz, y + dy, x + dx) for
dz, dy, dx in {0, 1}; corner ``4 dz + 2 dy + dx`` is that bit of the cube's case number.
Surface vertices sit halfway along the grid edges that join a 1 and a 0 (and, in some
cases, at a cube's centre). A triangle corner is coded 0-11 for an edge of the cube,
``4 * axis + 2 * a + b`` with ``a``, ``b`` the edge's offsets along the two other axes in
(z, y, x) order, and 12 for the cube's centre.

Vertices are numbered row by row, (z, y) in raster order, and within a row by x and then
edge along z, y, x, then centre. A first pass counts the vertices and triangles of every
row; a second fills the planes of cubes in parallel, each writing only its own rows'
slices of the output, so the mesh does not depend on the number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from microarch._kernels._jit import njit

CENTRE = 12


@njit(inline="always")
def _case(volume, z, y, x):
    case = 0
    for corner in range(8):
        value = volume[z + (corner >> 2), y + ((corner >> 1) & 1), x + (corner & 1)]
        case |= np.int64(value) << corner
    return case


@njit(inline="always")
def _crosses(volume, z, y, x, axis):
    """Whether the grid edge from (z, y, x) along ``axis`` joins a 1 and a 0."""
    if axis == 0:
        return volume[z + 1, y, x] != volume[z, y, x]
    if axis == 1:
        return volume[z, y + 1, x] != volume[z, y, x]
    return volume[z, y, x + 1] != volume[z, y, x]


@njit(parallel=True)
def count_rows(volume, n_triangles, has_centre):
    """Vertices and triangles of each cube row (z, y): two (nz - 1, ny - 1) int64 arrays."""
    nz, ny, nx = volume.shape
    vertices = np.zeros((nz - 1, ny - 1), np.int64)
    triangles = np.zeros((nz - 1, ny - 1), np.int64)
    for z in prange(nz - 1):
        for y in range(ny - 1):
            n_vertices = 0
            n_faces = 0
            for x in range(nx - 1):
                for axis in range(3):
                    n_vertices += _crosses(volume, z, y, x, axis)
                case = _case(volume, z, y, x)
                n_vertices += has_centre[case]
                n_faces += n_triangles[case]
            vertices[z, y] = n_vertices
            triangles[z, y] = n_faces
    return vertices, triangles


@njit(parallel=True)
def fill_rows(volume, n_triangles, has_centre, corners, vertex_start, face_start, vertices,
              faces):
    """Write each cube row's vertices (index coordinates) and faces from its starts.

    One task per z plane of cubes walks its rows along y, keeping the vertex ids of the
    two grid rows below and above each cube row so that every grid row is read once per
    task (twice in all: by the planes of cubes above and below it).
    """
    nz, ny, nx = volume.shape
    for z in prange(nz - 1):
        # ids[y & 1, dz, x, k]: vertex of the edge along axis k (3: the cube's centre) at
        # (z + dz, y, x); only the edges that cross the surface are ever looked up
        ids = np.empty((2, 2, nx, 4), np.int64)
        for dz in range(2):
            _row_ids(volume, has_centre, vertex_start, z + dz, 0, dz == 0, ids[0, dz],
                     vertices)
        for y in range(ny - 1):
            low, high = y & 1, (y + 1) & 1
            for dz in range(2):
                _row_ids(volume, has_centre, vertex_start, z + dz, y + 1, dz == 0,
                         ids[high, dz], vertices)
            f = face_start[z * (ny - 1) + y]
            for x in range(nx - 1):
                case = _case(volume, z, y, x)
                for t in range(n_triangles[case]):
                    for k in range(3):
                        code = corners[case, 3 * t + k]
                        if code == CENTRE:
                            faces[f, k] = ids[low, 0, x, 3]
                            continue
                        axis, offsets = code >> 2, code & 3
                        a, b = offsets >> 1, offsets & 1  # along the other two axes
                        if axis == 0:
                            faces[f, k] = ids[high if a else low, 0, x + b, 0]
                        elif axis == 1:
                            faces[f, k] = ids[low, a, x + b, 1]
                        else:
                            faces[f, k] = ids[high if b else low, a, x, 2]
                    f += 1


@njit(inline="always")
def _row_ids(volume, has_centre, vertex_start, z, y, write, ids, vertices):
    """Number the vertices of grid row (z, y) into ``ids`` (x, axis or 3 for the centre)
    from the row's start; with ``write``, also store their coordinates."""
    nz, ny, nx = volume.shape
    if z == nz - 1 or y == ny - 1:
        return  # the outer layer of 0s: no edge there crosses
    n = vertex_start[z * (ny - 1) + y]
    for x in range(nx - 1):
        for axis in range(3):
            if _crosses(volume, z, y, x, axis):
                ids[x, axis] = n
                if write:
                    vertices[n, 0] = z + (0.5 if axis == 0 else 0.0)
                    vertices[n, 1] = y + (0.5 if axis == 1 else 0.0)
                    vertices[n, 2] = x + (0.5 if axis == 2 else 0.0)
                n += 1
        if has_centre[_case(volume, z, y, x)]:
            ids[x, 3] = n
            if write:
                vertices[n, 0] = z + 0.5
                vertices[n, 1] = y + 0.5
                vertices[n, 2] = x + 0.5
            n += 1
