"""One scan end to end: outputs, status records for every kind of failure, provenance."""

import json
import math

import numpy as np
import pytest

from microarch.io import read_scan, write_image
from microarch.workflow import _scan as scan_module
from microarch.workflow import analyse_scan, checksum, measure_scan, read_compartments

from .conftest import synthetic_density, write_scan

SMALL = (12, 40, 40)
FAST = {"smi": False, "plate_rod": False}


@pytest.fixture(scope="module")
def small_scan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("input")
    path = write_scan(folder / "small.nii.gz", synthetic_density(3, 0.3, shape=SMALL))
    return folder, path


def run(path, out, **options):
    options.setdefault("measure", FAST)
    options.setdefault("qc", {"n_slices": 2})
    return analyse_scan(path, scan_id="scan1", metrics=out / "metrics.json",
                        montage=out / "qc.png", images=out / "images", **options)


def test_outputs_of_a_good_scan(small_scan, tmp_path):
    folder, path = small_scan
    before = {p.name: checksum(p) for p in folder.iterdir()}
    record = run(path, tmp_path, measure={"smi": False},
                 info={"subject": "S1", "site": "radius", "visit": "V1", "role": "baseline"})
    assert record["status"] == "ok" and record["stage"] is None and record["reason"] == ""
    assert (record["subject"], record["visit"], record["role"]) == ("S1", "V1", "baseline")
    measures = record["measures"]
    for name in ("BV/TV", "Tb.Th", "Tb.Sp", "Tb.N", "Conn.D", "pBV/TV", "rBV/TV", "Tb.BMD",
                 "Ct.Th", "Ct.Po"):
        assert name in measures, name
    assert 0.1 < measures["BV/TV"] < 0.5
    assert record["units"]["Tb.Th"] == "mm" and record["units"]["Conn.D"] == "1/mm³"
    assert abs(measures["pBV/TV"] + measures["rBV/TV"] - measures["BV/TV"]) < 1e-9

    # the JSON on disk is strict (no NaN) and equals the returned record
    text = (tmp_path / "metrics.json").read_text(encoding="utf-8")
    on_disk = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert on_disk == record
    assert on_disk["measures"]["SMI"] is None  # switched off: NaN -> null

    # maps and compartments, on the scan's grid, consistent with the measures
    images = tmp_path / "images"
    assert sorted(p.name for p in images.iterdir()) == [
        "Tb.Sp.nii.gz", "Tb.Th.nii.gz", "compartments.nii.gz", "plate_rod.nii.gz"]
    masks = read_compartments(images / "compartments.nii.gz")
    assert masks["bone"].shape == SMALL
    assert not (masks["trabecular"] & masks["cortical"]).any()
    assert np.array_equal(masks["periosteal"], masks["trabecular"] | masks["cortical"])
    bone_in_roi = np.count_nonzero(masks["bone"] & masks["trabecular"])
    assert bone_in_roi / np.count_nonzero(masks["trabecular"]) == pytest.approx(
        measures["BV/TV"])
    thickness = read_scan(images / "Tb.Th.nii.gz")
    assert thickness.units == "mm" and thickness.spacing == pytest.approx((0.082,) * 3)
    assert (thickness.image[~masks["bone"]] == 0).all()
    labels = read_scan(images / "plate_rod.nii.gz").image
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert np.array_equal(labels > 0, masks["bone"] & masks["trabecular"])
    assert (tmp_path / "qc.png").stat().st_size > 1000

    # provenance: versions, parameters, the input's checksum; the input is untouched
    provenance = record["provenance"]
    assert provenance["inputs"][0]["sha256"] == checksum(path)
    assert provenance["parameters"]["measure"]["smi"] is False
    assert provenance["packages"]["numpy"] == np.__version__
    assert {p.name: checksum(p) for p in folder.iterdir()} == before


def test_a_corrupt_file_gives_a_status_record(tmp_path):
    bad = tmp_path / "in" / "broken.aim"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00" * 64)
    record = run(bad, tmp_path / "out")
    assert record["status"] == "failed" and record["stage"] == "read"
    assert record["error_type"] == "ScanFormatError" and "broken.aim" in record["reason"]
    assert record["measures"] == {}
    assert (tmp_path / "out" / "qc.png").stat().st_size > 1000
    assert list((tmp_path / "out" / "images").iterdir()) == []
    assert json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))["status"] == "failed"
    assert sorted(p.name for p in bad.parent.iterdir()) == ["broken.aim"]


def test_a_mask_instead_of_a_scan_is_refused_with_a_reason(tmp_path):
    mask = np.zeros(SMALL, bool)
    mask[2:8, 10:30, 10:30] = True
    path = write_image(tmp_path / "mask.nii.gz", mask, spacing=0.082)
    record = run(path, tmp_path / "out")
    assert record["status"] == "failed" and record["stage"] == "read"
    assert "not density" in record["reason"] and record["scan"]["units"] == "binary"


def test_a_scan_without_bone_fails_at_segmentation(tmp_path):
    path = write_scan(tmp_path / "empty.nii.gz", np.full(SMALL, 20.0, np.float32))
    record = run(path, tmp_path / "out")
    assert record["status"] == "failed" and record["stage"] == "segment"
    assert record["error_type"] == "SegmentationError" and "no bone" in record["reason"]
    # the picture shows the slices that could be read
    assert (tmp_path / "out" / "qc.png").stat().st_size > 1000


def test_on_error_raise_writes_the_record_then_raises(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(ValueError):
        run(bad, tmp_path / "out", on_error="raise")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))["status"] == "failed"


def test_a_periosteal_mask_replaces_the_automatic_contour(small_scan, tmp_path):
    _, path = small_scan
    scan = read_scan(path)
    _, y, x = np.indices(SMALL)
    contour = np.hypot(y - 19.5, x - 19.5) < 15.0
    mask_path = write_image(tmp_path / "contour.nii.gz", contour, spacing=scan.spacing)
    record = run(path, tmp_path / "out", mask=mask_path)
    assert record["status"] == "ok" and record["scan"]["mask"] == str(mask_path)
    masks = read_compartments(tmp_path / "out" / "images" / "compartments.nii.gz")
    assert np.array_equal(masks["periosteal"], contour)

    wrong = write_image(tmp_path / "wrong.nii.gz", contour[:6], spacing=scan.spacing)
    record = run(path, tmp_path / "out2", mask=wrong)
    assert record["status"] == "failed" and "must be on the scan's grid" in record["reason"]


def test_an_unavailable_or_failing_optional_measure_leaves_a_note(small_scan, tmp_path,
                                                                   monkeypatch):
    _, path = small_scan

    def missing():
        raise AttributeError("module 'microarch.measure' has no attribute 'plate_rod'")

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(scan_module, "_plate_rod_function", missing)
    monkeypatch.setattr("microarch.measure.cortical", broken)
    record = run(path, tmp_path, measure={"smi": False})
    assert record["status"] == "ok"
    assert any(n.startswith("plate/rod measures not available") for n in record["notes"])
    assert "cortical measures failed (RuntimeError: boom)" in record["notes"]
    assert "pBV/TV" not in record["measures"] and "Ct.Th" not in record["measures"]
    assert "BV/TV" in record["measures"] and "Tb.BMD" in record["measures"]
    assert not (tmp_path / "images" / "plate_rod.nii.gz").exists()


def test_a_failing_trabecular_measure_fails_the_scan(small_scan, tmp_path, monkeypatch):
    _, path = small_scan

    def broken(*args, **kwargs):
        raise ArithmeticError("kernel exploded")

    monkeypatch.setattr("microarch.measure.trabecular", broken)
    record = run(path, tmp_path)
    assert record["status"] == "failed" and record["stage"] == "measure (trabecular)"
    assert record["error_type"] == "ArithmeticError" and record["measures"] == {}
    # without files, the original error reaches the caller
    scan = read_scan(path)
    with pytest.raises(ArithmeticError, match="kernel exploded"):
        measure_scan(scan.image, spacing=scan.spacing, errors="record")


def test_measure_scan_without_files(small_scan):
    _, path = small_scan
    scan = read_scan(path)
    result = measure_scan(scan.image, spacing=scan.spacing, measure=FAST)
    assert math.isnan(result.measures["SMI"])
    assert set(result.maps) == {"Tb.Th", "Tb.Sp", "Tb.N"}
    assert all(m.dtype == np.float32 for m in result.maps.values())
    assert set(result.timings) >= {"segment", "trabecular", "density", "cortical"}
    with pytest.raises(ValueError, match="errors"):
        measure_scan(scan.image, spacing=scan.spacing, errors="ignore")
