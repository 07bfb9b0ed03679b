"""Common region (against a brute-force oracle) and time-lapse remodelling maps."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from microarch._shared.validation import DegenerateInputWarning
from microarch.longitudinal import LABELS, PROFILES, common_region, remodelling
from microarch.longitudinal._remodelling import (
    DEMINERALISATION,
    FORMATION,
    MINERALISATION,
    NOT_ANALYSED,
    QUIESCENT,
    RESORPTION,
)


def _erode_oracle(mask, steps):
    """Voxel by voxel: keep a voxel if its 6 face neighbours (inside the image) are kept."""
    for _ in range(steps):
        out = np.zeros_like(mask)
        for index in itertools.product(*(range(n) for n in mask.shape)):
            if not mask[index]:
                continue
            keep = True
            for axis, delta in itertools.product(range(3), (-1, 1)):
                neighbour = list(index)
                neighbour[axis] += delta
                if not 0 <= neighbour[axis] < mask.shape[axis] or not mask[tuple(neighbour)]:
                    keep = False
                    break
            out[index] = keep
        mask = out
    return mask


@pytest.mark.parametrize("erosion", [0, 1, 2])
def test_common_region_matches_oracle(erosion):
    rng = np.random.default_rng(erosion)
    masks = [rng.random((9, 10, 11)) < 0.9 for _ in range(3)]
    for m in masks:
        m[:, :2] = False
    copies = [m.copy() for m in masks]
    expected = _erode_oracle(masks[0] & masks[1] & masks[2], erosion)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateInputWarning)
        result = common_region(masks, erosion_voxels=erosion)
    assert result.dtype == bool
    np.testing.assert_array_equal(result, expected)
    assert erosion == 0 or result.sum() < (masks[0] & masks[1] & masks[2]).sum()
    for mask, copy in zip(masks, copies):
        np.testing.assert_array_equal(mask, copy)


def test_common_region_edge_cases():
    box = np.zeros((6, 6, 6), bool)
    box[1:5, 1:5, 1:5] = True
    np.testing.assert_array_equal(common_region([box], erosion_voxels=0), box)
    assert common_region([box]).sum() == 8          # the 2x2x2 core
    with pytest.warns(DegenerateInputWarning, match="empty"):
        assert not common_region([box, ~box]).any()
    with pytest.raises(ValueError, match="shape"):
        common_region([box, box[:-1]])
    with pytest.raises(ValueError, match="at least one"):
        common_region([])
    with pytest.raises(ValueError, match="erosion"):
        common_region([box], erosion_voxels=-1)


# --- remodelling -------------------------------------------------------------------------

def _ball(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def _timelapse_pair(noise=0.0, seed=0):
    """A bone slab with known events, after TimelapsedHRpQCT's generator (domain §9.1)."""
    shape = (32, 40, 40)
    rng = np.random.default_rng(seed)
    bone0 = np.zeros(shape, bool)
    bone0[6:26, 4:36, 4:20] = True                          # a bone block; marrow beyond x=20
    formation = _ball(shape, (16, 12, 28), 4) & ~bone0      # new bone in marrow
    resorption = _ball(shape, (10, 20, 12), 3) & bone0      # a pit
    mineral = _ball(shape, (20, 30, 12), 3) & bone0 & ~resorption
    bone1 = (bone0 | formation) & ~resorption
    rho0 = np.where(bone0, 900.0, 30.0)
    rho1 = np.where(bone1, 900.0, 30.0)
    rho1[mineral] += 400.0
    rho0 = rho0 + rng.normal(0, noise, shape)
    rho1 = rho1 + rng.normal(0, noise, shape)
    return rho0, rho1, bone0, bone1, {"formation": formation, "resorption": resorption,
                                      "mineral": mineral}


def test_remodelling_classifies_known_events():
    rho0, rho1, bone0, bone1, truth = _timelapse_pair()
    result = remodelling(rho0, rho1, spacing=0.0607, bone0=bone0, bone1=bone1, sigma=0)
    labels = result.labels
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels == FORMATION, truth["formation"])
    np.testing.assert_array_equal(labels == RESORPTION, truth["resorption"])
    np.testing.assert_array_equal(labels == MINERALISATION, truth["mineral"])
    assert not (labels == DEMINERALISATION).any()
    assert (labels[bone0 & bone1 & ~truth["mineral"]] == QUIESCENT).all()
    assert (labels[~bone0 & ~bone1] == NOT_ANALYSED).all()
    bv0 = bone0.sum()
    assert result.fractions["FV/BV0"] == pytest.approx(truth["formation"].sum() / bv0)
    assert result.fractions["RV/BV0"] == pytest.approx(truth["resorption"].sum() / bv0)
    assert result.volumes["BV0"] == pytest.approx(bv0 * 0.0607**3)
    assert set(LABELS) == set(range(6))


def test_remodelling_with_smoothing_and_noise():
    """XCT II defaults (sigma 1.2, 225 mg HA/cm³, clusters >= 12) on noisy images."""
    rho0, rho1, bone0, bone1, truth = _timelapse_pair(noise=60.0, seed=1)
    result = remodelling(rho0, rho1, spacing=0.0607, bone0=bone0, bone1=bone1)
    assert result.parameters["threshold"] == 225.0 and result.parameters["min_cluster"] == 12
    found = result.labels == FORMATION
    # Smoothing erodes the event by about a voxel at its rim; the core is found, and
    # nothing is found where nothing happened.
    assert (found & truth["formation"]).sum() >= 0.6 * truth["formation"].sum()
    assert not (found & ~truth["formation"]).any()
    lost = result.labels == RESORPTION
    assert (lost & truth["resorption"]).sum() >= 0.5 * truth["resorption"].sum()
    assert not (lost & ~truth["resorption"]).any()


def test_small_clusters_are_noise():
    rho0, rho1, bone0, bone1, _ = _timelapse_pair()
    rho1 = rho1.copy()
    specks = [(8, 6, 6), (20, 10, 8), (12, 30, 16)]          # single voxels inside bone
    for z, y, x in specks:
        rho1[z, y, x] += 500
    kept = remodelling(rho0, rho1, spacing=0.0607, bone0=bone0, bone1=bone1, sigma=0,
                       min_cluster=1)
    cleaned = remodelling(rho0, rho1, spacing=0.0607, bone0=bone0, bone1=bone1, sigma=0)
    for speck in specks:
        assert kept.labels[speck] == MINERALISATION
        assert cleaned.labels[speck] == QUIESCENT


def test_region_restricts_and_grey_only_profile():
    rho0, rho1, bone0, bone1, truth = _timelapse_pair()
    region = np.zeros(bone0.shape, bool)
    region[:, :, :22] = True                                 # excludes the formation ball
    inside = remodelling(rho0, rho1, spacing=0.0607, bone0=bone0, bone1=bone1,
                         region=region, sigma=0)
    assert not (inside.labels == FORMATION).any()
    assert (inside.labels[~region] == NOT_ANALYSED).all()
    assert inside.volumes["BV0"] == pytest.approx((bone0 & region).sum() * 0.0607**3)

    grey = remodelling(rho0, rho1, spacing=0.0607, bone0=bone0, bone1=bone1,
                       profile="xct1", sigma=0)
    assert grey.parameters["reclassify"] is False and PROFILES["xct1"]["min_cluster"] == 5
    # Without binary reclassification, mineralisation is formation.
    assert ((grey.labels == FORMATION) == (truth["formation"] | truth["mineral"])).all()


def test_remodelling_validation():
    rho = np.zeros((4, 4, 4))
    bone = rho > 0
    with pytest.raises(ValueError, match="same grid"):
        remodelling(rho, rho[:-1], spacing=1, bone0=bone, bone1=bone)
    with pytest.raises(ValueError, match="profile"):
        remodelling(rho, rho, spacing=1, bone0=bone, bone1=bone, profile="xct3")
    with pytest.raises(ValueError, match="threshold"):
        remodelling(rho, rho, spacing=1, bone0=bone, bone1=bone, threshold=0)
    with pytest.raises(ValueError, match="required"):
        remodelling(rho, rho, spacing=1, bone0=None, bone1=bone)
    empty = remodelling(rho, rho, spacing=1, bone0=bone, bone1=bone)
    assert np.isnan(empty.fractions["FV/BV0"])


def test_remodelling_does_not_depend_on_the_surrounding_volume():
    """Work is cropped to the region's box: padding the volume changes nothing."""
    rho0, rho1, bone0, bone1, _ = _timelapse_pair(noise=60.0, seed=2)
    region = np.zeros(bone0.shape, bool)
    region[8:24, 6:34, 6:34] = True
    pad = ((5, 3), (4, 6), (7, 2))
    padded = [np.pad(a, pad) for a in (rho0, rho1, bone0, bone1, region)]
    small = remodelling(rho0, rho1, spacing=0.0607, bone0=bone0, bone1=bone1, region=region)
    large = remodelling(padded[0], padded[1], spacing=0.0607, bone0=padded[2],
                        bone1=padded[3], region=padded[4])
    inner = tuple(slice(before, before + n) for (before, _), n in zip(pad, rho0.shape))
    np.testing.assert_array_equal(large.labels[inner], small.labels)
    assert large.labels.sum() == small.labels.sum()
    assert large.fractions == small.fractions
