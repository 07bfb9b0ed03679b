"""One subject: the comparison runs on the usable visits and always writes its tables."""

import json
import sys

import pandas as pd
import pytest

from microarch.io import write_image
from microarch.workflow import compare_subject
from microarch.workflow._subject import (
    CONNECTIONS_COLUMNS,
    LONGITUDINAL_COLUMNS,
    MEMORY_COLUMNS,
    REGISTRATION_COLUMNS,
)

from .conftest import SPACING, VISITS, synthetic_scan, write_scan

SMALL = (12, 40, 40)
FAST = {"plate_rod": False, "remodelling": "none"}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """Three visits of one subject as the scan stage leaves them (without running it)."""
    root = tmp_path_factory.mktemp("subject")
    visits, scans, metrics, images = [], [], [], []
    (root / "in").mkdir()
    for visit, role, fraction, shift in VISITS:
        scan_id = f"S9_{visit}"
        density, labels = synthetic_scan(5, fraction, shape=SMALL, shift=shift)
        path = write_scan(root / "in" / f"{scan_id}.nii.gz", density)
        out = root / "scans" / scan_id
        (out / "images").mkdir(parents=True)
        write_image(out / "images" / "compartments.nii.gz", labels, spacing=SPACING,
                    units="labels")
        (out / "metrics.json").write_text(json.dumps({"scan_id": scan_id, "status": "ok"}), encoding="utf-8")
        visits.append({"scan_id": scan_id, "visit": visit, "role": role, "spacing": None})
        scans.append(path)
        metrics.append(out / "metrics.json")
        images.append(out / "images")
    return root, visits, scans, metrics, images


def compare(analysed, out, *, metrics=None, visits=None, **options):
    _, default_visits, scans, default_metrics, images = analysed
    paths = {name: out / f"{name}.tsv" for name in ("change", "memory", "registration",
                                                     "remodelling", "connections")}
    summary = compare_subject(
        visits or default_visits, scans=scans, metrics=metrics or default_metrics,
        images=images, subject="S9", site="radius", summary=out / "comparison.json",
        figure=out / "registration.png", **paths, **options)
    tables = {name: pd.read_csv(path, sep="\t") for name, path in paths.items()}
    return summary, tables


def test_all_visits_compared(analysed, tmp_path):
    summary, tables = compare(analysed, tmp_path,
                              longitudinal={"plate_rod": False, "remodelling": "consecutive"})
    assert summary["status"] == "ok", summary
    assert summary["visits"] == ["V1", "V2", "V3"] and summary["baseline"] == "V1"
    assert summary["region"] == "trabecular" and summary["common_region_voxels"] > 0
    change, memory = tables["change"], tables["memory"]
    assert list(change.columns[:len(LONGITUDINAL_COLUMNS)]) == LONGITUDINAL_COLUMNS
    assert list(memory.columns) == MEMORY_COLUMNS
    assert set(change["scan_id"]) == {"S9_V1", "S9_V2", "S9_V3"}
    assert (change["site"] == "radius").all()
    bvtv = memory.set_index("measure").loc["BV/TV"]
    # the synthetic therapy lowers BV/TV and withdrawal brings part of it back
    assert bvtv["on_ai"] < bvtv["post"] < bvtv["baseline"]
    assert 0 < bvtv["index"] < 1
    registration = tables["registration"]
    assert list(registration.columns[:len(REGISTRATION_COLUMNS)]) == REGISTRATION_COLUMNS
    assert registration["used"].all()
    assert list(registration["status"]) == ["reference", "ok", "ok"]
    assert len(tables["remodelling"]) == 2
    connections = tables["connections"]
    assert list(connections.columns[:len(CONNECTIONS_COLUMNS)]) == CONNECTIONS_COLUMNS
    assert len(connections) == 1  # one post-withdrawal visit
    row = connections.iloc[0]
    assert (row["subject"], row["site"], row["post_visit"]) == ("S9", "radius", "V3")
    # these 12-slice scans are too small for a junction graph: counts are 0 with a reason
    assert row["tracked"] >= row["present_baseline"] >= row["lost_on_ai"] >= 0
    assert row["restored"] + row["still_lost"] == row["lost_on_ai"]
    assert row["lost_on_ai"] > 0 or isinstance(row["reason"], str)
    assert (tmp_path / "registration.png").stat().st_size > 5000
    on_disk = json.loads((tmp_path / "comparison.json").read_text(encoding="utf-8"))
    assert on_disk["status"] == "ok" and on_disk["provenance"]["parameters"]


def failed_metrics(analysed, tmp_path, visit_index):
    _, _, _, metrics, _ = analysed
    changed = list(metrics)
    record = json.loads(metrics[visit_index].read_text(encoding="utf-8"))
    record.update(status="failed", stage="read", reason="truncated file")
    changed[visit_index] = tmp_path / "failed.json"
    changed[visit_index].write_text(json.dumps(record), encoding="utf-8")
    return changed


def test_a_failed_visit_is_left_out(analysed, tmp_path):
    metrics = failed_metrics(analysed, tmp_path, 1)
    summary, tables = compare(analysed, tmp_path, metrics=metrics, longitudinal=FAST)
    assert summary["status"] == "ok"
    assert summary["visits"] == ["V1", "V3"]
    assert summary["excluded"] == {"V2": "the scan failed at read: truncated file"}
    registration = tables["registration"].set_index("visit")
    assert list(registration.index) == ["V1", "V2", "V3"]
    assert registration.loc["V2", "status"] == "excluded"
    assert not registration.loc["V2", "used"]
    assert set(tables["change"]["visit"]) == {"V1", "V3"}
    # no on-AI visit left: the memory index is undefined, and says why
    memory = tables["memory"]
    assert memory["index"].isna().all()
    assert memory["reason"].str.contains("no on_ai visit").all()


def test_one_usable_visit_is_skipped_with_empty_tables(analysed, tmp_path):
    metrics = failed_metrics(analysed, tmp_path, 0)
    record = json.loads(metrics[2].read_text(encoding="utf-8"))
    record["status"] = "failed"
    metrics[2] = tmp_path / "failed2.json"
    metrics[2].write_text(json.dumps(record), encoding="utf-8")
    summary, tables = compare(analysed, tmp_path, metrics=metrics, longitudinal=FAST)
    assert summary["status"] == "skipped"
    assert "1 usable visit" in summary["reason"]
    assert tables["change"].empty and list(tables["change"].columns) == LONGITUDINAL_COLUMNS
    assert tables["memory"].empty and list(tables["memory"].columns) == MEMORY_COLUMNS
    assert len(tables["registration"]) == 3


def test_disabled_and_unavailable_comparisons(analysed, tmp_path, monkeypatch):
    summary, tables = compare(analysed, tmp_path / "a", longitudinal={"enabled": False})
    assert summary["status"] == "skipped" and "disabled" in summary["reason"]
    assert tables["memory"].empty

    monkeypatch.setitem(sys.modules, "microarch.longitudinal", None)
    summary, tables = compare(analysed, tmp_path / "b", longitudinal=FAST)
    assert summary["status"] == "not available"
    assert "microarch.longitudinal is not available" in summary["reason"]
    assert (tmp_path / "b" / "registration.png").exists()


def test_mismatched_inputs_are_refused(analysed, tmp_path):
    _, visits, _, _, _ = analysed
    with pytest.raises(ValueError, match="differ in length"):
        compare(analysed, tmp_path, visits=visits[:2])


def test_nothing_is_written_next_to_the_scans(analysed):
    root = analysed[0]
    assert sorted(p.name for p in (root / "in").iterdir()) == [
        "S9_V1.nii.gz", "S9_V2.nii.gz", "S9_V3.nii.gz"]
