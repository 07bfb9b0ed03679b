"""The demo cohort in ``sample_data/``: simulated subjects, three visits each, as scanner files.

Subject ``i`` (0-based) is simulated by :func:`~microarch.phantoms.simulate_visits` with a
seed drawn from ``SeedSequence([seed, i])``, so it does not depend on how many subjects
are written. Subjects cycle through three kinds, with a known Conn.D skeletal-memory
index, and three file formats, so the workflow reads every kind of input:

=====  ===========================  =====================  ==================================
``i``  post-withdrawal structure    Conn.D memory index    files
=====  ===========================  =====================  ==================================
0      physiological withdrawal     1.0 (no reconnection)  Scanco AIM v020, calibration in log
1      half of the damage undone    about 0.5              compressed NIfTI, calibration in
                                                           the header description
2      baseline structure restored  0.0                    compressed MetaImage (.mha),
                                                           calibration and visit in the header
=====  ===========================  =====================  ==================================

The demo's AI loss (:data:`DEMO_LOSS`) is stronger than the calibrated
:class:`~microarch.phantoms.AILoss` defaults: a quarter of the connecting rods are cut,
whatever their thickness, so that Conn.D falls by about 44 % and trabecular vBMD by about
5 % (the defaults: about 17 % and 2-3.5 %). A 3.3 mm slab at 82 µm resolves so few of
the calibrated defaults' connection losses that noise and partial volume move a
subject's measured memory index by up to 0.26; with the demo's loss the workflow
recovers every index within 0.1 (``benchmarks/results/memory.md``).

Every file is written deterministically (fixed AIM log time, compressed writers without
time stamps), so the same seed gives byte-identical files with the same library versions;
``SHA256SUMS`` lists them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from numbers import Integral
from pathlib import Path

import numpy as np

from microarch._shared.validation import non_negative_int

DEMO_SEED = 20240
DEMO_SHAPE = (40, 136, 120)
DEMO_SPACING = 0.082
#: AI-loss strengths of the demo subjects (see the module notes): keyword arguments of
#: :class:`~microarch.phantoms.AILoss`.
DEMO_LOSS = {"sever_fraction": 0.25, "thin_rod_bias": 0.0, "gap_mm": 0.2,
             "cavity_volume_fraction": 0.003}
SITE = "radius"

# (recovery, reversal_fraction, format) for subject kind i % 3
_KINDS = (
    ("withdrawal", None, "aim"),
    ("reversal", 0.5, "nifti"),
    ("reversal", 1.0, "mha"),
)
_SUFFIX = {"aim": ".AIM", "nifti": ".nii.gz", "mha": ".mha"}
_FORMAT_NAME = {"aim": "Scanco AIM v020", "nifti": "NIfTI-1 (gzip)", "mha": "MetaImage (zlib)"}
# Scanco logs carry a creation time; a fixed one keeps regenerated files identical.
_AIM_TIME = _dt.datetime(2024, 1, 1, 12, 0, 0)
_AIM_CREATOR = "microarch.phantoms.write_demo_cohort"
_COLUMNS = ("scan_id", "subject", "site", "visit", "role", "path", "mask_path", "spacing")


def subject_id(index: int) -> str:
    """Identifier of demo subject ``index`` (0-based): ``"AI01"``, ``"AI02"``, ..."""
    return f"AI{index + 1:02d}"


def _subject_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _calibration_object(calibration: dict):
    from microarch.io import Calibration

    return Calibration(
        mu_scaling=float(calibration["mu_scaling"]),
        density_slope=float(calibration["density_slope"]),
        density_intercept=float(calibration["density_intercept"]),
        mu_water=float(calibration["mu_water"]) if calibration.get("mu_water") else None,
        density_unit=str(calibration.get("density_unit", "mg HA/ccm")),
        description="synthetic XtremeCT II-like calibration (microarch phantom)",
    )


def _write_aim(path: Path, native, spacing, calibration, extra):
    """Write an AIM v020 file with a fixed log time and creator, so that the bytes do not
    depend on when it was written."""
    from microarch.io import write_aim

    write_aim(path, native, spacing=spacing, calibration=calibration, meta=extra,
              created_by=_AIM_CREATOR, when=_AIM_TIME)


def _write_scan(path: Path, kind: str, scan, subject: str, visit, index: int):
    from microarch.io import write_image

    calibration = _calibration_object(scan.calibration)
    if kind == "aim":
        extra = {
            "Patient Name": subject,
            "Index Patient": index + 1,
            "Index Measurement": 100 * (index + 1) + int(visit.visit[1:]),
            "Site": "Radius (synthetic)",
        }
        _write_aim(path, scan.native, scan.spacing, calibration, extra)
    elif kind == "nifti":
        write_image(path, scan.native, spacing=scan.spacing, calibration=calibration)
    else:
        write_image(path, scan.native, spacing=scan.spacing, calibration=calibration,
                    meta={"Subject": subject, "Visit": visit.visit, "Role": visit.role,
                          "Site": SITE})


def _clean(value):
    """JSON-ready value: numpy scalars to Python, floats to 10 significant digits, NaN and
    infinities to None."""
    if isinstance(value, dict):
        return {str(key): _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (Integral, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return None
        return float(f"{value:.10g}")
    return value


def _dumps(value, indent=0) -> str:
    """JSON with nested containers indented and lists of scalars on one line."""
    pad = "  " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}{json.dumps(key)}: {_dumps(item, indent + 1)}"
                 for key, item in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list):
        if all(not isinstance(item, (dict, list)) for item in value):
            return json.dumps(value, ensure_ascii=False)
        if all(isinstance(item, list) and all(not isinstance(x, (dict, list)) for x in item)
               for item in value):
            rows = [pad + json.dumps(item) for item in value]
            return "[\n" + ",\n".join(rows) + "\n" + "  " * indent + "]"
        items = [pad + _dumps(item, indent + 1) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(value, ensure_ascii=False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_demo_cohort(directory, *, seed: int = DEMO_SEED, n_subjects: int = 3,
                      subjects=None, shape=DEMO_SHAPE, spacing: float = DEMO_SPACING,
                      simulation_options: dict | None = None,
                      threads: int | None = None) -> list[Path]:
    """Write the demo cohort: scans of simulated subjects, a sample sheet and the truth.

    Parameters
    ----------
    directory : str or path-like
        Output folder (created if missing; existing files of the same names are
        replaced). ``sample_data/`` in the repository was made with the defaults.
    seed : int, optional
        Cohort seed; subject ``i`` uses the seed ``SeedSequence([seed, i])``.
    n_subjects : int, optional
        Number of subjects (at least 1). Subject ``i`` is of kind ``i % 3`` (see the
        module notes): physiological withdrawal (AIM), half reversal (NIfTI), full
        reversal (MHA).
    subjects : iterable of str, optional
        Write only these subjects' scans and truth (e.g. ``["AI02"]``; the sample sheet
        still lists all ``n_subjects``). Each subject's files are identical to those of
        a full run.
    shape : tuple of 3 int, optional
        Scan grid (z, y, x) of every visit.
    spacing : float, optional
        Voxel size (mm).
    simulation_options : dict, optional
        More keyword arguments of :func:`~microarch.phantoms.simulate_visits` (e.g.
        ``max_shift_mm``, ``loss``); not ``seed``, ``recovery``, ``reversal_fraction``.
        Without ``loss`` the subjects get ``AILoss(**DEMO_LOSS)``.
    threads : int, optional
        numba threads; the files do not depend on it.

    Returns
    -------
    list of pathlib.Path
        The files written: ``samples.tsv`` (columns ``scan_id``, ``subject``, ``site``,
        ``visit``, ``role``, ``path`` relative to ``directory``, ``mask_path`` and
        ``spacing`` left empty), ``scans/<subject>_<visit>.<ext>``,
        ``truth/<subject>.json`` (the ``truth`` of
        :func:`~microarch.phantoms.simulate_visits` plus the subject's files) and, for a
        full run, ``SHA256SUMS``.

    Examples
    --------
    >>> import tempfile
    >>> from microarch.phantoms import write_demo_cohort
    >>> files = write_demo_cohort(
    ...     tempfile.mkdtemp(), n_subjects=1, shape=(10, 56, 50),
    ...     simulation_options={"max_shift_mm": 0.2, "max_rotation_deg": 1.0,
    ...                         "cortical_thickness": 0.5})
    >>> sorted(p.name for p in files)[:3]
    ['AI01.json', 'AI01_V1.AIM', 'AI01_V2.AIM']
    """
    from microarch.phantoms._simulation import AILoss, simulate_visits

    non_negative_int(seed, name="seed")
    if not isinstance(n_subjects, Integral) or isinstance(n_subjects, bool) or n_subjects < 1:
        raise ValueError(f"n_subjects must be a positive integer; got {n_subjects!r}")
    options = dict(simulation_options or {})
    options.setdefault("loss", AILoss(**DEMO_LOSS))
    for reserved in ("seed", "recovery", "reversal_fraction", "shape", "spacing", "threads"):
        if reserved in options:
            raise ValueError(f"simulation_options must not set {reserved!r}; it is an "
                             "argument of write_demo_cohort or fixed per subject")
    names = [subject_id(i) for i in range(int(n_subjects))]
    if subjects is None:
        chosen = list(range(len(names)))
    else:
        wanted = [str(s) for s in subjects]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(f"unknown subjects {unknown}; this cohort has {names}")
        chosen = [i for i, name in enumerate(names) if name in wanted]
    root = Path(os.fspath(directory))
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root} exists and is not a folder")
    scans_dir = root / "scans"
    truth_dir = root / "truth"
    for folder in (root, scans_dir, truth_dir):
        folder.mkdir(parents=True, exist_ok=True)

    written = []
    rows = []
    for index, name in enumerate(names):
        kind = _KINDS[index % len(_KINDS)]
        for visit, role in zip(("V1", "V2", "V3"), ("baseline", "on_ai", "post_withdrawal")):
            rows.append({
                "scan_id": f"{name}_{visit}", "subject": name, "site": SITE, "visit": visit,
                "role": role, "path": f"scans/{name}_{visit}{_SUFFIX[kind[2]]}",
                "mask_path": "", "spacing": "",
            })
    sheet = root / "samples.tsv"
    with open(sheet, "w", encoding="utf-8", newline="\n") as handle:
        handle.write("\t".join(_COLUMNS) + "\n")
        handle.writelines("\t".join(row[c] for c in _COLUMNS) + "\n" for row in rows)
    written.append(sheet)

    for index in chosen:
        name = names[index]
        recovery, fraction, file_format = _KINDS[index % len(_KINDS)]
        subject_seed = _subject_seed(seed, index)
        series = simulate_visits(
            shape, spacing=spacing, seed=subject_seed, recovery=recovery,
            reversal_fraction=1.0 if fraction is None else fraction, threads=threads,
            **options,
        )
        files = {}
        for visit in series.visits:
            relative = f"scans/{name}_{visit.visit}{_SUFFIX[file_format]}"
            _write_scan(root / relative, file_format, visit.scan, name, visit, index)
            files[visit.visit] = relative
            written.append(root / relative)
        truth = {
            "subject": name,
            "site": SITE,
            "cohort_seed": int(seed),
            "subject_index": index,
            "subject_seed": subject_seed,
            "format": _FORMAT_NAME[file_format],
            "files": files,
            "generated_by": (f"microarch.phantoms.write_demo_cohort(directory, seed={seed}, "
                             f"n_subjects={n_subjects}, shape={tuple(shape)}, "
                             f"spacing={spacing}"
                             + (", simulation_options=..." if simulation_options else "")
                             + ")"),
        }
        truth.update(series.truth)
        path = truth_dir / f"{name}.json"
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(_dumps(_clean(truth)) + "\n")
        written.append(path)

    if subjects is None:
        sums = root / "SHA256SUMS"
        lines = [f"{_sha256(p)}  {p.relative_to(root).as_posix()}"
                 for p in sorted(written, key=lambda p: p.relative_to(root).as_posix())]
        with open(sums, "w", encoding="utf-8", newline="\n") as handle:
            handle.write("\n".join(lines) + "\n")
        written.append(sums)
    return written


def visits_figure(series, *, path=None, slab: int = 10, z: int | None = None,
                  dpi: int = 110):
    """Baseline, on-AI and post-withdrawal of a simulated subject, side by side.

    Top row: a thin axial slab of the ideal structure on the baseline grid (mean bone
    fraction over ``slab`` slices); bone lost since baseline in red, bone regained since
    the on-AI visit in green; the middle of every severed rod in the slab circled in red,
    every perforation in yellow; with the true Conn.D and Tb.BMD. Bottom row: the middle
    slice of each rendered scan as the scanner saw it (repositioned, noisy).

    Parameters
    ----------
    series : VisitSeries
        From :func:`~microarch.phantoms.simulate_visits`.
    path : path-like, optional
        Where to write the PNG.
    slab : int, optional
        Slices averaged in the top row.
    z : int, optional
        First slice of the slab (default: centred).
    dpi : int, optional

    Returns
    -------
    matplotlib.figure.Figure
        Drawn with the object API (no pyplot state).

    Examples
    --------
    >>> from microarch.phantoms import simulate_visits, visits_figure
    >>> series = simulate_visits((10, 56, 50), seed=1, max_shift_mm=0.2,
    ...                          max_rotation_deg=1.0, cortical_thickness=0.5)
    >>> len(visits_figure(series).axes)
    6
    """
    from matplotlib.figure import Figure

    visits = series.visits
    h = series.spacing[1]
    nz = visits[0].reference["bone"].shape[0]
    slab = int(max(1, min(slab, nz)))
    start = (nz - slab) // 2 if z is None else int(min(max(0, z), nz - slab))
    window = slice(start, start + slab)
    section = visits[0].reference["periosteal"][0]
    rows, cols = np.nonzero(section)
    y0, y1 = max(0, rows.min() - 3), min(section.shape[0], rows.max() + 4)
    x0, x1 = max(0, cols.min() - 3), min(section.shape[1], cols.max() + 4)
    crop = (window, slice(y0, y1), slice(x0, x1))
    references = [v.reference for v in visits]
    bone = [r["bone"][crop].any(axis=0) for r in references]
    grey = [r["fraction"][crop].mean(axis=0) for r in references]
    extent = (x0 * h, x1 * h, y1 * h, y0 * h)
    z_low, z_high = (start - 0.5) * h, (start + slab - 0.5) * h
    events = series.truth["events"]
    cuts = [np.add(r["a"], r["b"]) / 2 for r in events["severed_rods"]]
    cuts = [c for c in cuts if z_low <= c[0] < z_high]
    holes = [np.asarray(r["centre"]) for r in events["perforated_plates"]]
    holes = [c for c in holes if z_low <= c[0] < z_high]
    restored = set(events["restored_rods"])
    cut_ids = [r["id"] for r in events["severed_rods"]
               if z_low <= (r["a"][0] + r["b"][0]) / 2 < z_high]

    figure = Figure(figsize=(10.5, 7.6), dpi=dpi)
    figure.set_facecolor("black")
    titles = ("baseline", "on AI", "after withdrawal")
    red = np.array([0.95, 0.2, 0.15, 0.9])
    green = np.array([0.2, 0.9, 0.3, 0.9])
    for column, visit in enumerate(visits):
        ax = figure.add_subplot(2, 3, column + 1)
        ax.set_axis_off()
        ax.imshow(grey[column], cmap="gray", vmin=0.0, vmax=1.0, extent=extent,
                  interpolation="nearest")
        overlay = np.zeros(grey[column].shape + (4,))
        if column >= 1:
            overlay[bone[0] & ~bone[column]] = red
        if column == 2:
            overlay[bone[2] & ~bone[1]] = green
        ax.imshow(overlay, extent=extent, interpolation="nearest")
        if column >= 1:
            for centre, element in zip(cuts, cut_ids):
                back = column == 2 and element in restored
                ax.scatter([centre[2]], [centre[1]], s=90, facecolors="none",
                           edgecolors="lime" if back else "red", linewidths=1.2)
            for centre in holes:
                ax.scatter([centre[2]], [centre[1]], s=90, facecolors="none",
                           edgecolors="yellow", linewidths=1.2)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        measures = visit.truth["measures"]
        ax.set_title(f"{titles[column]}\nConn.D {measures['Conn.D']:.2f} /mm³, "
                     f"Tb.BMD {measures['Tb.BMD']:.0f} mg HA/cm³",
                     color="white", fontsize=9)
        scan_ax = figure.add_subplot(2, 3, column + 4)
        scan_ax.set_axis_off()
        density = visit.scan.density
        middle = density.shape[0] // 2
        scan_ax.imshow(density[middle], cmap="gray", vmin=-100.0, vmax=1200.0,
                       extent=(0, density.shape[2] * h, density.shape[1] * h, 0),
                       interpolation="nearest")
        shift = visit.transform.translation
        scan_ax.set_title(
            f"{visit.visit} scan, slice {middle}\nshift ({shift[0]:+.2f}, {shift[1]:+.2f}, "
            f"{shift[2]:+.2f}) mm, rotation {visit.transform.rotation_angle_deg:.1f}°",
            color="white", fontsize=8)
    memory = series.truth["memory_index"]
    figure.suptitle(
        f"Simulated subject ({series.truth['recovery']}), slices {start}-{start + slab - 1}: "
        "red = lost since baseline (circles: severed rods), yellow = perforations, "
        f"green = regained\ntrue memory index: Conn.D {memory['Conn.D']:.2f}, "
        f"BV/TV {memory['BV/TV']:.2f}, Tb.BMD {memory['Tb.BMD']:.2f}",
        color="white", fontsize=9)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.87, bottom=0.01, wspace=0.03,
                           hspace=0.2)
    if path is not None:
        figure.savefig(os.fspath(path), dpi=dpi, facecolor=figure.get_facecolor())
    return figure
