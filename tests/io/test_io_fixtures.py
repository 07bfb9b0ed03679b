"""Real Scanco files (../shared/fixtures/scanco): shapes, values, voxel sizes, calibration.

Expected numbers are those of the fixtures' README and the domain spec §1.2.
"""

import hashlib
import shutil

import numpy as np
import pytest

from microarch.io import Calibration, CalibrationError, ScanFormatError, read_scan

# file -> (shape (z, y, x), dtype, voxel mm, value -> count or None)
EXPECTED = {
    "XT2_RADIUS_82_SEG.AIM": ((123, 364, 420), np.int8, 0.082, {127: 3_032_038}),
    "aluminum.aim": ((100, 130, 130), np.int16, 0.082, None),
    "test25a.aim": ((25, 25, 25), np.int8, 0.034, {127: 7_087}),
    "tube.aim": ((193, 64, 64), np.int8, 0.034, {127: 617_407}),
    "test_aim.AIM": ((25, 25, 25), np.int16, 0.06068, {1: 81}),
    "test_isq.ISQ": ((25, 25, 25), np.int16, 0.06068, {1: 81}),
    "test25a.nii": ((25, 25, 25), np.int8, 0.034, {127: 7_087}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_shape_dtype_values_spacing(scanco_dir, name):
    shape, dtype, voxel, counts = EXPECTED[name]
    scan = read_scan(scanco_dir / name, units="native")
    assert scan.shape == shape
    assert scan.image.dtype == dtype
    assert scan.spacing == pytest.approx((voxel,) * 3, rel=1e-6)
    assert scan.path == scanco_dir / name
    if counts is not None:
        values, found = np.unique(scan.image, return_counts=True)
        assert set(values.tolist()) == {0, *counts}
        for value, count in counts.items():
            assert int(found[values == value][0]) == count


def test_voxel_sizes_are_the_short_decimals(scanco_dir):
    # VAX F keeps 0.082 as 0.0820000022649765; the reader reports the decimal meant.
    assert read_scan(scanco_dir / "aluminum.aim").spacing == (0.082, 0.082, 0.082)
    assert read_scan(scanco_dir / "test25a.nii").spacing == (0.034, 0.034, 0.034)


@pytest.mark.parametrize("name", ["XT2_RADIUS_82_SEG.AIM", "test25a.aim", "tube.aim",
                                  "test25a.nii"])
def test_segmentations_come_back_binary_even_when_density_is_asked(scanco_dir, name):
    scan = read_scan(scanco_dir / name)  # default units="density"
    assert scan.units == "binary"
    assert scan.is_mask
    assert scan.image.dtype == np.int8
    assert set(np.unique(scan.image).tolist()) == {0, 127}


def test_xt2_segmentation_keeps_its_calibration_but_is_not_calibrated(scanco_dir):
    scan = read_scan(scanco_dir / "XT2_RADIUS_82_SEG.AIM")
    assert scan.calibration.mu_scaling == 8192
    assert scan.calibration.density_slope == pytest.approx(1632.71997)
    assert scan.calibration.density_intercept == pytest.approx(-396.135986)
    assert scan.calibration.mu_water == pytest.approx(0.2402)
    assert scan.meta["type_code"] == 0x00150001
    assert scan.meta["processing_log"]["Energy [V]"] == 68000
    assert scan.meta["processing_log"]["Orig-ISQ-Dim-p"] == (1708, 1708, 123)


def test_aluminum_density_follows_the_domain_formula(scanco_dir):
    native = read_scan(scanco_dir / "aluminum.aim", units="native")
    density = read_scan(scanco_dir / "aluminum.aim")
    cal = density.calibration
    assert (cal.mu_scaling, cal.density_slope, cal.density_intercept, cal.mu_water) == (
        8192.0, 1441.13599, -356.445007, 0.2464)
    assert cal.density_unit == "mg HA/cm³"
    assert density.units == "mg HA/cm³"
    assert density.image.dtype == np.float32
    # domain §1.2: rho = slope / MuScaling * native + intercept, evaluated in float64
    expected = 1441.13599 / 8192 * native.image.astype(np.float64) - 356.445007
    np.testing.assert_allclose(density.image, expected, rtol=0, atol=2e-3)
    assert int(native.image.min()) == -2134 and int(native.image.max()) == 10544
    assert float(density.image.min()) == pytest.approx(-731.858, abs=1e-2)
    assert float(density.image.max()) == pytest.approx(1498.455, abs=1e-2)
    # the domain's threshold table: 320 mg HA/cm³ is native 3845 for this XCT I calibration
    assert round(float(cal.to_native(320.0))) == 3845
    assert round(float(cal.to_hu(3845))) == 905


def test_aluminum_hu_and_mu(scanco_dir):
    native = read_scan(scanco_dir / "aluminum.aim", units="native").image.astype(np.float64)
    hu = read_scan(scanco_dir / "aluminum.aim", units="hu")
    mu = read_scan(scanco_dir / "aluminum.aim", units="mu")
    assert (hu.units, mu.units) == ("HU", "1/cm")
    np.testing.assert_allclose(hu.image, 1000 * native / (8192 * 0.2464) - 1000, atol=2e-3)
    np.testing.assert_allclose(mu.image, native / 8192, atol=1e-6)


def test_aluminum_header_fields_and_origin(scanco_dir):
    scan = read_scan(scanco_dir / "aluminum.aim")
    assert scan.format == "AIM v020"
    assert scan.meta["position_xyz"] == (684, 702, 9)
    assert scan.origin == pytest.approx((9 * 0.082, 702 * 0.082, 684 * 0.082))
    log = scan.meta["processing_log"]
    assert log["Mu_Scaling"] == 8192
    assert log["Energy [V]"] == 59400
    assert log["Density: unit"] == "mg HA/ccm"
    assert log["Minimum data value"] == -2134.0
    assert log["Patient Name"] == "IGFA_ALUM_01"
    assert "! Processing Log" in scan.meta["processing_log_text"]


@pytest.mark.parametrize("name", ["test_aim.AIM", "test_isq.ISQ"])
def test_uncalibrated_files_refuse_density(scanco_dir, name):
    with pytest.raises(CalibrationError, match="units='native'") as info:
        read_scan(scanco_dir / name)
    assert name in str(info.value)
    assert isinstance(info.value, ScanFormatError)
    native = read_scan(scanco_dir / name, units="native")
    assert native.units == "native" and native.calibration is None


def test_uncalibrated_file_with_a_calibration_from_the_caller(scanco_dir):
    cal = Calibration(mu_scaling=8192, density_slope=1600.0, density_intercept=-400.0)
    scan = read_scan(scanco_dir / "test_aim.AIM", calibration=cal)
    assert scan.units == "mg HA/cm³"
    assert scan.meta["calibration_from"] == "caller"
    assert set(np.unique(scan.image).tolist()) == {-400.0, np.float32(1600 / 8192 - 400)}


def test_isq_equals_the_same_cube_stored_as_aim(scanco_dir):
    isq = read_scan(scanco_dir / "test_isq.ISQ", units="native")
    aim = read_scan(scanco_dir / "test_aim.AIM", units="native")
    assert isq.format == "ISQ"
    np.testing.assert_array_equal(isq.image, aim.image)
    assert isq.meta["mu_scaling"] == 1
    assert isq.meta["nr_of_projections"] == 900
    assert isq.meta["energy_V"] == 68000


def test_isq_voxels_equal_the_raw_bytes(scanco_dir):
    raw = (scanco_dir / "test_isq.ISQ").read_bytes()
    expected = np.frombuffer(raw, dtype="<i2", offset=512).reshape(25, 25, 25)
    np.testing.assert_array_equal(read_scan(scanco_dir / "test_isq.ISQ", units="native").image,
                                  expected)


def test_nifti_cube_equals_the_aim_cube(scanco_dir):
    nii = read_scan(scanco_dir / "test25a.nii")
    aim = read_scan(scanco_dir / "test25a.aim")
    assert nii.format == "NIfTI"
    np.testing.assert_array_equal(nii.image, aim.image)
    # vtkbone wrote the NIfTI with the half-voxel-shifted origin (in LPS here)
    assert nii.origin[0] == pytest.approx(aim.origin[0] + 0.017, abs=1e-5)


def test_xt2_segmentation_bone_volume_fraction(scanco_dir):
    scan = read_scan(scanco_dir / "test25a.aim")
    assert np.count_nonzero(scan.image) / scan.image.size == pytest.approx(0.4536, abs=1e-4)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_vms_suffix_and_wrong_extension_read_by_magic(scanco_dir, tmp_path):
    for name, alias in [("tube.aim", "tube.AIM;1"), ("test_isq.ISQ", "x.ISQ;2"),
                        ("test25a.aim", "cube.nii"), ("test25a.nii", "cube.dat")]:
        shutil.copyfile(scanco_dir / name, tmp_path / alias)
        before = sorted(p.name for p in tmp_path.iterdir())
        digest = _digest(tmp_path / alias)
        scan = read_scan(tmp_path / alias, units="native")
        np.testing.assert_array_equal(scan.image, read_scan(scanco_dir / name, units="native").image)
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing renamed or added
        assert _digest(tmp_path / alias) == digest


def test_reading_leaves_the_fixture_folder_untouched(scanco_dir):
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in scanco_dir.iterdir()}
    for name in EXPECTED:
        read_scan(scanco_dir / name, units="native")
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in scanco_dir.iterdir()}
    assert after == before
