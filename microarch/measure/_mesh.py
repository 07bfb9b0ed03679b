"""Marching-cubes surface of a binary mask, without a floating-point copy of the volume.

The triangles of each cube configuration are those of scikit-image's Lewiner marching
cubes [1]_ at level 0.5: the case table is read off once per process by meshing each of the
256 configurations of a single cube with :func:`skimage.measure.marching_cubes`. Marching
cubes decides every cube from its own eight corners, so meshing a whole volume cube by cube
with that table gives scikit-image's mesh of the volume (the same triangles, wound the same
way, numbered differently), which the tests check on random volumes. Reading a binary
volume directly takes a tenth of the time and none of the float32 copy and the
per-vertex interpolation scikit-image needs for grey values.

References
----------
.. [1] Lewiner T, Lopes H, Vieira AW, Tavares G (2003) Efficient implementation of
   marching cubes' cases with topological guarantees. J Graphics Tools 8(2):1-15.
   doi:10.1080/10867651.2003.10487582
"""

from __future__ import annotations

import functools

import numpy as np

# Triangles per cube in the largest case of the table (9 for scikit-image 0.26).
_MAX_TRIANGLES = 12


def binary_marching_cubes(volume):
    """Closed triangle mesh of the 1-voxels of a padded binary volume, faces wound outwards.

    Parameters
    ----------
    volume : (Z, Y, X) ndarray of uint8
        0 and 1, C-contiguous, with an outer layer of 0s (so that the surface is closed).

    Returns
    -------
    vertices : (n, 3) ndarray of float64
        In index coordinates of ``volume``, (z, y, x): midpoints of the grid edges that join
        a 1 and a 0, and in a few configurations a cube centre.
    faces : (m, 3) ndarray of int32 (int64 beyond 2**31 - 1 vertices)
        Vertex indices; the cross product of (v1 - v0) and (v2 - v0), taken on the
        (z, y, x) components, points out of the 1-voxels (scikit-image's
        ``gradient_direction="ascent"``).
    """
    from microarch._kernels.marching import count_rows, fill_rows

    n_triangles, has_centre, corners = _cube_cases()
    per_row_vertices, per_row_triangles = count_rows(volume, n_triangles, has_centre)
    vertex_start = np.zeros(per_row_vertices.size + 1, np.int64)
    np.cumsum(per_row_vertices, out=vertex_start[1:])
    face_start = np.zeros(per_row_triangles.size + 1, np.int64)
    np.cumsum(per_row_triangles, out=face_start[1:])
    n_vertices = int(vertex_start[-1])
    index_type = np.int32 if n_vertices < np.iinfo(np.int32).max else np.int64
    vertices = np.empty((n_vertices, 3), np.float64)
    faces = np.empty((int(face_start[-1]), 3), index_type)
    fill_rows(volume, n_triangles, has_centre, corners, vertex_start, face_start, vertices,
              faces)
    return vertices, faces


@functools.cache
def _cube_cases():
    """scikit-image's triangles for each of the 256 cube configurations, coded as in
    :mod:`microarch._kernels.marching`: (count per case, centre vertex used, corner codes)."""
    from skimage.measure import marching_cubes

    from microarch._kernels.marching import CENTRE

    n_triangles = np.zeros(256, np.int64)
    has_centre = np.zeros(256, np.int64)
    corners = np.full((256, 3 * _MAX_TRIANGLES), -1, np.int64)
    bits = np.arange(8)
    for case in range(1, 255):
        cube = ((case >> bits) & 1).reshape(2, 2, 2).astype(np.float32)
        points, faces, _, _ = marching_cubes(cube, 0.5, gradient_direction="ascent",
                                             allow_degenerate=True)
        doubled = np.rint(2 * points).astype(np.int64)  # exact: midpoints and centres
        codes = np.empty(len(points), np.int64)
        for k, point in enumerate(doubled):
            half = point % 2 == 1
            if half.all():
                codes[k] = CENTRE
                continue
            if half.sum() != 1:
                raise RuntimeError(f"unexpected marching-cubes vertex {points[k]} in case {case}")
            axis = int(np.flatnonzero(half)[0])
            a, b = (int(point[other]) // 2 for other in range(3) if other != axis)
            codes[k] = 4 * axis + 2 * a + b
        if len(faces) > _MAX_TRIANGLES:
            raise RuntimeError(f"case {case} has {len(faces)} triangles")
        n_triangles[case] = len(faces)
        has_centre[case] = bool((codes == CENTRE).any())
        corners[case, : 3 * len(faces)] = codes[faces].ravel()
    return n_triangles, has_centre, corners
