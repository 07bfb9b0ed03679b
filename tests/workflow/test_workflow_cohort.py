"""Cohort tables and figures from per-scan records and per-subject tables."""

import json
import math

import pandas as pd
import pytest

from microarch.workflow import collect_cohort, contact_sheet, measure_slug, plot_trajectory
from microarch.workflow._cohort import METRICS_COLUMNS, metrics_table
from microarch.workflow._subject import CONNECTIONS_COLUMNS, LONGITUDINAL_COLUMNS, MEMORY_COLUMNS


def record(scan_id, status="ok", **measures):
    return {"scan_id": scan_id, "subject": scan_id[:2], "site": "radius",
            "visit": scan_id[-2:], "role": "other", "status": status,
            "stage": None if status == "ok" else "read",
            "reason": "" if status == "ok" else "truncated", "notes": ["a", "b"],
            "measures": measures}


def test_metrics_table_keeps_failed_scans_and_measure_order(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(record("S2_V1", "failed")), encoding="utf-8")
    table = metrics_table([record("S1_V1", **{"BV/TV": 0.2, "Tb.Th": None}),
                           record("S1_V2", **{"Tb.Th": 0.3, "Conn.D": 4.0}), path])
    assert list(table.columns) == METRICS_COLUMNS + ["BV/TV", "Tb.Th", "Conn.D"]
    assert list(table["status"]) == ["ok", "ok", "failed"]
    assert table.loc[2, "reason"] == "truncated" and table.loc[0, "notes"] == "a; b"
    assert math.isnan(table.loc[0, "Tb.Th"]) and table.loc[1, "Tb.Th"] == 0.3
    assert table["Tb.Th"].dtype == float


def write_tsv(path, rows, columns):
    pd.DataFrame(rows, columns=columns).to_csv(path, sep="\t", index=False)
    return path


def test_collect_cohort_writes_every_table_even_when_empty(tmp_path):
    metrics = []
    for item in (record("S1_V1", **{"BV/TV": 0.2}), record("S1_V2", "failed")):
        path = tmp_path / f"{item['scan_id']}.json"
        path.write_text(json.dumps(item), encoding="utf-8")
        metrics.append(path)
    out = {name: tmp_path / "results" / f"{name}.tsv"
           for name in ("metrics", "longitudinal", "memory", "registration", "remodelling",
                        "units", "connections")}
    counts = collect_cohort(metrics, **{f"{k}_path": v for k, v in out.items()})
    assert counts == {"scans": 2, "failed": 1, "longitudinal": 0, "memory": 0}
    assert list(pd.read_csv(out["memory"], sep="\t").columns) == MEMORY_COLUMNS
    assert list(pd.read_csv(out["longitudinal"], sep="\t").columns) == LONGITUDINAL_COLUMNS
    assert list(pd.read_csv(out["connections"], sep="\t").columns) == CONNECTIONS_COLUMNS
    units = pd.read_csv(out["units"], sep="\t", dtype=str)
    assert units.to_dict("list") == {"measure": ["BV/TV"], "unit": ["1"]}

    # per-subject tables are concatenated, in order, with subject and site kept as text
    memory_a = write_tsv(tmp_path / "ma.tsv", [{"subject": "01", "site": "radius",
                                                "measure": "Conn.D", "index": 0.8}],
                         MEMORY_COLUMNS)
    memory_b = write_tsv(tmp_path / "mb.tsv", [], MEMORY_COLUMNS)
    collect_cohort(metrics, memories=[memory_a, memory_b],
                   **{f"{k}_path": v for k, v in out.items()})
    memory = pd.read_csv(out["memory"], sep="\t", dtype={"subject": str})
    assert memory[["subject", "measure", "index"]].values.tolist() == [["01", "Conn.D", 0.8]]


def test_trajectory_by_role_and_empty(tmp_path):
    rows = []
    for subject, values in (("S1", (4.0, 3.0, 3.2)), ("S2", (5.0, 4.0, 4.5))):
        for index, (visit, role, value) in enumerate(zip(
                ("V1", "V2", "V3"), ("baseline", "on_ai", "post_withdrawal"), values)):
            rows.append({"subject": subject, "site": "radius", "measure": "Conn.D",
                         "visit": visit, "role": role, "visit_index": index, "value": value})
    table = pd.DataFrame(rows, columns=LONGITUDINAL_COLUMNS)
    figure = plot_trajectory(table, measure="Conn.D", path=tmp_path / "c.png")
    axes = figure.axes[0]
    assert len(axes.lines) == 2
    assert [t.get_text() for t in axes.get_xticklabels()] == [
        "baseline", "on AI", "after withdrawal"]
    assert list(axes.lines[0].get_ydata()) == [4.0, 3.0, 3.2]
    assert "1/mm³" in axes.get_ylabel()
    assert (tmp_path / "c.png").stat().st_size > 1000

    path = tmp_path / "empty.tsv"
    write_tsv(path, [], LONGITUDINAL_COLUMNS)
    figure = plot_trajectory(path, measure="BV/TV", path=tmp_path / measure_slug("BV/TV"))
    assert "no longitudinal data" in figure.axes[0].texts[0].get_text()


def test_contact_sheet_captions(tmp_path):
    from matplotlib.figure import Figure

    montages, metrics = [], []
    for item in (record("S1_V1"), record("S1_V2", "failed")):
        picture = tmp_path / f"{item['scan_id']}.png"
        Figure(figsize=(1, 1)).savefig(picture)
        montages.append(picture)
        path = tmp_path / f"{item['scan_id']}.json"
        path.write_text(json.dumps(item), encoding="utf-8")
        metrics.append(path)
    figure = contact_sheet(montages, metrics, path=tmp_path / "sheet.png", columns=2)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["S1_V1: ok", "S1_V2: failed (read)"]
    with pytest.raises(ValueError, match="2 montages but 1 metrics"):
        contact_sheet(montages, metrics[:1], path=tmp_path / "x.png")
