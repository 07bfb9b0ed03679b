"""SimpleITK formats (NRRD, MetaImage with detached data, DICOM series) and TIFF."""

import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from microarch.io import Calibration, CalibrationError, ScanFormatError, read_scan

VOLUME = (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 37 - 300).astype(np.int16)


def sitk_image(array, spacing_xyz=(0.06, 0.05, 0.08), origin_xyz=(1.0, 2.0, 3.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    image.SetOrigin(origin_xyz)
    return image


@pytest.mark.parametrize("name", ["v.nrrd", "v.mhd", "v.mha", "v.nii", "v.nii.gz"])
def test_sitk_formats_swap_axes_at_the_edge(tmp_path, name):
    sitk.WriteImage(sitk_image(VOLUME), str(tmp_path / name))
    scan = read_scan(tmp_path / name, units="native")
    np.testing.assert_array_equal(scan.image, VOLUME)
    assert scan.spacing == pytest.approx((0.08, 0.05, 0.06))  # (z, y, x)
    assert scan.origin == pytest.approx((3.0, 2.0, 1.0))
    assert scan.units == "native"


def test_metaimage_header_with_odd_name_and_detached_data(tmp_path):
    sitk.WriteImage(sitk_image(VOLUME), str(tmp_path / "v.mhd"))
    (tmp_path / "v.mhd").rename(tmp_path / "v.mhd;1")
    np.testing.assert_array_equal(read_scan(tmp_path / "v.mhd;1", units="native").image, VOLUME)


def test_missing_detached_data(tmp_path):
    sitk.WriteImage(sitk_image(VOLUME), str(tmp_path / "v.mhd"))
    (tmp_path / "v.raw").unlink()
    with pytest.raises(ScanFormatError, match="not found"):
        read_scan(tmp_path / "v.mhd", units="native")


def test_lying_nifti_header_is_refused_before_allocating(tmp_path):
    sitk.WriteImage(sitk_image(VOLUME), str(tmp_path / "v.nii"))
    content = bytearray((tmp_path / "v.nii").read_bytes())
    struct.pack_into("<3h", content, 42, 30000, 30000, 30000)  # dim[1..3]
    (tmp_path / "lie.nii").write_bytes(bytes(content))
    with pytest.raises(ScanFormatError, match="claims"):
        read_scan(tmp_path / "lie.nii", units="native")
    (tmp_path / "lie.nii.gz").write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(ScanFormatError, match="claims"):
        read_scan(tmp_path / "lie.nii.gz", units="native")


def test_lying_metaimage_header(tmp_path):
    sitk.WriteImage(sitk_image(VOLUME), str(tmp_path / "v.mha"), useCompression=True)
    content = (tmp_path / "v.mha").read_bytes().replace(b"DimSize = 6 5 4",
                                                        b"DimSize = 6000 5000 4000")
    (tmp_path / "lie.mha").write_bytes(content)
    with pytest.raises(ScanFormatError, match="claims"):
        read_scan(tmp_path / "lie.mha", units="native")


def test_truncated_nifti(tmp_path):
    sitk.WriteImage(sitk_image(VOLUME), str(tmp_path / "v.nii"))
    content = (tmp_path / "v.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(content[:-50])
    with pytest.raises(ScanFormatError):
        read_scan(tmp_path / "cut.nii", units="native")
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(content)[:-30])
    with pytest.raises(ScanFormatError):
        read_scan(tmp_path / "cut.nii.gz", units="native")


def test_2d_image_is_refused(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(VOLUME[0]), str(tmp_path / "flat.nrrd"))
    with pytest.raises(ScanFormatError, match="2D"):
        read_scan(tmp_path / "flat.nrrd", units="native")


def test_spacing_argument_overrides_the_file(tmp_path):
    sitk.WriteImage(sitk_image(VOLUME), str(tmp_path / "v.nrrd"))
    scan = read_scan(tmp_path / "v.nrrd", units="native", spacing=0.1)
    assert scan.spacing == (0.1, 0.1, 0.1)
    assert scan.meta["file_spacing"] == pytest.approx((0.08, 0.05, 0.06))


def test_foreign_grey_nifti_with_caller_calibration(tmp_path):
    sitk.WriteImage(sitk_image(VOLUME), str(tmp_path / "v.nii.gz"))
    with pytest.raises(CalibrationError):
        read_scan(tmp_path / "v.nii.gz")
    cal = Calibration(mu_scaling=8192, density_slope=1600.0, density_intercept=-400.0)
    scan = read_scan(tmp_path / "v.nii.gz", calibration=cal)
    np.testing.assert_allclose(scan.image, 1600 / 8192 * VOLUME - 400.0, atol=1e-3)


def test_foreign_uint8_mask_is_binary(tmp_path):
    sitk.WriteImage(sitk_image((VOLUME > 0).astype(np.uint8) * 255), str(tmp_path / "m.nrrd"))
    scan = read_scan(tmp_path / "m.nrrd")
    assert scan.units == "binary"
    assert set(np.unique(scan.image).tolist()) == {0, 255}


# --------------------------------------------------------------------------------------
# DICOM series
# --------------------------------------------------------------------------------------


def write_dicom_series(folder, volume, spacing_xyz=(0.06, 0.05, 0.5), modality="CT",
                       series_uid="1.2.826.0.1.3680043.2.1125.2"):
    folder.mkdir(exist_ok=True)
    image = sitk_image(volume, spacing_xyz, (1.0, 2.0, 3.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        tags = {
            "0008|0060": modality, "0010|0010": "Phantom",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": series_uid,
            "0020|0013": str(k + 1), "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0008|0018": f"{series_uid}.{k + 1}",
            "0028|1052": "0", "0028|1053": "1",
        }
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(plane)


def test_dicom_series_folder(tmp_path):
    write_dicom_series(tmp_path / "ct", VOLUME)
    scan = read_scan(tmp_path / "ct", units="native")
    assert scan.format == "DICOM series"
    np.testing.assert_array_equal(scan.image, VOLUME)
    assert scan.spacing == pytest.approx((0.5, 0.05, 0.06))
    assert scan.units == "HU"  # GDCM applied the rescale of a CT series
    assert scan.meta["dicom 0008|0060"] == "CT"
    with pytest.raises(CalibrationError):
        read_scan(tmp_path / "ct")
    cal = Calibration(mu_scaling=8192, density_slope=1603.51904,
                      density_intercept=-391.209015, mu_water=0.2409)
    density = read_scan(tmp_path / "ct", calibration=cal)
    np.testing.assert_allclose(density.image, cal.to_density(VOLUME, from_quantity="hu"),
                               atol=1e-3)


def test_dicom_folder_problems(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanFormatError, match="no DICOM"):
        read_scan(tmp_path / "empty")
    write_dicom_series(tmp_path / "two", VOLUME)
    write_dicom_series(tmp_path / "two2", VOLUME, series_uid="1.2.826.0.1.3680043.2.1125.9")
    for path in (tmp_path / "two2").iterdir():
        path.rename(tmp_path / "two" / ("b" + path.name))
    with pytest.raises(ScanFormatError, match="2 DICOM series"):
        read_scan(tmp_path / "two")


# --------------------------------------------------------------------------------------
# TIFF
# --------------------------------------------------------------------------------------


def test_imagej_tiff_spacing(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, VOLUME, imagej=True, resolution=(1 / 60.7, 1 / 50.0),
                     metadata={"spacing": 82.0, "unit": "micron", "axes": "ZYX"})
    scan = read_scan(path, units="native")
    np.testing.assert_array_equal(scan.image, VOLUME)
    assert scan.spacing == pytest.approx((0.082, 0.05, 0.0607))


def test_ome_tiff_spacing(tmp_path):
    path = tmp_path / "s.ome.tif"
    tifffile.imwrite(path, VOLUME, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.06, "PhysicalSizeXUnit": "mm",
        "PhysicalSizeY": 50, "PhysicalSizeYUnit": "µm", "PhysicalSizeZ": 0.08,
        "PhysicalSizeZUnit": "mm"})
    scan = read_scan(path, units="native")
    np.testing.assert_array_equal(scan.image, VOLUME)
    assert scan.spacing == pytest.approx((0.08, 0.05, 0.06))


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_plain_tiff_needs_spacing(tmp_path, compression):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, VOLUME, photometric="minisblack", compression=compression)
    with pytest.raises(ScanFormatError, match="spacing="):
        read_scan(path, units="native")
    scan = read_scan(path, units="native", spacing=(0.1, 0.05, 0.05))
    assert scan.spacing == (0.1, 0.05, 0.05)
    np.testing.assert_array_equal(scan.image, VOLUME)
    with pytest.raises(CalibrationError):
        read_scan(path, spacing=0.1)


def test_tiff_mask_and_single_page(tmp_path):
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, (VOLUME > 0).astype(np.uint8) * 255, photometric="minisblack")
    assert read_scan(path, spacing=0.1).units == "binary"
    tifffile.imwrite(tmp_path / "one.tif", VOLUME[0], photometric="minisblack")
    assert read_scan(tmp_path / "one.tif", units="native", spacing=0.1).shape == (1, 5, 6)


def test_colour_and_broken_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((5, 6, 3), np.uint8), photometric="rgb")
    with pytest.raises(ScanFormatError, match="colour"):
        read_scan(tmp_path / "rgb.tif", units="native", spacing=0.1)
    tifffile.imwrite(tmp_path / "t.tif", VOLUME, photometric="minisblack")
    content = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(content[:100])
    with pytest.raises(ScanFormatError):
        read_scan(tmp_path / "cut.tif", units="native", spacing=0.1)


@pytest.mark.parametrize("name", ["v.mha", "v.nrrd", "v.nii.gz"])
def test_truncated_compressed_files(tmp_path, name):
    volume = np.random.default_rng(0).integers(-500, 500, size=(6, 7, 8)).astype(np.int16)
    sitk.WriteImage(sitk_image(volume), str(tmp_path / name), useCompression=True)
    content = (tmp_path / name).read_bytes()
    np.testing.assert_array_equal(read_scan(tmp_path / name, units="native").image, volume)
    (tmp_path / ("cut" + name)).write_bytes(content[:-20])
    with pytest.raises(ScanFormatError):
        read_scan(tmp_path / ("cut" + name), units="native")


def test_single_dicom_file(tmp_path):
    write_dicom_series(tmp_path / "ct", VOLUME)
    scan = read_scan(tmp_path / "ct" / "slice002.dcm", units="native")
    assert scan.format == "DICOM" and scan.units == "HU"
    np.testing.assert_array_equal(scan.image[0], VOLUME[2])


def test_importing_microarch_io_does_not_import_simpleitk_or_tifffile():
    code = ("import sys, microarch.io; "
            "print(sorted(m for m in ('SimpleITK', 'tifffile', 'numba') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            encoding="utf-8", errors="replace", check=True)
    assert result.stdout.strip() == "[]"
