"""Euler characteristic and Conn.D against brute-force counting, skimage and phantoms."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from oracles import euler_by_cells
from skimage.measure import euler_number

from microarch import measure
from microarch.measure._connectivity import euler_correction

small_volumes = arrays(
    bool,
    st.tuples(*[st.integers(1, 6)] * 3),
    elements=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(small_volumes)
def test_euler_equals_cell_count_and_skimage(mask):
    chi = measure.euler_characteristic(mask)
    assert isinstance(chi, int)
    assert chi == round(euler_by_cells(mask))
    assert chi == euler_number(mask, connectivity=3)


@settings(max_examples=100, deadline=None)
@given(small_volumes, st.data())
def test_edge_correction_equals_weighted_cell_count(mask, data):
    roi = data.draw(arrays(bool, mask.shape, elements=st.booleans()))
    assert euler_correction(mask, roi=roi) == pytest.approx(euler_by_cells(mask, roi))


def _box_inclusion_exclusion(mask):
    """Odgaard & Gundersen's box correction written out with skimage's 2-D Euler numbers."""
    total = euler_number(mask, connectivity=3)
    for axis in range(3):
        for index in (0, mask.shape[axis] - 1):
            face = np.take(mask, index, axis=axis)
            total -= 0.5 * euler_number(face, connectivity=2)
    for axis in range(3):  # the 12 box edges run along `axis`
        others = [a for a in range(3) if a != axis]
        for i in (0, mask.shape[others[0]] - 1):
            for j in (0, mask.shape[others[1]] - 1):
                index = [slice(None)] * 3
                index[others[0]], index[others[1]] = i, j
                line = mask[tuple(index)].astype(int)
                runs = int(line[0]) + int(np.count_nonzero(np.diff(line) == 1))
                total += 0.25 * runs
    for corner in np.ndindex(2, 2, 2):
        total -= 0.125 * mask[tuple(c * (n - 1) for c, n in zip(corner, mask.shape))]
    return total


def test_box_correction_matches_odgaard_gundersen():
    rng = np.random.default_rng(3)
    for _ in range(60):
        shape = tuple(rng.integers(3, 9, 3))
        mask = rng.random(shape) < rng.uniform(0.2, 0.8)
        assert euler_correction(mask) == pytest.approx(_box_inclusion_exclusion(mask))


def test_phantom_topology():
    z, y, x = np.indices((9, 21, 21)) - np.array([4, 10, 10])[:, None, None, None]
    radial = np.hypot(y, x)
    torus = (radial - 6) ** 2 + z**2 <= 2.5**2
    assert measure.euler_characteristic(torus) == 0
    shell = (np.sqrt(x**2 + y**2 + (2 * z) ** 2) <= 9) & (np.sqrt(x**2 + y**2 + (2 * z) ** 2) > 5)
    assert measure.euler_characteristic(shell) == 2
    plate = np.zeros((5, 20, 20), bool)
    plate[2] = True
    for k, (a, b) in enumerate([(4, 4), (4, 12), (12, 4), (12, 12)], start=1):
        plate[2, a : a + 3, b : b + 3] = False
        assert measure.euler_characteristic(plate) == 1 - k


def _rod_lattice(cells, period, width=2):
    """Rods centred in each cell, so that box faces cut through marrow and rod ends only."""
    size = cells * period
    mask = np.zeros((size,) * 3, bool)
    start = (period - width) // 2
    lines = (np.arange(size) % period >= start) & (np.arange(size) % period < start + width)
    mask |= lines[None, :, None] & lines[None, None, :]
    mask |= lines[:, None, None] & lines[None, None, :]
    mask |= lines[:, None, None] & lines[None, :, None]
    return mask


@pytest.mark.parametrize("spacing", [0.05, (0.1, 0.05, 0.08)])
def test_conn_d_of_periodic_rod_lattice(spacing):
    # an infinite cubic rod lattice has chi = 1 node - 3 rods = -2 per cell; a box of whole
    # cells whose faces cut the rods square-on tiles space exactly, so dchi = -2 per cell
    cells, period = 4, 6
    mask = _rod_lattice(cells, period)
    assert euler_correction(mask) == -2 * cells**3
    volume = mask.size * np.prod(np.broadcast_to(spacing, 3))
    expected = (1 + 2 * cells**3) / volume
    assert measure.connectivity_density(mask, spacing=spacing) == pytest.approx(expected)


def test_conn_d_with_roi_counts_only_the_roi():
    mask = _rod_lattice(4, 6)
    roi = np.zeros(mask.shape, bool)
    roi[6:18, 6:18, 6:18] = True  # 2 x 2 x 2 cells, aligned with the lattice period
    assert euler_correction(mask, roi=roi) == -16
    assert measure.connectivity_density(mask, spacing=0.1, roi=roi) == pytest.approx(
        17 / (roi.sum() * 0.001)
    )
    # bone outside the ROI changes nothing
    assert euler_correction(mask | ~roi, roi=roi) == -16


def test_degenerate_inputs():
    empty = np.zeros((4, 4, 4), bool)
    assert measure.euler_characteristic(empty) == 0
    assert measure.euler_characteristic(~empty) == 1
    with pytest.warns(measure.DegenerateInputWarning, match="ROI is empty"):
        assert np.isnan(measure.connectivity_density(empty, spacing=1, roi=empty))
    with pytest.raises(ValueError, match="3D"):
        measure.euler_characteristic(np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="spacing"):
        measure.connectivity_density(empty, spacing=(1, 1))


def test_input_is_not_modified_and_threads_agree():
    from microarch._shared.threads import threads

    rng = np.random.default_rng(0)
    mask = rng.random((30, 31, 32)) < 0.3
    copy = mask.copy()
    with threads(1):
        one = measure.connectivity_density(mask, spacing=0.1)
    with threads(2):
        two = measure.connectivity_density(mask, spacing=0.1)
    assert one == two
    assert np.array_equal(mask, copy)
