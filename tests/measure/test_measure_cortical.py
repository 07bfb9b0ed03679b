import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from microarch import measure
from microarch.measure import DegenerateInputWarning

KEYS = {"Ct.Th", "Ct.Th.SD", "Ct.Po", "Ct.Po.V", "Ct.V", "Ct.Ar", "Ct.Pm"}


def _ring(shape, spacing_yx, outer, thickness, centre=None):
    """Periosteal disk and cortical annulus (physical radii, mm) extruded along z."""
    hy, hx = spacing_yx
    cy, cx = centre if centre is not None else ((shape[1] - 1) / 2, (shape[2] - 1) / 2)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    r = np.hypot((yy - cy) * hy, (xx - cx) * hx)
    periosteal = np.broadcast_to(r <= outer, shape).copy()
    cortical = np.broadcast_to((r <= outer) & (r > outer - thickness), shape).copy()
    return periosteal, cortical, r


def test_keys_and_wall_thickness_exact():
    for n, spacing in [(4, 0.1), (5, (0.05, 0.08, 0.07))]:
        h = np.broadcast_to(spacing, 3)
        wall = np.zeros((6, 10, 12), bool)
        wall[:, :, 3:3 + n] = True
        ct = measure.cortical(wall, spacing=spacing)
        assert set(ct) == KEYS
        assert ct["Ct.Th"] == pytest.approx(n * h[2], rel=1e-6)
        assert ct["Ct.Th.SD"] == pytest.approx(0.0, abs=1e-6)
        assert math.isnan(ct["Ct.Po"]) and math.isnan(ct["Ct.Pm"])  # no bone, no periosteal
        assert ct["Ct.V"] == pytest.approx(wall.sum() * h.prod())
        assert ct["Ct.Ar"] == pytest.approx(10 * n * h[1] * h[2])


def test_ring_thickness_matches_local_thickness_and_is_within_a_voxel():
    spacing = (0.0607, 0.0607, 0.0607)
    periosteal, cortical, _ = _ring((4, 110, 110), spacing[1:], outer=3.0, thickness=0.8)
    ct = measure.cortical(cortical, spacing=spacing, periosteal=periosteal)
    oracle = measure.local_thickness(cortical, spacing=spacing)[cortical].mean()
    assert ct["Ct.Th"] == pytest.approx(oracle, rel=1e-6)
    assert abs(ct["Ct.Th"] - 0.8) <= spacing[1]


def test_porosity_exact_on_masks():
    spacing = (0.0607,) * 3
    _, cortical, _ = _ring((4, 100, 100), spacing[1:], outer=2.6, thickness=0.9)
    bone = cortical.copy()
    yy, xx = np.mgrid[:100, :100]
    pores = np.zeros_like(cortical)
    for angle in np.linspace(0, 2 * np.pi, 8, endpoint=False):
        cy = 49.5 + (2.15 / 0.0607) * np.sin(angle)
        cx = 49.5 + (2.15 / 0.0607) * np.cos(angle)
        pores[:, np.hypot(yy - cy, xx - cx) <= 3.0] = True  # canals along z, ~0.36 mm
    pores &= cortical
    bone &= ~pores
    speck = (2, int(49.5 - 2.6 / 0.0607) + 4, 50)  # a single non-bone voxel in the cortex
    assert cortical[speck]
    bone[speck] = False
    ct_all = measure.cortical(cortical, spacing=spacing, bone=bone, min_pore_volume=0)
    n_pore = pores.sum() + 1
    assert ct_all["Ct.Po"] == pytest.approx(n_pore / cortical.sum())
    ct = measure.cortical(cortical, spacing=spacing, bone=bone)  # default drops the speck
    assert ct["Ct.Po"] == pytest.approx(pores.sum() / (cortical.sum() - 1))
    assert ct["Ct.Po.V"] == pytest.approx(pores.sum() * 0.0607 ** 3)
    # the size limit is a volume: a 4-voxel pore (0.000894 mm³) survives 0.0008 mm³ but
    # not 0.001 mm³
    bone2 = cortical.copy()
    bone2[2, 10:12, 50:52] = False
    assert cortical[2, 10:12, 50:52].all()
    small = measure.cortical(cortical, spacing=spacing, bone=bone2, min_pore_volume=0.0008)
    gone = measure.cortical(cortical, spacing=spacing, bone=bone2, min_pore_volume=0.001)
    assert small["Ct.Po"] == pytest.approx(4 / cortical.sum()) and gone["Ct.Po"] == 0.0


@pytest.mark.parametrize("spacing", [(0.1, 0.05, 0.05), (0.1, 0.04, 0.07)])
def test_periosteal_perimeter(spacing):
    hy, hx = spacing[1:]
    a, b = 2.0, 1.2  # ellipse semi-axes, mm
    ny, nx = int(2.6 * a / hy), int(2.6 * a / hx)
    yy, xx = np.mgrid[:ny, :nx]
    ellipse = (((yy - ny / 2) * hy / b) ** 2 + ((xx - nx / 2) * hx / a) ** 2) <= 1
    periosteal = np.broadcast_to(ellipse, (3, ny, nx)).copy()
    periosteal[0] = False  # slices without periosteal voxels do not count
    cortical = periosteal & ~ndi.binary_erosion(periosteal, np.ones((1, 9, 9), bool))
    ct = measure.cortical(cortical, spacing=spacing, periosteal=periosteal)
    h = (a - b) ** 2 / (a + b) ** 2
    ramanujan = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    assert ct["Ct.Pm"] == pytest.approx(ramanujan, rel=0.01)
    assert ct["Ct.Ar"] == pytest.approx(cortical.sum() * hy * hx / 2)
    # a periosteal mask with a hole: only the outer outline counts
    holed = measure.cortical(cortical, spacing=spacing, periosteal=cortical)
    assert holed["Ct.Pm"] == pytest.approx(ct["Ct.Pm"], rel=1e-6)


def test_degenerate_and_invalid():
    empty = np.zeros((4, 5, 6), bool)
    with pytest.warns(DegenerateInputWarning, match="cortical mask is empty"):
        ct = measure.cortical(empty, spacing=0.1, bone=empty)
    assert math.isnan(ct["Ct.Th"]) and math.isnan(ct["Ct.Po"]) and ct["Ct.V"] == 0.0
    wall = np.zeros((4, 5, 6), bool)
    wall[:, :, 2:4] = True
    with pytest.raises(ValueError, match="shape"):
        measure.cortical(wall, spacing=0.1, bone=wall[:, :, :-1])
    with pytest.raises(ValueError, match="min_pore_volume"):
        measure.cortical(wall, spacing=0.1, min_pore_volume=-1)
    with pytest.raises(ValueError, match="spacing"):
        measure.cortical(wall, spacing=(0.1, 0.1))
    before = wall.copy()
    measure.cortical(wall, spacing=0.1, periosteal=wall, bone=wall)
    np.testing.assert_array_equal(wall, before)
