"""One subject at one site: the longitudinal comparison of its visits, as files."""

from __future__ import annotations

import functools
import logging
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from microarch.workflow._records import plain, read_json, write_json, write_table

_log = logging.getLogger(__name__)

#: Columns of the change table (``longitudinal.tsv``), in order.
LONGITUDINAL_COLUMNS = ["subject", "site", "scan_id", "measure", "unit", "visit", "role",
                        "visit_index", "baseline_visit", "value", "baseline_value", "change",
                        "change_pct", "lsc_pct", "lsc", "lsc_source", "exceeds_lsc", "note"]
#: Columns of the skeletal-memory table (``memory.tsv``), in order.
MEMORY_COLUMNS = ["subject", "site", "measure", "unit", "baseline_visit", "on_ai_visit",
                  "post_visit", "baseline", "on_ai", "post", "loss", "regain", "lsc", "index",
                  "index_sd", "reason"]
#: Leading columns of the registration table (``registration.tsv``).
REGISTRATION_COLUMNS = ["subject", "site", "scan_id", "visit", "role", "used", "status",
                        "reason", "dice", "correlation", "rotation_deg", "shift_z_mm",
                        "shift_y_mm", "shift_x_mm"]
#: Leading columns of the remodelling table (``remodelling.tsv``).
REMODELLING_COLUMNS = ["subject", "site", "from_visit", "to_visit"]
#: Leading columns of the connection-memory table (``connections.tsv``): baseline
#: connections tracked through the visits, lost on AI and restored after withdrawal.
CONNECTIONS_COLUMNS = ["subject", "site", "baseline_visit", "on_ai_visit", "post_visit",
                       "tracked", "present_baseline", "lost_on_ai", "restored", "still_lost",
                       "fraction_restored", "index", "reason"]

_LONGITUDINAL_DEFAULTS = {"enabled": True, "region": "auto", "strategy": "sequential",
                          "interpolation": "linear", "erosion_voxels": 1, "plate_rod": True,
                          "remodelling": "consecutive", "registration": {}, "lsc": {}}


def _frame(rows, columns):
    import pandas as pd

    frame = pd.DataFrame(rows)
    for column in columns:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype=object)
    extra = [c for c in frame.columns if c not in columns]
    return frame[list(columns) + extra]


def _load_visit(visit):
    """(Visit for compare_visits, None) or (None, reason it cannot be used)."""
    from microarch.io import read_scan
    from microarch.longitudinal import Visit
    from microarch.workflow._scan import read_compartments

    record = read_json(visit["metrics"])
    if record.get("status") != "ok":
        return None, (f"the scan failed at {record.get('stage')}: "
                      f"{record.get('reason') or 'no reason recorded'}")
    scan = read_scan(visit["path"], spacing=visit.get("spacing"))
    masks = read_compartments(Path(visit["images"]) / "compartments.nii.gz")
    if masks["bone"].shape != scan.shape:
        return None, (f"its compartments ({masks['bone'].shape}) do not match the scan "
                      f"({scan.shape}); rerun the scan")
    return Visit(id=str(visit["visit"]), role=visit["role"], image=scan, masks=masks), None


def _registration_figure(comparison, path, title):
    """Rows of slices: each usable visit resampled onto the baseline grid, with contours."""
    from matplotlib.figure import Figure

    resampled = comparison.resampled
    visits = [(v, role) for v, role in comparison.visits if v in resampled]
    base = resampled.get(comparison.baseline, {})
    shape = comparison.grid.shape
    positions = np.linspace(0, shape[0] - 1, 5)[1:-1].round().astype(int)
    rows = max(len(visits), 1)
    figure = Figure(figsize=(7.5, 2.5 * rows + 0.5), dpi=90)
    figure.set_facecolor("black")
    grey = [resampled[v]["image"] for v, _ in visits if "image" in resampled[v]]
    values = np.concatenate([g[positions].ravel() for g in grey]) if grey else np.zeros(1)
    low, high = np.percentile(values, [1, 99.5]) if values.size > 1 else (0.0, 1.0)
    reference = base.get("periosteal")
    for row, (visit, role) in enumerate(visits):
        registration = comparison.registrations.get(visit)
        dice = getattr(registration, "dice", float("nan"))
        for column, z in enumerate(positions):
            ax = figure.add_subplot(rows, len(positions), row * len(positions) + column + 1)
            ax.set_axis_off()
            data = resampled[visit]
            if "image" in data:
                ax.imshow(data["image"][z], cmap="gray", vmin=low, vmax=high,
                          interpolation="nearest")
            if reference is not None and reference[z].any():
                ax.contour(reference[z].astype(float), levels=[0.5], colors="orange",
                           linewidths=0.8)
            if comparison.common_region[z].any():
                ax.contour(comparison.common_region[z].astype(float), levels=[0.5],
                           colors="deepskyblue", linewidths=0.8)
            if column == 0:
                ax.set_title(f"{visit} ({role})  Dice {dice:.3f}", color="white",
                             fontsize=8, loc="left")
    figure.suptitle(f"{title}: visits on the baseline grid; orange = baseline periosteal "
                    "surface, blue = common region", color="white", fontsize=8)
    figure.savefig(path, dpi=figure.dpi, facecolor="black", bbox_inches="tight")


def _note_picture(path, title, text):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 1.6), dpi=90)
    figure.set_facecolor("black")
    figure.text(0.5, 0.65, title, color="white", ha="center", fontsize=10)
    figure.text(0.5, 0.3, text[:120], color="#ffaa55", ha="center", fontsize=8)
    figure.savefig(path, dpi=figure.dpi, facecolor="black")


def compare_subject(visits, *, scans, metrics, images, subject, site, change, memory,
                    registration, remodelling, summary, figure, connections=None,
                    longitudinal=None, on_error="record"):
    """Compare the visits of one subject at one site and write the tables.

    Every visit whose scan analysis succeeded (its metrics JSON says ``"ok"``) is read
    again with its compartments (``images/compartments.nii.gz``) and handed to
    :func:`microarch.longitudinal.compare_visits`: registration to the baseline, common
    region, re-measurement there, change from baseline and skeletal-memory indices.
    Failed scans are left out with their reason, so the subject is compared wherever
    two usable visits remain. Nothing here raises for bad data: the status is written.

    Parameters
    ----------
    visits : sequence of dict
        In chronological order, one per scan: ``scan_id``, ``visit``, ``role`` and
        ``spacing`` (voxel-size override in mm, or None).
    scans, metrics, images : sequence of path-like
        For each visit, in the same order: the scan file, its metrics JSON and its
        images folder (:func:`analyse_scan`).
    subject, site : str
    change, memory, registration, remodelling : path-like
        TSV tables to write (columns :data:`LONGITUDINAL_COLUMNS`,
        :data:`MEMORY_COLUMNS`, :data:`REGISTRATION_COLUMNS` first,
        :data:`REMODELLING_COLUMNS` first); header-only when there is nothing to compare.
    summary : path-like
        JSON: ``status`` (``"ok"``, ``"skipped"``, ``"failed"``, ``"not available"``),
        ``reason``, ``notes``, ``visits`` used and ``excluded`` (with reasons),
        ``baseline``, ``region``, common-region size, ``provenance``.
    figure : path-like
        PNG: the visits resampled onto the baseline grid with the baseline contour and
        the common region (a note picture when nothing was compared).
    connections : path-like, optional
        TSV (columns :data:`CONNECTIONS_COLUMNS` first): the connections of the
        baseline's junction graph lost on AI and restored after withdrawal, one row per
        post-withdrawal visit (:meth:`~microarch.longitudinal.Comparison.connections_table`).
    longitudinal : dict, optional
        The ``longitudinal`` section of the workflow configuration.
    on_error : {"record", "raise"}
        ``"raise"`` re-raises an unexpected error after the outputs are written.

    Returns
    -------
    dict
        The summary record.
    """
    from microarch.workflow._provenance import provenance

    scans, metrics, images = list(scans), list(metrics), list(images)
    if not len(visits) == len(scans) == len(metrics) == len(images):
        raise ValueError(f"visits, scans, metrics and images differ in length: {len(visits)}, "
                         f"{len(scans)}, {len(metrics)}, {len(images)}")
    visits = [{**visit, "path": scan, "metrics": metric, "images": folder}
              for visit, scan, metric, folder in zip(visits, scans, metrics, images)]
    options = {**_LONGITUDINAL_DEFAULTS, **(longitudinal or {})}
    title = f"{subject} {site}"
    scan_of_visit = {str(v["visit"]): v["scan_id"] for v in visits}
    role_of_visit = {str(v["visit"]): v["role"] for v in visits}
    record = {"subject": subject, "site": site, "status": "ok", "reason": "", "notes": [],
              "visits": [], "excluded": {}, "baseline": None, "region": None,
              "common_region_voxels": None, "common_region_mm3": None, "timings": {}}
    tables = {"change": [], "memory": [], "registration": [], "remodelling": [],
              "connections": []}
    error = None
    comparison = None
    started = time.perf_counter()
    try:
        comparison = _compare(visits, subject, site, options, record)
        if comparison is not None:
            tables = _tables(comparison, subject, site, scan_of_visit)
    except Exception as exc:  # noqa: BLE001 - the tables are written whatever happens
        error = exc
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        _log.warning("comparison of %s failed: %s", title, exc)
        _log.info("traceback of the failure:\n%s", "".join(traceback.format_exception(exc)))
    listed = {str(row["visit"]) for row in tables["registration"]}
    for visit in visits:
        if str(visit["visit"]) not in listed:
            tables["registration"].append({
                "subject": subject, "site": site, "scan_id": visit["scan_id"],
                "visit": str(visit["visit"]), "role": visit["role"], "used": False,
                "status": "excluded" if str(visit["visit"]) in record["excluded"]
                else record["status"],
                "reason": record["excluded"].get(str(visit["visit"]), record["reason"])})
    order = {str(v["visit"]): i for i, v in enumerate(visits)}
    tables["registration"].sort(key=lambda row: order.get(row["visit"], len(order)))

    write_table(change, _frame(tables["change"], LONGITUDINAL_COLUMNS))
    write_table(memory, _frame(tables["memory"], MEMORY_COLUMNS))
    write_table(registration, _frame(tables["registration"], REGISTRATION_COLUMNS))
    write_table(remodelling, _frame(tables["remodelling"], REMODELLING_COLUMNS))
    if connections is not None:
        write_table(connections, _frame(tables["connections"], CONNECTIONS_COLUMNS))
    try:
        if comparison is not None and comparison.resampled:
            _registration_figure(comparison, figure, title)
        else:
            _note_picture(figure, title, f"{record['status']}: {record['reason']}")
    except Exception:  # noqa: BLE001 - a picture must never lose the tables
        _log.warning("could not draw the registration picture", exc_info=True)
        _note_picture(figure, title, "registration picture failed; see the log")
    record["timings"]["total"] = time.perf_counter() - started
    record["roles"] = role_of_visit
    numba = sys.modules.get("numba")
    record["provenance"] = provenance(
        parameters={"longitudinal": options},
        threads=numba.get_num_threads() if numba is not None else None)
    write_json(summary, record)
    for visit, reason in record["excluded"].items():
        _log.info("visit %s left out: %s", visit, reason)
    for note in record["notes"]:
        _log.info("note: %s", note)
    _log.info("%s: %s%s; visits used %s, common region %s voxels (%.1f s)", title,
              record["status"], f" ({record['reason']})" if record["reason"] else "",
              record["visits"], record["common_region_voxels"], record["timings"]["total"])
    if error is not None and on_error == "raise":
        raise error
    return plain(record)


def _compare(visits, subject, site, options, record):
    """Run compare_visits on the usable visits; None (status set) when it cannot run."""
    if not options["enabled"]:
        record.update(status="skipped", reason="the longitudinal comparison is disabled "
                                               "(longitudinal.enabled: false)")
        return None
    try:
        from microarch.longitudinal import compare_visits, default_measure
    except (ImportError, AttributeError) as exc:
        record.update(status="not available",
                      reason=f"microarch.longitudinal is not available: {exc}")
        return None

    usable = []
    for visit in visits:
        loaded, reason = _load_visit(visit)
        if loaded is None:
            record["excluded"][str(visit["visit"])] = reason
        else:
            usable.append(loaded)
    if len(usable) < 2:
        record.update(status="skipped",
                      reason=f"{len(usable)} usable visit{'s' if len(usable) != 1 else ''}; "
                             "a comparison needs two")
        return None
    if not any(v.role == "baseline" for v in usable):
        record["notes"].append("no usable baseline visit: changes are relative to the first "
                               f"usable visit ({usable[0].id})")

    numba = sys.modules.get("numba")
    threads = numba.get_num_threads() if numba is not None else None
    start = time.perf_counter()
    comparison = compare_visits(
        usable, subject=subject, region=options["region"], strategy=options["strategy"],
        registration=options["registration"] or None, interpolation=options["interpolation"],
        erosion_voxels=options["erosion_voxels"], lsc=options["lsc"] or None,
        measure=functools.partial(default_measure, plate_rod=options["plate_rod"]),
        remodelling=options["remodelling"], keep_resampled=True, threads=threads)
    record["timings"]["compare"] = time.perf_counter() - start
    for visit_id, _ in comparison.visits:
        registration = comparison.registrations.get(visit_id)
        if registration is not None and not registration.ok:
            record["excluded"][visit_id] = f"registration failed: {registration.reason}"
    voxels = int(np.count_nonzero(comparison.common_region))
    record.update(
        visits=[v for v, _ in comparison.visits if v not in record["excluded"]],
        baseline=comparison.baseline, region=comparison.region,
        common_region_voxels=voxels,
        common_region_mm3=voxels * float(np.prod(comparison.grid.spacing)),
        notes=record["notes"] + list(comparison.notes))
    if voxels == 0:
        record["notes"].append("the common region is empty: the visits do not overlap")
    return comparison


def _tables(comparison, subject, site, scan_of_visit):
    change = comparison.change.assign(site=site)
    change["scan_id"] = change["visit"].astype(str).map(scan_of_visit)
    memory = comparison.memory.assign(site=site)
    registration = comparison.registration_table().assign(site=site)
    registration["scan_id"] = registration["visit"].astype(str).map(scan_of_visit)
    registration["used"] = registration["status"].isin(["ok", "reference"])
    remodelling = comparison.remodelling_table()
    if len(remodelling):
        remodelling = remodelling.assign(site=site)
    connections = comparison.connections_table()
    if len(connections):
        connections = connections.assign(site=site)
    return {"change": change.to_dict("records"), "memory": memory.to_dict("records"),
            "registration": registration.to_dict("records"),
            "remodelling": remodelling.to_dict("records"),
            "connections": connections.to_dict("records")}
