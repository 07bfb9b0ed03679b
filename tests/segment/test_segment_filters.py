import itertools

import numpy as np
import pytest
from scipy import ndimage as ndi

from microarch.segment import (
    SegmentationError,
    gaussian_filter,
    gaussian_kernel,
    laplace_hamming_filter,
)


def _brute_force_gaussian(image, weights):
    """Oracle: explicit triple sum of the outer-product kernel over an edge-padded image."""
    radii = [w.size // 2 for w in weights]
    padded = np.pad(image.astype(np.float64), [(r, r) for r in radii], mode="edge")
    out = np.zeros(image.shape)
    nz, ny, nx = image.shape
    for dz, dy, dx in itertools.product(*[range(w.size) for w in weights]):
        out += (weights[0][dz] * weights[1][dy] * weights[2][dx]
                * padded[dz:dz + nz, dy:dy + ny, dx:dx + nx])
    return out


def test_kernel_closed_form():
    w = gaussian_kernel(0.8, 1)
    side = np.exp(-1 / (2 * 0.64))
    np.testing.assert_allclose(w, np.array([side, 1.0, side]) / (1 + 2 * side))
    assert gaussian_kernel(0.8, 2).size == 5
    np.testing.assert_allclose(gaussian_kernel(1.3, 3).sum(), 1.0)
    np.testing.assert_array_equal(gaussian_kernel(0.0, 3), [1.0])
    np.testing.assert_array_equal(gaussian_kernel(2.0, 0), [1.0])


def test_discrete_kernel_matches_simpleitk():
    # SimpleITK sizes its kernel by maximumError (0.01): radius 2 for sigma 0.5 and 0.8,
    # 3 for sigma 1.2, whatever maximumKernelWidth says (so ORMIR-XCT's seg_gauss with
    # support=1 filters with 5 taps)
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.RandomState(0)
    image = rng.normal(300, 200, (9, 12, 11)).astype(np.float32)
    for sigma, radius in [(0.8, 2), (1.2, 3), (0.5, 2)]:
        ours = gaussian_filter(image, sigma=sigma, support=radius, kernel="discrete")
        theirs = sitk.GetArrayFromImage(sitk.DiscreteGaussian(
            sitk.GetImageFromArray(image), variance=sigma ** 2, maximumKernelWidth=3,
            useImageSpacing=False))
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=2e-3)


@pytest.mark.parametrize("sigma, support", [(0.8, 1), ((0.5, 1.0, 1.5), (1, 2, 3)),
                                            ((0.0, 0.8, 0.8), (1, 1, 1))])
def test_gaussian_equals_brute_force(sigma, support):
    rng = np.random.RandomState(1)
    image = rng.normal(200, 300, (7, 10, 9)).astype(np.float32)
    sigmas = np.broadcast_to(sigma, 3)
    supports = np.broadcast_to(support, 3)
    weights = [gaussian_kernel(s, int(w)) for s, w in zip(sigmas, supports)]
    got = gaussian_filter(image, sigma=sigma, support=support)
    assert got.dtype == np.float32 and got.shape == image.shape
    np.testing.assert_allclose(got, _brute_force_gaussian(image, weights), rtol=1e-5,
                               atol=1e-3)


def test_numba_path_equals_scipy_correlate1d():
    rng = np.random.RandomState(2)
    image = rng.normal(200, 300, (6, 31, 17)).astype(np.float32)
    w = gaussian_kernel(0.8, 1)
    ref = image
    for axis in range(3):
        ref = ndi.correlate1d(ref, w, axis=axis, mode="nearest", output=np.float32)
    np.testing.assert_allclose(gaussian_filter(image), ref, rtol=1e-6, atol=1e-3)
    # another border mode goes through scipy
    ref = image
    for axis in range(3):
        ref = ndi.correlate1d(ref, w, axis=axis, mode="constant", output=np.float32)
    np.testing.assert_allclose(gaussian_filter(image, mode="constant"), ref, rtol=1e-6)


def test_uniform_image_and_input_untouched():
    image = np.full((5, 6, 7), 412.5, np.float32)
    before = image.copy()
    out = gaussian_filter(image, sigma=1.5, support=3)
    np.testing.assert_allclose(out, 412.5, rtol=1e-6)
    np.testing.assert_array_equal(image, before)
    assert out is not image
    identity = gaussian_filter(image, sigma=0)
    assert identity is not image and np.array_equal(identity, image)


def test_sigma_mm_and_integer_input():
    rng = np.random.RandomState(3)
    image = rng.randint(-500, 3000, (6, 8, 9)).astype(np.int16)
    spacing = (0.082, 0.0607, 0.0607)
    by_mm = gaussian_filter(image, sigma_mm=0.0607, spacing=spacing, support=1)
    by_voxel = gaussian_filter(image, sigma=(0.0607 / 0.082, 1.0, 1.0), support=1)
    np.testing.assert_allclose(by_mm, by_voxel, rtol=1e-6)
    assert by_mm.dtype == np.float32
    with pytest.raises(ValueError, match="spacing"):
        gaussian_filter(image, sigma_mm=0.1)


def test_filter_errors():
    with pytest.raises(SegmentationError, match="NaN"):
        gaussian_filter(np.full((3, 3, 3), np.nan))
    image = np.zeros((3, 4, 4))
    image[1, 2, 2] = np.inf
    with pytest.raises(SegmentationError, match="1 of 48 voxels"):
        gaussian_filter(image)
    with pytest.raises(SegmentationError, match="empty"):
        gaussian_filter(np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match="3D"):
        gaussian_filter(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="whole number"):
        gaussian_filter(np.zeros((3, 3, 3)), support=1.5)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_filter(np.zeros((3, 3, 3)), sigma=-1)
    with pytest.raises(ValueError, match="kernel"):
        gaussian_filter(np.zeros((3, 3, 3)), kernel="box")
    with pytest.raises(TypeError):
        gaussian_filter(np.zeros((3, 3, 3), complex))


def test_laplace_hamming_identity_and_flat():
    rng = np.random.RandomState(4)
    image = rng.normal(300, 100, (6, 10, 12)).astype(np.float32)
    # no Laplace weight, a flat window reaching beyond every frequency: the identity
    same = laplace_hamming_filter(image, spacing=0.1, epsilon=0.0, cutoff=1.0,
                                  amplitude=0.0)
    np.testing.assert_allclose(same, image, rtol=1e-4, atol=1e-2)
    flat = laplace_hamming_filter(np.full((6, 10, 12), 800.0), spacing=(0.1, 0.06, 0.06))
    np.testing.assert_allclose(flat, 800.0, rtol=1e-4)


def test_laplace_hamming_enhances_edges():
    plate = np.full((24, 16, 16), 25.0, np.float32)
    plate[9:15] = 1100.0
    out = laplace_hamming_filter(plate, spacing=0.082)
    profile = out[:, 8, 8]
    assert profile.max() > 1100.0  # overshoot at the edges: edge enhancement
    assert profile[12] > 600.0 and profile[2] < 300.0
    with pytest.raises(ValueError, match="epsilon"):
        laplace_hamming_filter(plate, spacing=0.082, epsilon=1.0)
    with pytest.raises(ValueError, match="cutoff"):
        laplace_hamming_filter(plate, spacing=0.082, cutoff=0.0)


def test_public_names_resolve():
    from microarch import segment

    for name in segment.__all__:
        assert getattr(segment, name) is not None
    assert sorted(segment.__all__) == dir(segment)
