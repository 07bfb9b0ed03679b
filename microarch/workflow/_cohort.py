"""The cohort: tables gathered from every scan and subject, trajectories, a contact sheet."""

from __future__ import annotations

import logging
from pathlib import Path

from microarch.workflow._records import read_json, unit_of, write_table
from microarch.workflow._subject import (
    CONNECTIONS_COLUMNS,
    LONGITUDINAL_COLUMNS,
    MEMORY_COLUMNS,
    REGISTRATION_COLUMNS,
    REMODELLING_COLUMNS,
)

_log = logging.getLogger(__name__)

#: Leading columns of ``metrics.tsv``; the measures (ASBMR symbols) follow.
METRICS_COLUMNS = ["scan_id", "subject", "site", "visit", "role", "status", "stage", "reason",
                   "error_type", "notes"]

__all__ = ["LONGITUDINAL_COLUMNS", "MEMORY_COLUMNS", "METRICS_COLUMNS", "collect_cohort",
           "contact_sheet", "metrics_table", "plot_trajectories", "plot_trajectory"]


def metrics_table(records):
    """One row per scan from metrics records (dicts, or paths of metrics JSON files).

    Parameters
    ----------
    records : iterable of dict or path-like
        Records written by :func:`microarch.workflow.analyse_scan`.

    Returns
    -------
    pandas.DataFrame
        :data:`METRICS_COLUMNS`, then one column per measure (ASBMR symbol) in the
        order first seen; failed scans have empty measures and say why in ``reason``.

    Examples
    --------
    >>> table = metrics_table([
    ...     {"scan_id": "a", "status": "ok", "measures": {"BV/TV": 0.2, "Tb.Th": 0.25}},
    ...     {"scan_id": "b", "status": "failed", "stage": "read", "reason": "truncated",
    ...      "measures": {}}])
    >>> table[["scan_id", "status", "BV/TV"]].to_dict("list")
    {'scan_id': ['a', 'b'], 'status': ['ok', 'failed'], 'BV/TV': [0.2, nan]}
    """
    import pandas as pd

    rows, measures = [], {}
    for item in records:
        record = item if isinstance(item, dict) else read_json(item)
        row = {c: record.get(c) for c in METRICS_COLUMNS}
        row["notes"] = "; ".join(record.get("notes") or [])
        for name, value in (record.get("measures") or {}).items():
            measures.setdefault(name, None)
            row[name] = float("nan") if value is None else value
        rows.append(row)
    columns = METRICS_COLUMNS + [m for m in measures if m not in METRICS_COLUMNS]
    frame = pd.DataFrame(rows, columns=columns)
    for name in measures:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


def _concat(paths, columns):
    import pandas as pd

    frames = []
    for path in paths:
        frame = pd.read_csv(path, sep="\t", dtype={"subject": str, "site": str, "visit": str,
                                                   "scan_id": str})
        if len(frame):
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(frames, ignore_index=True, sort=False)
    extra = [c for c in frame.columns if c not in columns]
    return frame.reindex(columns=list(columns) + extra)


def collect_cohort(metrics, *, changes=(), memories=(), registrations=(), remodellings=(),
                   connections=(), metrics_path, longitudinal_path, memory_path,
                   registration_path, remodelling_path, units_path, connections_path=None):
    """Gather the per-scan records and per-subject tables into cohort tables.

    Parameters
    ----------
    metrics : iterable of path-like
        Metrics JSON files of every scan (:func:`analyse_scan`), failed ones included.
    changes, memories, registrations, remodellings, connections : iterable of path-like
        Per-subject TSV tables (:func:`compare_subject`).
    metrics_path, longitudinal_path, memory_path, registration_path, remodelling_path : path-like
        The cohort tables to write (tab-separated; NaN as empty fields):
        ``metrics.tsv`` (one row per scan, with ``status``), ``longitudinal.tsv``
        (change from baseline per subject, site, measure and visit), ``memory.tsv``
        (skeletal-memory index per subject, site and measure), ``registration.tsv``
        and ``remodelling.tsv``. Tables with nothing in them still get their header.
    units_path : path-like
        ``measure``/``unit`` table of every measure column of ``metrics.tsv``.
    connections_path : path-like, optional
        ``connections.tsv``: connection memory per subject and site.

    Returns
    -------
    dict
        Row counts: ``scans``, ``failed``, ``longitudinal``, ``memory``.
    """
    import pandas as pd

    table = metrics_table(metrics)
    write_table(metrics_path, table)
    measures = [c for c in table.columns if c not in METRICS_COLUMNS]
    write_table(units_path, pd.DataFrame({"measure": measures,
                                          "unit": [unit_of(m) for m in measures]}))
    longitudinal = _concat(changes, LONGITUDINAL_COLUMNS)
    memory = _concat(memories, MEMORY_COLUMNS)
    write_table(longitudinal_path, longitudinal)
    write_table(memory_path, memory)
    write_table(registration_path, _concat(registrations, REGISTRATION_COLUMNS))
    write_table(remodelling_path, _concat(remodellings, REMODELLING_COLUMNS))
    if connections_path is not None:
        write_table(connections_path, _concat(connections, CONNECTIONS_COLUMNS))
    failed = int((table["status"] != "ok").sum())
    _log.info("cohort: %d scans (%d failed), %d change rows, %d memory rows", len(table),
              failed, len(longitudinal), len(memory))
    return {"scans": len(table), "failed": failed, "longitudinal": len(longitudinal),
            "memory": len(memory)}


def plot_trajectory(longitudinal, *, measure, path):
    """Draw one measure across visits, one line per subject (and site).

    Values are those re-measured in each subject's common region (``longitudinal.tsv``).
    Visits are placed by their role (baseline, on AI, after withdrawal) when every
    subject's roles are distinct, else by visit label.

    Parameters
    ----------
    longitudinal : path-like or pandas.DataFrame
        The cohort change table (:func:`collect_cohort`).
    measure : str
        ASBMR symbol, e.g. ``"Conn.D"``.
    path : path-like
        PNG to write; says "no longitudinal data" when the measure has no values.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import pandas as pd

    from microarch import qc

    frame = longitudinal if isinstance(longitudinal, pd.DataFrame) else pd.read_csv(
        longitudinal, sep="\t", dtype={"subject": str, "site": str, "visit": str})
    frame = frame[(frame["measure"] == measure) & frame["value"].notna()].copy()
    if frame.empty:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(4.5, 3.2), dpi=100)
        ax = figure.add_subplot(1, 1, 1)
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"{measure}: no longitudinal data\n(no subject with two usable "
                "visits)", ha="center", va="center")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=figure.dpi)
        return figure
    several_sites = frame["site"].nunique() > 1
    frame["who"] = frame["subject"].astype(str) + (
        " " + frame["site"].astype(str) if several_sites else "")
    frame = frame.sort_values(["who", "visit_index"])
    by_role = (frame["role"] != "other").all() and not frame.duplicated(
        ["who", "role"]).any()
    if by_role:
        rank = {"baseline": 0, "on_ai": 1, "post_withdrawal": 2}
        frame = frame.sort_values(["role"], key=lambda s: s.map(rank), kind="stable")
        frame["when"] = frame["role"].map({"baseline": "baseline", "on_ai": "on AI",
                                           "post_withdrawal": "after withdrawal"})
    else:
        frame["when"] = frame["visit"].astype(str)
    return qc.trajectories(frame, measure=measure, x="when", value="value", group="who",
                           unit=unit_of(measure) or None, path=path)


def plot_trajectories(longitudinal, *, measures, folder):
    """One trajectory PNG per measure (:func:`plot_trajectory`) in ``folder``.

    Files are named by :func:`microarch.workflow.measure_slug` (``BV/TV`` ->
    ``BV_TV.png``). Returns the paths written.
    """
    import pandas as pd

    from microarch.workflow._records import measure_slug

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = longitudinal if isinstance(longitudinal, pd.DataFrame) else pd.read_csv(
        longitudinal, sep="\t", dtype={"subject": str, "site": str, "visit": str})
    written = []
    for measure in measures:
        path = folder / f"{measure_slug(measure)}.png"
        plot_trajectory(table, measure=measure, path=path)
        written.append(path)
    return written


def contact_sheet(montages, metrics, *, path, columns=6):
    """All scans' QC montages on one page, captioned with scan id and status.

    Parameters
    ----------
    montages : sequence of path-like
        QC montage PNGs, one per scan.
    metrics : sequence of path-like
        The matching metrics JSON files (for the captions).
    path : path-like
        PNG to write.
    columns : int
        Thumbnails per row.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from microarch import qc

    montages, metrics = list(montages), list(metrics)
    if len(montages) != len(metrics):
        raise ValueError(f"{len(montages)} montages but {len(metrics)} metrics files")
    labels = []
    for item in metrics:
        record = read_json(item)
        status = record.get("status", "?")
        text = f"{record.get('scan_id')}: {status}"
        if status != "ok":
            text += f" ({record.get('stage')})"
        labels.append(text)
    return qc.contact_sheet([str(m) for m in montages], labels=labels, columns=columns,
                            path=path)
