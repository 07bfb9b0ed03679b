"""Cortical shell: compartments, thickness, porosity against independent computations."""

import math

import numpy as np
import pytest
from scipy import ndimage

from microarch.phantoms import (
    CorticalPhantom,
    distal_radius,
    embed_in_cortex,
    plate_lattice,
    trabecular_bone,
)


@pytest.fixture(scope="module")
def site():
    return distal_radius((12, 90, 70), seed=3, cortical_thickness=0.7, porosity=0.03)


def test_compartments_partition_the_periosteal_region(site):
    assert isinstance(site, CorticalPhantom)
    assert not (site.cortical & site.trabecular).any()
    assert np.array_equal(site.cortical | site.trabecular, site.periosteal)
    assert not (site.pores & ~site.cortical).any()
    assert not (site.mask & ~site.periosteal).any()
    assert np.array_equal(site.mask & site.cortical, site.cortical & ~site.pores)
    # Every slice has the same compartments (an elliptic cylinder).
    assert (site.periosteal == site.periosteal[:1]).all()
    assert (site.trabecular == site.trabecular[:1]).all()


def test_cortical_thickness_against_distance_transform(site):
    h = site.spacing[1]
    section = site.periosteal[0]
    # Distance from voxel centres to the nearest voxel centre outside (an independent,
    # voxel-level estimate of the depth below the periosteal surface).
    depth = ndimage.distance_transform_edt(np.pad(section, 1), sampling=site.spacing[1:])[
        1:-1, 1:-1
    ]
    t = site.truth["Ct.Th"]
    assert t == 0.7
    # The voxel EDT lies between the true depth and the true depth + one voxel.
    assert depth[site.cortical[0]].max() <= t + 1.01 * h * math.sqrt(2)
    assert depth[site.trabecular[0]].min() > t - 1e-9
    # Mean thickness from areas: Ct.Ar = Pm * t - pi t^2 for an inner parallel curve.
    expected_ct_ar = site.truth["Ct.Pm"] * t - math.pi * t * t
    assert site.truth["Ct.Ar"] == pytest.approx(expected_ct_ar, rel=0.03)
    assert site.truth["Tt.Ar"] == pytest.approx(site.truth["Tt.Ar_continuous"], rel=0.02)
    assert site.truth["Tb.Ar"] == pytest.approx(site.truth["Tb.Ar_continuous"], rel=0.03)
    a, b = site.truth["parameters"]["outer_semi_axes"]
    ramanujan = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))
    assert site.truth["Ct.Pm"] == pytest.approx(ramanujan, rel=1e-6)


def test_porosity_is_reached_and_counted_exactly(site):
    n_pores = int(site.pores.sum())
    assert site.truth["Ct.Po"] == pytest.approx(n_pores / site.cortical.sum())
    assert 0.03 <= site.truth["Ct.Po"] < 0.045
    # Pores are enclosed: no pore voxel touches the marrow or the soft tissue in-plane.
    grown = ndimage.binary_dilation(
        site.pores,
        structure=np.array(
            [
                [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
                [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
                [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
            ],
            dtype=bool,
        ),
    )
    assert not (grown & ~site.cortical).any()
    voxel = float(np.prod(site.spacing))
    assert site.truth["Ct.BV"] == pytest.approx((site.cortical & ~site.pores).sum() * voxel)


def test_trabecular_bone_and_labels_are_kept_inside(site):
    bone = site.trabecular_phantom
    assert np.array_equal(site.mask & site.trabecular, bone.mask & site.trabecular)
    assert np.array_equal(site.labels[site.trabecular], bone.labels[site.trabecular])
    assert not site.labels[~site.trabecular].any()
    t = site.truth
    assert t["BV/TV"] == pytest.approx((bone.mask & site.trabecular).sum() / site.trabecular.sum())


def test_no_porosity_and_plain_masks():
    lattice = plate_lattice(2, 6, n_plates=6, size=4.0, spacing=0.1, fill=True)
    site = embed_in_cortex(lattice.mask, spacing=0.1, thickness=0.5, porosity=0.0)
    assert site.truth["Ct.Po"] == 0.0 and site.truth["n_pores"] == 0
    assert not site.labels.any()
    assert np.array_equal(site.mask, (lattice.mask & site.trabecular) | site.cortical)


def test_deterministic():
    bone = trabecular_bone((6, 50, 50), seed=1)
    a = embed_in_cortex(bone, thickness=0.6, porosity=0.05, seed=4)
    b = embed_in_cortex(bone, thickness=0.6, porosity=0.05, seed=4)
    c = embed_in_cortex(bone, thickness=0.6, porosity=0.05, seed=5)
    assert np.array_equal(a.pores, b.pores)
    assert not np.array_equal(a.pores, c.pores)


def test_volume_fraction_keeps_cortex_solid(site):
    fraction = site.volume_fraction(2)
    assert np.all(fraction[site.cortical & ~site.pores] == 1.0)
    assert np.all(fraction[~site.periosteal] == 0.0)
    inside = site.trabecular
    assert fraction[inside].mean() == pytest.approx(site.mask[inside].mean(), abs=0.03)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"thickness": 5.0}, "radius of curvature"),
        ({"thickness": 0.3, "pore_diameter": 0.5}, "do not fit"),
        ({"porosity": 1.5}, "porosity"),
        ({"outer_semi_axes": (1.0,)}, "outer_semi_axes"),
        ({"spacing": 0.2}, "spacing differs"),
    ],
)
def test_invalid_arguments(kwargs, message):
    bone = trabecular_bone((4, 40, 40), seed=1)
    with pytest.raises(ValueError, match=message):
        embed_in_cortex(bone, **kwargs)
