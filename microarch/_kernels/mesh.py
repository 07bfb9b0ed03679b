"""Triangle-mesh kernels for the structure model index (see microarch.measure._smi).

Vertices are (n, 3) float64 in (z, y, x) order, faces (m, 3) integer indices. Cross
products are taken on the stored (z, y, x) components, and faces are wound so that they
point out of the bone. A "window" is an axis-aligned box ``[lower, upper]`` whose faces
are grid planes: marching-cubes faces lie in one grid cube each, so every face is wholly
inside or outside the window, and the smoothing keeps it that way. Parallel loops write
only their own vertex, so results do not depend on the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from microarch._kernels._jit import njit

OUTSIDE, INSIDE, ABOVE = 0, 1, 2


@njit(parallel=True)
def classify_faces(vertices, faces, lower, upper):
    """INSIDE the window, ABOVE it (over its top z face, within its y and x range) or OUTSIDE.

    The faces ABOVE close the bone's cross-section with the top face of the window; their
    z-flux is the area of that cross-section (see :func:`region_sums`).
    """
    n_faces = faces.shape[0]
    where = np.empty(n_faces, dtype=np.int8)
    for f in prange(n_faces):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        z = (vertices[a, 0] + vertices[b, 0] + vertices[c, 0]) / 3.0
        y = (vertices[a, 1] + vertices[b, 1] + vertices[c, 1]) / 3.0
        x = (vertices[a, 2] + vertices[b, 2] + vertices[c, 2]) / 3.0
        where[f] = OUTSIDE
        if lower[1] < y < upper[1] and lower[2] < x < upper[2]:
            if lower[0] < z < upper[0]:
                where[f] = INSIDE
            elif z > upper[0]:
                where[f] = ABOVE
    return where


@njit(parallel=True)
def vertex_neighbours(n_vertices, faces):
    """Neighbour lists of the vertices, in CSR form (``start``, ``neighbours``).

    Works for open meshes too (vertices on the rim of the window): each face offers each of
    its vertices the two other corners, and repeats are dropped.
    """
    offered_start = np.zeros(n_vertices + 1, dtype=np.int64)
    for f in range(faces.shape[0]):
        for corner in range(3):
            offered_start[faces[f, corner] + 1] += 2
    for i in range(n_vertices):
        offered_start[i + 1] += offered_start[i]
    fill = offered_start[:-1].copy()
    offered = np.empty(offered_start[n_vertices], dtype=np.int32)
    for f in range(faces.shape[0]):
        for corner in range(3):
            i = faces[f, corner]
            offered[fill[i]] = faces[f, (corner + 1) % 3]
            offered[fill[i] + 1] = faces[f, (corner + 2) % 3]
            fill[i] += 2
    # drop repeats within each vertex's segment, keeping first occurrences in place
    unique_count = np.zeros(n_vertices + 1, dtype=np.int64)
    for i in prange(n_vertices):
        begin = offered_start[i]
        count = 0
        for k in range(begin, offered_start[i + 1]):
            candidate = offered[k]
            seen = False
            for m in range(begin, begin + count):
                if offered[m] == candidate:
                    seen = True
                    break
            if not seen:
                offered[begin + count] = candidate
                count += 1
        unique_count[i + 1] = count
    start = np.cumsum(unique_count)
    neighbours = np.empty(start[n_vertices], dtype=np.int32)
    for i in prange(n_vertices):
        begin = offered_start[i]
        for k in range(start[i + 1] - start[i]):
            neighbours[start[i] + k] = offered[begin + k]
    return start, neighbours


@njit(parallel=True)
def _constraints(vertices, edge_margin, across, planes):
    n_vertices = vertices.shape[0]
    low = np.empty((n_vertices, 3))
    high = np.empty((n_vertices, 3))
    for i in prange(n_vertices):
        for axis in range(3):
            x = vertices[i, axis]
            nearest = math.floor(x + 0.5)
            if x != nearest:  # the edge's axis: x = floor(x) + 0.5
                low[i, axis] = math.floor(x) + edge_margin
                high[i, axis] = math.floor(x) + 1.0 - edge_margin
                continue
            low[i, axis] = nearest - across
            high[i, axis] = nearest + across
            for p in range(planes.shape[0]):
                if nearest == planes[p, axis]:
                    low[i, axis] = nearest
                    high[i, axis] = nearest
    return low, high


@njit(parallel=True)
def smooth_constrained(vertices, faces, iterations, beta, edge_margin, across, planes):
    """HC-Laplacian smoothing of a binary volume's marching-cubes mesh, constrained, in place.

    ``vertices`` are in index units and start where marching cubes puts them for binary
    data: halfway along the grid edge that joins a bone and a marrow voxel centre (their one
    non-integer coordinate names the edge's axis). The surface crosses that edge somewhere,
    so a vertex stays between the two voxel centres along the edge, at least
    ``edge_margin`` from each, and within ``across`` of the edge along the other axes; a
    vertex on a plane ``planes[p, a]`` (grid planes normal to axis a) stays on it. Only the
    vertices of ``faces`` move, and only those faces define neighbours.

    Each iteration is Vollmer et al.'s HC step with alpha = 0: with the umbrella operator
    b = mean(neighbours) - q, q <- q + (1 - beta) (b - mean(b over neighbours)), i.e. a
    bi-Laplacian step that removes small-scale creases without the shrinkage of plain
    Laplacian smoothing (which takes a third or more of the volume of a four-voxel rod).
    Updates are Jacobi-style. Vollmer J, Mencl R, Müller H (1999) Improved Laplacian
    smoothing of noisy surface meshes. Comput Graph Forum 18(3):131-138.
    """
    n_vertices = vertices.shape[0]
    start, neighbours = vertex_neighbours(n_vertices, faces)
    low, high = _constraints(vertices, edge_margin, across, planes)
    push = np.zeros_like(vertices)
    keep = 1.0 - beta
    for _ in range(iterations):
        for i in prange(n_vertices):
            begin, end = start[i], start[i + 1]
            if begin == end:
                continue
            sz = sy = sx = 0.0
            for k in range(begin, end):
                j = neighbours[k]
                sz += vertices[j, 0]
                sy += vertices[j, 1]
                sx += vertices[j, 2]
            degree = end - begin
            push[i, 0] = sz / degree - vertices[i, 0]
            push[i, 1] = sy / degree - vertices[i, 1]
            push[i, 2] = sx / degree - vertices[i, 2]
        for i in prange(n_vertices):
            begin, end = start[i], start[i + 1]
            if begin == end:
                continue
            sz = sy = sx = 0.0
            for k in range(begin, end):
                j = neighbours[k]
                sz += push[j, 0]
                sy += push[j, 1]
                sx += push[j, 2]
            degree = end - begin
            z = vertices[i, 0] + keep * (push[i, 0] - sz / degree)
            y = vertices[i, 1] + keep * (push[i, 1] - sy / degree)
            x = vertices[i, 2] + keep * (push[i, 2] - sx / degree)
            vertices[i, 0] = min(max(z, low[i, 0]), high[i, 0])
            vertices[i, 1] = min(max(y, low[i, 1]), high[i, 1])
            vertices[i, 2] = min(max(x, low[i, 2]), high[i, 2])


@njit()
def vertex_normals(vertices, faces):
    """Unit vertex normals: normalised sum of the adjacent faces' area vectors.

    Vertices of no face get a zero normal.
    """
    normals = np.zeros(vertices.shape)
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        e1z = vertices[b, 0] - vertices[a, 0]
        e1y = vertices[b, 1] - vertices[a, 1]
        e1x = vertices[b, 2] - vertices[a, 2]
        e2z = vertices[c, 0] - vertices[a, 0]
        e2y = vertices[c, 1] - vertices[a, 1]
        e2x = vertices[c, 2] - vertices[a, 2]
        nz = e1y * e2x - e1x * e2y
        ny = e1x * e2z - e1z * e2x
        nx = e1z * e2y - e1y * e2z
        for v in (a, b, c):
            normals[v, 0] += nz
            normals[v, 1] += ny
            normals[v, 2] += nx
    for v in range(vertices.shape[0]):
        length = math.sqrt(normals[v, 0] ** 2 + normals[v, 1] ** 2 + normals[v, 2] ** 2)
        if length > 0.0:
            normals[v, 0] /= length
            normals[v, 1] /= length
            normals[v, 2] /= length
    return normals


@njit(parallel=True)
def face_area_rates(vertices, faces, normals):
    """Area of each face and its derivative when every vertex moves along its normal.

    With edges e1, e2 the face area is |c|/2, c = e1 x e2. Moving the vertices by r times
    their normals n0, n1, n2 changes c at the rate dc = (n1 - n0) x e2 + e1 x (n2 - n0), so
    dA/dr = (c . dc) / (2 |c|) at r = 0. A zero-area face grows at |dc| / 2.
    """
    n_faces = faces.shape[0]
    area = np.empty(n_faces)
    rate = np.empty(n_faces)
    for f in prange(n_faces):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        e1z = vertices[b, 0] - vertices[a, 0]
        e1y = vertices[b, 1] - vertices[a, 1]
        e1x = vertices[b, 2] - vertices[a, 2]
        e2z = vertices[c, 0] - vertices[a, 0]
        e2y = vertices[c, 1] - vertices[a, 1]
        e2x = vertices[c, 2] - vertices[a, 2]
        d1z = normals[b, 0] - normals[a, 0]
        d1y = normals[b, 1] - normals[a, 1]
        d1x = normals[b, 2] - normals[a, 2]
        d2z = normals[c, 0] - normals[a, 0]
        d2y = normals[c, 1] - normals[a, 1]
        d2x = normals[c, 2] - normals[a, 2]
        cz = e1y * e2x - e1x * e2y
        cy = e1x * e2z - e1z * e2x
        cx = e1z * e2y - e1y * e2z
        dcz = (d1y * e2x - d1x * e2y) + (e1y * d2x - e1x * d2y)
        dcy = (d1x * e2z - d1z * e2x) + (e1x * d2z - e1z * d2x)
        dcx = (d1z * e2y - d1y * e2z) + (e1z * d2y - e1y * d2z)
        length = math.sqrt(cz * cz + cy * cy + cx * cx)
        area[f] = 0.5 * length
        if length > 0.0:
            rate[f] = 0.5 * (cz * dcz + cy * dcy + cx * dcx) / length
        else:
            rate[f] = 0.5 * math.sqrt(dcz * dcz + dcy * dcy + dcx * dcx)
    return area, rate


@njit()
def region_sums(vertices, inside_faces, area, rate, above_faces, lower, upper):
    """Sums over the faces inside the window, and the bone volume inside it.

    Returns (area, sum of positive rates, sum of negative rates, area of the faces with a
    negative rate, volume). The volume follows from the divergence theorem with the field
    (z - lower_z) e_z: a face inside contributes (z_centroid - lower_z) a_z, a_z the z
    component of its area vector; of the window's cut faces only the top one contributes,
    (upper_z - lower_z) times the bone cross-section there. The faces above the window
    close that cross-section, so it equals their total a_z.
    """
    total_area = 0.0
    rate_positive = 0.0
    rate_negative = 0.0
    concave_area = 0.0
    volume = 0.0
    for f in range(inside_faces.shape[0]):
        total_area += area[f]
        if rate[f] >= 0.0:
            rate_positive += rate[f]
        else:
            rate_negative += rate[f]
            concave_area += area[f]
        a, b, c = inside_faces[f, 0], inside_faces[f, 1], inside_faces[f, 2]
        centroid_z = (vertices[a, 0] + vertices[b, 0] + vertices[c, 0]) / 3.0
        volume += (centroid_z - lower[0]) * _area_z(vertices, a, b, c)
    top_section = 0.0
    for f in range(above_faces.shape[0]):
        a, b, c = above_faces[f, 0], above_faces[f, 1], above_faces[f, 2]
        top_section += _area_z(vertices, a, b, c)
    volume += (upper[0] - lower[0]) * top_section
    return total_area, rate_positive, rate_negative, concave_area, volume


@njit()
def _area_z(vertices, a, b, c):
    """z component (index 0) of the face's area vector, (e1 x e2) / 2."""
    e1y = vertices[b, 1] - vertices[a, 1]
    e1x = vertices[b, 2] - vertices[a, 2]
    e2y = vertices[c, 1] - vertices[a, 1]
    e2x = vertices[c, 2] - vertices[a, 2]
    return 0.5 * (e1y * e2x - e1x * e2y)
