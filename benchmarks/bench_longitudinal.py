"""Benchmark of the longitudinal stage: three full-size visits of one synthetic subject.

    python benchmarks/bench_longitudinal.py --out benchmarks/results/longitudinal.md
    python benchmarks/bench_longitudinal.py --shape 84 250 250 --out /tmp/small.md

A synthetic distal radius (``microarch.phantoms.distal_radius``, 168 x 500 x 500 voxels of
0.0607 mm by default) is imaged three times with ``render_scan`` (PSF 0.8 voxel, noise SD
80 mg HA/cm³): at baseline; on AI therapy, with a quarter of its rods removed; after
withdrawal, with half of those back. The follow-ups are seen through known rigid motions
(about 1-1.5 degrees and 0.3-0.6 mm). ``compare_visits`` then registers, resamples,
builds the common region, re-measures every visit with the default measure
(``trabecular`` + ``plate_rod`` + mean density), maps remodelling and tracks the
baseline's connections, with ``--threads`` threads (default 2). Target: all of it within
3 minutes on 2 cores.

Each stage is timed by wrapping the function ``compare_visits`` calls for it (the
wrappers only read the clock). Peak memory of the ``compare_visits`` call is the kernel's
resident-set high-water mark over the call (``/proc/self/clear_refs`` reset, then VmHWM -
VmRSS before), as in ``_memory_worker.py``. numba kernels are compiled (or loaded from
the cache) on a small subject first, so compilation is reported apart. Accuracy: the
registration errors against the known motions, and the connection counts against those
of the exact (unmoved) phantom masks on the same graph.

The report is written as markdown, and the raw numbers as JSON beside it.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import sys
import time

from _proc import reset_high_water_mark, status_bytes

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# Stages: (name shown, function in microarch.longitudinal._compare that performs it).
STAGES = (
    ("registration", "_register_pair"),
    ("registration (checks of composed transforms)", "_grid_quality"),
    ("resampling", "_on_grid"),
    ("segmentation", "_default_segment"),
    ("common region", "common_region"),
    ("re-measurement", "_call_measure"),
    ("change + skeletal memory tables", "change_table"),
    ("change + skeletal memory tables", "skeletal_memory"),
    ("remodelling", "remodelling_pair"),
    ("connections", "_track"),
)
MOTIONS = {  # rotation about (z, y, x) in degrees, shift (z, y, x) in mm
    "V2": ((0.8, -0.5, 1.2), (0.30, -0.60, 0.45)),
    "V3": ((-0.6, 0.9, -0.7), (-0.25, 0.50, -0.40)),
}


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(168, 500, 500),
                        metavar=("Z", "Y", "X"), help="image shape (default 168 500 500)")
    parser.add_argument("--spacing", type=float, default=0.0607, help="voxel size, mm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rod-removal", type=float, default=0.25,
                        help="fraction of the rods removed on AI")
    parser.add_argument("--measure", choices=("default", "no-thickness"), default="default",
                        help="re-measurement: compare_visits' default_measure, or the same "
                             "without trabecular()'s thickness/spacing/Tb.N maps (BV/TV, "
                             "Conn.D, plate_rod, vBMD) where trabecular() is too slow")
    parser.add_argument("--target-s", type=float, default=180.0,
                        help="time target of the compare_visits call (s)")
    parser.add_argument("--no-exact", action="store_true",
                        help="skip the connection counts on the exact phantom masks")
    parser.add_argument("--note", action="append", default=[],
                        help="a paragraph to append to the report (repeatable)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "longitudinal.md"))
    return parser.parse_args(argv)


def rotation_matrix(angles_deg):
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("zyx", angles_deg, degrees=True).as_matrix()


def moved(volume, angles_deg, shift_mm, spacing, *, order, cval=0.0):
    """``volume`` seen after the rigid motion q = R (p - c) + c + t (p, q in mm; c the
    image centre): output(q) = volume(R^T (q - c - t) + c)."""
    import numpy as np
    from scipy import ndimage as ndi

    matrix = rotation_matrix(angles_deg)
    centre = (np.asarray(volume.shape) - 1) / 2.0
    shift = np.asarray(shift_mm) / spacing
    offset = centre - matrix.T @ (centre + shift)
    dtype = np.float32 if order else np.uint8
    out = ndi.affine_transform(volume.astype(dtype, copy=False), matrix.T, offset=offset,
                               order=order, mode="constant", cval=cval)
    return out if order else out.astype(bool)


def build_subject(args):
    """Three CorticalPhantoms (baseline, on AI, after withdrawal) and their scans."""
    import numpy as np

    from microarch.phantoms import distal_radius, embed_in_cortex, render_scan

    started = time.perf_counter()
    site = distal_radius(tuple(args.shape), spacing=args.spacing, seed=args.seed)
    log(f"baseline phantom {site.mask.shape}: {time.perf_counter() - started:.0f} s")
    bone = site.trabecular_phantom
    table = bone.elements
    rods = table["id"][(table["kind"] == "rod") & (table["n_voxels"] > 0)]
    rng = np.random.default_rng(args.seed)
    removed = rng.choice(rods, size=round(args.rod_removal * rods.size), replace=False)
    back = removed[: removed.size // 2]
    cortex = dict(site.truth["parameters"])
    cortex = {"outer_semi_axes": cortex["outer_semi_axes"], "thickness": cortex["thickness"],
              "porosity": cortex["porosity"], "pore_diameter": cortex["pore_diameter"],
              "pore_length": cortex["pore_length"], "seed": cortex["seed"]}
    on_ai = embed_in_cortex(bone.without(removed), **cortex)
    post = embed_in_cortex(bone.without(np.setdiff1d(removed, back)), **cortex)
    log(f"AI and withdrawal phantoms: {time.perf_counter() - started:.0f} s")
    visits, exact = [], {}
    for k, (visit, role, phantom) in enumerate((("V1", "baseline", site),
                                                ("V2", "on_ai", on_ai),
                                                ("V3", "post_withdrawal", post))):
        density = render_scan(phantom, noise_sd=80.0, seed=k + 1).density
        masks = {"periosteal": phantom.periosteal, "trabecular": phantom.trabecular}
        if visit in MOTIONS:
            angles, shift = MOTIONS[visit]
            density = moved(density, angles, shift, args.spacing, order=1)
            masks = {name: moved(mask, angles, shift, args.spacing, order=0)
                     for name, mask in masks.items()}
        visits.append((visit, role, density, masks))
        exact[visit] = phantom.mask
        log(f"scan {visit} rendered and moved: {time.perf_counter() - started:.0f} s")
    truth = {"rods": int(rods.size), "removed": int(removed.size),
             "restored": int(back.size), "BV/TV": float(site.truth["BV/TV"]),
             "setup_s": time.perf_counter() - started}
    return visits, exact, truth


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def instrument(timings):
    """Wrap the stage functions of microarch.longitudinal._compare; return an undo."""
    import microarch.longitudinal._compare as compare

    originals = {}
    for stage, name in STAGES:
        original = getattr(compare, name)
        originals[name] = original

        @functools.wraps(original)
        def timed(*a, _original=original, _stage=stage, **k):
            start = time.perf_counter()
            try:
                return _original(*a, **k)
            finally:
                timings[_stage] = timings.get(_stage, 0.0) + time.perf_counter() - start

        setattr(compare, name, timed)

    def undo():
        for name, original in originals.items():
            setattr(compare, name, original)

    return undo


def warm_up(threads):
    """Compile (or load) every numba kernel the stage uses, on a small subject."""
    import numpy as np

    from microarch.longitudinal import compare_visits
    from microarch.phantoms import distal_radius, render_scan

    site = distal_radius((24, 64, 64), seed=3)
    image = render_scan(site, noise_sd=80.0, seed=1).density
    masks = {"periosteal": site.periosteal, "trabecular": site.trabecular}
    visits = [(f"W{k}", role, np.roll(image, k, axis=2),
               {n: np.roll(m, k, axis=2) for n, m in masks.items()})
              for k, role in enumerate(("baseline", "on_ai", "post_withdrawal"))]
    compare_visits(visits, spacing=0.0607, threads=threads)


def no_thickness_measure(mask, *, spacing, roi, image=None, masks=None):
    """default_measure without trabecular(): BV/TV, Conn.D, plate/rod (of the trabecular
    bone, as default_measure decomposes it), vBMD."""
    import numpy as np

    from microarch.measure import connectivity_density, plate_rod

    roi_voxels = int(np.count_nonzero(roi))
    record = {"BV/TV": np.count_nonzero(mask & roi) / roi_voxels,
              "Conn.D": connectivity_density(mask, spacing=spacing, roi=roi)}
    trabecular = (masks or {}).get("trabecular")
    bone = mask if trabecular is None else mask & trabecular
    record.update({k: v for k, v in plate_rod(bone, spacing=spacing, roi=roi).items()
                   if k != "TV"})
    if image is not None:
        record["vBMD"] = float(np.asarray(image)[roi].mean(dtype=np.float64))
    return record


def registration_errors(comparison, shape, spacing):
    """Rotation error (deg) and largest target error (voxels) at the bone's box corners."""
    import numpy as np

    centre = (np.asarray(shape) - 1) / 2.0 * spacing
    region = comparison.common_region
    hits = [np.flatnonzero(region.any(axis=tuple(a for a in range(3) if a != axis)))
            for axis in range(3)]
    corners = np.array(np.meshgrid(*[(h[0], h[-1]) for h in hits], indexing="ij"))
    points = corners.reshape(3, -1).T * spacing
    out = {}
    for visit, (angles, shift) in MOTIONS.items():
        registration = comparison.registrations[visit]
        matrix = rotation_matrix(angles)
        expected = (points - centre) @ matrix.T + centre + np.asarray(shift)
        tre = np.linalg.norm(registration.transform_points(points) - expected, axis=1)
        difference = registration.matrix @ matrix.T
        angle = np.degrees(np.arccos(np.clip((np.trace(difference) - 1) / 2, -1, 1)))
        out[visit] = {"status": registration.status, "rotation_error_deg": float(angle),
                      "max_tre_voxels": float(tre.max() / spacing),
                      "dice": float(registration.dice)}
    return out


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def write_report(path, result):
    lines = []
    add = lines.append
    add("# Longitudinal stage: three visits of one synthetic subject")
    add("")
    add(f"Generated {result['date']} by `benchmarks/bench_longitudinal.py` on "
        f"{result['machine']} ({result['cpus']} CPUs visible, {result['threads']} threads "
        f"used). Load average (1/5/15 min) before the timed call "
        f"{result['load_before']}, after it {result['load_after']}: other jobs shared the "
        "CPUs, so the times are upper bounds for an idle machine.")
    add("")
    add(f"Subject: `distal_radius({tuple(result['shape'])}, spacing={result['spacing']}, "
        f"seed={result['seed']})`, trabecular BV/TV {result['truth']['BV/TV']:.3f}; "
        f"{result['truth']['removed']} of {result['truth']['rods']} rods removed on AI, "
        f"{result['truth']['restored']} of them back after withdrawal; scans by "
        "`render_scan` (PSF 0.8 voxel, noise SD 80 mg HA/cm³); follow-ups moved by known "
        "rigid motions. Set-up (phantoms, rendering, motions; not timed below): "
        f"{result['truth']['setup_s']:.0f} s. numba warm-up on a small subject: "
        f"{result['warmup_s']:.0f} s.")
    add("")
    total = result["total_s"]
    verdict = "within" if total <= result["target_s"] else "over"
    add(f"**`compare_visits` wall time: {total:.1f} s ({verdict} the "
        f"{result['target_s']:.0f} s target); peak memory of the call: "
        f"{result['peak_gib']:.2f} GiB** ({result['memory_method']}).")
    add("")
    if result["measure"] != "default":
        add("Re-measurement: **not the default measure** -- `default_measure` without "
            "`trabecular()` (BV/TV, Conn.D, `plate_rod`, vBMD); see the notes below.")
        add("")
    add("| stage | time (s) | share |")
    add("|---|---:|---:|")
    for stage, seconds in result["stages"].items():
        add(f"| {stage} | {seconds:.1f} | {100 * seconds / total:.0f} % |")
    rest = total - sum(result["stages"].values())
    add(f"| other (validation, bookkeeping) | {rest:.1f} | {100 * rest / total:.0f} % |")
    add(f"| **total** | **{total:.1f}** | |")
    add("")
    add("## Registration against the known motions")
    add("")
    add("| visit | status | rotation error (deg) | largest TRE (voxels) | Dice |")
    add("|---|---|---:|---:|---:|")
    for visit, row in result["registration"].items():
        add(f"| {visit} | {row['status']} | {row['rotation_error_deg']:.3f} | "
            f"{row['max_tre_voxels']:.2f} | {row['dice']:.4f} |")
    add("")
    add("TRE: at the corners of the common region's bounding box.")
    add("")
    add("## Connections")
    add("")
    conn = result["connections"]
    if conn is None:
        add("Not computed.")
    else:
        add(f"{conn['graph_connections']} baseline connections in the common region "
            f"({conn['rods']} through rods, {conn['plates']} through plates), "
            f"{conn['junctions']} junctions.")
        add("")
        add("| masks | present at baseline | lost on AI | restored | fraction restored |")
        add("|---|---:|---:|---:|---:|")
        for name, row in conn["counts"].items():
            add(f"| {name} | {row['present_baseline']} | {row['lost_on_ai']} | "
                f"{row['restored']} | {row['fraction_restored']:.3f} |")
        add("")
        add("\"registered\": the visits as `compare_visits` resampled and segmented them; "
            "\"exact phantom\": the phantoms' own masks (no imaging, no motion) on the same "
            "graph and common region.")
    add("")
    add("## Re-measured records (common region)")
    add("")
    keys = ["BV/TV", "Tb.Th", "Tb.Sp", "Tb.N", "Conn.D", "pBV/TV", "rBV/TV", "vBMD"]
    keys = [k for k in keys if any(k in r for r in result["records"].values())]
    add("| visit | " + " | ".join(keys) + " |")
    add("|---|" + "---:|" * len(keys))
    for visit, record in result["records"].items():
        add(f"| {visit} | " + " | ".join(
            f"{record.get(k, float('nan')):.4g}" for k in keys) + " |")
    add("")
    if result["notes"]:
        add("Notes from `compare_visits`: " + "; ".join(result["notes"]))
        add("")
    for note in result.get("report_notes", []):
        add(note)
        add("")
    with open(path, "w") as handle:
        handle.write("\n".join(lines))


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np

    from microarch._shared.threads import limit
    from microarch.longitudinal import compare_visits, track_connections

    limit(args.threads)
    started = time.perf_counter()
    warm_up(args.threads)
    warmup_s = time.perf_counter() - started
    log(f"warm-up: {warmup_s:.0f} s")

    visits, exact, truth = build_subject(args)
    timings = {}
    undo = instrument(timings)
    load_before = os.getloadavg()
    reset = reset_high_water_mark()
    rss_before = status_bytes("VmRSS")
    log("compare_visits ...")
    start = time.perf_counter()
    measure = None if args.measure == "default" else no_thickness_measure
    comparison = compare_visits(visits, subject="bench", spacing=args.spacing,
                                measure=measure, threads=args.threads)
    total = time.perf_counter() - start
    peak = status_bytes("VmHWM") if reset else None
    load_after = os.getloadavg()
    undo()
    log(f"compare_visits: {total:.1f} s")
    if peak is not None and rss_before is not None:
        peak_bytes, method = peak - rss_before, "VmHWM - VmRSS before, clear_refs reset"
    else:
        import resource

        peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        method = "ru_maxrss of the whole process (clear_refs not writable)"

    connections = None
    if comparison.connections is not None:
        tracked = comparison.connections
        graph = tracked.graph
        counts = {"registered": tracked.memory[0]}
        if not args.no_exact:
            log("connections on the exact phantom masks ...")
            exact_result = track_connections(
                exact, spacing=args.spacing, roles=dict(comparison.visits),
                region=comparison.common_region, graph=graph)
            counts["exact phantom"] = exact_result.memory[0]
        kinds = graph.connections["kind"]
        connections = {
            "graph_connections": graph.n_connections,
            "rods": int((kinds == "rod").sum()), "plates": int((kinds == "plate").sum()),
            "junctions": int(graph.junctions["id"].size),
            "counts": {name: {k: row[k] for k in ("present_baseline", "lost_on_ai",
                                                  "restored", "fraction_restored")}
                       for name, row in counts.items()}}
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, Python "
                   f"{platform.python_version()}",
        "cpus": os.cpu_count(), "threads": args.threads,
        "load_before": tuple(round(v, 2) for v in load_before),
        "load_after": tuple(round(v, 2) for v in load_after),
        "shape": list(args.shape), "spacing": args.spacing, "seed": args.seed,
        "truth": truth, "warmup_s": warmup_s, "total_s": total, "target_s": args.target_s,
        "measure": args.measure,
        "stages": timings, "peak_gib": peak_bytes / 2**30, "memory_method": method,
        "registration": registration_errors(comparison, args.shape, args.spacing),
        "connections": connections,
        "records": {v: {k: float(x) for k, x in r.items() if isinstance(x, (int, float))}
                    for v, r in comparison.records.items()},
        "notes": comparison.notes,
        "report_notes": list(args.note),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_report(args.out, result)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as handle:
        json.dump(result, handle, indent=2, default=lambda o: np.asarray(o).tolist())
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
