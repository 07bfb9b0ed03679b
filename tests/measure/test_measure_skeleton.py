"""Topology-preserving thinning: topological numbers, topology, shape and symmetry."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from oracles import euler_by_cells
from scipy import ndimage as ndi
from skimage.measure import euler_number

from microarch import measure
from microarch._kernels.thinning import topology_codes
from microarch.measure._skeleton import surface_skeleton

CUBE = np.ones((3, 3, 3), bool)
FACES = ndi.generate_binary_structure(3, 1)


# ---------------------------------------------------------------------------------------
# Oracles
# ---------------------------------------------------------------------------------------


def _block(code):
    return np.array([(code >> b) & 1 for b in range(27)], bool).reshape(3, 3, 3)


def topological_numbers_by_labelling(code):
    """(T26, T6bar) by connected-component labelling, straight from the definitions."""
    block = _block(code)
    neighbours = block.copy()
    neighbours[1, 1, 1] = False
    t26 = ndi.label(neighbours, CUBE)[1]
    n18 = np.ones((3, 3, 3), bool)
    for corner in np.ndindex(2, 2, 2):
        n18[tuple(2 * c for c in corner)] = False
    n18[1, 1, 1] = False
    background = n18 & ~block
    labels, _ = ndi.label(background, FACES)
    faces = [(0, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 1), (1, 1, 0), (1, 1, 2)]
    t6 = len({labels[f] for f in faces if labels[f] > 0})
    return min(t26, 3), min(t6, 3)


def betti(mask):
    """(components, tunnels, cavities) with 26-connected bone, 6-connected marrow."""
    components = ndi.label(mask, CUBE)[1]
    cavities = ndi.label(np.pad(~mask, 1, constant_values=True), FACES)[1] - 1
    chi = euler_number(mask, connectivity=3)
    return components, components + cavities - chi, cavities


def n_neighbours(skeleton):
    counts = ndi.convolve(skeleton.astype(int), CUBE.astype(int), mode="constant") - 1
    return np.where(skeleton, counts, -1)


def occupied_cubes(skeleton):
    """Number of 2x2x2 blocks entirely inside the skeleton (a sign of thickness)."""
    s = skeleton
    return int((s[:-1, :-1, :-1] & s[1:, :-1, :-1] & s[:-1, 1:, :-1] & s[:-1, :-1, 1:]
                & s[1:, 1:, :-1] & s[1:, :-1, 1:] & s[:-1, 1:, 1:] & s[1:, 1:, 1:]).sum())


def blobs(shape, seed, fraction=0.25, sigma=1.5):
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > np.quantile(field, 1 - fraction)


# ---------------------------------------------------------------------------------------
# Topological numbers
# ---------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.integers(0, (1 << 27) - 1))
def test_topological_numbers_match_labelling(code):
    got = topology_codes(np.array([code], np.int64))[0]
    assert tuple(got) == topological_numbers_by_labelling(code)


def test_topological_numbers_of_known_configurations():
    plane = np.zeros((3, 3, 3), bool)
    plane[1] = True  # a voxel inside a sheet: one object part, marrow on two sides
    line = np.zeros((3, 3, 3), bool)
    line[:, 1, 1] = True  # a voxel inside a curve: two object parts, one marrow part
    interior = np.ones((3, 3, 3), bool)
    codes = [int((block.ravel() * (1 << np.arange(27))).sum()) for block in
             (plane, line, interior)]
    assert topology_codes(np.array(codes, np.int64)).tolist() == [[1, 2], [2, 1], [1, 0]]


# ---------------------------------------------------------------------------------------
# Topology is preserved
# ---------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(arrays(bool, st.tuples(*[st.integers(1, 7)] * 3), elements=st.booleans()))
def test_thinning_preserves_topology_of_random_volumes(mask):
    skeleton = surface_skeleton(mask)
    assert not (skeleton & ~mask).any()
    assert round(euler_by_cells(skeleton)) == round(euler_by_cells(mask))
    assert betti(skeleton) == betti(mask)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["surface", "curve"])
def test_thinning_preserves_topology_of_blobs(seed, kind):
    mask = blobs((24, 26, 22), seed, fraction=0.3 + 0.1 * seed)
    skeleton = surface_skeleton(mask, kind=kind)
    assert measure.euler_characteristic(skeleton) == measure.euler_characteristic(mask)
    assert betti(skeleton) == betti(mask)
    assert occupied_cubes(skeleton) == 0
    assert skeleton.sum() < 0.3 * mask.sum()


def torus(shape=(15, 40, 40), major=12.0, minor=4.0):
    z, y, x = np.indices(shape, dtype=float)
    z -= (shape[0] - 1) / 2
    y -= (shape[1] - 1) / 2
    x -= (shape[2] - 1) / 2
    return (np.hypot(y, x) - major) ** 2 + z**2 <= minor**2


def test_torus_thins_to_a_closed_curve():
    mask = torus()
    skeleton = surface_skeleton(mask)
    assert betti(skeleton) == betti(mask) == (1, 1, 0)
    assert (n_neighbours(skeleton)[skeleton] == 2).all()
    # the curve runs along the tube's centre circle (radius 12)
    z, y, x = np.nonzero(skeleton)
    radius = np.hypot(y - 19.5, x - 19.5)
    assert np.abs(radius - 12).max() <= 1.0
    assert np.abs(z - 7).max() == 0


def test_plate_with_holes_thins_to_a_perforated_mid_plane():
    mask = np.zeros((9, 40, 40), bool)
    mask[2:7, 2:38, 2:38] = True
    for cy, cx in [(10, 10), (10, 28), (28, 19)]:
        mask[:, cy - 2:cy + 3, cx - 2:cx + 3] = False
    skeleton = surface_skeleton(mask)
    assert betti(skeleton) == betti(mask) == (1, 3, 0)
    assert np.flatnonzero(skeleton.any(axis=(1, 2))).tolist() == [4]


def test_hollow_sphere_thins_to_a_closed_surface():
    z, y, x = np.indices((31, 31, 31)) - 15
    r = np.sqrt(z**2 + y**2 + x**2)
    mask = (r >= 9) & (r <= 13)
    skeleton = surface_skeleton(mask)
    assert betti(skeleton) == betti(mask) == (1, 0, 1)
    # one voxel thin, near the middle radius 11, and about 4 pi r^2 voxels
    assert np.abs(r[skeleton] - 11).max() <= 1.5
    assert 0.7 < skeleton.sum() / (4 * np.pi * 11**2) < 1.3
    assert occupied_cubes(skeleton) == 0


# ---------------------------------------------------------------------------------------
# Shape: plates thin to mid-planes, rods to mid-lines
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("thickness", range(1, 9))
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_plate_thins_to_one_mid_plane(thickness, axis):
    width = 30
    shape = [width + 4] * 3
    shape[axis] = thickness + 4
    mask = np.zeros(shape, bool)
    region = [slice(2, 2 + width)] * 3
    region[axis] = slice(2, 2 + thickness)
    mask[tuple(region)] = True
    skeleton = surface_skeleton(mask)
    others = tuple(a for a in range(3) if a != axis)
    layers = np.flatnonzero(skeleton.any(axis=others))
    # odd: the middle layer; even: the lower of the two middle layers
    assert layers.tolist() == [2 + (thickness - 1) // 2]
    # a free edge recedes by half the thickness while the plate thins, then by as much
    # again while the new sheet persists (persistence ratio 1): about one thickness
    plane = skeleton.take(layers[0], axis=axis)
    rows, cols = np.nonzero(plane)
    margin = thickness + 2
    for coords in (rows, cols):
        assert coords.min() <= 2 + margin
        assert coords.max() >= 1 + width - margin
    assert plane.sum() >= (width - 2 * margin) ** 2


@pytest.mark.parametrize("diameter", range(1, 9))
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_rod_thins_to_its_mid_line(diameter, axis):
    length = 36
    size = diameter + 6
    centre = (size - 1) / 2
    a, b = np.indices((size, size))
    disc = (a - centre) ** 2 + (b - centre) ** 2 <= (diameter / 2) ** 2 + 0.1
    mask = np.zeros((size, size, length), bool)
    mask[disc, 3:length - 3] = True
    mask = np.moveaxis(mask, 2, axis)
    skeleton = surface_skeleton(mask)
    counts = n_neighbours(skeleton)[skeleton]
    assert (counts == 1).sum() == 2 and (counts == 2).sum() == counts.size - 2
    across = np.moveaxis(np.argwhere(skeleton), 1, 0)[[i for i in range(3) if i != axis]]
    offset = np.abs(across - centre).max()
    assert offset <= (0 if diameter % 2 else 0.5)
    # free ends recede by about a diameter while the mid-line forms and persists
    assert counts.size >= length - 6 - 2 * (diameter + 2)


def test_curve_kind_thins_a_plate_to_a_point_and_a_ring_to_a_loop():
    plate = np.zeros((7, 20, 20), bool)
    plate[2:5, 2:18, 2:18] = True
    assert surface_skeleton(plate, kind="curve").sum() == 1
    ring = plate.copy()
    ring[:, 7:13, 7:13] = False
    loop = surface_skeleton(ring, kind="curve")
    assert betti(loop) == (1, 1, 0)
    assert (n_neighbours(loop)[loop] == 2).all()


# ---------------------------------------------------------------------------------------
# Symmetry
# ---------------------------------------------------------------------------------------


TRANSFORMS = {
    "flip z": (lambda a: a[::-1], lambda a: a[::-1]),
    "flip y": (lambda a: a[:, ::-1], lambda a: a[:, ::-1]),
    "flip x": (lambda a: a[:, :, ::-1], lambda a: a[:, :, ::-1]),
    "rotate zy": (lambda a: np.rot90(a, 1, (0, 1)), lambda a: np.rot90(a, -1, (0, 1))),
    "rotate yx": (lambda a: np.rot90(a, 1, (1, 2)), lambda a: np.rot90(a, -1, (1, 2))),
    "transpose": (lambda a: a.transpose(2, 0, 1), lambda a: a.transpose(1, 2, 0)),
}


def symmetric_phantom():
    """Plates and rods of odd thickness, centred: every 90-degree rotation maps it to itself
    up to the choice of axes, so the skeleton is unique."""
    n = 41
    mask = np.zeros((n, n, n), bool)
    mask[19:22, 4:37, 4:37] = True  # plate, 3 thick, normal z
    mask[4:37, 4:37, 19:22] = True  # plate, 3 thick, normal x
    mask[4:37, 9:12, 9:12] = True  # rod along z
    mask[29:32, 4:37, 29:32] = True  # rod along y
    return mask


@pytest.mark.parametrize("name", TRANSFORMS)
def test_skeleton_of_a_symmetric_phantom_follows_rotations_and_flips(name):
    forward, backward = TRANSFORMS[name]
    mask = symmetric_phantom()
    reference = surface_skeleton(mask)
    turned = backward(surface_skeleton(np.ascontiguousarray(forward(mask))))
    assert betti(turned) == betti(reference)
    if name.startswith("flip"):
        assert (turned == reference).all()
    else:
        # the six peels run in a fixed order, so a free edge of a sheet may keep or lose
        # one row depending on its direction: every voxel stays within one voxel
        assert not (turned & ~ndi.binary_dilation(reference, CUBE)).any()
        assert not (reference & ~ndi.binary_dilation(turned, CUBE)).any()
        assert abs(int(turned.sum()) - int(reference.sum())) <= 0.1 * reference.sum()


def test_skeleton_of_random_blobs_nearly_follows_flips():
    mask = blobs((40, 40, 40), 7)
    reference = surface_skeleton(mask)
    flipped = surface_skeleton(np.ascontiguousarray(mask[::-1]))[::-1]
    # the skeleton may move by one voxel where two layers are equally central
    near = ndi.binary_dilation(reference, CUBE)
    assert (flipped & ~near).sum() <= 0.05 * flipped.sum()


# ---------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------


def test_input_is_not_modified_and_integer_masks_work():
    mask = blobs((16, 16, 16), 3)
    copy = mask.copy()
    as_bool = surface_skeleton(mask)
    as_uint8 = surface_skeleton(mask.astype(np.uint8) * 255)
    assert (mask == copy).all()
    assert as_bool.dtype == bool and (as_bool == as_uint8).all()


def test_empty_and_full_masks():
    assert not surface_skeleton(np.zeros((4, 5, 6), bool)).any()
    full = surface_skeleton(np.ones((5, 6, 7), bool))
    assert full.any() and betti(full) == (1, 0, 0)


def test_same_result_for_one_and_two_threads():
    from microarch._shared.threads import threads

    mask = blobs((20, 20, 20), 5)
    with threads(1):
        one = surface_skeleton(mask)
    with threads(2):
        two = surface_skeleton(mask)
    assert (one == two).all()


@pytest.mark.parametrize("kwargs, error", [
    ({"kind": "medial"}, ValueError),
    ({"persistence": -1}, ValueError),
    ({"persistence": "1"}, TypeError),
    ({"persistence": 1.5}, TypeError),
    ({"persistence": True}, TypeError),
    ({"persistence_ratio": float("nan")}, ValueError),
])
def test_bad_arguments_raise(kwargs, error):
    with pytest.raises(error):
        surface_skeleton(np.ones((3, 3, 3), bool), **kwargs)


def test_bad_mask_raises():
    with pytest.raises(ValueError, match="3D"):
        surface_skeleton(np.ones((3, 3), bool))
