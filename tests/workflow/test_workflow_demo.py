"""The real Snakefile on the demo cohort: the measured skeletal memory against its truth.

sample_data/ holds three simulated subjects whose true Conn.D memory index is 1.0, 0.5
and 0.0. The workflow must find them from the scans alone: segmentation, registration,
common region, re-measurement, memory table. This is the project's headline claim, run
end to end (about 1-2 minutes on 2 cores with compiled kernels).
"""

import json

import pandas as pd
import pytest

from .conftest import REPO, keep_numba_cache, run_snakemake, seed_numba_cache

pytestmark = pytest.mark.slow

SAMPLE_DATA = REPO / "sample_data"
# benchmarks/results/memory.md: over nine subjects of the demo's size and loss the
# largest error of the Conn.D index is 0.10; the demo's AI03 measures 0.101 against 0.0
CONN_D_TOLERANCE = 0.12
BV_TV_TOLERANCE = 0.1


@pytest.fixture(scope="module")
def demo(tmp_path_factory, kept_numba_cache):
    if not (SAMPLE_DATA / "samples.tsv").is_file():
        pytest.skip("sample_data/ is not in this checkout")
    workdir = tmp_path_factory.mktemp("demo")
    config = (REPO / "config" / "config.yaml").read_text(encoding="utf-8")
    assert "samples: config/samples.tsv" in config
    config = config.replace("samples: config/samples.tsv",
                            f"samples: {SAMPLE_DATA / 'samples.tsv'}")
    (workdir / "config").mkdir()
    (workdir / "config" / "config.yaml").write_text(config, encoding="utf-8")
    seed_numba_cache(workdir, kept_numba_cache)
    run_snakemake(workdir, "--cores", "2", timeout=1200)
    keep_numba_cache(workdir, kept_numba_cache)
    return workdir / "results"


def _truth(subject):
    return json.loads((SAMPLE_DATA / "truth" / f"{subject}.json").read_text(encoding="utf-8"))


def test_every_demo_scan_is_measured(demo):
    metrics = pd.read_csv(demo / "metrics.tsv", sep="\t")
    assert len(metrics) == 9 and (metrics["status"] == "ok").all()
    assert metrics["BV/TV"].between(0.2, 0.5).all()


@pytest.mark.parametrize("subject", ["AI01", "AI02", "AI03"])
def test_memory_index_matches_the_truth(demo, subject):
    memory = pd.read_csv(demo / "memory.tsv", sep="\t", dtype={"subject": str})
    measured = memory[memory["subject"] == subject].set_index("measure")
    truth = _truth(subject)["memory_index"]
    assert measured.loc["Conn.D", "index"] == pytest.approx(truth["Conn.D"],
                                                            abs=CONN_D_TOLERANCE)
    assert measured.loc["BV/TV", "index"] == pytest.approx(truth["BV/TV"], abs=BV_TV_TOLERANCE)
    # the loss on AI is seen beyond the least significant change
    assert measured.loc["Conn.D", "loss"] > measured.loc["Conn.D", "lsc"]


def test_registration_recovers_the_true_repositioning(demo):
    registration = pd.read_csv(demo / "registration.tsv", sep="\t", dtype={"subject": str})
    assert set(registration["status"]) == {"reference", "ok"}
    for subject in ("AI01", "AI02", "AI03"):
        rows = registration[registration["subject"] == subject].set_index("visit")
        for visit in _truth(subject)["visits"][1:]:
            true = visit["transform"]["rotation_angle_deg"]
            assert rows.loc[visit["visit"], "rotation_deg"] == pytest.approx(true, abs=0.2)
