"""Time the phantom generators against the phantom issue's targets.

Each step runs in a fresh subprocess, so its peak resident memory (``VmHWM``) is its own
and the first call pays numba's compilation (or cache load) as a user would; a second
call in the same process shows the warm time.

    python benchmarks/bench_phantoms.py [--size 256] [--out FILE]

Targets (phantom issue, 2 cores): a 256³ realistic phantom under 30 s; the demo cohort
(3 subjects x 3 visits, written to disk) under 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

from _report import write_report

HERE = Path(__file__).resolve().parent

_PRELUDE = """
import json, tempfile, time
def peak_mib():
    with open("/proc/self/status", encoding="ascii") as status:
        return int(status.read().split("VmHWM:")[1].split()[0]) / 1024
"""

_STEPS = {
    "trabecular_bone (Voronoi plates and rods)": """
        from microarch.phantoms import trabecular_bone
        times = []
        for seed in (1, 2):
            t = time.perf_counter()
            phantom = trabecular_bone((N, N, N), spacing=0.0607, seed=seed)
            times.append(time.perf_counter() - t)
        info = f"BV/TV {phantom.mask.mean():.3f}"
    """,
    "random_trabecular (benchmark phantom)": """
        from microarch.phantoms import random_trabecular
        times = []
        for seed in (1, 2):
            t = time.perf_counter()
            bone = random_trabecular((N, N, N), seed=seed, bv_tv=0.2).mask
            times.append(time.perf_counter() - t)
        info = f"BV/TV {bone.mean():.3f}"
    """,
    "write_demo_cohort (3 subjects x 3 visits)": """
        from microarch.phantoms import write_demo_cohort
        times = []
        for _ in range(2):
            t = time.perf_counter()
            files = write_demo_cohort(tempfile.mkdtemp())
            times.append(time.perf_counter() - t)
        info = f"{len(files)} files"
    """,
}

_TARGETS = {"trabecular_bone (Voronoi plates and rods)": 30.0,
            "write_demo_cohort (3 subjects x 3 visits)": 120.0}


def _run(name, body, size, threads):
    code = (_PRELUDE + f"N = {size}\n" + textwrap.dedent(body)
            + "print(json.dumps({'times': times, 'info': info, 'peak_mib': peak_mib()}))\n")
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8",
                          errors="replace", env=env, check=False)
    if done.returncode != 0:
        return {"name": name, "error": done.stderr.strip().splitlines()[-1:]}
    return {"name": name, **json.loads(done.stdout.strip().splitlines()[-1])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="cube edge of the phantoms")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=str(HERE / "results" / "phantoms.md"))
    args = parser.parse_args(argv)

    rows = [_run(name, body, args.size, args.threads) for name, body in _STEPS.items()]
    lines = [
        "# Phantom generation",
        "",
        (f"{platform.processor() or platform.machine()}, {args.threads} threads, Python "
         f"{platform.python_version()}; phantoms {args.size}³ at 0.0607 mm, the demo cohort "
         "at its defaults (40 x 136 x 120 at 0.082 mm). First call: in a fresh process "
         "(numba compile or cache load included); second: the same call again."),
        "",
        "| step | first call (s) | second call (s) | target (s) | peak memory (MiB) | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['name']} | failed | | | | {' '.join(row['error'])} |")
            continue
        target = _TARGETS.get(row["name"])
        lines.append(f"| {row['name']} | {row['times'][0]:.1f} | {row['times'][1]:.1f} | "
                     f"{'' if target is None else f'{target:.0f}'} | {row['peak_mib']:.0f} | "
                     f"{row['info']} |")
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
