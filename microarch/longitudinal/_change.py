"""Change from baseline, least significant change, and the skeletal-memory index."""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import NamedTuple

ROLES = ("baseline", "on_ai", "post_withdrawal", "other")

#: Multiplier from the single-measurement RMS-SD to the least significant change of a
#: difference of two measurements at 95 % confidence: 1.96 * sqrt(2) (domain spec §1.8).
LSC_FACTOR = 2.77


class LSC(NamedTuple):
    """A least significant change in percent of the baseline value, and where it came from."""

    percent: float
    source: str


_BURGHARDT = ("Burghardt AJ et al. (2013) J Bone Miner Res 28:524-536, doi:10.1002/jbmr.1795: "
              "multi-centre short-term precision, RMSCV {cv} % (phantoms) [A]; "
              "LSC = 2.77 x RMSCV")
_ASSUMED = ("assumed: no published HR-pQCT precision in the project references; RMSCV 1 % "
            "as for the standard parameters (Burghardt 2013), LSC = 2.77 % - set a "
            "site-specific value")


def _burghardt(cv, note=""):
    return LSC(round(LSC_FACTOR * cv, 4), _BURGHARDT.format(cv=cv) + note)


#: Default least significant changes (percent of the baseline value) with provenance.
#: Burghardt et al. 2013 report short-term RMSCV < 1 % for all standard parameters except
#: Ct.Th (1.1 %), Ct.Th.SD (2.6 %), Tb.Sp.SD (1.8 %) and porosity (6-8 %); the upper bounds
#: are used. Those are phantom, short-term values: in-vivo and long-term precision is worse
#: (long-term density 0.7-2.0 %, Ct.Th 3.4 %, Ct.Po 15.4 %), so cohorts should pass their
#: own values. Measures without a published value use :data:`FALLBACK_LSC`.
DEFAULT_LSC: dict[str, LSC] = {
    **{name: _burghardt(1.0) for name in (
        "Tt.BMD", "Tb.BMD", "Ct.BMD", "vBMD", "Tt.Ar", "Tb.Ar", "Ct.Ar",
        "BV/TV", "Tb.N", "Tb.Th", "Tb.Sp", "Tb.1/N.SD")},
    "Tb.Sp.SD": _burghardt(1.8),
    "Ct.Th": _burghardt(1.1),
    "Ct.Th.SD": _burghardt(2.6),
    "Ct.Po": _burghardt(8.0, " (upper bound of 6-8 %)"),
}

#: LSC used for measures missing from :data:`DEFAULT_LSC` and from the caller's dict.
FALLBACK_LSC = LSC(LSC_FACTOR * 1.0, _ASSUMED)

#: Measures the skeletal-memory table reports by default (those present in the records).
MEMORY_MEASURES = ("Conn.D", "Tb.N", "BV/TV", "Tb.Th", "Tb.Sp", "pBV/TV", "rBV/TV",
                   "P-P Junc.D", "P-R Junc.D", "R-R Junc.D", "Tb.BMD", "vBMD")

_EXTRA_UNITS = {
    "pBV/TV": "1", "rBV/TV": "1", "P/R": "1", "pTb.N": "1/mm", "rTb.N": "1/mm",
    "pTb.N.count": "1/mm³", "rTb.N.count": "1/mm³", "pTb.Th": "mm", "rTb.Th": "mm",
    "pTb.S": "mm²", "rTb.l": "mm", "P-P Junc.D": "1/mm³", "P-R Junc.D": "1/mm³",
    "R-R Junc.D": "1/mm³", "n.plates": "1", "n.rods": "1",
    "Tt.BMD": "mg HA/cm³", "Tb.BMD": "mg HA/cm³", "Ct.BMD": "mg HA/cm³", "vBMD": "mg HA/cm³",
    "Tt.V": "mm³", "Tb.V": "mm³", "Ct.V": "mm³", "Tt.Ar": "mm²", "Tb.Ar": "mm²",
    "Ct.Ar": "mm²", "Ct.Th": "mm", "Ct.Th.SD": "mm", "Ct.Po": "1",
}


def unit_of(name: str) -> str:
    """Unit of a measure symbol ('' when unknown)."""
    from microarch.measure import UNITS

    return UNITS.get(name) or _EXTRA_UNITS.get(name, "")


def resolve_lsc(lsc=None, fallback=FALLBACK_LSC):
    """Merge a user ``{measure: percent}`` (or ``{measure: LSC}``) dict over the defaults.

    Returns a function ``measure -> LSC`` (``LSC(nan, ...)`` when unknown and no fallback).
    """
    table = dict(DEFAULT_LSC)
    for name, value in (lsc or {}).items():
        if isinstance(value, LSC):
            table[name] = value
        elif isinstance(value, Real) and not isinstance(value, bool) and value >= 0:
            table[name] = LSC(float(value), "user")
        else:
            raise ValueError(f"LSC of {name!r} must be a non-negative percentage; got {value!r}")
    if fallback is not None and not isinstance(fallback, LSC):
        if not isinstance(fallback, Real) or isinstance(fallback, bool) or fallback < 0:
            raise ValueError(f"fallback LSC must be a non-negative percentage or None; got "
                             f"{fallback!r}")
        fallback = LSC(float(fallback), "user fallback")

    def lookup(name):
        if name in table:
            return table[name]
        return fallback if fallback is not None else LSC(math.nan, "none")

    return lookup


def _is_number(value):
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_visits(records, roles):
    if not isinstance(records, Mapping) or not records:
        raise ValueError("records must be a non-empty mapping visit id -> {measure: value}")
    return check_roles(records, roles, data="records")


def check_roles(visits, roles, *, data):
    """``roles`` completed with ``"other"`` for every visit of ``visits`` it leaves out;
    ValueError for an unknown role or a role of a visit without ``data``."""
    roles = dict(roles or {})
    for visit in visits:
        role = roles.setdefault(visit, "other")
        if role not in ROLES:
            allowed = ", ".join(map(repr, ROLES))
            raise ValueError(f"role of visit {visit!r} must be one of {allowed}; got {role!r}")
    unknown = set(roles) - set(visits)
    if unknown:
        raise ValueError(f"roles name visits without {data}: {sorted(map(str, unknown))}")
    return roles


def _reference_visit(records, roles):
    baselines = [v for v in records if roles[v] == "baseline"]
    return baselines[0] if baselines else next(iter(records))


def _measure_names(records):
    names = {}
    for record in records.values():
        for name, value in record.items():
            if _is_number(value):
                names.setdefault(name, None)
    return list(names)


def change_rows(records, roles=None, *, subject=None, lsc=None, fallback_lsc=FALLBACK_LSC,
                measures=None):
    """The change table as a list of dict rows (see :func:`change_table`)."""
    roles = _check_visits(records, roles)
    reference = _reference_visit(records, roles)
    lookup = resolve_lsc(lsc, fallback_lsc)
    names = _measure_names(records) if measures is None else list(measures)
    rows = []
    for name in names:
        base = records[reference].get(name, math.nan)
        base = float(base) if _is_number(base) else math.nan
        limit = lookup(name)
        lsc_abs = limit.percent / 100.0 * abs(base) if math.isfinite(base) else math.nan
        for order, (visit, record) in enumerate(records.items()):
            value = record.get(name, math.nan)
            value = float(value) if _is_number(value) else math.nan
            change = value - base
            note = ""
            if math.isnan(value):
                note = str(record.get("notes") or "") or "value missing or undefined"
            elif math.isnan(base):
                note = f"baseline value missing or undefined (visit {reference!r})"
            pct = 100.0 * change / base if (math.isfinite(change) and base != 0) else math.nan
            if math.isfinite(change) and math.isfinite(lsc_abs):
                exceeds = bool(abs(change) > lsc_abs)
            else:
                exceeds = None
            rows.append({
                "subject": subject, "measure": name, "unit": unit_of(name),
                "visit": visit, "role": roles[visit], "visit_index": order,
                "baseline_visit": reference, "value": value, "baseline_value": base,
                "change": change, "change_pct": pct, "lsc_pct": limit.percent,
                "lsc": lsc_abs, "lsc_source": limit.source, "exceeds_lsc": exceeds,
                "note": note,
            })
    return rows


def change_table(records, roles=None, *, subject=None, lsc=None, fallback_lsc=FALLBACK_LSC,
                 measures=None):
    """Tidy table of every measure at every visit, with change from baseline and LSC.

    Parameters
    ----------
    records : mapping
        ``{visit_id: {measure: value}}`` in visit order (e.g. ``Comparison.records``);
        non-numeric entries (such as ``"notes"``) are skipped.
    roles : mapping, optional
        ``{visit_id: role}`` with roles ``"baseline"``, ``"on_ai"``, ``"post_withdrawal"``,
        ``"other"`` (default ``"other"``). The first ``"baseline"`` visit is the reference;
        without one, the first visit is.
    subject : str, optional
        Subject id repeated in every row.
    lsc : mapping, optional
        ``{measure: percent}`` least significant changes overriding :data:`DEFAULT_LSC`.
    fallback_lsc : float or LSC or None
        LSC (percent) of measures with no default; ``None`` leaves them without one
        (``exceeds_lsc`` is then missing).
    measures : sequence of str, optional
        Restrict to these measures (default: every numeric key, in first-seen order).

    Returns
    -------
    pandas.DataFrame
        One row per (measure, visit): ``subject, measure, unit, visit, role, visit_index,
        baseline_visit, value, baseline_value, change, change_pct, lsc_pct, lsc,
        lsc_source, exceeds_lsc, note``. ``change`` is ``value - baseline_value`` in the
        measure's unit, ``change_pct`` in percent of the baseline value, ``lsc`` the LSC
        in the measure's unit (``lsc_pct`` of ``|baseline_value|``); ``exceeds_lsc`` is
        ``|change| > lsc`` (nullable boolean).

    Notes
    -----
    The least significant change LSC = 2.77 x RMS-SD is the smallest difference between
    two measurements that is real at 95 % confidence (domain spec §1.8).

    References
    ----------
    Burghardt AJ, Pialat JB, Kazakia GJ, et al. (2013) Multicenter precision of cortical
    and trabecular bone quality measures assessed by high-resolution peripheral
    quantitative computed tomography. J Bone Miner Res 28:524-536. doi:10.1002/jbmr.1795

    Examples
    --------
    >>> records = {"v0": {"BV/TV": 0.20}, "v1": {"BV/TV": 0.18}}
    >>> table = change_table(records, {"v0": "baseline", "v1": "on_ai"}, subject="S01")
    >>> table[["visit", "change_pct", "exceeds_lsc"]].round(3).values.tolist()
    [['v0', 0.0, False], ['v1', -10.0, True]]
    """
    import pandas as pd

    rows = change_rows(records, roles, subject=subject, lsc=lsc, fallback_lsc=fallback_lsc,
                       measures=measures)
    frame = pd.DataFrame(rows, columns=_CHANGE_COLUMNS)
    frame["exceeds_lsc"] = frame["exceeds_lsc"].astype("boolean")
    return frame


_CHANGE_COLUMNS = ["subject", "measure", "unit", "visit", "role", "visit_index",
                   "baseline_visit", "value", "baseline_value", "change", "change_pct",
                   "lsc_pct", "lsc", "lsc_source", "exceeds_lsc", "note"]

_MEMORY_COLUMNS = ["subject", "measure", "unit", "baseline_visit", "on_ai_visit",
                   "post_visit", "baseline", "on_ai", "post", "loss", "regain", "lsc",
                   "index", "index_sd", "reason"]


def memory_index(baseline, on_ai, post, *, lsc):
    """Skeletal-memory index and its 1-SD uncertainty from three values.

    ``index = 1 - (post - on_ai) / (baseline - on_ai)``: 1 when nothing lost on therapy
    came back after withdrawal, 0 when all of it did (negative: more than recovered;
    above 1: loss continued).

    Parameters
    ----------
    baseline, on_ai, post : float
        The measure before, on and after aromatase-inhibitor therapy.
    lsc : float
        Least significant change in the measure's unit. The index is undefined (NaN)
        when the on-therapy loss is within it, ``|baseline - on_ai| <= lsc``.

    Returns
    -------
    (index, sd, reason)
        ``sd`` propagates the single-measurement SD ``lsc / 2.77`` of each value
        (first order; the shared on-AI value correlates numerator and denominator).
        ``reason`` is empty when the index is defined.

    Examples
    --------
    >>> index, sd, reason = memory_index(4.0, 3.0, 3.0, lsc=0.1)
    >>> index, round(sd, 3), reason
    (1.0, 0.051, '')
    >>> memory_index(4.0, 3.0, 3.5, lsc=0.1)[0]
    0.5
    >>> memory_index(4.0, 3.95, 4.0, lsc=0.1)[2]
    'on-AI change 0.05 is within the LSC 0.1'
    """
    values = (baseline, on_ai, post)
    if not all(_is_number(v) and math.isfinite(v) for v in values):
        return math.nan, math.nan, "a value is missing or undefined"
    loss = baseline - on_ai
    regain = post - on_ai
    lsc = float(lsc)
    if math.isnan(lsc):
        return math.nan, math.nan, "no least significant change for this measure"
    if abs(loss) <= lsc:
        return math.nan, math.nan, f"on-AI change {abs(loss):.3g} is within the LSC {lsc:.3g}"
    index = 1.0 - regain / loss
    sigma2 = (lsc / LSC_FACTOR) ** 2
    # f = 1 - a/b with a = post - on_ai, b = baseline - on_ai: var a = var b = 2 s²,
    # cov(a, b) = var(on_ai) = s².
    variance = sigma2 * (2.0 / loss**2 + 2.0 * regain**2 / loss**4 - 2.0 * regain / loss**3)
    return float(index), float(math.sqrt(max(variance, 0.0))), ""


def _value_of(records, visit, name):
    value = records[visit].get(name, math.nan) if visit is not None else math.nan
    return float(value) if _is_number(value) else math.nan


def memory_rows(records, roles, *, subject=None, lsc=None, fallback_lsc=FALLBACK_LSC,
                measures=MEMORY_MEASURES):
    """The skeletal-memory table as a list of dict rows (see :func:`skeletal_memory`)."""
    roles = _check_visits(records, roles)
    lookup = resolve_lsc(lsc, fallback_lsc)
    order = list(records)
    baselines = [v for v in order if roles[v] == "baseline"]
    base_visit = baselines[0] if baselines else None
    posts = [v for v in order if roles[v] == "post_withdrawal"]
    present = set(_measure_names(records))
    names = [m for m in measures if m in present]
    rows = []
    for name in names:
        targets = posts or [None]
        for post_visit in targets:
            on_ai_visits = [v for v in order if roles[v] == "on_ai"
                            and (post_visit is None or order.index(v) < order.index(post_visit))]
            on_visit = on_ai_visits[-1] if on_ai_visits else None
            row = {"subject": subject, "measure": name, "unit": unit_of(name),
                   "baseline_visit": base_visit, "on_ai_visit": on_visit,
                   "post_visit": post_visit}

            base, on, post = (_value_of(records, visit, name)
                              for visit in (base_visit, on_visit, post_visit))
            lsc_abs = lookup(name).percent / 100.0 * abs(base) if math.isfinite(base) \
                else math.nan
            missing = [label for label, visit in (("baseline", base_visit),
                                                  ("on_ai", on_visit),
                                                  ("post_withdrawal", post_visit))
                       if visit is None]
            if missing:
                index, sd = math.nan, math.nan
                reason = "no " + " / ".join(missing) + " visit" + \
                    (" (on_ai must precede post_withdrawal)" if "on_ai" in missing
                     and post_visit is not None else "")
            else:
                index, sd, reason = memory_index(base, on, post, lsc=lsc_abs)
            row.update({"baseline": base, "on_ai": on, "post": post, "loss": base - on,
                        "regain": post - on, "lsc": lsc_abs, "index": index,
                        "index_sd": sd, "reason": reason})
            rows.append(row)
    return rows


def skeletal_memory(records, roles, *, subject=None, lsc=None, fallback_lsc=FALLBACK_LSC,
                    measures=MEMORY_MEASURES):
    """Skeletal-memory index per measure: how much of the on-AI change did not recover.

    ``index = 1 - (post - on_ai) / (baseline - on_ai)`` (domain spec §9.4): 1 = nothing
    recovered after withdrawal, 0 = full recovery. It is NaN, with a reason, when a role
    is missing or the on-AI change is within the least significant change.

    Parameters
    ----------
    records : mapping
        ``{visit_id: {measure: value}}`` in visit order, measured in the common region.
    roles : mapping
        ``{visit_id: role}``; roles ``"baseline"``, ``"on_ai"``, ``"post_withdrawal"``,
        ``"other"``. The first baseline visit is used; for each post-withdrawal visit,
        the last on-AI visit before it (the end of therapy, usually the nadir).
    subject : str, optional
    lsc, fallback_lsc :
        As in :func:`change_table` (percent of the baseline value).
    measures : sequence of str
        Measures to report when present (default :data:`MEMORY_MEASURES`: Conn.D, Tb.N,
        BV/TV, Tb.Th, Tb.Sp, pBV/TV, rBV/TV, junction densities, Tb.BMD, vBMD).

    Returns
    -------
    pandas.DataFrame
        One row per (measure, post-withdrawal visit): ``subject, measure, unit,
        baseline_visit, on_ai_visit, post_visit, baseline, on_ai, post, loss``
        (baseline - on_ai), ``regain`` (post - on_ai), ``lsc`` (measure unit), ``index``,
        ``index_sd`` (see :func:`memory_index`), ``reason``.

    References
    ----------
    Guo XE, Kim CH (2002) Mechanical consequence of trabecular bone loss and its
    treatment: a three-dimensional model simulation. Bone 30:404-411.

    Examples
    --------
    >>> records = {"b": {"Conn.D": 4.0, "BV/TV": 0.20},
    ...            "ai": {"Conn.D": 3.0, "BV/TV": 0.17},
    ...            "post": {"Conn.D": 3.0, "BV/TV": 0.19}}
    >>> roles = {"b": "baseline", "ai": "on_ai", "post": "post_withdrawal"}
    >>> table = skeletal_memory(records, roles)
    >>> table.set_index("measure")["index"].round(3).to_dict()
    {'Conn.D': 1.0, 'BV/TV': 0.333}
    """
    import pandas as pd

    rows = memory_rows(records, roles, subject=subject, lsc=lsc, fallback_lsc=fallback_lsc,
                       measures=measures)
    return pd.DataFrame(rows, columns=_MEMORY_COLUMNS)
