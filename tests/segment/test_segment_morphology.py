"""Slice-wise disk morphology against scipy oracles (exact EDT, explicit disk footprints)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from microarch._shared.threads import threads
from microarch.segment import _morphology as morph


def _disk(radius, spacing_yx):
    hy, hx = spacing_yx
    ry, rx = int(radius / hy) + 1, int(radius / hx) + 1
    yy, xx = np.mgrid[-ry:ry + 1, -rx:rx + 1]
    return (yy * hy) ** 2 + (xx * hx) ** 2 <= radius * radius * (1 + 1e-9)


def _per_slice(op, mask, **kwargs):
    return np.stack([op(mask[k], **kwargs) for k in range(mask.shape[0])])


def _random_masks(seed, count=12):
    rng = np.random.RandomState(seed)
    for _ in range(count):
        shape = (3, rng.randint(1, 30), rng.randint(1, 30))
        mask = ndi.binary_opening(rng.rand(*shape) < rng.uniform(0.1, 0.7),
                                  structure=np.ones((1, 2, 2))) if min(shape) > 1 else \
            rng.rand(*shape) < 0.5
        spacing = tuple(rng.uniform(0.04, 0.1, 2))
        radius = rng.uniform(0.0, 0.4)
        yield mask, spacing, radius


def test_within_distance_equals_exact_edt():
    for mask, spacing, radius in _random_masks(0, 30):
        got = morph._within(mask, radius, spacing)
        for k in range(mask.shape[0]):
            if mask[k].any():
                ref = ndi.distance_transform_edt(~mask[k], sampling=spacing) <= radius * (1 + 1e-9)
            else:
                ref = np.zeros(mask.shape[1:], bool)
            np.testing.assert_array_equal(got[k], ref)


def test_dilate_and_erode_equal_footprint_oracle():
    for mask, spacing, radius in _random_masks(1):
        disk = _disk(radius, spacing)
        np.testing.assert_array_equal(
            morph.dilate_2d(mask, radius, spacing),
            _per_slice(ndi.binary_dilation, mask, structure=disk))
        # beyond the image is background for the erosion
        np.testing.assert_array_equal(
            morph.erode_2d(mask, radius, spacing),
            _per_slice(ndi.binary_erosion, mask, structure=disk, border_value=0))


def test_close_and_open_equal_padded_oracle():
    for mask, spacing, radius in _random_masks(2):
        disk = _disk(radius, spacing)
        py, px = (disk.shape[0] // 2 + 1, disk.shape[1] // 2 + 1)
        padded = np.pad(mask, ((0, 0), (py, py), (px, px)))
        closed = _per_slice(ndi.binary_closing, padded, structure=disk)[:, py:-py, px:-px]
        np.testing.assert_array_equal(morph.close_2d(mask, radius, spacing), closed)
        opened = _per_slice(ndi.binary_opening, padded, structure=disk)[:, py:-py, px:-px]
        np.testing.assert_array_equal(morph.open_2d(mask, radius, spacing), opened)
        assert (morph.close_2d(mask, radius, spacing) >= mask).all()
        assert (morph.open_2d(mask, radius, spacing) <= mask).all()


def test_disk_half_widths_anisotropic():
    widths = morph.disk_half_widths(0.3, (0.1, 0.05))
    # row c at 0.1 c mm; half-width floor(sqrt(0.09 - (0.1 c)^2) / 0.05)
    np.testing.assert_array_equal(widths, [6, 5, 4, 0])


def test_fill_holes_equals_scipy_per_slice():
    rng = np.random.RandomState(3)
    for _ in range(10):
        mask = rng.rand(4, rng.randint(1, 25), rng.randint(1, 25)) < rng.uniform(0.3, 0.8)
        np.testing.assert_array_equal(morph.fill_holes_2d(mask),
                                      _per_slice(ndi.binary_fill_holes, mask))


def test_components():
    mask = np.zeros((5, 12, 12), bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[1:3, 6:8, 6:8] = True  # 8
    mask[4, 10, 10] = True  # 1
    mask[3, 4, 4] = True  # touches the first block by a corner only
    assert morph.largest_components(mask, 1, 26).sum() == 28
    assert morph.largest_components(mask, 1, 6).sum() == 27
    assert morph.largest_components(mask, 2, 6).sum() == 35
    assert morph.largest_components(mask, 9, 6).sum() == mask.sum()
    assert morph.remove_small_components(mask, 8, 6).sum() == 35
    assert morph.largest_components(mask, 1, 6, min_fraction=0.25).sum() == 35
    assert not morph.largest_components(np.zeros((2, 2, 2), bool), 1, 6).any()


def test_threads_give_identical_results():
    rng = np.random.RandomState(4)
    mask = rng.rand(6, 40, 37) < 0.3
    with threads(1):
        one = (morph.close_2d(mask, 0.25, (0.06, 0.07)), morph.fill_holes_2d(mask))
    with threads(2):
        two = (morph.close_2d(mask, 0.25, (0.06, 0.07)), morph.fill_holes_2d(mask))
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("radius", [0.0, 1e-6])
def test_tiny_radius_is_identity(radius):
    mask = np.random.RandomState(5).rand(2, 9, 8) < 0.5
    # a disk smaller than a pixel is the pixel itself
    for op in (morph.dilate_2d, morph.erode_2d, morph.close_2d, morph.open_2d):
        np.testing.assert_array_equal(op(mask, radius, (0.06, 0.06)), mask)
