"""Peak memory of one tool on one volume, measured in a fresh process.

Run by ``bench_morphometry.py``; prints one JSON object on stdout.

Method: import the tool, load the volume, warm the tool up on a tiny volume (numba
compiles or loads its cache here, and LLVM's own memory spike happens here), then reset
the kernel's resident-set high-water mark (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)
and read VmRSS; run the tool once on the volume and read VmHWM. Peak = VmHWM - VmRSS
before the call: every allocation made by the call (numpy, numba, C/C++ libraries, the
returned result) counts, and nothing allocated before it does. tracemalloc would miss
the numba and C++ allocations.

Where clear_refs cannot be written the worker reports ru_maxrss instead, and the parent
subtracts the ru_maxrss of an idle twin (``--idle``: same imports, volume and warm-up,
no call).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _peers import ALL_TOOLS, try_load
from _proc import reset_high_water_mark, status_bytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tool", required=True, choices=sorted(ALL_TOOLS))
    parser.add_argument("--mask", required=True, help=".npy file with the bool volume")
    parser.add_argument("--tiny", required=True, help=".npy file with the warm-up volume")
    parser.add_argument("--spacing", type=float, required=True)
    parser.add_argument("--idle", action="store_true", help="everything but the call")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    run, reason = try_load(ALL_TOOLS[args.tool])
    import_s = time.perf_counter() - start
    result = {"tool": args.tool, "import_s": import_s}
    if run is None:
        result["error"] = reason
        print(json.dumps(result))
        return
    mask = np.load(args.mask)
    tiny = np.load(args.tiny)
    start = time.perf_counter()
    run(tiny, args.spacing)
    result["warmup_s"] = time.perf_counter() - start
    del tiny
    gc.collect()

    reset = reset_high_water_mark()
    baseline = status_bytes("VmRSS")
    output = None
    if not args.idle:
        start = time.perf_counter()
        output = run(mask, args.spacing)
        result["call_s"] = time.perf_counter() - start
    high_water = status_bytes("VmHWM")
    del output
    result.update(
        method="clear_refs" if reset else "ru_maxrss",
        baseline_bytes=baseline,
        peak_bytes=(high_water - baseline) if reset else None,
        ru_maxrss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        n_voxels=int(mask.size),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
