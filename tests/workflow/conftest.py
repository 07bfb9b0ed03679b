"""A tiny synthetic HR-pQCT cohort for the workflow tests (numpy only, fast).

Each scan is a cylinder of bone: a cortical ring around trabecular bone made by
thresholding a smoothed random field, rendered to density with blur and noise and
written as calibrated native int16 (NIfTI or AIM). The visits of a subject share the
field: on aromatase-inhibitor therapy (role ``on_ai``) the threshold rises (thinner,
fewer trabeculae), after withdrawal it comes partly back; follow-ups are shifted by a
voxel so the registration has something to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHAPE = (24, 64, 64)
SPACING = 0.082
CALIBRATION = {"mu_scaling": 8192.0, "density_slope": 1603.51904,
               "density_intercept": -391.209015, "mu_water": 0.2409}
# (visit, role, bone-volume fraction of the field inside the marrow, shift in x)
VISITS = (("V1", "baseline", 0.30, 0), ("V2", "on_ai", 0.22, 1),
          ("V3", "post_withdrawal", 0.26, -1))
HEADER = ("scan_id", "subject", "site", "visit", "role", "path", "mask_path", "spacing")


def synthetic_density(seed, bone_fraction, *, shape=SHAPE, shift=0):
    """Density image (mg HA/cm³) of a small bone cylinder; same seed = same structure."""
    return synthetic_scan(seed, bone_fraction, shape=shape, shift=shift)[0]


def synthetic_scan(seed, bone_fraction, *, shape=SHAPE, shift=0):
    """(density, compartment labels as analyse_scan writes them) of a small bone cylinder."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=shape), sigma=(2.5, 1.6, 1.6), mode="wrap")
    _, y, x = np.indices(shape)
    r = np.hypot(y - (shape[1] - 1) / 2, x - (shape[2] - 1) / 2)
    outer = min(shape[1:]) / 2 - 4
    marrow = r < outer - 4
    level = np.quantile(field[marrow], 1 - bone_fraction)
    trabecular = marrow & (field > level)
    cortex = (r >= outer - 4) & (r < outer)
    density = np.where(r < outer, 40.0, 0.0)
    density[cortex] = 1050.0
    density[trabecular] = 850.0
    density = ndi.gaussian_filter(density, 0.7)
    density += np.random.default_rng(seed + 1000).normal(0.0, 25.0, shape)
    labels = np.zeros(shape, np.uint8)  # 1 marrow, 2 trabecular bone, 4 cortical bone
    labels[marrow] = 1
    labels[trabecular] = 2
    labels[cortex] = 4
    if shift:
        density = np.roll(density, shift, axis=2)
        labels = np.roll(labels, shift, axis=2)
    return density.astype(np.float32), labels


def write_scan(path, density, *, spacing=SPACING):
    from microarch.io import Calibration, write_aim, write_image

    calibration = Calibration(**CALIBRATION)
    native = np.rint(calibration.to_native(density)).astype(np.int16)
    if str(path).lower().endswith(".aim"):
        return write_aim(path, native, spacing=spacing, calibration=calibration)
    return write_image(path, native, spacing=spacing, calibration=calibration)


def make_cohort(root, *, subjects=("S01", "S02"), visits=VISITS, shape=SHAPE, corrupt=None,
                suffix=".nii.gz"):
    """Write scans and ``config/samples.tsv`` + ``config/config.yaml`` under ``root``.

    ``corrupt``: a scan id whose file is replaced by garbage. Returns the sheet's rows.
    """
    root = Path(root)
    scans = root / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    rows = []
    for number, subject in enumerate(subjects):
        for visit, role, fraction, shift in visits:
            scan_id = f"{subject}_{visit}"
            path = scans / f"{scan_id}{suffix}"
            if scan_id == corrupt:
                path.write_bytes(b"\x1f\x8b this is not a scan " * 8)
            else:
                write_scan(path, synthetic_density(17 + number, fraction, shape=shape,
                                                   shift=shift))
            rows.append({"scan_id": scan_id, "subject": subject, "site": "radius",
                         "visit": visit, "role": role, "path": f"scans/{path.name}",
                         "mask_path": "", "spacing": ""})
    write_sheet(root / "config" / "samples.tsv", rows)
    write_config(root / "config" / "config.yaml")
    return rows


def write_sheet(path, rows, header=HEADER):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)]
    lines += ["\t".join(str(row.get(c, "")) for c in header) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_config(path, **sections):
    """A fast test configuration: no SMI, small QC pictures, two trajectories, no plate/rod
    or remodelling in the comparisons."""
    import yaml

    config = {
        "samples": "config/samples.tsv",
        "measure": {"smi": False},
        "qc": {"n_slices": 3},
        "longitudinal": {"remodelling": "none", "plate_rod": False},
        "cohort": {"trajectories": ["BV/TV", "Conn.D"]},
    }
    config.update(sections)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _kernel_cache_name():
    """Folder numba uses for microarch/_kernels inside a NUMBA_CACHE_DIR."""
    import hashlib

    import microarch

    kernels = os.path.join(os.path.dirname(os.path.abspath(microarch.__file__)), "_kernels")
    return "_kernels_" + hashlib.sha1(kernels.encode()).hexdigest(), Path(kernels)


def _copy_cache_files(source, target):
    if not source.is_dir():
        return 0
    target.mkdir(parents=True, exist_ok=True)
    copied = 0
    for item in source.iterdir():
        if item.suffix in (".nbi", ".nbc") and item.is_file():
            shutil.copy2(item, target / item.name)
            copied += 1
    return copied


@pytest.fixture(scope="session")
def kept_numba_cache(request, tmp_path_factory):
    """Compiled kernels kept between test sessions (in pytest's cache folder, if enabled)."""
    cache = getattr(request.config, "cache", None)
    if cache is None:  # -p no:cacheprovider
        return tmp_path_factory.mktemp("microarch-numba")
    return Path(cache.mkdir("microarch-numba"))


def seed_numba_cache(workdir, kept):
    """Put already compiled kernels where the workflow will look: <workdir>/.numba-cache.

    Snakemake jobs are fresh processes; the workflow points NUMBA_CACHE_DIR into the
    working directory. Seeding it from this test session's kernels (numba's in-tree
    cache, or a NUMBA_CACHE_DIR of the test run) spares each test minutes of compiling.
    Cache entries are keyed by the source's time stamp, so stale files are ignored.
    """
    name, kernels = _kernel_cache_name()
    target = Path(workdir) / ".numba-cache" / name
    sources = [kept / name, kernels / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        sources.append(Path(os.environ["NUMBA_CACHE_DIR"]) / name)
    return sum(_copy_cache_files(source, target) for source in sources)


def keep_numba_cache(workdir, kept):
    """Keep the kernels a workflow run compiled for the next test session."""
    name, _ = _kernel_cache_name()
    return _copy_cache_files(Path(workdir) / ".numba-cache" / name, kept / name)


def run_snakemake(workdir, *args, timeout=600, check=True):
    """Run the real Snakefile in a subprocess on ``workdir``; return the CompletedProcess.

    NUMBA_CACHE_DIR is removed from the environment, so the workflow's own default (a
    cache inside the working directory) is what the jobs use.
    """
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONIOENCODING"] = "utf-8"  # units (mm³) in messages, whatever the locale
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(workdir), "--configfile",
               str(Path(workdir) / "config" / "config.yaml"), "--workflow-profile", "none",
               *args]
    result = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace",
                            env=env, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result
