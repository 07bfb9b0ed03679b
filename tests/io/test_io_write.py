"""write_image (NIfTI / MHA) and write_aim round trips."""

import gzip
import struct

import numpy as np
import pytest

from microarch.io import Calibration, CalibrationError, read_scan, write_aim, write_image

CAL = Calibration(mu_scaling=8192, density_slope=1603.51904, density_intercept=-391.209015,
                  mu_water=0.2409, description="68 kVp, BH: 200 mg HA/ccm, Scaling 8192")
SUFFIXES = ["nii.gz", "nii", "mha"]


def grey(shape=(4, 5, 6), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-2000, 12000, size=shape).astype(np.int16)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_bool_mask_round_trip(tmp_path, suffix):
    mask = np.random.default_rng(1).random((5, 6, 7)) < 0.3
    path = write_image(tmp_path / f"mask.{suffix}", mask, spacing=(0.1, 0.0607, 0.05),
                       origin=(-1.5, 2.25, 3.0))
    scan = read_scan(path)
    assert scan.units == "binary"
    assert scan.image.dtype == np.uint8
    np.testing.assert_array_equal(scan.image, mask.astype(np.uint8))
    assert scan.spacing == pytest.approx((0.1, 0.0607, 0.05), rel=1e-7)
    assert scan.origin == pytest.approx((-1.5, 2.25, 3.0), rel=1e-7)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_calibrated_native_reads_back_as_density(tmp_path, suffix):
    native = grey()
    path = write_image(tmp_path / f"grey.{suffix}", native, spacing=0.0607, calibration=CAL)
    scan = read_scan(path)
    assert scan.units == "mg HA/cm³"
    assert scan.calibration.density_slope == CAL.density_slope
    assert scan.calibration.density_intercept == CAL.density_intercept
    assert scan.calibration.mu_water == CAL.mu_water
    np.testing.assert_allclose(scan.image, CAL.to_density(native), rtol=0, atol=1e-3)
    raw = read_scan(path, units="native")
    assert raw.units == "native" and raw.image.dtype == np.int16
    np.testing.assert_array_equal(raw.image, native)
    np.testing.assert_allclose(read_scan(path, units="hu").image, CAL.to_hu(native), atol=1e-3)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_density_map_and_thickness_map_keep_their_units(tmp_path, suffix):
    density = np.linspace(-100, 1200, 120, dtype=np.float32).reshape(4, 5, 6)
    path = write_image(tmp_path / f"rho.{suffix}", density, spacing=0.06, units="mg HA/cm³")
    scan = read_scan(path)
    assert scan.units == "mg HA/cm³" and scan.image.dtype == np.float32
    np.testing.assert_array_equal(scan.image, density)
    thickness = np.abs(density) / 1000
    path = write_image(tmp_path / f"th.{suffix}", thickness, spacing=0.06, units="mm")
    scan = read_scan(path)  # nothing to calibrate: returned as stored, labelled mm
    assert scan.units == "mm"
    np.testing.assert_array_equal(scan.image, thickness)


def test_uncalibrated_grey_write_refuses_density_on_read(tmp_path):
    path = write_image(tmp_path / "g.nii.gz", grey(), spacing=0.06)
    with pytest.raises(CalibrationError):
        read_scan(path)
    assert read_scan(path, units="native").units == "native"


def test_nifti_is_compressed_and_mha_too(tmp_path):
    volume = np.zeros((20, 20, 20), dtype=np.int16)
    nii = write_image(tmp_path / "z.nii.gz", volume, spacing=1)
    with gzip.open(nii) as handle:
        assert struct.unpack("<i", handle.read(4))[0] == 348
    mha = write_image(tmp_path / "z.mha", volume, spacing=1)
    assert b"CompressedData = True" in mha.read_bytes()[:1000]
    assert mha.stat().st_size < volume.nbytes / 4


def test_mha_keeps_free_metadata(tmp_path):
    path = write_image(tmp_path / "m.mha", grey(), spacing=0.06, meta={"Site": "radius",
                                                                       "Visit": 2})
    scan = read_scan(path, units="native")
    assert scan.meta["Site"] == "radius" and scan.meta["Visit"] == "2"


@pytest.mark.parametrize("kwargs,error", [
    ({"path": "x.nii.gz", "meta": {"Site": "radius"}}, ValueError),
    ({"path": "x.mha", "meta": {"NDims": "4"}}, ValueError),
    ({"path": "x.mha", "meta": {"bad key": "1"}}, ValueError),
    ({"path": "x.mha", "meta": {"k": "two\nlines"}}, ValueError),
    ({"path": "x.tif"}, ValueError),
    ({"path": "x.mha", "array": np.zeros((3, 4))}, ValueError),
    ({"path": "x.mha", "array": np.zeros((2, 2, 2), dtype=np.complex64)}, TypeError),
    ({"path": "x.mha", "spacing": (1, 2)}, ValueError),
    ({"path": "x.mha", "origin": (1, 2)}, ValueError),
    ({"path": "x.mha", "calibration": {"mu_scaling": 8192}}, TypeError),
    ({"path": "missing/x.mha"}, FileNotFoundError),
])
def test_write_image_rejects(tmp_path, kwargs, error):
    args = {"array": np.zeros((2, 3, 4), dtype=np.int16), "spacing": 0.1, **kwargs}
    with pytest.raises(error):
        write_image(tmp_path / args.pop("path"), args.pop("array"), **args)


def test_nifti_description_too_long(tmp_path):
    cal = Calibration(mu_scaling=8192.123456789, density_slope=1603.5190412345678,
                      density_intercept=-391.20901512345678, mu_water=0.24091234567891,
                      density_unit="some long density unit name")
    with pytest.raises(ValueError, match="mha"):
        write_image(tmp_path / "x.nii.gz", grey(), spacing=0.1, calibration=cal)
    path = write_image(tmp_path / "x.mha", grey(), spacing=0.1, calibration=cal)
    assert read_scan(path).calibration == Calibration(**{**cal.as_dict(), "source":
                                                         "MetaImage metadata"})


def test_write_image_does_not_modify_the_input(tmp_path):
    mask = np.zeros((3, 4, 5), dtype=bool)
    mask[1] = True
    copy = mask.copy()
    write_image(tmp_path / "m.nii.gz", mask, spacing=1)
    np.testing.assert_array_equal(mask, copy)


# --------------------------------------------------------------------------------------
# write_aim
# --------------------------------------------------------------------------------------


def test_aim_int16_with_calibration(tmp_path):
    native = grey((5, 6, 7))
    path = write_aim(tmp_path / "G.AIM", native, spacing=(0.0607, 0.0607, 0.0607),
                     calibration=CAL, origin=(5 * 0.0607, 6 * 0.0607, 7 * 0.0607),
                     meta={"Index Measurement": 1234, "Site": 21})
    raw = read_scan(path, units="native")
    assert raw.format == "AIM v020" and raw.meta["type_code"] == 0x00020002
    np.testing.assert_array_equal(raw.image, native)
    assert raw.spacing == (0.0607, 0.0607, 0.0607)
    assert raw.meta["position_xyz"] == (7, 6, 5)
    assert raw.origin == pytest.approx((5 * 0.0607, 6 * 0.0607, 7 * 0.0607))
    log = raw.meta["processing_log"]
    assert log["Mu_Scaling"] == 8192
    assert log["Density: slope"] == CAL.density_slope
    assert log["Density: intercept"] == CAL.density_intercept
    assert log["HU: mu water"] == CAL.mu_water
    assert log["Density: unit"] == "mg HA/ccm"
    assert log["Calibration Data"] == CAL.description
    assert log["Index Measurement"] == 1234
    assert log["Minimum data value"] == native.min()
    assert raw.calibration == Calibration(**{**CAL.as_dict(), "source": "AIM processing log"})
    density = read_scan(path)
    np.testing.assert_array_equal(density.image, CAL.to_density(native))


def test_aim_log_lines_look_like_scanco(tmp_path):
    path = write_aim(tmp_path / "G.AIM", grey(), spacing=0.082, calibration=CAL)
    text = read_scan(path, units="native").meta["processing_log_text"]
    lines = text.splitlines()
    assert lines[:2] == ["!", "! Processing Log"]
    assert "Mu_Scaling                                       8192" in lines
    assert "Density: slope                         1.60351904e+03" in lines
    assert all(line for line in lines)  # ITKIOScanco's log parser breaks on empty lines


def test_aim_masks(tmp_path):
    mask = np.zeros((4, 5, 6), dtype=bool)
    mask[1:3, 2:4, 1:5] = True
    scan = read_scan(write_aim(tmp_path / "SEG.AIM", mask, spacing=0.082))
    assert scan.units == "binary" and scan.meta["type_code"] == 0x00010001
    np.testing.assert_array_equal(scan.image, np.where(mask, 127, 0).astype(np.int8))
    labels = np.arange(120).reshape(4, 5, 6).astype(np.uint8)
    scan = read_scan(write_aim(tmp_path / "L.AIM", labels, spacing=0.082))
    assert scan.units == "labels" and scan.image.dtype == np.int8
    np.testing.assert_array_equal(scan.image, labels)


def test_aim_uncalibrated(tmp_path):
    path = write_aim(tmp_path / "U.AIM", np.ones((2, 3, 4), dtype=np.int32), spacing=0.05)
    with pytest.raises(CalibrationError):
        read_scan(path)
    scan = read_scan(path, units="native")
    assert scan.image.dtype == np.int16 and scan.meta["processing_log"]["Mu_Scaling"] == 1


@pytest.mark.parametrize("array,kwargs,error", [
    (np.zeros((2, 2, 2), dtype=np.float32), {}, TypeError),
    (np.full((2, 2, 2), 40000, dtype=np.int32), {}, ValueError),
    (np.zeros((2, 2), dtype=np.int16), {}, ValueError),
    (np.zeros((2, 2, 2), dtype=np.int16), {"origin": (0.01, 0, 0)}, ValueError),
    (np.zeros((2, 2, 2), dtype=np.int16), {"meta": {"bad  key": 1}}, ValueError),
    (np.zeros((2, 2, 2), dtype=np.int16), {"meta": {"k": "a\nb"}}, ValueError),
    (np.zeros((2, 2, 2), dtype=np.int16), {"calibration": 8192}, TypeError),
])
def test_write_aim_rejects(tmp_path, array, kwargs, error):
    with pytest.raises(error):
        write_aim(tmp_path / "x.aim", array, spacing=0.1, **kwargs)


def test_aim_rewrite_of_a_real_file_reads_back_identically(scanco_dir, tmp_path):
    original = read_scan(scanco_dir / "aluminum.aim", units="native")
    path = write_aim(tmp_path / "ALU.AIM", original.image, spacing=original.spacing,
                     calibration=original.calibration, origin=original.origin)
    again = read_scan(path, units="native")
    np.testing.assert_array_equal(again.image, original.image)
    assert again.spacing == original.spacing
    assert again.origin == pytest.approx(original.origin)
    assert again.meta["position_xyz"] == original.meta["position_xyz"]
    np.testing.assert_array_equal(read_scan(path).image,
                                  read_scan(scanco_dir / "aluminum.aim").image)
