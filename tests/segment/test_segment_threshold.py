import numpy as np
import pytest

from microarch.segment import (
    PRESETS,
    SegmentationError,
    gaussian_filter,
    laplace_hamming_filter,
    threshold_bone,
)


def _step_image():
    """Blocks of known density in marrow, each 4 voxels thick so smoothing keeps the core."""
    image = np.full((6, 8, 40), 25.0, np.float32)
    for i, value in enumerate([380.0, 500.0, 1100.0, 3500.0]):
        image[:, :, 2 + 10 * i:6 + 10 * i] = value
    return image


def test_standard_is_smoothing_then_threshold():
    image = _step_image()
    expected = gaussian_filter(image, sigma=0.8, support=1)
    expected = (expected >= 320.0) & (expected <= 3000.0)
    got = threshold_bone(image, spacing=0.0607)
    np.testing.assert_array_equal(got, expected)
    core = got[3, 4]
    assert core[3] and core[13] and core[23]  # 380, 500, 1100 are bone at 320
    assert not core[33]  # 3500 is above the upper threshold (metal, not bone)
    assert not core[0] and not core[8]


def test_compartment_thresholds():
    image = _step_image()
    cortical = np.zeros(image.shape, bool)
    cortical[:, :, :10] = True  # the 380 block lies in the "cortex"
    trabecular = np.zeros(image.shape, bool)
    trabecular[:, :, 10:30] = True
    bone = threshold_bone(image, spacing=0.0607, trabecular=trabecular, cortical=cortical)
    assert not bone[3, 4, 3]  # 380 < 450 in the cortical compartment
    assert bone[3, 4, 13] and bone[3, 4, 23]
    assert not bone[:, :, 30:].any()  # outside both compartments
    # cortical threshold wins where the masks overlap
    both = threshold_bone(image, spacing=0.0607, trabecular=np.ones(image.shape, bool),
                          cortical=cortical)
    assert not both[3, 4, 3] and both[3, 4, 13]
    # a lower cortical threshold makes the 380 block bone
    low = threshold_bone(image, spacing=0.0607, cortical=cortical, cortical_threshold=350)
    assert low[3, 4, 3]


def test_overrides_and_presets():
    image = _step_image()
    assert not threshold_bone(image, spacing=0.1, trabecular_threshold=600)[3, 4, 13]
    assert threshold_bone(image, spacing=0.1, upper_threshold=4000)[3, 4, 33]
    assert set(PRESETS) == {"xct2", "xct1"}
    assert PRESETS["xct2"]["trabecular_threshold"] == 320.0
    with pytest.raises(TypeError):
        PRESETS["xct2"]["sigma"] = 1.0  # read-only
    with pytest.raises(ValueError, match="preset"):
        threshold_bone(image, spacing=0.1, preset="xct3")
    with pytest.raises(ValueError, match="method"):
        threshold_bone(image, spacing=0.1, method="otsu")
    with pytest.raises(ValueError, match="relative_threshold"):
        threshold_bone(image, spacing=0.1, relative_threshold=1.5)


def test_xct1_preset_is_laplace_hamming_at_40_percent_of_maximum():
    rng = np.random.RandomState(0)
    image = _step_image() + rng.normal(0, 20, _step_image().shape).astype(np.float32)
    filtered = laplace_hamming_filter(image, spacing=0.082)
    expected = filtered >= 0.4 * filtered.max()
    np.testing.assert_array_equal(threshold_bone(image, spacing=0.082, preset="xct1"),
                                  expected)
    # an absolute threshold replaces the relative one
    absolute = threshold_bone(image, spacing=0.082, preset="xct1", trabecular_threshold=700)
    np.testing.assert_array_equal(absolute, filtered >= 700)


def test_min_size_removes_specks():
    image = np.full((8, 20, 20), 25.0, np.float32)
    image[2:6, 2:10, 2:10] = 1100.0
    image[4, 15, 15] = 1100.0 * 8  # a bright single voxel: a speck after smoothing
    bone = threshold_bone(image, spacing=0.06, upper_threshold=1e9)
    cleaned = threshold_bone(image, spacing=0.06, upper_threshold=1e9, min_size=50)
    assert bone[4, 15, 15] and not cleaned[4, 15, 15]
    np.testing.assert_array_equal(cleaned[:, :12, :12], bone[:, :12, :12])


def test_threshold_input_checks():
    image = _step_image()
    before = image.copy()
    threshold_bone(image, spacing=0.06)
    np.testing.assert_array_equal(image, before)
    with pytest.raises(SegmentationError, match="NaN"):
        threshold_bone(np.full((3, 3, 3), np.nan), spacing=0.06)
    with pytest.raises(ValueError, match="spacing"):
        threshold_bone(image, spacing=None)
    with pytest.raises(ValueError, match="shape"):
        threshold_bone(image, spacing=0.06, cortical=np.ones((2, 2, 2), bool))
    assert not threshold_bone(np.zeros((4, 4, 4)), spacing=0.06).any()
