"""Demo cohort: files, formats, sample sheet, truth, byte-identical regeneration."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from microarch.io import read_scan
from microarch.phantoms import AILoss, simulate_visits, visits_figure, write_demo_cohort
from microarch.phantoms._cohort import DEMO_LOSS, DEMO_SEED, _subject_seed

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DATA = REPO / "sample_data"
SMALL = {"max_shift_mm": 0.2, "max_rotation_deg": 1.0, "cortical_thickness": 0.5}
SHAPE = (10, 56, 50)
COLUMNS = ["scan_id", "subject", "site", "visit", "role", "path", "mask_path", "spacing"]


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _sheet(path):
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return header, [dict(zip(header, line.split("\t"))) for line in lines[1:]]


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    files = write_demo_cohort(root, n_subjects=3, shape=SHAPE, simulation_options=SMALL)
    return root, files


def test_layout_and_sample_sheet(small_cohort):
    root, files = small_cohort
    header, rows = _sheet(root / "samples.tsv")
    assert header == COLUMNS
    assert [r["scan_id"] for r in rows] == [f"AI0{s}_V{v}" for s in (1, 2, 3) for v in (1, 2, 3)]
    assert [r["role"] for r in rows[:3]] == ["baseline", "on_ai", "post_withdrawal"]
    assert {r["site"] for r in rows} == {"radius"}
    assert {r["mask_path"] for r in rows} == {""} and {r["spacing"] for r in rows} == {""}
    for row in rows:
        assert (root / row["path"]).is_file()
    suffixes = [Path(r["path"]).name.split(".", 1)[1] for r in rows]
    assert suffixes == ["AIM"] * 3 + ["nii.gz"] * 3 + ["mha"] * 3
    assert sorted(p.name for p in (root / "truth").iterdir()) == [
        "AI01.json", "AI02.json", "AI03.json"]
    # SHA256SUMS lists every other file written, with its hash.
    sums = dict(line.split("  ")[::-1]
                for line in (root / "SHA256SUMS").read_text(encoding="utf-8").splitlines())
    assert set(sums) == {p.relative_to(root).as_posix() for p in files[:-1]}
    for name, digest in sums.items():
        assert _sha256(root / name) == digest


def test_scans_read_back_as_calibrated_density(small_cohort):
    """Every format reads back (through microarch.io) to the simulated scan."""
    root, _ = small_cohort
    _, rows = _sheet(root / "samples.tsv")
    expected_formats = {"AI01": "AIM v020", "AI02": "NIfTI", "AI03": "MetaImage"}
    series = {
        name: simulate_visits(SHAPE, seed=_subject_seed(DEMO_SEED, i), recovery=recovery,
                              reversal_fraction=fraction, loss=AILoss(**DEMO_LOSS), **SMALL)
        for i, (name, recovery, fraction) in enumerate(
            [("AI01", "withdrawal", 1.0), ("AI02", "reversal", 0.5),
             ("AI03", "reversal", 1.0)])
    }
    for row in rows:
        scan = read_scan(root / row["path"])
        visit = series[row["subject"]][row["visit"]]
        assert scan.format.startswith(expected_formats[row["subject"]])
        assert scan.units == "mg HA/cm³"
        assert scan.spacing == pytest.approx((0.082, 0.082, 0.082))
        assert scan.calibration.density_slope == pytest.approx(1603.51904)
        native = read_scan(root / row["path"], units="native").image
        np.testing.assert_array_equal(native, visit.scan.native)
        np.testing.assert_allclose(scan.image, visit.scan.density, atol=1e-3)


def test_truth_files(small_cohort):
    root, _ = small_cohort
    kinds = {"AI01": ("withdrawal", 1.0), "AI02": ("reversal", 0.5), "AI03": ("reversal", 0.0)}
    for subject, (recovery, expected) in kinds.items():
        truth = json.loads((root / "truth" / f"{subject}.json").read_text(encoding="utf-8"))
        assert truth["subject"] == subject
        assert truth["recovery"] == recovery
        assert truth["expected_memory_index"]["Conn.D"] == expected
        assert [v["role"] for v in truth["visits"]] == ["baseline", "on_ai", "post_withdrawal"]
        assert truth["files"]["V1"].startswith(f"scans/{subject}_V1")
        transform = truth["visits"][1]["transform"]
        assert set(transform) >= {"matrix", "offset", "centre", "translation", "rotation_deg"}
        for edge in truth["connections"]["lost_on_ai"]:
            assert edge in truth["connections"]["baseline"]


def test_regeneration_is_byte_identical(small_cohort, tmp_path):
    """One subject written alone equals the same subject in the full run."""
    root, _ = small_cohort
    files = write_demo_cohort(tmp_path, n_subjects=3, subjects=["AI02", "AI01"], shape=SHAPE,
                              simulation_options=SMALL)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in files)
    assert "SHA256SUMS" not in names
    assert len(names) == 1 + 2 * 4
    for name in names:
        assert _sha256(tmp_path / name) == _sha256(root / name), name


def test_committed_sample_data_regenerates(tmp_path):
    """sample_data/ is what write_demo_cohort() writes: the sample sheet and a subject
    in compressed NIfTI, regenerated here, match the committed files byte for byte (the
    compressed bytes assume this SimpleITK/zlib build; the voxels must match anyway)."""
    if not (SAMPLE_DATA / "SHA256SUMS").is_file():
        pytest.skip("sample_data/ is not in this checkout")
    sums = dict(line.split("  ")[::-1]
                for line in (SAMPLE_DATA / "SHA256SUMS").read_text(encoding="utf-8").splitlines())
    for name, digest in sums.items():
        assert _sha256(SAMPLE_DATA / name) == digest, f"{name} differs from SHA256SUMS"
    out = tmp_path
    write_demo_cohort(out, subjects=["AI02"])
    assert _sha256(out / "samples.tsv") == sums["samples.tsv"]
    assert _sha256(out / "truth/AI02.json") == sums["truth/AI02.json"]
    for visit in ("V1", "V2", "V3"):
        name = f"scans/AI02_{visit}.nii.gz"
        fresh = read_scan(out / name, units="native").image
        committed = read_scan(SAMPLE_DATA / name, units="native").image
        np.testing.assert_array_equal(fresh, committed)
        assert _sha256(out / name) == sums[name]


def test_committed_truth_has_the_three_memory_indices():
    if not (SAMPLE_DATA / "truth").is_dir():
        pytest.skip("sample_data/ is not in this checkout")
    index = {s: json.loads((SAMPLE_DATA / "truth" / f"{s}.json").read_text(encoding="utf-8"))["memory_index"]
             for s in ("AI01", "AI02", "AI03")}
    assert index["AI01"]["Conn.D"] == 1.0
    assert index["AI02"]["Conn.D"] == pytest.approx(0.5, abs=1e-9)
    assert index["AI03"]["Conn.D"] == 0.0
    for subject in ("AI01", "AI02", "AI03"):
        truth = json.loads((SAMPLE_DATA / "truth" / f"{subject}.json").read_text(encoding="utf-8"))
        change = truth["change_percent"]["on_ai"]
        # the demo's loss (DEMO_LOSS) cuts a quarter of the connecting rods: total vBMD
        # stays in the clinical range, trabecular vBMD falls more than the calibrated
        # defaults (tested in test_phantoms_simulation) and Conn.D by about 40 %
        assert -6.0 <= change["own Tt.BMD"] <= -3.0
        assert -5.5 <= change["own Tb.BMD"] <= -3.0
        assert change["Conn.D"] < -35.0
        assert truth["parameters"]["loss"] == {**truth["parameters"]["loss"], **DEMO_LOSS}
    size = sum(p.stat().st_size for p in SAMPLE_DATA.rglob("*") if p.is_file())
    assert size < 15e6


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown subjects"):
        write_demo_cohort(tmp_path, n_subjects=2, subjects=["AI03"])
    with pytest.raises(ValueError, match="n_subjects"):
        write_demo_cohort(tmp_path, n_subjects=0)
    with pytest.raises(ValueError, match="must not set"):
        write_demo_cohort(tmp_path, simulation_options={"seed": 1})
    target = tmp_path / "file"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(NotADirectoryError):
        write_demo_cohort(target)


def test_visits_figure(tmp_path):
    series = simulate_visits(SHAPE, seed=1, **SMALL)
    figure = visits_figure(series, path=tmp_path / "visits.png", slab=4)
    assert len(figure.axes) == 6
    assert (tmp_path / "visits.png").stat().st_size > 10_000
