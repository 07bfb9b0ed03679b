"""Analytic phantoms: truth against closed forms and brute-force counts."""

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import euler_number

from microarch.phantoms import (
    DigitisationWarning,
    Phantom,
    hollow_sphere,
    plate,
    plate_lattice,
    plate_with_holes,
    rod,
    rod_lattice,
    sphere,
    torus,
)

ANISO = (0.1, 0.05, 0.07)

# --------------------------------------------------------------------------------------
# oracles
# --------------------------------------------------------------------------------------


def naive_betti(mask):
    """(components, tunnels, cavities) by labelling: 26-connected bone, 6-connected marrow.

    Tunnels follow from chi = b0 - b1 + b2 with chi counted by skimage.
    """
    _, components = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    padded = np.pad(~mask, 1, constant_values=True)
    _, marrow_parts = ndimage.label(padded, structure=ndimage.generate_binary_structure(3, 1))
    cavities = marrow_parts - 1
    chi = euler_number(mask, connectivity=3)
    return components, components + cavities - chi, cavities


def naive_count_inside(shape, spacing, inside):
    """Count voxel centres (relative to the image centre) where inside(z, y, x) holds."""
    count = 0
    centre = [(n - 1) / 2 for n in shape]
    for i, j, k in itertools.product(*(range(n) for n in shape)):
        p = [(idx - c) * h for idx, c, h in zip((i, j, k), centre, spacing)]
        count += bool(inside(*p))
    return count


ALL_FLOATING = [
    ("plate", lambda s: plate(3, spacing=s)),
    ("plate_axis2", lambda s: plate(2, axis=2, size=1.0, spacing=s)),
    ("rod", lambda s: rod(0.5, length=1.0, spacing=s)),
    ("rod_axis1", lambda s: rod(0.6, axis=1, spacing=s)),
    ("sphere", lambda s: sphere(0.9, spacing=s)),
    ("hollow_sphere", lambda s: hollow_sphere(1.6, 0.8, spacing=s)),
    ("torus", lambda s: torus(0.8, 0.4, spacing=s)),
    ("torus_axis2", lambda s: torus(0.8, 0.4, axis=2, spacing=s)),
    ("plate_with_holes", lambda s: plate_with_holes(2, 4, spacing=s)),
    ("plate_lattice", lambda s: plate_lattice(2, 5, n_plates=3, spacing=s)),
    ("rod_lattice", lambda s: rod_lattice(0.3, 1.0, n_cells=2, spacing=s)),
]


@pytest.fixture(params=[0.05, ANISO], ids=["iso", "aniso"])
def spacing(request):
    return request.param


@pytest.mark.parametrize("name, make", ALL_FLOATING, ids=[n for n, _ in ALL_FLOATING])
def test_truth_matches_brute_force(name, make, spacing):
    p = make(spacing)
    assert isinstance(p, Phantom)
    assert p.mask.dtype == bool and p.mask.flags.c_contiguous
    h = (spacing,) * 3 if np.isscalar(spacing) else spacing
    assert p.spacing == tuple(h)
    t = p.truth
    n = int(np.count_nonzero(p.mask))
    voxel = float(np.prod(h))
    assert t["n_voxels"] == n
    assert t["BV"] == pytest.approx(n * voxel, rel=1e-12)
    assert t["TV"] == pytest.approx(p.mask.size * voxel, rel=1e-12)
    assert t["BV/TV"] == pytest.approx(n / p.mask.size, rel=1e-12)
    # Euler characteristic: analytic value == digitised value == independent count.
    assert t["euler"] == t["euler_analytic"] == euler_number(p.mask, connectivity=3)
    assert naive_betti(p.mask) == (t["n_components"], t["n_tunnels"], t["n_cavities"])
    # Objects float: at least 2 background voxels on every side.
    for axis in range(3):
        for index in (0, 1, -1, -2):
            assert not np.take(p.mask, index, axis=axis).any()
    assert t["parameters"]["kind"] in name


def test_plate_is_exactly_n_voxels_thick_on_any_grid():
    for t_vox, axis, spacing in [
        (1, 0, 1.0),
        (3, 0, ANISO),
        (4, 1, ANISO),
        (2, 2, (0.2, 0.1, 0.3)),
    ]:
        p = plate(t_vox, axis=axis, spacing=spacing)
        column = p.mask.sum(axis=axis)
        assert set(np.unique(column)) == {0, t_vox}
        h = (spacing,) * 3 if np.isscalar(spacing) else spacing
        assert p.truth["thickness"] == pytest.approx(t_vox * h[axis])
        assert p.truth["BV"] == pytest.approx(p.truth["BV_continuous"])
        assert p.truth["SMI"] == 0.0


def test_plate_size_in_mm_and_margin():
    p = plate(2, size=1.0, spacing=(0.1, 0.05, 0.125), margin_voxels=3)
    assert p.mask.shape == (2 + 6, 20 + 6, 8 + 6)
    assert p.truth["extent"] == pytest.approx((0.2, 1.0, 1.0))


def test_rod_cross_section_matches_lattice_point_count():
    spacing = (0.1, 0.05, 0.07)
    d = 0.53
    r = rod(d, length=0.5, axis=0, spacing=spacing)
    slice_counts = r.mask.sum(axis=(1, 2))
    filled = slice_counts[slice_counts > 0]
    assert filled.size == 5  # 0.5 mm / 0.1 mm
    assert np.all(filled == filled[0])
    shape2 = r.mask.shape[1:]
    expected = naive_count_inside(
        (1, *shape2), spacing, lambda z, y, x: y * y + x * x <= (d / 2) ** 2
    )
    assert filled[0] == expected
    area = filled[0] * spacing[1] * spacing[2]
    assert r.truth["diameter_equivalent"] == pytest.approx(2 * math.sqrt(area / math.pi))
    assert r.truth["diameter_equivalent"] == pytest.approx(d, rel=0.1)
    assert r.truth["thickness"] == d and r.truth["length"] == pytest.approx(0.5)


def test_rod_is_round_in_mm_not_in_voxels():
    r = rod(1.0, axis=2, spacing=(0.1, 0.05, 0.05))
    disc = r.mask.any(axis=2)
    zs, ys = np.nonzero(disc)
    assert zs.max() - zs.min() + 1 == 10  # 1 mm / 0.1
    assert ys.max() - ys.min() + 1 == 20  # 1 mm / 0.05


def test_sphere_voxel_count_brute_force_and_volume():
    spacing = (0.1, 0.05, 0.07)
    d = 0.8
    s = sphere(d, spacing=spacing, margin_voxels=0)
    expected = naive_count_inside(
        s.mask.shape, spacing, lambda z, y, x: z * z + y * y + x * x <= (d / 2) ** 2
    )
    assert s.truth["n_voxels"] == expected
    big = sphere(30.0)
    assert big.truth["BV"] == pytest.approx(big.truth["BV_continuous"], rel=0.02)
    assert big.truth["SMI"] == big.truth["SMI_finite"] == 4.0


def test_hollow_sphere_and_torus_volumes_converge():
    shell = hollow_sphere(40.0, 24.0)
    assert shell.truth["BV"] == pytest.approx(shell.truth["BV_continuous"], rel=0.01)
    assert shell.truth["thickness"] == 8.0
    ring = torus(20.0, 10.0, axis=1)
    assert ring.truth["BV"] == pytest.approx(ring.truth["BV_continuous"], rel=0.01)
    assert ring.truth["euler"] == 0


@pytest.mark.parametrize("k", range(7))
def test_plate_with_k_holes_has_euler_1_minus_k(k):
    p = plate_with_holes(2, k, hole_diameter=4.0)
    assert p.truth["euler"] == 1 - k == euler_number(p.mask, connectivity=3)
    assert p.truth["n_holes"] == k
    # Each hole goes through: the plate's projection has k enclosed marrow regions.
    projection = p.mask.any(axis=0)
    _, parts = ndimage.label(~projection)
    assert parts - 1 == k


def test_plate_lattice_fill_is_periodic_with_exact_bv_tv():
    spacing = (0.04, 0.05, 0.05)
    lattice = plate_lattice(3, 8, n_plates=4, spacing=spacing, fill=True)
    assert lattice.mask.shape[0] == 32
    assert lattice.truth["BV/TV"] == 3 / 8
    assert np.array_equal(np.roll(lattice.mask, 8, axis=0), lattice.mask)
    assert lattice.mask[:, 0, 0].sum() == 12 and lattice.mask.any(axis=0).all()
    assert lattice.truth["thickness"] == pytest.approx(0.12)
    assert lattice.truth["separation"] == pytest.approx(0.2)
    assert lattice.truth["Tb.N"] == pytest.approx(1 / 0.32)
    assert lattice.truth["euler"] == 4 and lattice.truth["Conn.D"] == 0.0


def test_plate_lattice_along_x():
    lattice = plate_lattice(2, 6, n_plates=3, axis=2, spacing=0.1)
    profile = lattice.mask.any(axis=(0, 1))
    starts = np.flatnonzero(np.diff(profile.astype(int)) == 1) + 1
    assert np.array_equal(np.diff(starts), [6, 6])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_rod_lattice_counts(n):
    frame = rod_lattice(2.0, 7.0, n_cells=n)
    t = frame.truth
    assert t["n_junctions"] == (n + 1) ** 3
    assert t["n_rods"] == 3 * n * (n + 1) ** 2
    assert t["euler"] == (n + 1) ** 3 - 3 * n * (n + 1) ** 2
    assert t["Conn.D"] == pytest.approx(2 / 7.0**3)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_rod_lattice_fill_is_one_periodic_tile(n):
    spacing = (0.1, 0.05, 0.05)
    tile = rod_lattice(0.3, 1.0, n_cells=n, spacing=spacing, fill=True)
    assert tile.mask.shape == (10 * n, 20 * n, 20 * n)
    assert tile.truth["euler"] == 3 * n * n - 2 * n**3
    assert tile.truth["n_free_ends"] == 6 * n * n
    for axis, period in enumerate((10, 20, 20)):
        assert np.array_equal(np.roll(tile.mask, period, axis=axis), tile.mask)
    assert tile.truth["thickness"] == 0.3 and tile.truth["Tb.N"] == 1.0


def test_smi_finite_limits():
    long_rod = rod(1.0, length=400.0, margin_voxels=0)
    assert long_rod.truth["SMI_finite"] == pytest.approx(3.0, abs=0.01)
    wide_plate = plate(1, size=2000.0, spacing=1.0, margin_voxels=0)
    assert wide_plate.truth["SMI_finite"] == pytest.approx(0.0, abs=0.01)
    # A cube: 3 pi a^4 (3a) / (3a^2)^2 = pi.
    cube = plate(5, size=5.0)
    assert cube.truth["SMI_finite"] == pytest.approx(math.pi)
    # Shell R = 8, r = 4: 4 (512 - 64) 4 / (64 + 16)^2.
    assert hollow_sphere(16.0, 8.0).truth["SMI_finite"] == pytest.approx(1.12)


def test_digitisation_warning_when_the_grid_is_too_coarse():
    with pytest.warns(DigitisationWarning, match="too coarse"):
        p = torus(2.0, 0.3, spacing=1.0)
    assert p.truth["euler"] != p.truth["euler_analytic"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: plate(0), "thickness_voxels"),
        (lambda: plate(2.5), "thickness_voxels"),
        (lambda: plate(2, axis=3), "axis"),
        (lambda: plate(2, spacing=-1.0), "spacing"),
        (lambda: rod(-1.0), "diameter"),
        (lambda: rod(1.0, length=0.0), "length"),
        (lambda: hollow_sphere(1.0, 2.0), "inner_diameter"),
        (lambda: torus(1.0, 2.0), "no hole"),
        (lambda: plate_with_holes(2, -1), "n_holes"),
        (lambda: plate_lattice(3, 3), "period_voxels"),
        (lambda: rod_lattice(1.0, 1.0), "period"),
        (lambda: rod_lattice(0.3, 1.0, spacing=0.3, fill=True), "whole number"),
        (lambda: sphere(1.0, margin_voxels=-1), "margin_voxels"),
    ],
)
def test_invalid_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_import_does_not_load_numba():
    code = (
        "import sys, microarch.phantoms as p; p.plate(2); "
        "assert 'numba' not in sys.modules, 'numba imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
