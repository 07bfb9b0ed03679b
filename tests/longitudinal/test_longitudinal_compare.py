"""compare_visits end to end: repeat scans, a subject with known skeletal memory,
different grids, failed registrations, measure callables."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from microarch._shared.validation import DegenerateInputWarning
from microarch.io import Scan
from microarch.longitudinal import Comparison, Visit, compare_visits, default_measure
from microarch.longitudinal._remodelling import FORMATION, RESORPTION
from microarch.measure import connectivity_density

FAST = {"samples": 10000}
SPACING = 0.082


def fast_measure(mask, *, spacing, roi):
    """BV/TV and Conn.D only: the trabecular() suite is tested elsewhere and slower."""
    n_roi = int(np.count_nonzero(roi))
    return {"BV/TV": np.count_nonzero(mask & roi) / n_roi,
            "Conn.D": connectivity_density(mask, spacing=spacing, roi=roi)}


@pytest.fixture(scope="module")
def lattice_visits(synth):
    """Baseline, on-AI (rods removed) and post-withdrawal (survivors thickened) visits,
    each imaged with a different integer shift (voxels, z, y, x)."""
    subject = synth.lattice_subject(seed=2)
    shifts = [(0, 0, 0), (1, -2, 2), (-1, 1, -2)]
    visits = []
    for i, (bone, shift, role) in enumerate(zip(subject["bone"], shifts,
                                                ("baseline", "on_ai", "post_withdrawal"))):
        masks = {"bone": synth.shift_volume(bone, shift),
                 "periosteal": synth.shift_volume(subject["periosteal"], shift),
                 "trabecular": synth.shift_volume(subject["trabecular"], shift)}
        image = synth.render_mask(masks["bone"], seed=10 + i)
        visits.append(Visit(f"V{i + 1}", role, image, spacing=SPACING, masks=masks))
    return subject, shifts, visits


@pytest.fixture(scope="module")
def lattice_comparison(lattice_visits):
    _, _, visits = lattice_visits
    return compare_visits(visits, subject="S01", measure=fast_measure, registration=FAST)


def test_lattice_registrations_recover_the_shifts(lattice_comparison, lattice_visits):
    _, shifts, _ = lattice_visits
    result = lattice_comparison
    assert isinstance(result, Comparison)
    assert result.baseline == "V1" and result.region == "trabecular"
    assert result.registrations["V1"].status == "reference"
    for visit, shift in zip(("V2", "V3"), shifts[1:]):
        registration = result.registrations[visit]
        assert registration.status == "ok", registration.reason
        np.testing.assert_allclose(registration.offset, np.asarray(shift) * SPACING,
                                   atol=0.25 * SPACING)
        assert registration.rotation_deg < 0.2
    # Sequential: V3 was registered to V2 and composed.
    assert [(a, b) for a, b, _ in result.pairwise] == [("V1", "V2"), ("V2", "V3")]
    assert result.registrations["V3"].parameters["composed_via"] == "V2"
    table = result.registration_table()
    assert table["status"].tolist() == ["reference", "ok", "ok"]


def test_lattice_memory_signature(lattice_comparison, lattice_visits):
    """Domain §9.4: connectivity lost on AI does not return; mass partly or fully does."""
    subject, _, _ = lattice_visits
    result = lattice_comparison
    # The re-measured values equal those of the unshifted truth in the common region.
    for visit, bone in zip(("V1", "V2", "V3"), subject["bone"]):
        expected = fast_measure(bone, spacing=SPACING, roi=result.common_region)
        assert result.records[visit]["Conn.D"] == pytest.approx(expected["Conn.D"])
        assert result.records[visit]["BV/TV"] == pytest.approx(expected["BV/TV"])
    memory = result.memory.set_index("measure")
    assert memory.loc["Conn.D", "index"] == pytest.approx(1.0, abs=1e-9)
    assert memory.loc["Conn.D", "reason"] == ""
    assert memory.loc["BV/TV", "index"] < 1.0
    change = result.change.set_index(["measure", "visit"])
    assert change.loc[("Conn.D", "V2"), "change_pct"] < -20
    assert change.loc[("Conn.D", "V2"), "exceeds_lsc"]
    assert change.loc[("BV/TV", "V3"), "change"] > change.loc[("BV/TV", "V2"), "change"]


def test_lattice_remodelling(lattice_comparison):
    pairs = {(r.from_visit, r.to_visit): r for r in lattice_comparison.remodelling}
    assert set(pairs) == {("V1", "V2"), ("V2", "V3")}
    on_ai, after = pairs[("V1", "V2")], pairs[("V2", "V3")]
    assert on_ai.fractions["RV/BV0"] > 0.1 > on_ai.fractions["FV/BV0"]
    assert after.fractions["FV/BV0"] > 0.1 > after.fractions["RV/BV0"]
    assert (on_ai.labels[~lattice_comparison.common_region] == 0).all()
    table = lattice_comparison.remodelling_table()
    assert table[["from_visit", "to_visit"]].values.tolist() == [["V1", "V2"], ["V2", "V3"]]
    assert (table["subject"] == "S01").all()
    assert on_ai.labels.dtype == np.uint8
    assert (on_ai.labels == RESORPTION).sum() > (on_ai.labels == FORMATION).sum()


def test_baseline_strategy_and_kept_data(lattice_visits):
    _, _shifts, visits = lattice_visits
    result = compare_visits(visits[:2], measure=fast_measure, strategy="baseline",
                            registration=FAST, keep_resampled=True, remodelling="none",
                            interpolation="bspline")
    assert [(a, b) for a, b, _ in result.pairwise] == [("V1", "V2")]
    assert result.remodelling == []
    kept = result.resampled["V2"]
    assert kept["image"].shape == visits[0].image.shape and kept["image"].dtype == np.float32
    assert kept["bone"].dtype == bool
    # Resampled onto the baseline grid, the shifted visit lines up with the unshifted truth.
    inside = kept["field of view"]
    assert inside.mean() > 0.9
    np.testing.assert_array_equal(kept["trabecular"][inside],
                                  visits[0].masks["trabecular"][inside])


def test_same_scan_repeat_is_unchanged(small_bone, small_baseline):
    """The same scan three times: identity, nothing beyond the LSC, memory undefined."""
    _, _shape, spacing = small_bone
    masks = {"periosteal": small_baseline["periosteal"],
             "trabecular": small_baseline["trabecular"]}
    visits = [(name, role, Scan(image=small_baseline["image"], spacing=(spacing,) * 3,
                                units="mg HA/cm³"), masks)
              for name, role in (("a", "baseline"), ("b", "on_ai"), ("c", "post_withdrawal"))]
    result = compare_visits(visits, measure=fast_measure, registration=FAST)
    for visit in ("b", "c"):
        registration = result.registrations[visit]
        assert registration.status == "ok"
        assert registration.rotation_deg < 0.01
        assert np.abs(registration.offset).max() < 0.01 * spacing
    assert result.records["a"] == result.records["b"] == result.records["c"]
    assert (result.change["change"] == 0).all()
    assert not result.change["exceeds_lsc"].any()
    assert result.memory["index"].isna().all()
    assert result.memory["reason"].str.contains("within the LSC").all()
    for pair in result.remodelling:
        assert pair.fractions["FV/BV0"] == 0 and pair.fractions["RV/BV0"] == 0
    # Without bone masks the images were segmented (XtremeCT II standard).
    assert 0.1 < result.records["a"]["BV/TV"] < 0.6


def test_different_grids_and_a_failed_visit(small_bone, small_baseline, synth):
    """A finer, larger follow-up registers; an unrelated scan is reported, not raised."""
    bone, shape, spacing = small_bone
    centre = (np.asarray(shape) - 1) / 2 * spacing
    motion = synth.RigidMotion((1.0, -1.5, 2.0), (0.1, 0.05, -0.1), centre)
    fine = bone.render((56, 100, 100), 0.0607, motion, seed=5)
    stranger = synth.AnalyticBone(centre_yx=(2.0, 3.4), semi_axes=(1.2, 1.6), seed=11)
    other = stranger.render(shape, spacing, seed=6)

    def masks(d):
        return {"periosteal": d["periosteal"], "trabecular": d["trabecular"]}

    visits = [Visit("V1", "baseline", small_baseline["image"], spacing, masks(small_baseline)),
              Visit("V2", "on_ai", fine["image"], 0.0607, masks(fine)),
              Visit("V3", "post_withdrawal", other["image"], spacing, masks(other))]
    result = compare_visits(visits, measure=fast_measure, registration=FAST)

    v2 = result.registrations["V2"]
    assert v2.status == "ok"
    points = np.argwhere(small_baseline["periosteal"])[::40] * spacing
    assert synth.tre_voxels(v2, motion, points, spacing).max() <= 0.5
    assert result.registrations["V3"].status == "failed"
    assert result.records["V3"] == {"notes": "registration failed: "
                                             + result.registrations["V3"].reason}
    assert any("'V3' left out" in note for note in result.notes)
    assert any("registering it directly" in note for note in result.notes)
    change = result.change.set_index(["measure", "visit"])
    assert math.isnan(change.loc[("BV/TV", "V3"), "value"])
    assert change.loc[("BV/TV", "V3"), "note"].startswith("registration failed")
    assert pd_isna(change.loc[("BV/TV", "V3"), "exceeds_lsc"])
    assert result.memory["index"].isna().all()
    assert [(r.from_visit, r.to_visit) for r in result.remodelling] == [("V1", "V2")]
    assert result.common_region.shape == shape and result.common_region.any()
    # V2 is measured on the baseline grid, so its values compare with V1's.
    assert result.records["V2"]["BV/TV"] == pytest.approx(result.records["V1"]["BV/TV"],
                                                          abs=0.05)


def pd_isna(value):
    import pandas as pd

    return pd.isna(value)


def test_measure_callables_get_what_they_accept(small_baseline):
    image = small_baseline["image"]
    masks = {"trabecular": small_baseline["trabecular"],
             "bone": small_baseline["image"] > 400}
    seen = {}

    def plain(mask, *, spacing, roi):
        seen["plain"] = (mask.shape, spacing, int(roi.sum()))
        return {"BV/TV": float(mask[roi].mean())}

    def with_image(mask, *, spacing, roi, image):
        seen["image"] = float(image[roi].mean())
        return {"vBMD": seen["image"]}

    def everything(mask, **kwargs):
        seen["kwargs"] = sorted(kwargs)
        seen["masks"] = sorted(kwargs["masks"])
        return {"n": 1.0}

    for measure in (plain, with_image, everything):
        result = compare_visits([("only", "baseline", image, masks)], spacing=SPACING,
                                measure=measure)
        assert result.registrations["only"].status == "reference"
    assert seen["plain"][1] == (SPACING,) * 3
    assert seen["image"] > 0
    assert seen["kwargs"] == ["image", "masks", "roi", "spacing"]
    assert seen["masks"] == ["bone", "field of view", "trabecular"]

    def failing(mask, *, spacing, roi):
        raise ValueError("nothing to measure")

    result = compare_visits([("only", "baseline", image, masks)], spacing=SPACING,
                            measure=failing)
    assert "measure failed" in result.records["only"]["notes"]
    with pytest.raises(TypeError, match="mapping"):
        compare_visits([("only", "baseline", image, masks)], spacing=SPACING,
                       measure=lambda mask, *, spacing, roi: 3.0)


def test_default_measure_reports_plate_rod_and_density(synth):
    subject = synth.lattice_subject(shape=(24, 32, 32))
    bone = subject["bone"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateInputWarning)
        record = default_measure(bone, spacing=SPACING, roi=subject["trabecular"],
                                 image=np.where(bone, 1000.0, 0.0))
    assert record["BV/TV"] == pytest.approx(bone[subject["trabecular"]].mean())
    assert record["vBMD"] == pytest.approx(1000.0 * record["BV/TV"])
    assert 0 < record["pBV/TV"] + record["rBV/TV"] <= record["BV/TV"] + 1e-9
    assert record["Conn.D"] > 0 and "SMI" in record and math.isnan(record["SMI"])


def test_default_measure_decomposes_the_trabecular_bone_only():
    from microarch.measure import plate_rod

    # rods standing on a thick "cortex" slab outside the trabecular compartment
    bone = np.zeros((30, 28, 28), bool)
    bone[:8] = True
    for y in (6, 13, 20):
        for x in (6, 13, 20):
            bone[8:28, y:y + 2, x:x + 2] = True
    bone[26:28, 4:24, 4:24] = True            # a plate on top of the rods
    trabecular = np.zeros_like(bone)
    trabecular[8:] = True
    roi = np.zeros_like(bone)
    roi[10:29, 2:26, 2:26] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateInputWarning)
        record = default_measure(bone, spacing=SPACING, roi=roi,
                                 masks={"trabecular": trabecular})
        whole = default_measure(bone, spacing=SPACING, roi=roi)
    expected = plate_rod(bone & trabecular, spacing=SPACING, roi=roi)
    for key in ("pBV/TV", "rBV/TV", "P-R Junc.D", "R-R Junc.D"):
        assert record[key] == pytest.approx(expected[key], nan_ok=True)
    # the slab is a plate that the rods would join, which the decomposition then sees
    assert (whole["pBV/TV"], whole["P-R Junc.D"]) != (record["pBV/TV"],
                                                      record["P-R Junc.D"])


def test_input_validation(small_baseline):
    image = small_baseline["image"]
    good = ("a", "baseline", image)
    with pytest.raises(ValueError, match="spacing"):
        compare_visits([good])
    with pytest.raises(ValueError, match="unique"):
        compare_visits([good, good], spacing=SPACING)
    with pytest.raises(ValueError, match="role"):
        compare_visits([("a", "pre-AI", image)], spacing=SPACING)
    with pytest.raises(ValueError, match="shape"):
        compare_visits([("a", "baseline", image, {"bone": np.ones((2, 2, 2), bool)})],
                       spacing=SPACING)
    with pytest.raises(ValueError, match="region"):
        compare_visits([("a", "baseline", image, {"bone": image > 400})], spacing=SPACING,
                       region="trabecular", measure=fast_measure)
    with pytest.raises(ValueError, match="threads"):
        compare_visits([good], spacing=SPACING, registration={"threads": 2})
    with pytest.raises(ValueError, match="neither an image nor a bone mask"):
        compare_visits([("a", "baseline", None)], spacing=SPACING)
    with pytest.raises(ValueError, match="strategy"):
        compare_visits([good], spacing=SPACING, strategy="pairwise")
    native = Scan(image=image, spacing=(SPACING,) * 3, units="native")
    with pytest.raises(ValueError, match="bone"):
        compare_visits([("a", "baseline", native)], measure=fast_measure)


def test_mask_only_visits(lattice_visits):
    """Visits given as bone masks only are registered on the smoothed masks."""
    _, shifts, visits = lattice_visits
    mask_only = [Visit(v.id, v.role, None, SPACING, v.masks) for v in visits[:2]]
    result = compare_visits(mask_only, measure=fast_measure, registration=FAST)
    assert result.registrations["V2"].status == "ok"
    np.testing.assert_allclose(result.registrations["V2"].offset,
                               np.asarray(shifts[1]) * SPACING, atol=0.25 * SPACING)
    assert result.remodelling == []
    assert any("no density image" in note for note in result.notes)
