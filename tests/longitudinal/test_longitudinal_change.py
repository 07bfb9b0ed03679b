"""Change table, least significant change and the skeletal-memory index."""

from __future__ import annotations

import math

import numpy as np
import pytest

from microarch.longitudinal import (
    DEFAULT_LSC,
    FALLBACK_LSC,
    LSC,
    change_table,
    memory_index,
    skeletal_memory,
)

ROLES = {"V1": "baseline", "V2": "on_ai", "V3": "post_withdrawal"}


def _records(**series):
    """{"BV/TV": (b, ai, post), ...} -> records of three visits."""
    return {visit: {name: values[i] for name, values in series.items()}
            for i, visit in enumerate(ROLES)}


def test_change_table_values_and_lsc():
    records = _records(**{"BV/TV": (0.200, 0.199, 0.180), "Conn.D": (4.0, 3.0, 3.0)})
    records["V1"]["notes"] = "text is skipped"
    table = change_table(records, ROLES, subject="S01")
    assert list(table["measure"].unique()) == ["BV/TV", "Conn.D"]
    assert len(table) == 6
    bvtv = table[table.measure == "BV/TV"].set_index("visit")
    assert bvtv.loc["V2", "change"] == pytest.approx(-0.001)
    assert bvtv.loc["V3", "change_pct"] == pytest.approx(-10.0)
    # 2.77 % of 0.2 = 0.00554: -0.001 is noise, -0.02 is real.
    assert bvtv.loc["V2", "lsc"] == pytest.approx(0.00554)
    assert bvtv["exceeds_lsc"].tolist() == [False, False, True]
    assert bvtv.loc["V1", "unit"] == "1"
    assert "Burghardt" in bvtv.loc["V1", "lsc_source"]
    connd = table[table.measure == "Conn.D"]
    assert connd["unit"].iloc[0] == "1/mm³"
    assert connd["lsc_source"].iloc[0] == FALLBACK_LSC.source
    assert (table["subject"] == "S01").all()
    assert table["role"].tolist()[:3] == ["baseline", "on_ai", "post_withdrawal"]


def test_user_lsc_overrides_and_missing_values():
    records = _records(**{"Tb.N": (1.30, 1.27, math.nan)})
    table = change_table(records, ROLES, lsc={"Tb.N": 1.0}).set_index("visit")
    assert table.loc["V2", "lsc_pct"] == 1.0 and table.loc["V2", "lsc_source"] == "user"
    assert table.loc["V2", "exceeds_lsc"]          # 2.3 % > 1 %
    assert math.isnan(table.loc["V3", "change"])
    assert table["exceeds_lsc"].isna().tolist() == [False, False, True]
    assert table.loc["V3", "note"]
    no_fallback = change_table(_records(SMI=(1.0, 2.0, 2.0)), ROLES,
                               fallback_lsc=None)
    assert no_fallback["exceeds_lsc"].isna().all()
    with pytest.raises(ValueError, match="percentage"):
        change_table(records, ROLES, lsc={"Tb.N": -1})
    with pytest.raises(ValueError, match="role"):
        change_table(records, {"V1": "pre"})
    with pytest.raises(ValueError, match="without records"):
        change_table(records, {**ROLES, "V9": "other"})


def test_reference_is_first_baseline_else_first_visit():
    records = {"a": {"BV/TV": 0.2}, "b": {"BV/TV": 0.1}, "c": {"BV/TV": 0.3}}
    table = change_table(records, {"b": "baseline"}).set_index("visit")
    assert table.loc["a", "baseline_visit"] == "b"
    assert table.loc["c", "change"] == pytest.approx(0.2)
    assert change_table(records).set_index("visit").loc["b", "change"] == pytest.approx(-0.1)


def test_default_lsc_table_has_provenance():
    assert DEFAULT_LSC["BV/TV"] == LSC(2.77, DEFAULT_LSC["BV/TV"].source)
    assert DEFAULT_LSC["Ct.Th"].percent == pytest.approx(2.77 * 1.1)
    assert DEFAULT_LSC["Tb.Sp.SD"].percent == pytest.approx(2.77 * 1.8)
    assert all("doi:10.1002/jbmr.1795" in v.source for v in DEFAULT_LSC.values())
    assert "assumed" in FALLBACK_LSC.source


# --- the memory index: closed forms ----------------------------------------------------

@pytest.mark.parametrize("post, expected", [(3.0, 1.0), (4.0, 0.0), (3.5, 0.5), (2.5, 1.5),
                                            (4.5, -0.5)])
def test_memory_index_closed_form(post, expected):
    index, sd, reason = memory_index(4.0, 3.0, post, lsc=0.1)
    assert index == pytest.approx(expected)
    assert reason == "" and sd > 0


def test_memory_index_uncertainty_matches_monte_carlo():
    rng = np.random.default_rng(0)
    lsc = 0.2
    sigma = lsc / 2.77
    base, on, post = 4.0, 3.0, 3.4
    draws = [memory_index(base + e[0], on + e[1], post + e[2], lsc=0.0)[0]
             for e in rng.normal(0, sigma, (20000, 3))]
    _, sd, _ = memory_index(base, on, post, lsc=lsc)
    assert sd == pytest.approx(np.std(draws), rel=0.05)


def test_memory_index_undefined_cases():
    assert "within the LSC" in memory_index(4.0, 3.95, 3.0, lsc=0.1)[2]
    assert math.isnan(memory_index(4.0, 3.95, 3.0, lsc=0.1)[0])
    assert "missing" in memory_index(4.0, math.nan, 3.0, lsc=0.1)[2]
    assert "no least significant" in memory_index(4.0, 3.0, 3.0, lsc=math.nan)[2]


def test_skeletal_memory_table():
    records = _records(**{"Conn.D": (4.0, 3.0, 3.02), "BV/TV": (0.20, 0.17, 0.19),
                          "Tb.Th": (0.25, 0.2495, 0.26), "SMI": (1.0, 1.5, 1.5)})
    table = skeletal_memory(records, ROLES, subject="S01").set_index("measure")
    assert list(table.index) == ["Conn.D", "BV/TV", "Tb.Th"]   # SMI: not a memory measure
    assert table.loc["Conn.D", "index"] == pytest.approx(0.98)
    assert table.loc["BV/TV", "index"] == pytest.approx(1 / 3)
    assert math.isnan(table.loc["Tb.Th", "index"])
    assert "within the LSC" in table.loc["Tb.Th", "reason"]
    assert table.loc["Conn.D", "loss"] == pytest.approx(1.0)
    assert table.loc["Conn.D", "on_ai_visit"] == "V2"
    custom = skeletal_memory(records, ROLES, measures=("SMI",))
    assert custom["index"].iloc[0] == pytest.approx(1.0)


def test_skeletal_memory_roles():
    values = {"Conn.D": 4.0}
    records = {"V1": dict(values), "V2": {"Conn.D": 3.5}, "V3": {"Conn.D": 3.0},
               "V4": {"Conn.D": 3.2}, "V5": {"Conn.D": 3.4}}
    roles = {"V1": "baseline", "V2": "on_ai", "V3": "on_ai", "V4": "post_withdrawal",
             "V5": "post_withdrawal"}
    table = skeletal_memory(records, roles)
    assert table["post_visit"].tolist() == ["V4", "V5"]
    assert table["on_ai_visit"].tolist() == ["V3", "V3"]    # the last on-AI visit
    assert table["index"].tolist() == pytest.approx([0.8, 0.6])

    no_post = skeletal_memory(records, {"V1": "baseline", "V2": "on_ai"})
    assert math.isnan(no_post["index"].iloc[0])
    assert "post_withdrawal" in no_post["reason"].iloc[0]
    post_before_ai = skeletal_memory({"a": {"Conn.D": 4.0}, "b": {"Conn.D": 3.0},
                                      "c": {"Conn.D": 3.0}},
                                     {"a": "baseline", "b": "post_withdrawal", "c": "on_ai"})
    assert "on_ai" in post_before_ai["reason"].iloc[0]
    no_baseline = skeletal_memory(records, {"V2": "on_ai", "V4": "post_withdrawal"})
    assert "baseline" in no_baseline["reason"].iloc[0]
