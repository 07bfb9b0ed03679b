"""Tests for the structure model index (microarch.measure._smi and microarch._kernels.mesh).

Shapes are rasterised here with numpy by voxel-centre sampling of the continuous shape,
centred off the grid so that no symmetry of the grid helps.
"""

import math
import warnings

import numpy as np
import pytest

from microarch._shared.threads import threads
from microarch._shared.validation import DegenerateInputWarning
from microarch.measure import structure_model_index
from microarch.measure._smi import _ACROSS, _EDGE_MARGIN, _HC_BETA, _PART_NAMES, _surface_mesh

# -- shapes -------------------------------------------------------------------------------


def _grid(shape, spacing, offset):
    """Physical coordinates (mm) of the voxel centres, origin near the image centre."""
    axes = [(np.arange(n) - (n - 1) / 2 + o) * s for n, s, o in zip(shape, spacing, offset)]
    return np.meshgrid(*axes, indexing="ij")


def ball(radius, spacing=(1.0, 1.0, 1.0), margin=3, offset=(0.31, 0.17, 0.23)):
    """A ball of ``radius`` mm, not touching the border; an ellipsoid in voxels if anisotropic."""
    shape = [2 * math.ceil(radius / s + margin) + 1 for s in spacing]
    z, y, x = _grid(shape, spacing, offset)
    return z**2 + y**2 + x**2 <= radius**2


def rod(diameter, length, direction=(1.0, 0.0, 0.0), spacing=(1.0, 1.0, 1.0), shape=None):
    """An infinite cylinder of ``diameter`` mm through the image centre, along ``direction``."""
    if shape is None:  # along z: the cross-section plus a margin, ``length`` voxels long
        width = [2 * math.ceil(diameter / 2 / s + 3) + 1 for s in spacing[1:]]
        shape = (length, *width)
    z, y, x = _grid(shape, spacing, (0.31, 0.17, 0.23))
    u = np.asarray(direction, float) / np.linalg.norm(direction)
    along = u[0] * z + u[1] * y + u[2] * x
    return z**2 + y**2 + x**2 - along**2 <= (diameter / 2) ** 2


def slab(thickness, shape, normal=(1.0, 0.0, 0.0), spacing=(1.0, 1.0, 1.0)):
    """An infinite plate of ``thickness`` mm through the image centre."""
    z, y, x = _grid(shape, spacing, (0.31, 0.17, 0.23))
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    return np.abs(n[0] * z + n[1] * y + n[2] * x) <= thickness / 2


def tilted(degrees, azimuth=30.0):
    a, b = np.deg2rad(degrees), np.deg2rad(azimuth)
    return (np.cos(a), np.sin(a) * np.cos(b), np.sin(a) * np.sin(b))


def parts(mask, spacing=1.0, **options):
    return structure_model_index(mask, spacing=spacing, return_parts=True, **options)


# -- numpy oracles --------------------------------------------------------------------------


def oracle_vertex_normals(vertices, faces):
    cross = np.cross(
        vertices[faces[:, 1]] - vertices[faces[:, 0]],
        vertices[faces[:, 2]] - vertices[faces[:, 0]],
    )
    normals = np.zeros_like(vertices)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], cross)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def oracle_face_areas(vertices, faces):
    cross = np.cross(
        vertices[faces[:, 1]] - vertices[faces[:, 0]],
        vertices[faces[:, 2]] - vertices[faces[:, 0]],
    )
    return 0.5 * np.linalg.norm(cross, axis=1)


def oracle_area_rates(vertices, faces, step=1e-4):
    """dA/dr of every face by central differences: move the mesh along its vertex normals."""
    normals = oracle_vertex_normals(vertices, faces)
    grown = oracle_face_areas(vertices + step * normals, faces)
    shrunk = oracle_face_areas(vertices - step * normals, faces)
    return (grown - shrunk) / (2 * step)


def oracle_closed_volume(vertices, faces):
    """Volume of a closed mesh as the sum of signed tetrahedra with the origin."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0


def oracle_edges(faces):
    """The mesh's edges, each once, as sorted vertex pairs."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(edges, axis=1), axis=0)


def oracle_smooth(vertices, faces, iterations, beta, margin, across, planes):
    """Constrained HC smoothing (alpha = 0) with unique edges, numpy only."""
    n = len(vertices)
    edges = oracle_edges(faces)
    degree = np.bincount(edges.ravel(), minlength=n).astype(float)
    moves = degree > 0
    degree[~moves] = 1.0

    def neighbour_mean(values):
        total = np.zeros_like(values)
        np.add.at(total, edges[:, 0], values[edges[:, 1]])
        np.add.at(total, edges[:, 1], values[edges[:, 0]])
        return total / degree[:, None]

    nearest = np.floor(vertices + 0.5)
    on_edge = vertices != nearest
    low = np.where(on_edge, np.floor(vertices) + margin, nearest - across)
    high = np.where(on_edge, np.floor(vertices) + 1 - margin, nearest + across)
    on_plane = ~on_edge & (nearest[:, None, :] == planes[None, :, :]).any(axis=1)
    low[on_plane] = nearest[on_plane]
    high[on_plane] = nearest[on_plane]
    v = vertices.copy()
    for _ in range(iterations):
        push = np.where(moves[:, None], neighbour_mean(v) - v, 0.0)
        step = (1 - beta) * (push - neighbour_mean(push))
        v = np.where(moves[:, None], np.clip(v + step, low, high), v)
    return v


def oracle_window_volume(vertices, faces, lower, upper, axis):
    """Bone volume inside the window by the divergence theorem along ``axis``.

    Faces inside the window contribute (centroid - lower) * (area vector component); the
    window's far face along ``axis`` adds its length times the bone section there, which
    the faces beyond it (within the window across) close.
    """
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    centroid = (a + b + c) / 3
    area_component = 0.5 * np.cross(b - a, c - a)[:, axis]
    across = [k for k in range(3) if k != axis]
    within = np.all(
        (centroid[:, across] > lower[across]) & (centroid[:, across] < upper[across]), 1
    )
    inside = within & (centroid[:, axis] > lower[axis]) & (centroid[:, axis] < upper[axis])
    beyond = within & (centroid[:, axis] > upper[axis])
    volume = ((centroid[inside, axis] - lower[axis]) * area_component[inside]).sum()
    return volume + (upper[axis] - lower[axis]) * area_component[beyond].sum()


def random_structure(shape, sigma, fraction, seed):
    """Thresholded smoothed noise: an irregular, trabecular-like mask."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    return field > np.quantile(field, 1 - fraction)


# -- closed-form shapes ---------------------------------------------------------------------


@pytest.mark.parametrize("radius", [6, 10])
def test_sphere_is_four_and_convex(radius):
    p = parts(ball(radius))
    assert p["SMI"] == pytest.approx(4.0, abs=0.1)
    assert p["concave fraction"] < 0.05
    assert -0.05 < p["SMI-"] <= 0.0
    assert p["SMI"] == pytest.approx(p["SMI+"] + p["SMI-"], rel=1e-12)
    # smoothing pulls a convex surface inwards by a fraction of a voxel
    assert p["BV"] == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.1)
    assert p["BS"] == pytest.approx(4 * math.pi * radius**2, rel=0.07)


def test_raw_staircase_mesh_underestimates_a_sphere():
    # why the smoothing exists: the unsmoothed mesh is full of small creases
    p = parts(ball(10), smoothing_iterations=0)
    assert 3.3 < p["SMI"] < 3.7
    assert p["concave fraction"] > 0.15


@pytest.mark.parametrize("diameter", [10, 20])
def test_rod_spanning_the_image_is_three(diameter):
    # border="continue": the image is a window into an infinitely long rod
    assert parts(rod(diameter, length=6))["SMI"] == pytest.approx(3.0, abs=0.1)


def test_more_smoothing_flattens_the_staircase_of_thick_structures():
    # the terraces along a thick rod are long; ten iterations leave shallow ripples whose
    # troughs count as concave, more iterations iron them out
    mask = rod(20, length=6)
    assert parts(rod(10, length=6))["concave fraction"] < 0.05
    assert parts(mask)["concave fraction"] > 0.1
    assert parts(mask, smoothing_iterations=60)["concave fraction"] < 0.02


def test_thin_rods_keep_their_volume_and_one_voxel_rods_survive():
    # HC smoothing does not shrink a four-voxel rod (plain Laplacian smoothing takes a third)
    p = parts(rod(4, length=10))
    assert p["BV"] == pytest.approx(math.pi * 4 * 9, rel=0.1)  # window: 9 voxels long
    # a one-voxel-wide rod thins to a needle but is still there, with the SMI of its
    # marching-cubes cross-section (a square prism, 2.12)
    needle = parts(rod(1.2, length=10))
    assert needle["BV"] > 0
    assert needle["SMI"] == pytest.approx(3 / math.sqrt(2), abs=0.02)


def test_oblique_rod_is_three():
    p = parts(rod(10, length=0, direction=tilted(30), shape=(40, 40, 40)))
    assert p["SMI"] == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("thickness", [1, 4, 9])
def test_plate_spanning_the_image_is_zero(thickness):
    p = parts(slab(thickness, (thickness + 8, 12, 12)))
    assert p["SMI"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("degrees", [10, 30])
def test_oblique_plate_is_zero(degrees):
    p = parts(slab(6, (40, 40, 40), normal=tilted(degrees)))
    assert p["SMI"] == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize("upper_half", [False, True])
def test_volume_inside_the_window_with_cut_faces(upper_half):
    # a flat bone/marrow interface halfway between voxel centres 7 and 8; the window runs
    # from voxel centre 0 to 15 along each axis
    mask = np.zeros((16, 16, 16), dtype=bool)
    mask[8:] = True
    if not upper_half:
        mask = ~mask
    p = parts(mask, spacing=0.5)
    assert p["BV"] == pytest.approx(7.5 * 15 * 15 * 0.5**3, rel=1e-12)
    assert p["BS"] == pytest.approx(15 * 15 * 0.5**2, rel=1e-12)
    assert p["SMI"] == 0.0


def test_closed_rod_in_background_mode_is_above_three():
    # border="background" closes the rod's ends with flat caps whose rims are convex edges
    mask = rod(10, length=30)
    assert parts(mask, border="background")["SMI"] > parts(mask)["SMI"] + 0.1


def test_spherical_cavity_in_bone_is_concave():
    # bone everywhere except a spherical cavity of radius R: BS = 4 pi R^2, the surface
    # shrinks as it moves into the cavity, dBS/dr = -8 pi R, so SMI = -3 BV / (pi R^3)
    mask = ~ball(8, margin=4)
    p = parts(mask)
    assert p["concave fraction"] > 0.99
    assert p["SMI+"] == pytest.approx(0.0, abs=0.05)
    radius = math.sqrt(p["BS"] / (4 * math.pi))  # the mesh's own radius, after smoothing
    assert radius == pytest.approx(8, abs=0.5)
    window = math.prod(n - 1 for n in mask.shape)
    assert p["BV"] == pytest.approx(window - 4 / 3 * math.pi * radius**3, rel=0.005)
    assert p["SMI"] == pytest.approx(-3 * p["BV"] / (math.pi * radius**3), rel=0.03)


def test_hollow_ball_has_its_cavity_as_concave_part():
    # a shell between radii R and r: BV = 4/3 pi (R^3 - r^3), BS = 4 pi (R^2 + r^2),
    # dBS/dr = 8 pi (R - r), so SMI = 4 (R^3 - r^3) (R - r) / (R^2 + r^2)^2
    outer, inner = 14, 7
    shell = ball(outer) & ~ball(inner, margin=3 + outer - inner)
    p = parts(shell, border="background")
    expected = 4 * (outer**3 - inner**3) * (outer - inner) / (outer**2 + inner**2) ** 2
    assert p["SMI"] == pytest.approx(expected, abs=0.1)
    assert p["concave fraction"] == pytest.approx(inner**2 / (outer**2 + inner**2), abs=0.07)
    assert p["SMI-"] < -0.5


# -- physical space -------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", [(1.6, 1.0, 0.8), (2.0, 1.0, 1.0), (1.0, 0.5, 0.5)])
def test_anisotropic_voxels_give_the_same_sphere(spacing):
    mask = ball(10, spacing=spacing)
    p = parts(mask, spacing=spacing)
    assert p["SMI"] == pytest.approx(4.0, abs=0.1)
    assert p["BV"] == pytest.approx(4 / 3 * math.pi * 1000, rel=0.1)


def test_anisotropic_rod():
    spacing = (1.0, 1.5, 0.8)
    assert parts(rod(20, 6, spacing=spacing), spacing=spacing)["SMI"] == pytest.approx(3, abs=0.1)


def test_physical_units_scale_and_smi_does_not():
    mask = ball(7)
    unit, scaled = parts(mask, spacing=1.0), parts(mask, spacing=0.082)
    assert scaled["SMI"] == pytest.approx(unit["SMI"], rel=1e-12)
    assert scaled["concave fraction"] == pytest.approx(unit["concave fraction"], abs=1e-12)
    assert scaled["BS"] == pytest.approx(unit["BS"] * 0.082**2, rel=1e-12)
    assert scaled["BV"] == pytest.approx(unit["BV"] * 0.082**3, rel=1e-12)


@pytest.mark.parametrize(
    "shape_of",
    [lambda s: ball(8, spacing=s), lambda s: rod(10, round(8 / s[0]), spacing=s)],
    ids=["ball", "rod"],
)
def test_same_shape_at_twice_the_resolution(shape_of):
    coarse = parts(shape_of((1.0,) * 3), spacing=1.0)
    fine = parts(shape_of((0.5,) * 3), spacing=0.5)
    assert fine["SMI"] == pytest.approx(coarse["SMI"], abs=0.05)
    # the window along the rod spans voxel centres, so compare the length-free BS/BV
    assert fine["BS"] / fine["BV"] == pytest.approx(coarse["BS"] / coarse["BV"], rel=0.05)


def test_step_size_meshes_the_subsampled_mask():
    mask = ball(16, margin=2)
    stepped = parts(mask, spacing=0.1, step_size=2)
    direct = parts(mask[::2, ::2, ::2], spacing=0.2)
    assert stepped == direct
    assert stepped["SMI"] == pytest.approx(4.0, abs=0.1)


def test_border_modes_agree_away_from_the_border():
    mask = ball(6)
    cont, closed = parts(mask, border="continue"), parts(mask, border="background")
    for key in _PART_NAMES:
        assert cont[key] == pytest.approx(closed[key], rel=1e-9, abs=1e-12)


# -- oracles ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoothed_mesh():
    return _surface_mesh(ball(5, margin=2), (1.2, 1.0, 0.9), 10, "background")


def test_area_rates_match_finite_differences(smoothed_mesh):
    from microarch._kernels.mesh import face_area_rates, vertex_normals

    vertices, faces = smoothed_mesh.vertices, smoothed_mesh.faces
    normals = vertex_normals(vertices, faces, np.ones(len(faces), bool))
    np.testing.assert_allclose(normals, oracle_vertex_normals(vertices, faces), atol=1e-12)
    half = np.arange(len(faces)) % 2 == 0  # only the selected faces count
    np.testing.assert_allclose(vertex_normals(vertices, faces, half),
                               oracle_vertex_normals(vertices, faces[half]), atol=1e-12)
    area, rate = face_area_rates(vertices, faces, normals)
    np.testing.assert_allclose(area, oracle_face_areas(vertices, faces), rtol=1e-12)
    expected = oracle_area_rates(vertices, faces)
    np.testing.assert_allclose(rate, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert rate.sum() == pytest.approx(expected.sum(), rel=1e-6)


def test_smi_matches_a_numpy_oracle_on_the_same_mesh(smoothed_mesh):
    from microarch.measure._smi import _surface_sums

    vertices, faces = smoothed_mesh.vertices, smoothed_mesh.faces
    area, rate_positive, rate_negative, concave_area, volume = _surface_sums(smoothed_mesh)
    rates = oracle_area_rates(vertices, faces)
    areas = oracle_face_areas(vertices, faces)
    oracle_volume = oracle_closed_volume(vertices, faces)
    assert volume == pytest.approx(oracle_volume, rel=1e-10)
    assert area == pytest.approx(areas.sum(), rel=1e-12)
    assert rate_positive + rate_negative == pytest.approx(rates.sum(), rel=1e-6)
    assert concave_area == pytest.approx(areas[rates < 0].sum(), rel=1e-6)
    smi = 6 * oracle_volume * rates.sum() / areas.sum() ** 2
    mask = ball(5, margin=2)
    assert structure_model_index(mask, spacing=(1.2, 1.0, 0.9), border="background") == (
        pytest.approx(smi, rel=1e-6)
    )


def test_window_volume_agrees_along_all_three_axes():
    # the kernel integrates along z; a structure cut by all six window faces must give the
    # same bone volume when integrated along y or x (numpy), and the window closes it
    mask = random_structure((20, 22, 24), 1.5, 0.3, seed=3)
    spacing = (1.1, 0.9, 0.8)
    mesh = _surface_mesh(mask, spacing, 10, "continue")
    volume = structure_model_index(mask, spacing=spacing, return_parts=True)["BV"]
    for axis in range(3):
        assert oracle_window_volume(mesh.vertices, mesh.faces, mesh.lower, mesh.upper, axis) == (
            pytest.approx(volume, rel=1e-10)
        )
    window = np.prod((np.array(mask.shape) - 1) * spacing)
    assert 0.2 * window < volume < 0.4 * window


def test_window_faces_do_not_straddle_the_window():
    from microarch._kernels.mesh import INSIDE, classify_faces

    mask = random_structure((16, 16, 16), 1.5, 0.3, seed=4)
    mesh = _surface_mesh(mask, (1.0, 1.0, 1.0), 10, "continue")
    inside = classify_faces(mesh.vertices, mesh.faces, mesh.lower, mesh.upper) == INSIDE
    corners = mesh.vertices[mesh.faces[inside]]  # (faces, 3 corners, 3 axes)
    assert np.all(corners >= mesh.lower) and np.all(corners <= mesh.upper)
    outside = mesh.vertices[mesh.faces[~inside]]
    assert not np.any(np.all((outside > mesh.lower) & (outside < mesh.upper), axis=2).all(axis=1))


def test_neighbour_lists_match_numpy():
    from skimage.measure import marching_cubes

    from microarch._kernels.mesh import vertex_neighbours

    volume = np.pad(random_structure((10, 10, 10), 1.0, 0.4, seed=5), 1).astype(np.float32)
    vertices, faces, _, _ = marching_cubes(volume, 0.5, gradient_direction="ascent")
    selected = np.arange(len(faces)) < len(faces) // 2  # an open mesh, as at a window's rim
    start, neighbours = vertex_neighbours(len(vertices), np.ascontiguousarray(faces), selected)
    edges = oracle_edges(faces[selected])
    expected = [set() for _ in range(len(vertices))]
    for i, j in edges:
        expected[i].add(j)
        expected[j].add(i)
    for i in range(len(vertices)):
        listed = neighbours[start[i] : start[i + 1]]
        assert len(listed) == len(set(listed.tolist()))
        assert set(listed.tolist()) == expected[i]


@pytest.mark.parametrize("planes", [(-9.0, -9.0), (4.0, 9.0)])
def test_smoothing_kernel_matches_numpy_oracle(planes):
    from skimage.measure import marching_cubes

    from microarch._kernels.mesh import smooth_constrained

    volume = np.pad(ball(4, margin=1), 1).astype(np.float32)
    vertices, faces, _, _ = marching_cubes(volume, 0.5, gradient_direction="ascent")
    vertices = vertices.astype(np.float64)
    selected = vertices[faces].mean(axis=1)[:, 0] < 7  # an open mesh
    planes = np.array([[planes[0]] * 3, [planes[1]] * 3])
    smoothed = vertices.copy()
    options = (7, _HC_BETA, _EDGE_MARGIN, _ACROSS, planes)
    smooth_constrained(smoothed, np.ascontiguousarray(faces), selected, *options)
    expected = oracle_smooth(vertices, np.ascontiguousarray(faces[selected]), *options)
    np.testing.assert_allclose(smoothed, expected, atol=1e-12)
    assert np.abs(smoothed - vertices).max() > 0.1  # it did move
    on_plane = (vertices[:, None, :] == planes[None]).any(axis=1)
    assert np.array_equal(smoothed[on_plane], vertices[on_plane])


def test_same_result_with_one_and_two_threads():
    mask = rod(8, length=0, direction=tilted(20), shape=(24, 24, 24))
    with threads(1):
        one = parts(mask)
    with threads(2):
        two = parts(mask)
    assert one == two


# -- interface -----------------------------------------------------------------------------


def test_returns_a_float_by_default_and_the_parts_on_request():
    mask = ball(5)
    smi = structure_model_index(mask, spacing=0.06)
    assert isinstance(smi, float)
    p = parts(mask, spacing=0.06)
    assert tuple(p) == ("SMI", "SMI+", "SMI-", "concave fraction", "BS", "BV")
    assert p["SMI"] == smi


def test_input_is_not_modified_and_dtypes_agree():
    mask = ball(5)
    copy = mask.copy()
    as_bool = structure_model_index(mask, spacing=1)
    assert np.array_equal(mask, copy)
    assert structure_model_index(mask.astype(np.uint8), spacing=1) == as_bool
    assert structure_model_index(mask.astype(np.float32), spacing=1) == as_bool


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((8, 8, 8), bool),
        np.ones((8, 8, 8), bool),
        np.pad(np.ones((1, 1, 1), bool), 4),
        np.ones((1, 8, 8), bool) & (np.arange(8) < 4),  # one slice: no window in z
    ],
    ids=["empty", "full", "single voxel", "one slice"],
)
def test_degenerate_masks_give_nan_with_a_reason(mask):
    with pytest.warns(DegenerateInputWarning, match="SMI is undefined"):
        assert math.isnan(structure_model_index(mask, spacing=1))
    with pytest.warns(DegenerateInputWarning):
        p = parts(mask)
    assert tuple(p) == _PART_NAMES
    assert all(math.isnan(v) for v in p.values())


def test_step_size_that_leaves_one_voxel_is_degenerate():
    mask = np.zeros((9, 9, 9), bool)
    mask[4:7, 4:7, 4:7] = True
    with pytest.warns(DegenerateInputWarning, match="every 4 voxels"):
        assert math.isnan(structure_model_index(mask, spacing=1, step_size=4))


def test_a_normal_mask_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        structure_model_index(ball(5), spacing=1)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"smoothing_iterations": -1}, "smoothing_iterations"),
        ({"smoothing_iterations": 2.5}, "smoothing_iterations"),
        ({"smoothing_iterations": True}, "smoothing_iterations"),
        ({"step_size": 0}, "step_size"),
        ({"border": "wrap"}, "border"),
        ({"spacing": None}, "spacing"),
        ({"spacing": (1, 1)}, "spacing"),
    ],
)
def test_bad_arguments_raise_clear_errors(options, message):
    kwargs = {"spacing": 1.0, **options}
    with pytest.raises(ValueError, match=message):
        structure_model_index(ball(3), **kwargs)


def test_two_dimensional_mask_is_rejected():
    with pytest.raises(ValueError, match="3D"):
        structure_model_index(np.ones((4, 4), bool), spacing=1)
