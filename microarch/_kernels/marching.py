"""Marching cubes of a binary volume, driven by a case table (see microarch.measure._mesh).

The volume is a C-contiguous uint8 array of 0 and 1 whose outermost layer is 0, so the
surface is closed. The cube at (z, y, x) has its corners at (z + dz, y + dy, x + dx) for
dz, dy, dx in {0, 1}; corner ``4 dz + 2 dy + dx`` is bit that of the cube's case number.
Surface vertices sit halfway along the grid edges that join a 1 and a 0 (and, in some
cases, at a cube's centre). A triangle corner is coded 0-11 for an edge of the cube,
``4 * axis + 2 * a + b`` with ``a``, ``b`` the edge's offsets along the two other axes in
(z, y, x) order, and 12 for the cube's centre.

Vertices are numbered row by row, (z, y) in raster order, and within a row by x and then
edge along z, y, x, then centre. A first pass counts the vertices and triangles of every
row; a second computes the rows in parallel, each writing only its own slice of the
output, so the mesh does not depend on the number of threads.
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
                value = volume[z, y, x]
                n_vertices += ((volume[z + 1, y, x] != value) + (volume[z, y + 1, x] != value)
                               + (volume[z, y, x + 1] != value))
                case = _case(volume, z, y, x)
                n_vertices += has_centre[case]
                n_faces += n_triangles[case]
            vertices[z, y] = n_vertices
            triangles[z, y] = n_faces
    return vertices, triangles


@njit(parallel=True)
def fill_rows(volume, n_triangles, has_centre, corners, vertex_start, face_start, vertices,
              faces):
    """Write each cube row's vertices (index coordinates) and faces from its starts."""
    nz, ny, nx = volume.shape
    for row in prange((nz - 1) * (ny - 1)):
        z, y = row // (ny - 1), row % (ny - 1)
        if face_start[row + 1] == face_start[row]:
            continue
        # ids[r, x, k]: vertex of the edge along axis k (3: centre) at (z + dz, y + dy, x),
        # r = 2 dz + dy; only the edges that cross the surface are ever looked up
        ids = np.empty((4, nx, 4), np.int64)
        for r in range(4):
            zz, yy = z + (r >> 1), y + (r & 1)
            if zz == nz - 1 or yy == ny - 1:
                continue  # the outer layer of 0s: no edge there crosses
            n = vertex_start[zz * (ny - 1) + yy]
            for x in range(nx - 1):
                value = volume[zz, yy, x]
                for axis in range(3):
                    other = (volume[zz + 1, yy, x] if axis == 0 else
                             (volume[zz, yy + 1, x] if axis == 1 else volume[zz, yy, x + 1]))
                    if other != value:
                        ids[r, x, axis] = n
                        if r == 0:
                            vertices[n, 0] = zz + (0.5 if axis == 0 else 0.0)
                            vertices[n, 1] = yy + (0.5 if axis == 1 else 0.0)
                            vertices[n, 2] = x + (0.5 if axis == 2 else 0.0)
                        n += 1
                if has_centre[_case(volume, zz, yy, x)]:
                    ids[r, x, 3] = n
                    if r == 0:
                        vertices[n, 0] = zz + 0.5
                        vertices[n, 1] = yy + 0.5
                        vertices[n, 2] = x + 0.5
                    n += 1
        f = face_start[row]
        for x in range(nx - 1):
            case = _case(volume, z, y, x)
            for t in range(n_triangles[case]):
                for k in range(3):
                    code = corners[case, 3 * t + k]
                    if code == CENTRE:
                        faces[f, k] = ids[0, x, 3]
                        continue
                    axis, offsets = code >> 2, code & 3
                    a, b = offsets >> 1, offsets & 1
                    if axis == 0:
                        faces[f, k] = ids[a, x + b, 0]
                    elif axis == 1:
                        faces[f, k] = ids[2 * a, x + b, 1]
                    else:
                        faces[f, k] = ids[2 * a + b, x, 2]
                f += 1
