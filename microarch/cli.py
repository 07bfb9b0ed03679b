"""The ``microarch`` command: the workflow, one scan, one subject, phantoms, sample sheets.

::

    microarch run [--configfile F] [--samples TSV] [--directory DIR] [SNAKEMAKE ARGS...]
    microarch measure SCAN [--mask M] [--spacing S] [-o OUT]
    microarch compare SCAN SCAN [SCAN ...] [--roles R ...] [-o OUT]
    microarch phantom KIND PATH [--shape Z Y X] [--seed N]      (KIND cohort: a folder)
    microarch init-config SCAN_DIR [-o DIR] [--force]
    microarch report [OUT] [--directory DIR]

``run`` and ``report`` hand over to Snakemake (imported only then): any option this
command does not know goes to Snakemake unchanged (``--keep-going``, ``--profile``,
``--executor slurm``, ``-n``, ...). This module is the only place in microarch that
turns errors into exit codes: 0 success, 1 a scan or comparison failed, 2 bad input
(sample sheet, configuration, arguments).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# Snakemake options that decide where or how widely jobs run; without any of them
# `run` adds --cores (Snakemake refuses to run locally without it).
_SCALE_OPTIONS = ("--cores", "-c", "--jobs", "-j", "--executor", "-e", "--profile",
                  "--workflow-profile", "--dry-run", "--dryrun", "-n", "--lint")


def _version():
    import microarch

    return microarch.__version__


def _has_option(arguments, names):
    return any(a == n or a.startswith(n + "=") or (len(n) == 2 and a.startswith(n) and
                                                   not a.startswith("--"))
               for a in arguments for n in names)


def _snakemake_argv(args, extra):
    """The Snakemake argument list for `run` and `report`."""
    from microarch.workflow import default_config_path, snakefile

    argv = ["--snakefile", str(snakefile())]
    workdir = Path(args.directory) if args.directory else Path.cwd()
    if args.directory:
        argv += ["--directory", str(args.directory)]
    configfile = args.configfile
    if configfile is None and not (workdir / "config" / "config.yaml").is_file():
        # e.g. an installed wheel run from an empty folder: the packaged defaults, whose
        # sample sheet (the demo cohort of a checkout) is not there
        if not getattr(args, "samples", None) and not _has_option(extra, ("--config", "-C")):
            raise ValueError(f"no config/config.yaml in {workdir}: pass --samples SHEET (and "
                             "--configfile FILE for other parameters), or write both with "
                             "`microarch init-config SCAN_DIR`")
        configfile = default_config_path()
    if configfile is not None:
        argv += ["--configfile", str(Path(configfile).resolve())]
    if getattr(args, "samples", None):
        if _has_option(extra, ("--config", "-C")):
            raise ValueError("--samples cannot be combined with Snakemake's --config; pass "
                             "samples=PATH inside --config instead")
        argv += ["--config", f"samples={Path(args.samples).resolve()}"]
    return argv


def _call_snakemake(argv):
    from snakemake.cli import main as snakemake_main

    try:
        snakemake_main(argv)
    except SystemExit as exc:  # snakemake.cli.main always exits
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def _cmd_run(args, extra):
    if args.help_snakemake:
        return _call_snakemake(["--help"])
    argv = _snakemake_argv(args, extra)
    if args.cores is not None:
        argv += ["--cores", str(args.cores)]
    elif not _has_option(extra, _SCALE_OPTIONS):
        argv += ["--cores", "all"]
    return _call_snakemake(argv + list(extra))


def _cmd_report(args, extra):
    argv = _snakemake_argv(args, extra)
    return _call_snakemake(argv + ["--report", str(args.output), *extra])


def _load_config(args):
    from microarch.workflow import load_config

    overrides = {}
    if getattr(args, "no_smi", False) or getattr(args, "no_plate_rod", False):
        overrides["measure"] = {}
        if args.no_smi:
            overrides["measure"]["smi"] = False
        if args.no_plate_rod:
            overrides["measure"]["plate_rod"] = False
    return load_config(args.configfile, overrides=overrides)


def _scan_id(path):
    from microarch.workflow._init_config import _safe, _strip_suffix

    stem, _ = _strip_suffix(Path(path).name)
    return _safe(stem) or "scan"


def _print_measures(record, names):
    measures, units = record.get("measures", {}), record.get("units", {})
    width = max((len(n) for n in names), default=8)
    for name in names:
        if name in measures:
            value = measures[name]
            text = "nan" if value is None else f"{value:.4g}"
            print(f"  {name:<{width}}  {text:>10}  {units.get(name, '')}")


_SUMMARY = ("BV/TV", "Tb.Th", "Tb.Sp", "Tb.N", "Conn.D", "SMI", "pBV/TV", "rBV/TV",
            "Tb.BMD", "Ct.Th", "Ct.Po")


def _cmd_measure(args, extra):
    from microarch._shared.threads import limit
    from microarch.workflow import analyse_scan, parse_spacing

    config = _load_config(args)
    limit(args.threads)
    scan_id = args.id or _scan_id(args.scan)
    out = Path(args.output) / scan_id
    record = analyse_scan(
        args.scan, scan_id=scan_id, metrics=out / "metrics.json", montage=out / "qc.png",
        images=out / "images", mask=args.mask, spacing=parse_spacing(args.spacing),
        segmentation=config["segmentation"], measure=config["measure"], qc=config["qc"])
    if record["status"] != "ok":
        print(f"{scan_id}: failed at {record['stage']}: {record['reason']}", file=sys.stderr)
        print(f"record: {out / 'metrics.json'}", file=sys.stderr)
        return 1
    print(f"{scan_id}: ok ({out / 'metrics.json'})")
    _print_measures(record, _SUMMARY)
    for note in record.get("notes", []):
        print(f"  note: {note}")
    return 0


def _default_roles(count):
    if count == 2:
        return ["baseline", "on_ai"]
    return ["baseline", *["on_ai"] * (count - 2), "post_withdrawal"]


def _cmd_compare(args, extra):
    import pandas as pd

    from microarch._shared.threads import limit
    from microarch.workflow import analyse_scan, compare_subject, parse_spacing

    scans = list(args.scans)
    if len(scans) < 2:
        raise ValueError("compare needs at least two scans of the same subject and site")
    roles = args.roles or _default_roles(len(scans))
    visits = args.visits or [f"V{i + 1}" for i in range(len(scans))]
    for name, values in (("--roles", roles), ("--visits", visits)):
        if len(values) != len(scans):
            raise ValueError(f"{name} needs one value per scan ({len(scans)}); got "
                             f"{len(values)}")
    config = _load_config(args)
    limit(args.threads)
    out = Path(args.output)
    spacing = parse_spacing(args.spacing)
    entries, metrics, images = [], [], []
    for scan, visit, role in zip(scans, visits, roles):
        scan_id = f"{args.subject}_{visit}"
        folder = out / "scans" / scan_id
        record = analyse_scan(
            scan, scan_id=scan_id, metrics=folder / "metrics.json", montage=folder / "qc.png",
            images=folder / "images", spacing=spacing,
            info={"subject": args.subject, "site": args.site, "visit": visit, "role": role},
            segmentation=config["segmentation"], measure=config["measure"], qc=config["qc"])
        print(f"{scan_id} ({role}): {record['status']}"
              + (f" at {record['stage']}: {record['reason']}" if record["stage"] else ""))
        entries.append({"scan_id": scan_id, "visit": visit, "role": role,
                        "spacing": spacing})
        metrics.append(folder / "metrics.json")
        images.append(folder / "images")
    summary = compare_subject(
        entries, scans=scans, metrics=metrics, images=images, subject=args.subject,
        site=args.site, change=out / "change.tsv", memory=out / "memory.tsv",
        registration=out / "registration.tsv", remodelling=out / "remodelling.tsv",
        connections=out / "connections.tsv", summary=out / "comparison.json",
        figure=out / "registration.png", longitudinal=config["longitudinal"])
    print(f"comparison: {summary['status']}"
          + (f" ({summary['reason']})" if summary["reason"] else ""))
    memory = pd.read_csv(out / "memory.tsv", sep="\t")
    if len(memory):
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            print(memory[["measure", "baseline", "on_ai", "post", "index", "index_sd",
                          "reason"]].to_string(index=False))
    connections = pd.read_csv(out / "connections.tsv", sep="\t")
    for row in connections.itertuples():
        print(f"connections of the baseline tracked to {row.post_visit}: {row.present_baseline} "
              f"present, {row.lost_on_ai} lost on AI, {row.restored} restored")
    print(f"tables and pictures in {out}")
    return 0 if summary["status"] == "ok" else 1


_PHANTOMS = ("distal-radius", "trabecular", "random", "cohort")


def _cmd_phantom(args, extra):
    import numpy as np

    from microarch import io, phantoms

    if (args.output is None) == (args.output_option is None):
        raise ValueError("give the output once: `phantom KIND PATH` or `phantom KIND -o PATH`")
    output = Path(args.output or args.output_option)
    seed = 0 if args.seed is None else args.seed
    if args.kind == "cohort":
        options = {} if args.seed is None else {"seed": args.seed}
        if args.shape is not None:
            options["shape"] = tuple(args.shape)
        written = phantoms.write_demo_cohort(output, n_subjects=args.subjects, **options)
        print(f"{output}: demo cohort of {args.subjects} subjects, {len(written)} files; "
              f"sample sheet {output / 'samples.tsv'}")
        return 0
    shape = tuple(args.shape or (48, 128, 112))
    if args.kind == "random":
        mask = phantoms.random_trabecular(shape, spacing=args.spacing, seed=seed).mask
        spacing = args.spacing
    elif args.kind == "trabecular":
        bone = phantoms.trabecular_bone(shape, spacing=args.spacing, seed=seed)
        mask, spacing = bone.mask, bone.spacing
    else:
        site = phantoms.distal_radius(shape, spacing=args.spacing, seed=seed)
        scan = phantoms.render_scan(site, spacing_out=args.spacing, noise_sd=args.noise,
                                    seed=seed)
        calibration = io.Calibration(**{k: v for k, v in scan.calibration.items()
                                        if k in ("mu_scaling", "density_slope",
                                                 "density_intercept", "mu_water")})
        if output.name.lower().endswith(".aim"):
            io.write_aim(output, scan.native, spacing=scan.spacing, calibration=calibration)
        else:
            io.write_image(output, scan.native, spacing=scan.spacing,
                           calibration=calibration)
        print(f"{output}: {args.kind} scan {shape}, {scan.spacing[0]} mm voxels, native "
              "int16 with calibration")
        return 0
    mask = np.asarray(mask, bool)
    if output.name.lower().endswith(".aim"):
        io.write_aim(output, mask, spacing=spacing)
    else:
        io.write_image(output, mask, spacing=spacing)
    print(f"{output}: {args.kind} bone mask {shape}, BV/TV {mask.mean():.3f}")
    return 0


def _cmd_init_config(args, extra):
    from microarch.workflow import init_config

    result = init_config(args.scan_dir, args.output, overwrite=args.force)
    table = result["table"]
    print(f"{result['samples']}: {len(table)} scans of "
          f"{table.loc[table['subject'] != '', 'subject'].nunique()} subjects")
    if result["config"] is not None:
        print(f"{result['config']}: default configuration (samples: {result['samples']})")
    for note in result["notes"]:
        print(f"note: {note}")
    if result["blanks"]:
        print(f"{result['blanks']} rows have blank cells that could not be guessed: fill them "
              f"in, then run `microarch run --configfile {args.output}/config.yaml`")
    else:
        print(f"check the guesses, then run `microarch run --configfile "
              f"{args.output}/config.yaml`")
    return 0


def _parser():
    parser = argparse.ArgumentParser(
        prog="microarch", allow_abbrev=False,
        description="HR-pQCT trabecular bone microarchitecture: run the workflow on a cohort, "
                    "measure one scan, compare visits, make phantoms and sample sheets.")
    parser.add_argument("--version", action="version", version=f"microarch {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show progress and warnings of the library")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, **kwargs):
        # no abbreviations: Snakemake's --config would be taken for --configfile
        return commands.add_parser(name, allow_abbrev=False, **kwargs)


    def workflow_options(sub):
        sub.add_argument("--configfile", help="workflow configuration (default: "
                         "config/config.yaml in the working directory, else the packaged "
                         "defaults)")
        sub.add_argument("--directory", "-d", help="working directory: results/ and logs/ "
                         "are written here (default: the current directory)")

    run = command(
        "run", help="run the Snakemake workflow (extra options go to Snakemake)",
        description="Run the workflow: every scan of the sample sheet, every subject's "
                    "comparison, the cohort tables. Options not listed here are passed to "
                    "Snakemake unchanged, e.g. -n, --keep-going, --profile profiles/slurm.")
    workflow_options(run)
    run.add_argument("--samples", help="sample sheet (overrides the configuration's samples)")
    run.add_argument("--cores", "-c", default=None,
                     help="cores for local runs (default: all, unless a profile, executor "
                          "or --jobs says otherwise)")
    run.add_argument("--help-snakemake", action="store_true",
                     help="show Snakemake's own options and exit")
    run.set_defaults(func=_cmd_run, passthrough=True)

    report = command("report", help="write Snakemake's HTML report of a run",
                                 description="Write the report (QC, Metrics, Longitudinal) "
                                             "of a finished run.")
    report.add_argument("output", nargs="?", default="report.html",
                        help="report file, .html or .zip (default report.html, in the "
                             "working directory)")
    workflow_options(report)
    report.set_defaults(func=_cmd_report, passthrough=True, samples=None)

    def analysis_options(sub):
        sub.add_argument("--configfile", help="workflow configuration for the "
                         "segmentation and measure parameters (default: the packaged one)")
        sub.add_argument("--spacing", help="voxel size override in mm: one value or z,y,x")
        sub.add_argument("--threads", type=int, default=None,
                         help="threads (default: all CPUs)")
        sub.add_argument("--no-smi", action="store_true", help="skip SMI (faster)")
        sub.add_argument("--no-plate-rod", action="store_true",
                         help="skip the plate/rod decomposition")

    measure = command(
        "measure", help="analyse one scan without Snakemake",
        description="Read, segment and measure one scan; writes metrics.json (with status "
                    "and provenance), qc.png and images/ under OUTPUT/SCAN_ID.")
    measure.add_argument("scan", help="scan file (AIM, ISQ, NIfTI, MHA, NRRD, TIFF) or "
                                      "DICOM folder")
    measure.add_argument("--mask", help="periosteal contour mask on the scan's grid")
    measure.add_argument("--id", help="scan id (default: from the file name)")
    measure.add_argument("-o", "--output", default="microarch-results",
                         help="output folder (default microarch-results)")
    analysis_options(measure)
    measure.set_defaults(func=_cmd_measure)

    compare = command(
        "compare", help="compare the visits of one subject without Snakemake",
        description="Analyse each scan, register the visits to the first, re-measure them in "
                    "their common region and compute change and skeletal memory.")
    compare.add_argument("scans", nargs="+", help="the scans, in chronological order")
    compare.add_argument("--roles", nargs="+", choices=("baseline", "on_ai",
                                                        "post_withdrawal", "other"),
                         help="role of each scan (default: baseline, on_ai ..., "
                              "post_withdrawal)")
    compare.add_argument("--visits", nargs="+", help="visit labels (default V1, V2, ...)")
    compare.add_argument("--subject", default="subject", help="subject id")
    compare.add_argument("--site", default="site", help="skeletal site")
    compare.add_argument("-o", "--output", default="microarch-compare",
                         help="output folder (default microarch-compare)")
    analysis_options(compare)
    compare.set_defaults(func=_cmd_compare)

    phantom = command(
        "phantom", help="write a synthetic scan, bone mask or demo cohort",
        description="distal-radius: a rendered grey-scale scan (native int16 with a "
                    "calibration) of trabecular bone in a cortical shell; trabecular: a "
                    "plate-and-rod bone mask; random: a quick random bone mask; cohort: the "
                    "demo cohort (scans of simulated subjects before, on and after "
                    "aromatase-inhibitor therapy, a sample sheet and the truth) in a folder.")
    phantom.add_argument("kind", choices=_PHANTOMS)
    phantom.add_argument("output", nargs="?",
                         help="file to write (.nii.gz, .mha or .aim), or a folder for cohort")
    phantom.add_argument("-o", "--output", dest="output_option", help="same as OUTPUT")
    phantom.add_argument("--shape", nargs=3, type=int, default=None, metavar=("Z", "Y", "X"),
                         help="grid (default 48 128 112; cohort: the demo's)")
    phantom.add_argument("--spacing", type=float, default=0.0607, help="voxel size, mm")
    phantom.add_argument("--seed", type=int, default=None)
    phantom.add_argument("--noise", type=float, default=80.0,
                         help="noise SD of rendered scans, mg HA/cm³")
    phantom.add_argument("--subjects", type=int, default=3, help="cohort: number of subjects")
    phantom.set_defaults(func=_cmd_phantom)

    init = command(
        "init-config", help="write a sample sheet from a folder of scans",
        description="Guess subject, site, visit and role from the names and folders of the "
                    "scans; leave blanks where it cannot. Writes OUTPUT/samples.tsv and, if "
                    "missing, OUTPUT/config.yaml. The scan folder is never written to.")
    init.add_argument("scan_dir", help="folder of scans (searched recursively)")
    init.add_argument("-o", "--output", default="config", help="output folder (default config)")
    init.add_argument("--force", action="store_true", help="replace an existing samples.tsv")
    init.set_defaults(func=_cmd_init_config)
    return parser


def _tolerate_ascii_console():
    """Let units such as mm³ print on a console whose encoding cannot show them."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # not so for a replaced stream (pytest, IDEs)
            try:
                "³".encode(stream.encoding or "ascii")
            except (LookupError, UnicodeEncodeError):
                stream.reconfigure(errors="backslashreplace")


def main(argv=None) -> int:
    """Entry point of the ``microarch`` console script; returns the exit status."""
    from microarch.workflow import ConfigError, SampleSheetError

    _tolerate_ascii_console()
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    if not getattr(args, "passthrough", False):  # Snakemake configures its own logging
        # failures are summarised by the commands themselves; the log adds detail on demand
        handler = logging.StreamHandler()
        handler.setLevel(logging.INFO if args.verbose else logging.ERROR)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.getLogger("microarch").addHandler(handler)
        logging.getLogger("microarch").setLevel(logging.INFO)
    try:
        return int(args.func(args, extra) or 0)
    except (SampleSheetError, ConfigError) as exc:
        print(f"microarch: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, FileExistsError, ValueError) as exc:
        print(f"microarch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
