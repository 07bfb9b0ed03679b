"""Tests for the binary marching cubes (microarch.measure._mesh, microarch._kernels.marching).

The oracle is scikit-image's marching cubes on a float copy of the same volume: the mesh
must hold the same triangles, wound the same way, whatever the numbering.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.measure import marching_cubes

from microarch._shared.threads import threads
from microarch.measure._mesh import _cube_cases, binary_marching_cubes


def _triangles(vertices, faces):
    """The mesh as a set of triangles in doubled index coordinates, each rotated so that its
    smallest corner comes first (which keeps the winding)."""
    out = set()
    for corners in np.rint(2 * vertices[faces]).astype(int).tolist():
        corners = [tuple(c) for c in corners]
        first = corners.index(min(corners))
        out.add(tuple(corners[first:] + corners[:first]))
    return out


def _scikit_image_mesh(volume):
    vertices, faces, _, _ = marching_cubes(volume.astype(np.float32), 0.5,
                                           gradient_direction="ascent", allow_degenerate=True)
    return vertices, faces


def _padded(inner):
    return np.pad(np.asarray(inner, np.uint8), 1)


@pytest.mark.parametrize("case", range(1, 255))
def test_every_cube_configuration_meshes_as_scikit_image(case):
    # each configuration inside a block of marrow, so its neighbours are meshed too
    volume = _padded(((case >> np.arange(8)) & 1).reshape(2, 2, 2))
    vertices, faces = binary_marching_cubes(volume)
    assert _triangles(vertices, faces) == _triangles(*_scikit_image_mesh(volume))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), fraction=st.floats(0.05, 0.95),
       shape=st.tuples(st.integers(1, 14), st.integers(1, 14), st.integers(1, 14)))
def test_random_volumes_mesh_as_scikit_image(seed, fraction, shape):
    volume = _padded(np.random.default_rng(seed).random(shape) < fraction)
    vertices, faces = binary_marching_cubes(volume)
    if not volume.any():  # scikit-image refuses a constant volume
        assert len(faces) == 0
        return
    expected = _scikit_image_mesh(volume)
    assert len(faces) == len(expected[1])
    assert _triangles(vertices, faces) == _triangles(*expected)
    # each vertex is listed once and used
    assert len(np.unique(vertices, axis=0)) == len(vertices)
    assert np.array_equal(np.unique(faces), np.arange(len(vertices)))


def test_vertices_are_edge_midpoints_or_cube_centres():
    volume = _padded(np.random.default_rng(3).random((20, 21, 22)) < 0.5)
    vertices, _ = binary_marching_cubes(volume)
    halves = (np.rint(2 * vertices).astype(int) % 2).sum(axis=1)
    assert set(np.unique(halves)) <= {1, 3}
    assert (halves == 3).any()  # a volume this noisy has centre-vertex cubes
    n_centre_cases = int(_cube_cases()[1].sum())
    assert 0 < n_centre_cases < 256


def test_empty_volume_has_no_mesh():
    vertices, faces = binary_marching_cubes(np.zeros((4, 5, 6), np.uint8))
    assert vertices.shape == (0, 3) and faces.shape == (0, 3)


def test_single_voxel_is_a_closed_octahedron():
    vertices, faces = binary_marching_cubes(_padded(np.ones((1, 1, 1))))
    assert len(vertices) == 6 and len(faces) == 8
    # outward winding: the signed volume (divergence theorem) is positive
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    assert np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6 == pytest.approx(1 / 6)


def test_threads_give_the_same_mesh():
    volume = _padded(np.random.default_rng(5).random((31, 17, 23)) < 0.3)
    with threads(1):
        one = binary_marching_cubes(volume)
    with threads(2):
        two = binary_marching_cubes(volume)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
