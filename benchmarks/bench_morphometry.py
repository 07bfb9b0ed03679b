"""Side-by-side benchmark of microarch's morphometry kernels against the peers labs use.

    python benchmarks/bench_morphometry.py --out benchmarks/results/morphometry.md
    python benchmarks/bench_morphometry.py --sizes 128 256 384 --out ...   # 384 opt-in

What it measures (see benchmarks/README.md for the method):

1. exactness: microarch's "continuous" local thickness equals the brute-force oracle of
   tests/oracles.py voxel for voxel on small random volumes;
2. local thickness on a fixed-seed random trabecular phantom (BV/TV 0.2) at each size:
   wall-clock (best of k, all tools interleaved in this one process), first-call/compile
   overhead (separately), peak memory (fresh subprocess per tool and size), accuracy
   against microarch's exact map (mean bias and MAE in voxels), ratios and growth
   exponents;
3. Euler characteristic and Conn.D against skimage.measure.euler_number;
4. ITKBoneMorphometry's plate-model features beside microarch's trabecular() record,
   and trabecular() against its targets (<= 10 s and <= 16 bytes/voxel at 256^3);
5. the per-shape digitisation error of every thickness tool on rods, spheres and plates.

It writes a markdown report (and the raw numbers as JSON beside it).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from importlib import metadata

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

TINY_SHAPE = (24, 24, 24)  # warm-up / compile volume
SEED = 0


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256],
                        help="cube edge lengths of the phantom (default: 128 256; add 384 "
                             "on a machine with the time: about 10 more minutes on 2 cores)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "morphometry.md"),
                        help="markdown report (a .json with the raw numbers goes beside it)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls per tool and size; the best is reported (default 3)")
    parser.add_argument("--single-above", type=float, default=20.0,
                        help="a tool whose first timed call takes longer than this many "
                             "seconds is not repeated (default 20)")
    parser.add_argument("--time-limit", type=float, default=240.0,
                        help="skip a peer tool at a size where its predicted time exceeds "
                             "this many seconds (default 240; microarch is never skipped)")
    parser.add_argument("--memory-limit", type=float, default=None,
                        help="skip any tool at a size where its predicted peak memory "
                             "exceeds this many GiB (default: half the available memory)")
    parser.add_argument("--trabecular-max", type=int, default=256,
                        help="run the full trabecular() record only up to this size "
                             "(default 256)")
    parser.add_argument("--spacing", type=float, default=0.0607,
                        help="isotropic voxel size in mm (default 0.0607, XtremeCT II)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for numba, OpenMP, ITK and porespy (default: all CPUs)")
    parser.add_argument("--tools", nargs="+", default=None,
                        help="only these tool keys (see benchmarks/_peers.py)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--no-oracle", action="store_true", help="skip the exactness check")
    parser.add_argument("--no-shapes", action="store_true", help="skip the digitisation table")
    parser.add_argument("--oracle-cases", type=int, default=3, choices=range(5),
                        help="how many small random volumes to check against the oracle "
                             "(each 15-25 s; default 3)")
    parser.add_argument("--shape-diameters", type=int, nargs="+", default=list(range(3, 17)))
    parser.add_argument("--shape-offsets", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    parser.add_argument("--plate-thicknesses", type=int, nargs="+", default=list(range(1, 13)))
    parser.add_argument("--warm-numba-cache", action="store_true",
                        help="use the existing numba cache instead of a fresh one (then "
                             "the first-call column no longer shows compile time)")
    return parser.parse_args(argv)


def configure_environment(args, cache_dir):
    """Must run before numba, ITK or porespy are imported."""
    if not args.warm_numba_cache:
        os.environ["NUMBA_CACHE_DIR"] = cache_dir
    if args.threads is not None:
        n = str(args.threads)
        os.environ["MICROARCH_BENCH_THREADS"] = n
        for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                     "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
            os.environ[name] = n
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def machine_description(args):
    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count()
    memory = "unknown"
    try:
        with open("/proc/meminfo") as info:
            memory = f"{int(info.readline().split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    commit = "unknown"
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        if dirty:
            commit += " + uncommitted changes"
    except (OSError, subprocess.CalledProcessError):
        pass
    import numba

    packages = ["microarch", "numpy", "numba", "scipy", "scikit-image", "porespy", "edt",
                "localthickness", "itk", "itk-bonemorphometry", "ormir-xct", "SimpleITK"]
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": f"{available} available ({os.cpu_count()} logical)",
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numba threads": numba.get_num_threads(),
        "microarch commit": commit,
        "versions": {name: version(name) for name in packages},
        "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
    }


def phantom(n, spacing):
    """Fixed-seed random trabecular phantom, BV/TV 0.2: microarch's, else porespy blobs."""
    try:
        from microarch.phantoms import random_trabecular

        return (random_trabecular((n, n, n), spacing=spacing, seed=SEED, bv_tv=0.2).mask,
                "microarch.phantoms.random_trabecular(seed=0, bv_tv=0.2)")
    except (ImportError, AttributeError):
        import porespy

        mask = porespy.generators.blobs([n] * 3, porosity=0.8, blobiness=1.5, seed=SEED)
        return (np.ascontiguousarray(mask, dtype=bool),
                "porespy.generators.blobs(porosity=0.8, blobiness=1.5, seed=0)")


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------


def available_memory_bytes():
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def timed(run, mask, spacing, collect=True):
    if collect:
        gc.collect()
    start = time.perf_counter()
    out = run(mask, spacing)
    return time.perf_counter() - start, out


def oracle_check(n_cases):
    """Compare microarch's continuous kernel with the brute-force oracle, voxel by voxel."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from oracles import local_thickness_continuous

    from microarch.measure import local_thickness
    from microarch.phantoms import random_trabecular

    cases = [
        ((16, 16, 16), 1.0, "continue"),
        ((16, 16, 16), 1.0, "background"),
        ((14, 15, 16), (0.08, 0.06, 0.05), "continue"),
        ((18, 18, 18), 1.0, "continue"),
    ][:n_cases]
    rows = []
    for index, (shape, spacing, edge) in enumerate(cases):
        mask = random_trabecular(shape, spacing=1.0, seed=index + 1, bv_tv=0.35,
                                 correlation_mm=1.5).mask
        start = time.perf_counter()
        expected = local_thickness_continuous(mask, spacing, edge=edge)
        oracle_s = time.perf_counter() - start
        got = local_thickness(mask, spacing=spacing, convention="continuous", edge=edge)
        voxel = float(np.min(spacing))
        worst = float(np.max(np.abs(got.astype(np.float64) - expected))) / voxel
        rows.append({
            "shape": shape, "spacing": spacing, "edge": edge,
            "bone voxels": int(mask.sum()), "max |diff| (voxels)": worst,
            "equal": bool(worst < 1e-4), "oracle_s": oracle_s,
        })
        log(f"oracle {shape} {edge}: max |diff| {worst:.2e} voxels ({oracle_s:.1f} s)")
    return rows


def thickness_accuracy(diameter, reference, mask, voxel):
    """Statistics over the bone voxels the tool painted (value > 0), as the tools' own
    summaries do; the share left unpainted is reported beside them."""
    values = diameter[mask]
    painted = values > 0
    row = {"unpainted_pct": 100.0 * float(np.mean(~painted))}
    values = values[painted]
    if values.size < 2:
        return row
    row.update(mean_mm=float(np.mean(values)), sd_mm=float(np.std(values, ddof=1)))
    if reference is not None:
        diff = (values - reference[mask][painted]) / voxel
        row["bias_vox"] = float(np.mean(diff))
        row["mae_vox"] = float(np.mean(np.abs(diff)))
        row["within_half_pct"] = 100.0 * float(np.mean(np.abs(diff) <= 0.5))
    return row


def memory_subprocess(tool_key, mask_path, tiny_path, spacing, timeout):
    command = [sys.executable, os.path.join(HERE, "_memory_worker.py"), "--tool", tool_key,
               "--mask", mask_path, "--tiny", tiny_path, "--spacing", repr(spacing)]

    def one(extra):
        try:
            done = subprocess.run(command + extra, capture_output=True, text=True,
                                  timeout=timeout, env=os.environ.copy(), check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"memory run timed out after {timeout:.0f} s"}
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = (done.stderr or "").strip().splitlines()[-1:] or ["no output"]
            return {"error": f"memory worker failed (rc {done.returncode}): {tail[0]}"}
        return json.loads(lines[-1])

    result = one([])
    if result.get("method") == "ru_maxrss":
        idle = one(["--idle"])
        if "ru_maxrss_bytes" in idle:
            result["peak_bytes"] = result["ru_maxrss_bytes"] - idle["ru_maxrss_bytes"]
            result["method"] = "ru_maxrss minus idle twin"
    return result


def growth_exponent(points):
    """Least-squares slope of log(time) against log(voxel count)."""
    points = [(n, t) for n, t in points if t and t > 0]
    if len(points) < 2:
        return None
    x = np.log([n for n, _ in points])
    y = np.log([t for _, t in points])
    return float(np.polyfit(x, y, 1)[0])


def predicted_time(history, n_voxels):
    """Extrapolate a tool's time to ``n_voxels`` from its earlier sizes."""
    if not history:
        return 0.0
    exponent = growth_exponent(history) or 1.2
    n_last, t_last = history[-1]
    return t_last * (n_voxels / n_last) ** max(exponent, 1.0)


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


def run_benchmark(args, work_dir):
    from _peers import EULER_TOOLS, MODEL_TOOLS, THICKNESS_TOOLS, diameter_mm, try_load

    results = {"machine": machine_description(args), "load_start": os.getloadavg(),
               "tools": {}, "sizes": {}, "notes": []}
    spacing = args.spacing
    tools = THICKNESS_TOOLS + EULER_TOOLS + MODEL_TOOLS
    if args.tools:
        unknown = set(args.tools) - {tool.key for tool in tools}
        if unknown:
            raise SystemExit(f"unknown tool keys {sorted(unknown)}; "
                             f"choose from {[tool.key for tool in tools]}")
        # microarch-continuous is the accuracy reference; keep it
        tools = [t for t in tools if t.key in args.tools or t.key == "microarch-continuous"]

    # -- load every tool; import time here is only indicative (shared imports), the
    #    memory subprocess measures it in a fresh interpreter
    runs = {}
    for tool in tools:
        start = time.perf_counter()
        run, reason = try_load(tool)
        info = {"label": tool.label, "task": tool.task, "package": tool.package,
                "note": tool.note, "available": run is not None, "reason": reason}
        results["tools"][tool.key] = info
        if run is not None:
            runs[tool.key] = run
            info["import_in_process_s"] = time.perf_counter() - start
        log(f"load {tool.key}: {'ok' if run else reason}")

    # -- first call on a tiny volume (numba compile, caches), then a second call
    tiny, _ = phantom(TINY_SHAPE[0], spacing)
    tiny_path = os.path.join(work_dir, "tiny.npy")
    np.save(tiny_path, tiny)
    for key, run in list(runs.items()):
        try:
            first, _ = timed(run, tiny, spacing)
            second, _ = timed(run, tiny, spacing)
        except (ImportError, AttributeError) as exc:
            # e.g. trabecular() while the skeleton module is not there yet
            reason = f"not available ({type(exc).__name__}: {exc})"
            results["tools"][key].update(available=False, reason=reason)
            del runs[key]
            log(f"{key}: {reason}")
            continue
        results["tools"][key].update(first_call_s=first, second_call_s=second,
                                     compile_s=max(first - second, 0.0))
        log(f"warm-up {key}: first {first:.2f} s, then {second:.3f} s")

    # -- exactness of the reference kernel (after the warm-up, which must see cold caches)
    if not args.no_oracle and args.oracle_cases:
        try:
            results["oracle"] = oracle_check(args.oracle_cases)
        except (ImportError, AttributeError) as exc:
            results["oracle_error"] = f"{type(exc).__name__}: {exc}"

    history = {key: [] for key in runs}
    bytes_per_voxel = {}  # the largest measured so far, to predict the next size
    memory_limit = (args.memory_limit * 2**30 if args.memory_limit
                    else 0.5 * available_memory_bytes())
    for n in args.sizes:
        results["sizes"][n] = size_results = {"tools": {}}
        mask, source = phantom(n, spacing)
        results["phantom"] = source
        n_voxels = mask.size
        size_results.update(bv_tv=float(mask.mean()), n_voxels=n_voxels,
                            load=os.getloadavg())
        mask_path = os.path.join(work_dir, f"phantom_{n}.npy")
        np.save(mask_path, mask)
        log(f"size {n}^3: BV/TV {mask.mean():.3f}, load {os.getloadavg()[0]:.2f}")

        active = {}
        for key, run in runs.items():
            row = size_results["tools"][key] = {"times": []}
            if key == "microarch-trabecular" and n > args.trabecular_max:
                row["skipped"] = f"size > --trabecular-max {args.trabecular_max}"
                continue
            guess = predicted_time(history[key], n_voxels)
            if guess > args.time_limit and not key.startswith("microarch"):
                row["skipped"] = (f"predicted {guess:.0f} s > --time-limit "
                                  f"{args.time_limit:.0f} s")
            elif bytes_per_voxel.get(key, 0) * n_voxels > memory_limit:
                row["skipped"] = (f"predicted peak {bytes_per_voxel[key] * n_voxels / 2**30:.2f}"
                                  f" GiB > memory limit {memory_limit / 2**30:.2f} GiB")
            if "skipped" in row:
                log(f"{key} at {n}: {row['skipped']}")
                continue
            active[key] = run

        reference = None
        for repeat in range(args.repeats):
            for key, run in active.items():
                row = size_results["tools"][key]
                if row.get("error") or (repeat and row["times"][0] > args.single_above):
                    continue
                try:
                    elapsed, out = timed(run, mask, spacing)
                    # very fast calls are repeated within the slot: timer and scheduler
                    # noise is of their order
                    extra = 0
                    while elapsed < 0.05 and extra < 9:
                        del out
                        again, out = timed(run, mask, spacing, collect=False)
                        elapsed, extra = min(elapsed, again), extra + 1
                except (ImportError, AttributeError) as exc:
                    row["error"] = f"not available ({type(exc).__name__}: {exc})"
                    continue
                except Exception as exc:  # noqa: BLE001 - a peer failing must not stop the others
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    log(f"{key} at {n} failed: {row['error']}")
                    continue
                row["times"].append(elapsed)
                if repeat == 0:
                    summarise(key, out, row, mask, spacing, diameter_mm, reference)
                    if key == "microarch-continuous":
                        reference = np.asarray(out, dtype=np.float64)
                log(f"{key} at {n}: {elapsed:.3f} s")
                del out
        del reference
        for key in active:
            row = size_results["tools"][key]
            if row["times"]:
                row["best_s"] = min(row["times"])
                history[key].append((n_voxels, row["best_s"]))

        if not args.no_memory:
            for key in active:
                row = size_results["tools"][key]
                if not row.get("times"):
                    continue
                timeout = max(120.0, 10 * row["best_s"] + 120.0)
                row["memory"] = memory_subprocess(key, mask_path, tiny_path, spacing, timeout)
                peak = row["memory"].get("peak_bytes")
                if peak:
                    bytes_per_voxel[key] = max(bytes_per_voxel.get(key, 0), peak / n_voxels)
                log(f"memory {key} at {n}: "
                    + (f"{peak / 2**20:.1f} MiB" if peak is not None
                       else row["memory"].get("error", "?")))
        os.remove(mask_path)
        size_results["load_end"] = os.getloadavg()

    for key in runs:
        results["tools"][key]["growth_exponent"] = growth_exponent(history[key])

    if not args.no_shapes:
        results["shapes"] = shape_errors(args, {k: v for k, v in runs.items()
                                                if results["tools"][k]["task"] == "thickness"})
    results["load_end"] = os.getloadavg()
    return results


def summarise(key, out, row, mask, spacing, diameter_mm, reference):
    """Keep the numbers a report needs from a tool's output (first timed call)."""
    from _peers import ALL_TOOLS

    task = ALL_TOOLS[key].task
    if task == "thickness":
        diameter = diameter_mm(key, out, spacing)
        row.update(thickness_accuracy(diameter, reference, mask, spacing))
    elif task in ("euler", "conn_d"):
        row["value"] = out
    elif task == "plate_model":
        row["record"] = out
    elif task == "trabecular":
        row["record"] = {k: v for k, v in out.items() if isinstance(v, (int, float, str))}


def shape_errors(args, runs):
    """Mean local thickness / nominal diameter - 1 for every tool and shape."""
    from _peers import diameter_mm
    from _shapes import cases, digitised_diameter

    rows = []
    for kind, d, offset, mask, region in cases(args.shape_diameters, args.shape_offsets,
                                              args.plate_thicknesses):
        row = {"kind": kind, "d": d, "offset": offset,
               "digitised_d": digitised_diameter(kind, mask, region)}
        measured = mask & region
        for key, run in runs.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    diameter = diameter_mm(key, run(mask, 1.0), 1.0)
                row[key] = float(np.mean(diameter[measured])) / d - 1.0
            except Exception as exc:  # noqa: BLE001 - report, carry on with the other tools
                row[key] = None
                row.setdefault("errors", {})[key] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    log(f"digitisation table: {len(rows)} shapes")
    return rows


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def fmt(value, spec=".3g", missing="–"):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def status_of(row):
    if row is None:
        return "not run"
    return row.get("skipped") or row.get("error") or ""


def memory_cells(row, n_voxels):
    memory = (row or {}).get("memory") or {}
    peak = memory.get("peak_bytes")
    if peak is None:
        return (memory.get("error", "–") if memory else "–"), "–"
    return f"{peak / 2**20:.0f}", f"{peak / n_voxels:.1f}"


def write_report(results, path):
    tools = results["tools"]
    machine = results["machine"]
    out = []
    out.append("# microarch morphometry benchmark\n")
    out.append("Generated by `benchmarks/bench_morphometry.py`; see `benchmarks/README.md` for "
               "the method. Times are wall-clock seconds, best of the repeats, all tools run "
               "interleaved in one process; ratios (peer / microarch) come from the same run. "
               "These machines are shared and noisy: compare ratios, not absolute times, and "
               "note the load averages.\n")
    out.append("## Machine\n")
    rows = [[k, machine[k]] for k in ("date", "cpu", "cores", "memory", "os", "python",
                                      "numba threads", "microarch commit", "command")]
    rows.append(["load average (1, 5, 15 min) at start",
                 ", ".join(f"{x:.2f}" for x in results["load_start"])])
    rows.append(["load average at end", ", ".join(f"{x:.2f}" for x in results["load_end"])])
    rows.append(["phantom", results.get("phantom", "–")])
    out.append(table(["", ""], rows))
    out.append("\nPackage versions: " + ", ".join(
        f"{name} {v}" for name, v in machine["versions"].items()) + "\n")

    unavailable = [(t["label"], t["reason"]) for t in tools.values() if not t["available"]]
    if unavailable:
        out.append("Tools not run: " + "; ".join(f"**{label}**: {reason}"
                                                 for label, reason in unavailable) + "\n")

    # exactness
    out.append("## 1. Exactness of the reference kernel\n")
    if "oracle" in results:
        out.append("microarch `local_thickness(convention=\"continuous\")` against the "
                   "brute-force oracle `tests/oracles.py::local_thickness_continuous` on small "
                   "random volumes (the oracle is O(N²); it is only feasible this small). "
                   "Accuracy columns below use microarch's kernel as the reference only "
                   "because it passes this check.\n")
        out.append(table(
            ["shape", "spacing (mm)", "edge", "bone voxels", "max abs diff (voxels)",
             "equal", "oracle time (s)"],
            [[r["shape"], r["spacing"], r["edge"], r["bone voxels"],
              f"{r['max |diff| (voxels)']:.1e}", "yes" if r["equal"] else "**NO**",
              f"{r['oracle_s']:.1f}"] for r in results["oracle"]]))
        out.append("")
    else:
        out.append(results.get("oracle_error", "skipped (--no-oracle)") + "\n")

    sizes = list(results["sizes"])
    thickness_keys = [k for k, t in tools.items() if t["task"] == "thickness"]

    # local thickness
    out.append("## 2. Local thickness on the random trabecular phantom\n")
    out.append("Mean/SD: the diameter map (mm) over the bone voxels the tool painted. Bias and "
               "MAE: per painted bone voxel, tool minus microarch's exact continuous map, in "
               "voxels (negative = thinner). '≤½ vox': share of painted bone voxels within half "
               "a voxel of the exact map. 'unpainted': bone voxels the tool leaves at 0 "
               "(excluded from the other columns, as the tools' own statistics exclude them). "
               "Peak memory: extra resident "
               "memory of one call in a fresh process, output included; B/vox = bytes per "
               "image voxel.\n")
    for n in sizes:
        s = results["sizes"][n]
        ref = s["tools"].get("microarch-continuous", {}).get("best_s")
        out.append(f"### {n}³ (BV/TV {s['bv_tv']:.3f}; load {s['load'][0]:.2f} → "
                   f"{s['load_end'][0]:.2f})\n")
        rows = []
        for key in thickness_keys:
            if not tools[key]["available"]:
                rows.append([tools[key]["label"]] + ["–"] * 10 + [tools[key]["reason"]])
                continue
            r = s["tools"].get(key)
            best = (r or {}).get("best_s")
            mem_mb, mem_b = memory_cells(r, s["n_voxels"])
            rows.append([
                tools[key]["label"], fmt(best, ".3f"),
                fmt(best / ref if best and ref else None, ".2f"),
                mem_mb, mem_b,
                fmt(r.get("mean_mm") if r else None, ".4f"),
                fmt(r.get("sd_mm") if r else None, ".4f"),
                fmt(r.get("bias_vox") if r else None, "+.3f"),
                fmt(r.get("mae_vox") if r else None, ".3f"),
                fmt(r.get("within_half_pct") if r else None, ".1f"),
                fmt(r.get("unpainted_pct") if r else None, ".2f"),
                status_of(r),
            ])
        out.append(table(["tool", "time (s)", "× microarch", "peak (MiB)", "B/vox",
                          "mean (mm)", "SD (mm)", "bias (vox)", "MAE (vox)", "≤½ vox (%)",
                          "unpainted (%)", "note"], rows))
        out.append("")

    # overheads and growth
    out.append("## 3. Start-up cost and growth with size\n")
    out.append("Import: time to import the tool in a fresh interpreter. First call, cached: "
               "the first call on a 24³ volume in that fresh interpreter, with the numba cache "
               "the benchmark filled (what a user sees after the first run). First call, cold: "
               "in the benchmark process with a fresh, empty numba cache (compile included; "
               "kernels already compiled for a tool listed above are not compiled again); "
               "second call: the same call again; compile ≈ their difference. Growth "
               "exponent b: least-squares fit of time ∝ (voxels)^b over the sizes run.\n")
    rows = []
    first_size = sizes[0] if sizes else None
    for key, t in tools.items():
        if not t["available"]:
            continue
        memory = (results["sizes"][first_size]["tools"].get(key) or {}).get("memory", {}) \
            if first_size is not None else {}
        rows.append([t["label"], fmt(memory.get("import_s"), ".2f"),
                     fmt(memory.get("warmup_s"), ".2f"),
                     fmt(t.get("first_call_s"), ".2f"), fmt(t.get("second_call_s"), ".3f"),
                     fmt(t.get("compile_s"), ".2f"), fmt(t.get("growth_exponent"), ".2f")])
    out.append(table(["tool", "import (s)", "first call 24³, cached (s)",
                      "first call 24³, cold (s)", "second call 24³ (s)",
                      "compile ≈ (s)", "growth b"], rows))
    out.append("")

    # Euler / Conn.D
    out.append("## 4. Euler characteristic and Conn.D\n")
    out.append("Target: microarch ≥ 10× faster than `skimage.measure.euler_number`. "
               "Conn.D includes the Odgaard–Gundersen edge correction, which skimage does not "
               "offer; its ratio is still taken against skimage's uncorrected χ.\n")
    rows = []
    for n in sizes:
        s = results["sizes"][n]["tools"]
        ma, sk, cd = (s.get(k) or {} for k in ("microarch-euler", "skimage-euler",
                                                "microarch-connd"))
        t_ma, t_sk, t_cd = ma.get("best_s"), sk.get("best_s"), cd.get("best_s")
        same = ("yes" if ma.get("value") == sk.get("value") else "**NO**") \
            if "value" in ma and "value" in sk else "–"
        speedup = t_sk / t_ma if t_ma and t_sk else None
        rows.append([
            f"{n}³", fmt(t_ma, ".4f"), fmt(t_sk, ".4f"), fmt(speedup, ".1f"),
            "–" if speedup is None else ("yes" if speedup >= 10 else "**no**"),
            ma.get("value", "–"), same,
            memory_cells(ma, results["sizes"][n]["n_voxels"])[1],
            memory_cells(sk, results["sizes"][n]["n_voxels"])[1],
            fmt(t_cd, ".4f"), fmt(t_sk / t_cd if t_cd and t_sk else None, ".1f"),
            fmt(cd.get("value"), ".4g"),
        ])
    out.append(table(["size", "microarch χ (s)", "skimage χ (s)", "speed-up", "≥ 10×", "χ",
                      "same χ", "microarch B/vox", "skimage B/vox", "Conn.D (s)",
                      "skimage / Conn.D", "Conn.D (1/mm³)"], rows))
    out.append("")

    # ITK and trabecular
    out.append("## 5. ITKBoneMorphometry (plate model) beside microarch `trabecular()`\n")
    out.append("ITK's Tb.Th and Tb.Sp come from the Parfitt plate model (Tb.Th = BV/TV ÷ Tb.N, "
               "Tb.N = mean boundary crossings per unit length along the three axes); "
               "microarch's are direct (local thickness, mid-axis spacing). The two are not "
               "expected to agree; they are listed so users can see the size of the model "
               "difference.\n")
    rows = []
    for n in sizes:
        s = results["sizes"][n]
        itk_row = s["tools"].get("itk-features") or {}
        tb = s["tools"].get("microarch-trabecular") or {}
        itk_rec, tb_rec = itk_row.get("record", {}), tb.get("record", {})
        for label, rec, row in (("ITK features", itk_rec, itk_row),
                                ("microarch trabecular()", tb_rec, tb)):
            mem_mb, mem_b = memory_cells(row, s["n_voxels"])
            rows.append([f"{n}³", label, fmt(row.get("best_s"), ".2f"), mem_mb, mem_b,
                         fmt(rec.get("BV/TV"), ".4f"), fmt(rec.get("Tb.Th"), ".4f"),
                         fmt(rec.get("Tb.Sp"), ".4f"), fmt(rec.get("Tb.N"), ".3f"),
                         fmt(rec.get("BS/BV"), ".2f"), status_of(row) if row else "–"])
    out.append(table(["size", "tool", "time (s)", "peak (MiB)", "B/vox", "BV/TV", "Tb.Th (mm)",
                      "Tb.Sp (mm)", "Tb.N (1/mm)", "BS/BV (1/mm)", "note"], rows))
    out.append("")
    target_rows = []
    for n in sizes:
        tb = results["sizes"][n]["tools"].get("microarch-trabecular") or {}
        if not tb.get("best_s"):
            continue
        _, b_per_voxel = memory_cells(tb, results["sizes"][n]["n_voxels"])
        ok_time = "yes" if tb["best_s"] <= 10 else "no"
        ok_mem = "–" if b_per_voxel == "–" else ("yes" if float(b_per_voxel) <= 16 else "no")
        target_rows.append([f"{n}³", f"{tb['best_s']:.2f}", ok_time if n == 256 else "(n/a)",
                            b_per_voxel, ok_mem])
    if target_rows:
        out.append("Targets for the full record at 256³: ≤ 10 s and ≤ 16 bytes per voxel.\n")
        out.append(table(["size", "trabecular() (s)", "≤ 10 s at 256³", "peak B/vox",
                          "≤ 16 B/vox"], target_rows))
        out.append("")

    # shapes
    if "shapes" in results:
        out.append("## 6. Digitisation error per shape\n")
        out.append("Mean local thickness over the shape ÷ analytic diameter − 1, in %. Rods and "
                   "spheres: mean over centre offsets "
                   f"{sorted({r['offset'] for r in results['shapes'] if r['kind'] != 'plate'})} "
                   "voxel along every axis, ± half the range across offsets. Rods run through "
                   "the image and plates span it; only a central region (the structure going "
                   "on for d + 2 voxels beyond it) is averaged, so no tool's border convention "
                   "enters. 'digitised': the diameter of the disc/ball with the digitised "
                   "area/volume ÷ d − 1 (the rasterisation itself).\n")
        keys = [k for k in thickness_keys if tools[k]["available"]]
        header = ["shape", "d (vox)", "digitised"] + [tools[k]["label"] for k in keys]
        rows = []
        for kind in ("rod", "sphere", "plate"):
            group = [r for r in results["shapes"] if r["kind"] == kind]
            for d in sorted({r["d"] for r in group}):
                cases = [r for r in group if r["d"] == d]
                cells = [kind, d, pct_cell([c["digitised_d"] / d - 1 for c in cases])]
                cells += [pct_cell([c.get(k) for c in cases]) for k in keys]
                rows.append(cells)
        out.append(table(header, rows))
        out.append("")
        summary = []
        for kind in ("rod", "sphere", "plate"):
            for smallest in (0, 8):
                group = [r for r in results["shapes"] if r["kind"] == kind
                         and r["d"] >= smallest]
                if not group:
                    continue
                label = f"{kind}, all d" if not smallest else f"{kind}, d ≥ {smallest}"
                cells = [label]
                for k in keys:
                    values = 100 * np.array([r[k] for r in group if r.get(k) is not None])
                    cells.append(f"{values.mean():+.1f} / {np.abs(values).mean():.1f}"
                                 if values.size else "–")
                summary.append(cells)
        out.append("Summary: mean error / mean absolute error (%) over the sizes and offsets.\n")
        out.append(table(["", *[tools[k]["label"] for k in keys]], summary))
        out.append("")

    out.append("## Tools\n")
    out.append(table(["key", "tool", "what is called"],
                     [[k, t["label"], t["note"] or "–"] for k, t in tools.items()]))
    out.append("")
    memories = {row.get("memory", {}).get("method") for s in results["sizes"].values()
                for row in s["tools"].values() if row.get("memory")}
    memories.discard(None)
    if memories:
        out.append(f"Memory method used: {', '.join(sorted(memories))}.\n")

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("\n".join(out))
    with open(os.path.splitext(path)[0] + ".json", "w") as handle:
        json.dump(results, handle, indent=1, default=str)


def pct_cell(values):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    values = 100 * np.asarray(values)
    if len(values) == 1:
        return f"{values[0]:+.1f}"
    return f"{values.mean():+.1f} ±{(values.max() - values.min()) / 2:.1f}"


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="microarch-bench-") as work_dir:
        configure_environment(args, os.path.join(work_dir, "numba-cache"))
        if args.threads is not None:
            from microarch._shared import threads

            threads.limit(args.threads)
        start = time.perf_counter()
        results = run_benchmark(args, work_dir)
        results["total_s"] = time.perf_counter() - start
        write_report(results, args.out)
    log(f"wrote {args.out} ({results['total_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
