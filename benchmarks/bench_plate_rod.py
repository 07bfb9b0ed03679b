"""Time and peak memory of ``measure.plate_rod`` on the random trabecular benchmark phantom.

Each size runs in a fresh process. The phantom is the one of ``bench_morphometry.py``
(``random_trabecular((n, n, n), seed=0, bv_tv=0.2)`` at 0.0607 mm). numba compiles (or
loads its cache) on a 32³ warm-up first; then the kernel's resident-set high-water mark
is reset (``/proc/self/clear_refs``) and the call's peak is VmHWM minus VmRSS before the
call, so every allocation of the call counts (numpy, numba, the returned labels) and the
input mask does not. The best of ``--repeats`` timed calls is reported.

    python benchmarks/bench_plate_rod.py [--sizes 128 256] [--out FILE]

Target (plate/rod issue): at 256³, within 30 s and 16 bytes per voxel on 2 cores.
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

_CHILD = """
import gc, json, time
import numpy as np
from microarch import measure
from microarch.phantoms import random_trabecular

def status_bytes(field):
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

mask = random_trabecular((N, N, N), seed=0, bv_tv=0.2).mask
tiny = random_trabecular((32, 32, 32), seed=1, bv_tv=0.2).mask
start = time.perf_counter()
measure.plate_rod(tiny, spacing=0.0607)
warmup = time.perf_counter() - start
gc.collect()
try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")
    exact = True
except OSError:
    exact = False
before = status_bytes("VmRSS")
times = []
for _ in range(REPEATS):
    start = time.perf_counter()
    record = measure.plate_rod(mask, spacing=0.0607)
    times.append(time.perf_counter() - start)
    if len(times) == 1:
        peak = status_bytes("VmHWM") - before
print(json.dumps({"n": N, "warmup_s": warmup, "times": times, "peak_bytes": peak,
                  "exact_peak": exact,
                  "record": {k: record[k] for k in ("pBV/TV", "rBV/TV", "pTb.N", "rTb.N",
                                                    "P-R Junc.D")}}))
"""


def _run(size, repeats, threads):
    code = f"N = {size}\nREPEATS = {repeats}\n" + textwrap.dedent(_CHILD)
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8",
                          errors="replace", env=env, check=False)
    if done.returncode != 0:
        return {"n": size, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=str(HERE / "results" / "plate_rod.md"))
    args = parser.parse_args(argv)

    rows = [_run(size, args.repeats, args.threads) for size in args.sizes]
    lines = [
        "# Plate/rod decomposition",
        "",
        (f"{platform.machine()}, {args.threads} threads, Python {platform.python_version()}. "
         "Phantom: `random_trabecular((n, n, n), seed=0, bv_tv=0.2)` at 0.0607 mm; best of "
         f"{args.repeats} calls after a 32³ warm-up; peak = the call's own allocations "
         "(VmHWM - VmRSS before the call)."),
        "",
        ("| size | time (s) | ≤ 30 s at 256³ | peak (MiB) | B/voxel | ≤ 16 B/voxel | pBV/TV | "
         "rBV/TV | pTb.N (1/mm) | rTb.N (1/mm) |"),
        "|---|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['n']}³ | failed: {row['error']} |||||||||")
            continue
        voxels = row["n"] ** 3
        best = min(row["times"])
        per_voxel = row["peak_bytes"] / voxels
        record = row["record"]
        at_target = row["n"] == 256
        lines.append(
            f"| {row['n']}³ | {best:.1f} | {('yes' if best <= 30 else 'no') if at_target else ''} "
            f"| {row['peak_bytes'] / 2**20:.0f} | {per_voxel:.1f} | "
            f"{'yes' if per_voxel <= 16 else 'no'} | {record['pBV/TV']:.4f} | "
            f"{record['rBV/TV']:.4f} | {record['pTb.N']:.3f} | {record['rTb.N']:.3f} |")
    write_report(args.out, lines, rows)


if __name__ == "__main__":
    main()
