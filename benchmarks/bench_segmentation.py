"""Read + segment + compartments of a full-size HR-pQCT scan, with ORMIR-XCT side by side.

A synthetic distal radius (Voronoi trabecular bone in a porous cortex) is rendered the way
an XtremeCT II writes it (blur, noise SD 80 mg HA/cm³, native int16 with the scanner
calibration) and stored as a genuine AIM file. Each timed step runs in a fresh
subprocess so that its peak resident memory (``VmHWM``, which includes the Python
interpreter, the libraries and the loaded truth masks) is its own; numba kernels are compiled or
loaded from the cache by a warm-up call before timing. The table reports
wall time, peak memory and, for the segmentations, Dice against the true bone mask.

    python benchmarks/bench_segmentation.py [--shape 168 500 500] [--out FILE]

Target (segmentation issue): read + segment + compartments <= 20 s and <= 6 GB on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

_CHILD = {
    "microarch: read_scan": """
        from microarch import io
        t = time.perf_counter(); scan = io.read_scan(AIM); elapsed = time.perf_counter() - t
        result = {}
    """,
    "microarch: read + compartments": """
        from microarch import io, segment
        warm = io.read_scan(AIM).image[:8]  # compile (or load cached) kernels first
        segment.compartments(warm, spacing=0.0607)
        t = time.perf_counter()
        scan = io.read_scan(AIM)
        parts = segment.compartments(scan.image, spacing=scan.spacing)
        elapsed = time.perf_counter() - t
        result = {"dice_bone": dice(parts.bone, TRUTH["bone"]),
                  "dice_periosteal": dice(parts.periosteal, TRUTH["periosteal"]),
                  "dice_trabecular": dice(parts.trabecular, TRUTH["trabecular"])}
    """,
    "microarch: Gaussian + threshold only": """
        from microarch import io, segment
        scan = io.read_scan(AIM)
        segment.threshold_bone(scan.image[:8], spacing=scan.spacing)  # warm-up
        t = time.perf_counter()
        bone = segment.threshold_bone(scan.image, spacing=scan.spacing)
        elapsed = time.perf_counter() - t
        bone = getattr(bone, "bone", bone)
        result = {"dice_bone": dice(bone, TRUTH["bone"])}
    """,
    "ORMIR-XCT seg_gauss (sigma 0.8, support 1, 320)": """
        import SimpleITK as sitk
        from microarch import io
        from ormir_xct.core.segmentation.seg_gauss import seg_gauss
        scan = io.read_scan(AIM)
        image = sitk.GetImageFromArray(scan.image)
        image.SetSpacing(scan.spacing[::-1])
        t = time.perf_counter()
        out = seg_gauss(image, 320.0, 3000.0, 1, 0, sigma=0.8, support=1)
        elapsed = time.perf_counter() - t
        result = {"dice_bone": dice(sitk.GetArrayFromImage(out) > 0, TRUTH["bone"])}
    """,
}

_PRELUDE = """
import json, sys, time
import numpy as np
AIM = {aim!r}
TRUTH = dict(np.load({truth!r}))
def dice(a, b):
    a = np.asarray(a, bool); b = np.asarray(b, bool)
    return float(2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))
"""

_POSTLUDE = """
result["seconds"] = elapsed
# VmHWM is this process's own peak (ru_maxrss would inherit the parent's across fork)
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
result["peak_mb"] = int(status) / 1024
print("RESULT" + json.dumps(result))
"""


def _make_scan(shape, folder):
    import numpy as np

    from microarch import io, phantoms

    t = time.perf_counter()
    site = phantoms.distal_radius(tuple(shape), spacing=0.0607, seed=1)
    rendered = phantoms.render_scan(site, seed=1)
    keys = ("mu_scaling", "density_slope", "density_intercept", "mu_water")
    calibration = io.Calibration(**{k: rendered.calibration[k] for k in keys
                                    if k in rendered.calibration})
    aim = Path(folder) / "RADIUS.AIM"
    io.write_aim(aim, rendered.native, spacing=rendered.spacing, calibration=calibration)
    truth = Path(folder) / "truth.npz"
    np.savez(truth, bone=site.mask, periosteal=site.periosteal, trabecular=site.trabecular)
    return aim, truth, time.perf_counter() - t


def _run(name, aim, truth):
    code = textwrap.dedent(_PRELUDE.format(aim=str(aim), truth=str(truth)))
    code += textwrap.dedent(_CHILD[name]) + textwrap.dedent(_POSTLUDE)
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT"):])
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": tail[0][:120]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(168, 500, 500))
    parser.add_argument("--out", default=str(HERE / "results" / "segmentation.md"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        aim, truth, build = _make_scan(args.shape, folder)
        rows = [(name, _run(name, aim, truth)) for name in _CHILD]

    lines = [
        "# Read and segment a full-size scan",
        "",
        (f"Synthetic distal radius {tuple(args.shape)} voxels at 0.0607 mm, rendered as an "
        f"XtremeCT II AIM file (phantom built in {build:.0f} s, not timed below)."),
        (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; load average before the run "
        f"{os.getloadavg()[0]:.1f}. Each row ran in its own process."),
        "",
        ("| step | wall time (s) | peak memory (MB) | Dice bone | Dice periosteal | "
        "Dice trabecular |"),
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | |")
            continue
        cells = [f"{r['seconds']:.2f}", f"{r['peak_mb']:.0f}"]
        cells += [f"{r[k]:.3f}" if k in r else "" for k in
                  ("dice_bone", "dice_periosteal", "dice_trabecular")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Target: read + compartments <= 20 s and <= 6 GB (6144 MB) on 2 cores.", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
