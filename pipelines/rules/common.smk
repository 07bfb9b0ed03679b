# Configuration, sample sheet, targets and resource helpers of the microarch workflow.
# Everything the rules need is computed here, from functions (no lambdas in rules).

import json
import os
from pathlib import Path

import microarch.workflow as mw

# Compiled numba kernels are cached inside the working directory, so the jobs of a run
# (each a fresh Python process) and later runs load them instead of compiling again.
# A NUMBA_CACHE_DIR set by the user (or a cluster profile) wins.
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.abspath(".numba-cache"))

SCHEMAS = Path(workflow.current_basedir).parent / "schemas"


# ---- configuration and sample sheet: every problem reported at once, before any job ----

config.update(
    mw.validate_config(
        config, schema=SCHEMAS / "config.schema.yaml", source="workflow configuration"
    )
)
# With a default storage provider (Kubernetes, cloud) the scans live in remote storage
# and cannot be checked here; Snakemake reports any that are missing.
SAMPLES = mw.read_samples(
    config["samples"],
    schema=SCHEMAS / "samples.schema.yaml",
    check_files=workflow.storage_settings.default_storage_provider is None,
)
SCANS = list(SAMPLES.index)


def _comparisons():
    """(subject, site) pairs with at least two scans, in sheet order."""
    if not config["longitudinal"]["enabled"]:
        return []
    counts = SAMPLES.groupby(["subject", "site"], sort=False).size()
    return [key for key, count in counts.items() if count >= 2]


COMPARISONS = _comparisons()


wildcard_constraints:
    scan_id="[A-Za-z0-9][A-Za-z0-9_.-]*",
    subject="[A-Za-z0-9][A-Za-z0-9_.-]*",
    site="[A-Za-z0-9][A-Za-z0-9_.-]*",


# ---- per scan ----


def scan_input(wildcards):
    """The scan and, when the sheet gives one, its periosteal mask."""
    row = SAMPLES.loc[wildcards.scan_id]
    files = {"scan": row["path"]}
    if row["mask_path"]:
        files["mask"] = row["mask_path"]
    return files


def scan_info(wildcards):
    row = SAMPLES.loc[wildcards.scan_id]
    return {key: str(row[key]) for key in ("subject", "site", "visit", "role")}


def scan_spacing(wildcards):
    spacing = SAMPLES.loc[wildcards.scan_id, "spacing"]
    return None if spacing is None else [float(s) for s in spacing]


def _size_mb(path):
    """Size of a scan file, or of a DICOM folder's files, in MB (the inputs exist already)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
    return path.stat().st_size / 1e6 if path.exists() else 0.0


def scan_mem_mb(wildcards, attempt):
    """Memory for one scan: ~60x its file size, at least 2 GB; doubled on each retry."""
    size = _size_mb(SAMPLES.loc[wildcards.scan_id, "path"])
    return int(max(2000, 1000 + 60 * size) * 2 ** (attempt - 1))


def scan_runtime(wildcards, attempt):
    """Minutes for one scan (cluster wall time); doubled on each retry."""
    return 60 * 2 ** (attempt - 1)


def montage_labels(wildcards, output):
    """Report labels of a scan's montage: who, when, and whether it worked."""
    labels = {"scan": wildcards.scan_id, **scan_info(wildcards)}
    try:
        with open(output.metrics, encoding="utf-8") as handle:
            labels["status"] = json.load(handle).get("status", "?")
    except (OSError, ValueError):
        labels["status"] = "?"
    return labels


def scan_outputs(name):
    return expand("results/scans/{scan_id}/{name}", scan_id=SCANS, name=name)


# ---- per subject and site ----


def _subject_rows(wildcards):
    rows = SAMPLES[
        (SAMPLES["subject"] == wildcards.subject) & (SAMPLES["site"] == wildcards.site)
    ]
    return [row for _, row in rows.iterrows()]


def subject_input(wildcards):
    """Every scan of the subject at the site, with its metrics and compartments."""
    rows = _subject_rows(wildcards)
    return {
        "scans": [row["path"] for row in rows],
        "metrics": [f"results/scans/{row['scan_id']}/metrics.json" for row in rows],
        "images": [f"results/scans/{row['scan_id']}/images" for row in rows],
    }


def subject_visits(wildcards):
    """The visits in sheet (chronological) order; files come from the rule's input."""
    return [
        {
            "scan_id": row["scan_id"],
            "visit": str(row["visit"]),
            "role": row["role"],
            "spacing": (
                None if row["spacing"] is None else [float(s) for s in row["spacing"]]
            ),
        }
        for row in _subject_rows(wildcards)
    ]


def subject_mem_mb(wildcards, attempt):
    """Memory for a comparison: all visits and their resampled copies are held at once."""
    size = sum(_size_mb(row["path"]) for row in _subject_rows(wildcards))
    return int(max(3000, 1000 + 120 * size) * 2 ** (attempt - 1))


def subject_runtime(wildcards, attempt):
    return 120 * 2 ** (attempt - 1)


def comparison_outputs(name):
    return [
        f"results/subjects/{subject}/{site}/{name}" for subject, site in COMPARISONS
    ]


# ---- cohort ----


def cohort_targets():
    """Everything `rule all` asks for."""
    return [
        "results/metrics.tsv",
        "results/units.tsv",
        "results/longitudinal.tsv",
        "results/memory.tsv",
        "results/registration.tsv",
        "results/remodelling.tsv",
        "results/connections.tsv",
        "results/qc/contact_sheet.png",
        "results/trajectories",
        *comparison_outputs("registration.png"),
    ]
