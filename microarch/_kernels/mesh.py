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
def vertex_neighbours(n_vertices, faces, selected):
    """Neighbour lists of the vertices, in CSR form (``start``, ``neighbours``).

    Only the faces with ``selected[f]`` count. Works for open meshes too (vertices on the
    rim of the window). A vertex's neighbours are the other corners of its faces, in face
    order, each listed once. The faces of each vertex are listed first (one int32 per
    face corner); the neighbours are then counted and written in two passes over them,
    so that no list of candidates with repeats is ever stored (at 256³ that list was
    19 bytes a voxel, the peak of the whole SMI).
    """
    incident_start = np.zeros(n_vertices + 1, dtype=np.int64)
    for f in range(faces.shape[0]):
        if selected[f]:
            for corner in range(3):
                incident_start[faces[f, corner] + 1] += 1
    for i in range(n_vertices):
        incident_start[i + 1] += incident_start[i]
    fill = incident_start[:-1].copy()
    incident = np.empty(incident_start[n_vertices], dtype=np.int32)
    for f in range(faces.shape[0]):
        if selected[f]:
            for corner in range(3):
                i = faces[f, corner]
                incident[fill[i]] = f
                fill[i] += 1
    widest = 0
    for i in range(n_vertices):
        widest = max(widest, incident_start[i + 1] - incident_start[i])
    counts = np.zeros(n_vertices + 1, dtype=np.int64)
    nowhere = np.empty(0, dtype=np.int32)
    step = (n_vertices + _CHUNKS - 1) // _CHUNKS
    for chunk in prange(_CHUNKS):
        scratch = np.empty(2 * widest, dtype=np.int32)
        for i in range(chunk * step, min(n_vertices, (chunk + 1) * step)):
            counts[i + 1] = _neighbours_of(i, faces, incident, incident_start, scratch,
                                           nowhere, 0)
    start = np.cumsum(counts)
    neighbours = np.empty(start[n_vertices], dtype=np.int32)
    for chunk in prange(_CHUNKS):
        scratch = np.empty(2 * widest, dtype=np.int32)
        for i in range(chunk * step, min(n_vertices, (chunk + 1) * step)):
            _neighbours_of(i, faces, incident, incident_start, scratch, neighbours, start[i])
    return start, neighbours


_CHUNKS = 256  # vertex ranges of the parallel passes (each allocates one scratch list)


@njit(inline="always")
def _neighbours_of(i, faces, incident, incident_start, scratch, out, offset):
    """Vertex i's distinct neighbours, first occurrences in face order: gathered into
    ``scratch``, copied to ``out[offset:]`` (when ``out`` is not empty), and counted."""
    count = 0
    for a in range(incident_start[i], incident_start[i + 1]):
        f = incident[a]
        corner = 0 if faces[f, 0] == i else (1 if faces[f, 1] == i else 2)
        for which in range(1, 3):
            candidate = faces[f, (corner + which) % 3]
            seen = False
            for k in range(count):
                if scratch[k] == candidate:
                    seen = True
                    break
            if not seen:
                scratch[count] = candidate
                count += 1
    if out.shape[0] > 0:
        for k in range(count):
            out[offset + k] = scratch[k]
    return count


_ALONG_EDGE, _ACROSS_EDGE, _ON_PLANE = 0, 1, 2


@njit(parallel=True)
def _movement_kinds(vertices, planes):
    """Per vertex and axis: whether the vertex lies on a grid edge along that axis, off it
    (it may move ``across`` either way), or on one of ``planes`` (it stays there)."""
    kinds = np.empty(vertices.shape, np.int8)
    for i in prange(vertices.shape[0]):
        for axis in range(3):
            x = vertices[i, axis]
            nearest = math.floor(x + 0.5)
            kinds[i, axis] = _ACROSS_EDGE
            if x != nearest:  # the edge's axis: x = floor(x) + 0.5
                kinds[i, axis] = _ALONG_EDGE
                continue
            for p in range(planes.shape[0]):
                if nearest == planes[p, axis]:
                    kinds[i, axis] = _ON_PLANE
    return kinds


@njit(inline="always")
def _bounds(origin, kind, edge_margin, across):
    """Where a vertex that started at ``origin`` (exact in float32) may move along an
    axis: between the two voxel centres of its edge, ``edge_margin`` clear of each;
    within ``across`` of the edge; or nowhere."""
    x = np.float64(origin)
    if kind == _ALONG_EDGE:
        return math.floor(x) + edge_margin, math.floor(x) + 1.0 - edge_margin
    if kind == _ACROSS_EDGE:
        return x - across, x + across
    return x, x


@njit(parallel=True)
def smooth_constrained(vertices, faces, selected, iterations, beta, edge_margin, across,
                       planes):
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
    Updates are Jacobi-style. Only the faces with ``selected[f]`` define neighbours.
    Vollmer J, Mencl R, Müller H (1999) Improved Laplacian smoothing of noisy surface
    meshes. Comput Graph Forum 18(3):131-138.
    """
    n_vertices = vertices.shape[0]
    start, neighbours = vertex_neighbours(n_vertices, faces, selected)
    # the bounds of each move are recomputed from these: a quarter of storing them
    origin = vertices.astype(np.float32)
    kinds = _movement_kinds(vertices, planes)
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
            for axis in range(3):
                sum_axis = sz if axis == 0 else (sy if axis == 1 else sx)
                moved = vertices[i, axis] + keep * (push[i, axis] - sum_axis / degree)
                low, high = _bounds(origin[i, axis], kinds[i, axis], edge_margin, across)
                vertices[i, axis] = min(max(moved, low), high)


@njit()
def vertex_normals(vertices, faces, selected):
    """Unit vertex normals: normalised sum of the adjacent faces' area vectors.

    Only the faces with ``selected[f]`` count; vertices of none get a zero normal.
    """
    normals = np.zeros(vertices.shape)
    for f in range(faces.shape[0]):
        if not selected[f]:
            continue
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        e1z, e1y, e1x, e2z, e2y, e2x = _edges(vertices, a, b, c)
        nz, ny, nx = _cross(e1z, e1y, e1x, e2z, e2y, e2x)
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


@njit(inline="always")
def _edges(points, a, b, c):
    """(z, y, x) of b - a, then of c - a."""
    return (points[b, 0] - points[a, 0], points[b, 1] - points[a, 1],
            points[b, 2] - points[a, 2], points[c, 0] - points[a, 0],
            points[c, 1] - points[a, 1], points[c, 2] - points[a, 2])


@njit(inline="always")
def _cross(uz, uy, ux, vz, vy, vx):
    """u x v on (z, y, x) components."""
    return uy * vx - ux * vy, ux * vz - uz * vx, uz * vy - uy * vz


@njit(inline="always")
def _face_area_rate(vertices, normals, a, b, c):
    """Area of the face (a, b, c) and its derivative when the vertices move along their
    normals: with edges e1, e2 the area is |c|/2, c = e1 x e2; moving the vertices by r
    times n0, n1, n2 changes c at the rate dc = (n1 - n0) x e2 + e1 x (n2 - n0), so
    dA/dr = (c . dc) / (2 |c|) at r = 0. A zero-area face grows at |dc| / 2."""
    e1z, e1y, e1x, e2z, e2y, e2x = _edges(vertices, a, b, c)
    d1z, d1y, d1x, d2z, d2y, d2x = _edges(normals, a, b, c)
    cz, cy, cx = _cross(e1z, e1y, e1x, e2z, e2y, e2x)
    az, ay, ax = _cross(d1z, d1y, d1x, e2z, e2y, e2x)
    bz, by, bx = _cross(e1z, e1y, e1x, d2z, d2y, d2x)
    dcz, dcy, dcx = az + bz, ay + by, ax + bx
    length = math.sqrt(cz * cz + cy * cy + cx * cx)
    if length > 0.0:
        return 0.5 * length, 0.5 * (cz * dcz + cy * dcy + cx * dcx) / length
    return 0.0, 0.5 * math.sqrt(dcz * dcz + dcy * dcy + dcx * dcx)


@njit(parallel=True)
def face_area_rates(vertices, faces, normals):
    """Area of each face and its derivative when every vertex moves along its normal."""
    n_faces = faces.shape[0]
    area = np.empty(n_faces)
    rate = np.empty(n_faces)
    for f in prange(n_faces):
        area[f], rate[f] = _face_area_rate(vertices, normals, faces[f, 0], faces[f, 1],
                                           faces[f, 2])
    return area, rate


_SUM_CHUNKS = 64  # fixed, so that the sums do not depend on the number of threads


@njit(parallel=True)
def window_sums(vertices, faces, where, normals, lower, upper):
    """Sums over the faces INSIDE the window, and the bone volume inside it.

    ``where`` is :func:`classify_faces`' class of each face. Returns (area, sum of
    positive rates, sum of negative rates, area of the faces with a negative rate,
    volume). The volume follows from the divergence theorem with the field
    (z - lower_z) e_z: a face inside contributes (z_centroid - lower_z) a_z, a_z the z
    component of its area vector; of the window's cut faces only the top one contributes,
    (upper_z - lower_z) times the bone cross-section there. The faces ABOVE the window
    close that cross-section, so it equals their total a_z. Partial sums over a fixed
    split of the faces are added in order.
    """
    n_faces = faces.shape[0]
    step = (n_faces + _SUM_CHUNKS - 1) // _SUM_CHUNKS
    partial = np.zeros((_SUM_CHUNKS, 6))
    for chunk in prange(_SUM_CHUNKS):
        for f in range(chunk * step, min(n_faces, (chunk + 1) * step)):
            a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
            if where[f] == ABOVE:
                partial[chunk, 5] += _area_z(vertices, a, b, c)
                continue
            if where[f] != INSIDE:
                continue
            area, rate = _face_area_rate(vertices, normals, a, b, c)
            partial[chunk, 0] += area
            if rate >= 0.0:
                partial[chunk, 1] += rate
            else:
                partial[chunk, 2] += rate
                partial[chunk, 3] += area
            centroid_z = (vertices[a, 0] + vertices[b, 0] + vertices[c, 0]) / 3.0
            partial[chunk, 4] += (centroid_z - lower[0]) * _area_z(vertices, a, b, c)
    total = np.zeros(6)
    for chunk in range(_SUM_CHUNKS):
        for k in range(6):
            total[k] += partial[chunk, k]
    volume = total[4] + (upper[0] - lower[0]) * total[5]
    return total[0], total[1], total[2], total[3], volume


@njit(inline="always")
def _area_z(vertices, a, b, c):
    """z component (index 0) of the face's area vector, (e1 x e2) / 2."""
    e1z, e1y, e1x, e2z, e2y, e2x = _edges(vertices, a, b, c)
    return 0.5 * _cross(e1z, e1y, e1x, e2z, e2y, e2x)[0]
