"""The real Snakefile in a subprocess on a tiny cohort with one corrupt scan.

Two subjects x three visits (baseline, on AI, after withdrawal) of 16x48x48 voxels;
S02's on-AI scan is garbage. The run must finish, report the failure in the tables,
compare S02 on its two good visits, write the report, and do nothing when rerun.
"""

import importlib.util
import re
import time

import pandas as pd
import pytest

from microarch.workflow import checksum
from microarch.workflow._subject import CONNECTIONS_COLUMNS, MEMORY_COLUMNS

from .conftest import (
    REPO,
    keep_numba_cache,
    make_cohort,
    run_snakemake,
    seed_numba_cache,
    write_sheet,
)

pytestmark = pytest.mark.slow

SHAPE = (16, 48, 48)
CORRUPT = "S02_V2"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, kept_numba_cache):
    workdir = tmp_path_factory.mktemp("cohort")
    rows = make_cohort(workdir, shape=SHAPE, corrupt=CORRUPT)
    inputs = {p.name: checksum(p) for p in (workdir / "scans").iterdir()}
    seed_numba_cache(workdir, kept_numba_cache)
    start = time.perf_counter()
    result = run_snakemake(workdir, "--cores", "2")
    elapsed = time.perf_counter() - start
    keep_numba_cache(workdir, kept_numba_cache)
    return {"workdir": workdir, "rows": rows, "inputs": inputs, "result": result,
            "elapsed": elapsed}


def test_every_scan_has_metrics_and_the_failure_is_in_the_table(finished):
    workdir = finished["workdir"]
    results = workdir / "results"
    for row in finished["rows"]:
        assert (results / "scans" / row["scan_id"] / "metrics.json").is_file()
        assert (results / "scans" / row["scan_id"] / "qc.png").is_file()
    metrics = pd.read_csv(results / "metrics.tsv", sep="\t").set_index("scan_id")
    assert sorted(metrics.index) == sorted(r["scan_id"] for r in finished["rows"])
    failed = metrics.loc[CORRUPT]
    assert failed["status"] == "failed" and failed["stage"] == "read"
    assert f"{CORRUPT}.nii.gz" in failed["reason"]
    assert pd.isna(failed["BV/TV"])
    good = metrics.drop(index=CORRUPT)
    assert (good["status"] == "ok").all()
    assert good["BV/TV"].between(0.1, 0.6).all() and good["Tb.Th"].gt(0).all()
    units = pd.read_csv(results / "units.tsv", sep="\t", dtype=str).set_index("measure")
    assert units.loc["Tb.Th", "unit"] == "mm" and units.loc["Tb.BMD", "unit"] == "mg HA/cm³"
    assert (results / "qc" / "contact_sheet.png").stat().st_size > 10_000


def test_memory_and_longitudinal_tables(finished):
    results = finished["workdir"] / "results"
    memory = pd.read_csv(results / "memory.tsv", sep="\t")
    assert list(memory.columns) == MEMORY_COLUMNS
    s01 = memory[memory["subject"] == "S01"].set_index("measure")
    assert {"Conn.D", "BV/TV", "Tb.Th", "Tb.N"} <= set(s01.index)
    # the synthetic therapy lowers BV/TV, withdrawal brings part of it back
    bvtv = s01.loc["BV/TV"]
    assert bvtv["on_ai"] < bvtv["post"] < bvtv["baseline"] and 0 < bvtv["index"] < 1
    # S02 lost its on-AI scan: compared on V1 and V3, no memory index, and why
    s02 = memory[memory["subject"] == "S02"]
    assert len(s02) and s02["index"].isna().all()
    assert s02["reason"].str.contains("no on_ai visit").all()
    longitudinal = pd.read_csv(results / "longitudinal.tsv", sep="\t")
    assert set(longitudinal.loc[longitudinal["subject"] == "S02", "visit"]) == {"V1", "V3"}
    registration = pd.read_csv(results / "registration.tsv", sep="\t").set_index("scan_id")
    assert registration.loc[CORRUPT, "status"] == "excluded"
    assert registration.drop(index=CORRUPT)["used"].all()
    connections = pd.read_csv(results / "connections.tsv", sep="\t")
    assert list(connections.columns[:len(CONNECTIONS_COLUMNS)]) == CONNECTIONS_COLUMNS
    assert set(connections["subject"]) <= {"S01", "S02", "S03"}
    for measure in ("BV_TV", "Conn.D"):
        assert (results / "trajectories" / f"{measure}.png").stat().st_size > 5_000


def test_threads_numba_cache_and_inputs(finished):
    workdir = finished["workdir"]
    record = pd.read_json(workdir / "results" / "scans" / "S01_V1" / "metrics.json",
                          typ="series")
    assert record["provenance"]["threads"] == 1  # the rule's threads reached numba
    cache = workdir / ".numba-cache"
    assert any(cache.rglob("*.nbi")), "NUMBA_CACHE_DIR did not point into the workdir"
    for log in ("scans/S01_V1.log", f"scans/{CORRUPT}.log", "subjects/S02_radius.log",
                "cohort/tables.log"):
        assert (workdir / "logs" / log).is_file()
    assert "failed at read" in (workdir / "logs" / "scans" / f"{CORRUPT}.log").read_text(encoding="utf-8")
    # inputs untouched, nothing written next to them
    assert {p.name: checksum(p) for p in (workdir / "scans").iterdir()} == finished["inputs"]
    assert sorted(p.name for p in workdir.iterdir() if not p.name.startswith(".")) == [
        "config", "logs", "results", "scans"]


def test_a_rerun_has_nothing_to_do(finished):
    result = run_snakemake(finished["workdir"], "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_report_has_the_three_categories(finished):
    workdir = finished["workdir"]
    run_snakemake(workdir, "--report", "report.html")
    html = (workdir / "report.html").read_text(encoding="utf-8", errors="replace")
    assert len(html) > 100_000
    for category in ("QC", "Metrics", "Longitudinal"):
        assert category in html


def test_lint_is_clean(finished):
    result = run_snakemake(finished["workdir"], "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm not installed (microarch[slurm])")
def test_slurm_profile_dry_run(finished):
    result = run_snakemake(finished["workdir"], "--profile", str(REPO / "profiles" / "slurm"),
                           "--dry-run", "--forceall")
    text = result.stdout + result.stderr
    assert "Group job scans" in text
    assert re.search(r"analyse_scan\s+6", text)
    assert "slurm_account=CHANGE-ME" in text


def test_a_malformed_sheet_fails_before_any_job_with_every_problem(tmp_path):
    make_cohort(tmp_path, subjects=("S01",), shape=(8, 32, 32))
    write_sheet(tmp_path / "config" / "samples.tsv", [
        {"scan_id": "S01_V1", "subject": "S01", "site": "radius", "visit": "V1",
         "role": "baseline", "path": "scans/S01_V1.nii.gz"},
        {"scan_id": "S01_V1", "subject": "S01", "site": "radius", "visit": "V2",
         "role": "on_ai", "path": "scans/S01_V2.nii.gz"},
        {"scan_id": "S01_V3", "subject": "S01", "site": "radius", "visit": "V3",
         "role": "withdrawn", "path": "scans/S01_V3.nii.gz"},
        {"scan_id": "S01_V4", "subject": "S01", "site": "radius", "visit": "V4",
         "role": "other", "path": "scans/missing.aim", "spacing": "0.1,0.1"},
    ])
    result = run_snakemake(tmp_path, "--dry-run", check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "4 problems in the sample sheet" in text
    for problem in ("line 3 (scan S01_V1): duplicate scan_id (first on line 2)",
                    "line 4 (scan S01_V3): role 'withdrawn' is not one of",
                    "line 5 (scan S01_V4): scan file 'scans/missing.aim' not found",
                    "line 5 (scan S01_V4): spacing '0.1,0.1' must be one number or three"):
        assert problem in text, text
    assert "Job stats" not in text and not (tmp_path / "results").exists()
