"""Imaging model: calibration round trip, partial volume, resampling, noise."""

import numpy as np
import pytest

from microarch.phantoms import (
    XTREMECT2_CALIBRATION,
    plate,
    plate_lattice,
    render_scan,
    sphere,
    trabecular_bone,
)

MU_SCALING, SLOPE, INTERCEPT = 8192.0, 1603.51904, -391.209015


def density_from_native(native):
    """Domain notes §1.2: density = slope / MuScaling * native + intercept."""
    return SLOPE / MU_SCALING * native.astype(np.float64) + INTERCEPT


def test_default_calibration_is_the_xtremect2_header():
    c = XTREMECT2_CALIBRATION
    assert (c["mu_scaling"], c["density_slope"], c["density_intercept"], c["mu_water"]) == (
        MU_SCALING,
        SLOPE,
        INTERCEPT,
        0.2409,
    )


def test_noise_free_render_recovers_tissue_and_marrow():
    p = plate(6, size=3.0, spacing=0.0607)
    scan = render_scan(p, psf_sigma_voxels=0.0, noise_sd=0.0)
    assert scan.native.dtype == np.int16 and scan.native.shape == p.mask.shape
    density = density_from_native(scan.native)
    quantum = SLOPE / MU_SCALING  # one native unit, about 0.196 mg HA/cm³
    assert np.all(np.abs(density[p.mask] - 1100.0) <= quantum / 2 + 1e-6)
    assert np.all(np.abs(density[~p.mask] - 25.0) <= quantum / 2 + 1e-6)
    assert np.allclose(scan.density, density, atol=1e-3)
    assert np.array_equal(scan.fraction, p.mask.astype(np.float32))
    # 320 mg HA/cm³ is native 3633 (domain notes §1.2): between marrow and tissue.
    assert round((320 - INTERCEPT) * MU_SCALING / SLOPE) == 3633


def test_noisy_round_trip_means_within_noise():
    lattice = plate_lattice(8, 16, n_plates=4, size=3.0, spacing=0.0607, fill=True)
    scan = render_scan(lattice, noise_sd=80.0, psf_sigma_voxels=0.8, seed=3)
    density = density_from_native(scan.native)
    # Away from the plate faces the blur has no effect: pure tissue and pure marrow.
    from scipy import ndimage

    core_bone = ndimage.binary_erosion(lattice.mask, iterations=3)
    core_marrow = ndimage.binary_erosion(~lattice.mask, iterations=3)
    for region, expected in ((core_bone, 1100.0), (core_marrow, 25.0)):
        values = density[region]
        assert values.size > 1000
        assert abs(values.mean() - expected) < 4 * 80.0 / np.sqrt(values.size) + 0.2
        assert values.std() == pytest.approx(80.0, rel=0.05)


def test_psf_blurs_edges_and_preserves_mass():
    p = plate(4, size=4.0, spacing=0.0607, margin_voxels=8)
    sharp = render_scan(p, psf_sigma_voxels=0.0, noise_sd=0.0)
    blurred = render_scan(p, psf_sigma_voxels=1.0, noise_sd=0.0)
    assert blurred.density.max() < sharp.density.max()
    assert blurred.density.mean() == pytest.approx(sharp.density.mean(), rel=1e-3)


@pytest.mark.parametrize("factor", [2, 3])
def test_integer_downsampling_is_a_block_mean(factor):
    fine = plate_lattice(3, 2 * factor * 3, n_plates=2, size=1.2, spacing=0.02, fill=True)
    scan = render_scan(fine, spacing_out=0.02 * factor, psf_sigma_voxels=0.0, noise_sd=0.0)
    nz, ny, nx = fine.mask.shape
    blocks = fine.mask.reshape(
        nz // factor, factor, ny // factor, factor, nx // factor, factor
    ).mean(axis=(1, 3, 5))
    assert scan.native.shape == blocks.shape
    assert np.allclose(scan.fraction, blocks, atol=1e-6)
    assert scan.truth["BV/TV"] == pytest.approx(fine.truth["BV/TV"], abs=1e-6)


def test_non_integer_resampling_preserves_bone_fraction():
    s = sphere(1.5, spacing=0.0607, margin_voxels=6)
    scan = render_scan(s, spacing_out=0.082, psf_sigma_voxels=0.0, noise_sd=0.0)
    extent_in = np.asarray(s.mask.shape) * 0.0607
    assert scan.native.shape == tuple(np.round(extent_in / 0.082).astype(int))
    bone_in = s.truth["BV"]
    bone_out = scan.fraction.sum() * 0.082**3
    assert bone_out == pytest.approx(bone_in, rel=0.01)
    assert scan.spacing == (0.082, 0.082, 0.082)


def test_subvoxel_rendering_of_a_trabecular_phantom():
    bone = trabecular_bone((24, 24, 24), seed=2)
    scan = render_scan(bone, upsample=3, noise_sd=0.0, psf_sigma_voxels=0.0)
    levels = np.unique(np.round(scan.fraction * 27, 4))
    assert np.allclose(levels, np.round(levels))
    assert len(levels) > 10  # partial volumes, not just 0 and 1
    assert scan.truth["BV/TV"] == pytest.approx(bone.truth["BV/TV"], abs=0.03)


def test_same_seed_same_scan():
    p = sphere(1.0, spacing=0.0607)
    a = render_scan(p, seed=5)
    b = render_scan(p, seed=5)
    c = render_scan(p, seed=6)
    assert np.array_equal(a.native, b.native)
    assert not np.array_equal(a.native, c.native)


def test_plain_mask_needs_spacing_and_cannot_be_upsampled():
    mask = plate(2).mask
    with pytest.raises(ValueError, match="spacing"):
        render_scan(mask)
    with pytest.raises(ValueError, match="upsample"):
        render_scan(mask, spacing=0.05, upsample=2)
    scan = render_scan(mask, spacing=0.0607, noise_sd=0.0)
    assert scan.native.shape == mask.shape


def test_custom_calibration_and_clipping():
    p = plate(2, spacing=0.0607)
    calibration = {"mu_scaling": 1.0, "density_slope": 1.0, "density_intercept": 0.0}
    scan = render_scan(
        p, calibration=calibration, tissue_density=40000.0, noise_sd=0.0, psf_sigma_voxels=0.0
    )
    assert scan.native.max() == np.iinfo(np.int16).max
    assert scan.truth["n_clipped"] == int(p.mask.sum())
    with pytest.raises(ValueError, match="calibration lacks"):
        render_scan(p, calibration={"mu_scaling": 8192})
