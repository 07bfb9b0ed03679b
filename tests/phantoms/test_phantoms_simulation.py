"""AI-loss / withdrawal simulation: exact truth, memory indices, transforms, determinism."""

import hashlib
import math

import numpy as np
import pytest
from oracles import euler_by_cells
from scipy import ndimage

from microarch import measure
from microarch.phantoms import (
    AILoss,
    RigidTransform,
    VisitSeries,
    Withdrawal,
    simulate_visits,
)

# A small site (about 80k voxels per visit) with strong operators, so that a few dozen
# events happen in it.
SMALL = {"max_shift_mm": (0.2, 0.25, 0.25), "max_rotation_deg": 1.5, "cortical_thickness": 0.5}
STRONG = AILoss(sever_fraction=0.3, perforation_fraction=0.4, hole_diameter_mm=0.25,
                cavity_volume_fraction=0.02)


def _simulate(**options):
    kwargs = dict(SMALL, loss=STRONG, seed=7)
    kwargs.update(options)
    return simulate_visits((16, 80, 72), **kwargs)


@pytest.fixture(scope="module")
def physiological():
    return _simulate()


@pytest.fixture(scope="module")
def half_reversal():
    return _simulate(recovery="reversal", reversal_fraction=0.5)


@pytest.fixture(scope="module")
def full_reversal():
    return _simulate(recovery="reversal", reversal_fraction=1.0)


def _events(series):
    return series.truth["events"]


def _measures(series):
    return [v["measures"] for v in series.truth["visits"]]


# --------------------------------------------------------------------------------------
# rigid transforms
# --------------------------------------------------------------------------------------


def test_transform_matches_simpleitk_euler3d():
    sitk = pytest.importorskip("SimpleITK")
    t = RigidTransform.from_parameters(rotation_deg=(1.5, -2.0, 3.0),
                                       translation=(0.3, -1.2, 0.7), centre=(2.0, 5.0, 4.0))
    reference = sitk.Euler3DTransform()
    reference.SetCenter((4.0, 5.0, 2.0))
    reference.SetRotation(*np.radians([1.5, -2.0, 3.0]))
    reference.SetTranslation((0.7, -1.2, 0.3))
    points = np.random.default_rng(0).uniform(-5, 10, size=(20, 3))
    expected = np.array([reference.TransformPoint(tuple(p[::-1]))[::-1] for p in points])
    np.testing.assert_allclose(t.apply(points), expected, atol=1e-12)
    mine = t.as_sitk()
    np.testing.assert_allclose(
        [mine.TransformPoint(tuple(p[::-1]))[::-1] for p in points], expected, atol=1e-12)


def test_transform_inverse_and_angles():
    t = RigidTransform.from_parameters(rotation_deg=(2.0, 1.0, -1.5), translation=(0.5, 1, -1),
                                       centre=(1.0, 2.0, 3.0))
    points = np.random.default_rng(1).uniform(-3, 3, size=(10, 3))
    back = t.inverse().apply(t.apply(points))
    np.testing.assert_allclose(back, points, atol=1e-12)
    # The inverse's own Euler angles rebuild its matrix.
    inverse = t.inverse()
    rebuilt = RigidTransform.from_parameters(rotation_deg=inverse.rotation_deg,
                                             translation=inverse.translation,
                                             centre=inverse.centre)
    np.testing.assert_allclose(rebuilt.matrix, inverse.matrix, atol=1e-12)
    np.testing.assert_allclose(rebuilt.offset, inverse.offset, atol=1e-12)
    assert math.isclose(t.rotation_angle_deg, inverse.rotation_angle_deg)
    assert t.as_dict()["sitk_euler3d"]["center_xyz"] == [3.0, 2.0, 1.0]


def test_follow_up_resampled_with_true_transform_matches_baseline():
    """Without loss, a follow-up resampled onto the baseline grid with the recorded
    transform (as the longitudinal stage does, in SimpleITK) reproduces the baseline."""
    sitk = pytest.importorskip("SimpleITK")
    nothing = AILoss(sever_fraction=0, perforation_fraction=0, rod_thinning=0,
                     cavity_volume_fraction=0, cortical_thinning=0, porosity_increase=0,
                     pore_enlargement=0)
    series = simulate_visits((16, 80, 72), seed=3, loss=nothing,
                             withdrawal=Withdrawal(formation_volume_fraction=0),
                             max_shift_mm=(0.3, 0.4, 0.4), max_rotation_deg=3.0,
                             cortical_thickness=0.5, noise_sd=0.0)
    baseline, follow = series["baseline"], series["on_ai"]
    assert follow.transform.rotation_angle_deg > 0.5
    h = series.spacing[0]
    moving = sitk.GetImageFromArray(follow.scan.fraction)
    moving.SetSpacing((h, h, h))
    reference = sitk.GetImageFromArray(baseline.scan.fraction)
    reference.SetSpacing((h, h, h))
    resampled = sitk.GetArrayFromImage(sitk.Resample(
        moving, reference, follow.transform.as_sitk(), sitk.sitkLinear, -1.0))
    inside = series.common["field_of_view"] & ndimage.binary_erosion(
        series.common["field_of_view"], iterations=1)
    error = np.abs(resampled[inside] - baseline.scan.fraction[inside])
    assert error.mean() < 0.08
    correlation = np.corrcoef(resampled[inside], baseline.scan.fraction[inside])[0, 1]
    assert correlation > 0.9
    # The identity would be much worse: the recorded transform is the right one.
    identity = np.abs(follow.scan.fraction[inside] - baseline.scan.fraction[inside])
    assert identity.mean() > 2 * error.mean()
    # The true compartments of the follow-up grid are the baseline's, moved.
    mask = sitk.GetImageFromArray(follow.masks["periosteal"].astype(np.uint8))
    mask.SetSpacing((h, h, h))
    periosteal = sitk.GetArrayFromImage(sitk.Resample(
        mask, reference, follow.transform.as_sitk(), sitk.sitkNearestNeighbor, 0)).astype(bool)
    disagree = (periosteal != baseline.masks["periosteal"]) & inside
    assert disagree.mean() < 0.01


def test_visit_compartments_against_brute_force(physiological):
    """Compartments sampled at the follow-up voxel centres, against a direct evaluation of
    the ellipse depth (dense boundary samples) at the mapped points."""
    from scipy.spatial import cKDTree

    truth = physiological.truth
    visit = physiological["post_withdrawal"]
    h = physiological.spacing[0]
    shape = visit.masks["periosteal"].shape
    semi_y, semi_x = truth["parameters"]["outer_semi_axes"]
    centre = np.array(truth["visits"][0]["transform"]["centre"])
    thickness = visit.truth["measures"]["Ct.Th"]
    q = np.stack(np.meshgrid(*(np.arange(n) * h for n in shape), indexing="ij"), -1)
    p = visit.transform.inverse().apply(q.reshape(-1, 3)) - centre
    rho = np.hypot(p[:, 1] / semi_y, p[:, 2] / semi_x)
    inside = rho <= 1
    # Points farther than the cortex from the ellipse (by a lower bound) are trabecular.
    distance = np.abs(1 - rho) * min(semi_y, semi_x)
    band = distance <= thickness + 0.1
    angle = np.linspace(0, 2 * np.pi, 100000, endpoint=False)
    boundary = np.stack([semi_y * np.sin(angle), semi_x * np.cos(angle)], 1)
    distance[band], _ = cKDTree(boundary).query(p[band, 1:])
    trabecular = (inside & (distance > thickness)).reshape(shape)
    # 1e5 samples put the distance within 1e-4 mm: only voxels that close may differ.
    near = np.abs(distance - thickness).reshape(shape) < 2e-4
    assert np.array_equal(visit.masks["periosteal"], inside.reshape(shape))
    assert np.array_equal(visit.masks["trabecular"][~near], trabecular[~near])


# --------------------------------------------------------------------------------------
# exact truth
# --------------------------------------------------------------------------------------


def test_result_structure(physiological):
    assert isinstance(physiological, VisitSeries)
    assert [v.role for v in physiological.visits] == ["baseline", "on_ai", "post_withdrawal"]
    assert [v.visit for v in physiological.visits] == ["V1", "V2", "V3"]
    baseline = physiological["V1"]
    np.testing.assert_array_equal(baseline.transform.matrix, np.eye(3))
    for visit in physiological.visits:
        assert visit.scan.native.dtype == np.int16
        assert visit.scan.native.shape == (16, 80, 72)
        assert set(visit.masks) == {"bone", "periosteal", "cortical", "trabecular"}
        assert not (visit.masks["cortical"] & visit.masks["trabecular"]).any()
    assert _events(physiological)["severed_rods"]
    assert _events(physiological)["perforated_plates"]
    assert "VisitSeries" in repr(physiological)


def test_euler_and_conn_d_against_cell_counting(physiological):
    """The truth's chi and Conn.D against the slow cell-counting oracle."""
    roi = physiological.common["trabecular"]
    h = physiological.spacing[0]
    for visit in physiological.visits[:2]:
        bone = visit.reference["bone"]
        measures = visit.truth["measures"]
        assert measures["euler"] == euler_by_cells(bone & roi)
        corrected = euler_by_cells(bone, roi)
        tv = int(roi.sum()) * h ** 3
        assert math.isclose(measures["Conn.D"], (1 - corrected) / tv, rel_tol=1e-9)
        assert math.isclose(measures["BV/TV"], (bone & roi).sum() / roi.sum())


def test_crop_euler_sums_match_microarch_measure():
    """The numpy window sums used to check edits on small crops agree with skimage and
    with microarch.measure's edge-corrected Euler number (random masks and ROIs)."""
    from skimage.measure import euler_number

    from microarch.phantoms._simulation import _window_euler

    rng = np.random.default_rng(0)
    for _ in range(100):
        shape = tuple(int(n) for n in rng.integers(2, 9, 3))
        mask = rng.random(shape) < rng.uniform(0.2, 0.8)
        roi = rng.random(shape) < 0.8
        assert _window_euler(mask) == euler_number(mask, connectivity=3)
        if roi.any():
            corrected = 1 - measure.connectivity_density(mask, spacing=1.0, roi=roi) * roi.sum()
            assert _window_euler(mask, roi) == pytest.approx(corrected, abs=1e-9)


def test_every_event_changes_chi_by_exactly_one(physiological):
    """chi rises by one per severed rod and falls by one per perforation; cavities and
    rod thinning change no topology; the same holds for the edge-corrected value."""
    base, ai, _ = _measures(physiological)
    n_cut = len(_events(physiological)["severed_rods"])
    n_holes = len(_events(physiological)["perforated_plates"])
    assert ai["n_open_cavities"] > 0 and ai["n_thinned_rods"] > 0
    assert ai["euler"] - base["euler"] == n_cut - n_holes
    tv = base["TV"]
    assert math.isclose((base["Conn.D"] - ai["Conn.D"]) * tv, n_cut - n_holes, abs_tol=1e-9)
    assert math.isclose((base["Conn.D_uncorrected"] - ai["Conn.D_uncorrected"]) * tv,
                        n_cut - n_holes, abs_tol=1e-9)


def test_connections_against_junction_table(physiological):
    truth = physiological.truth
    connections = truth["connections"]
    severed = {r["id"] for r in _events(physiological)["severed_rods"]}
    lost = [tuple(e) for e in connections["lost_on_ai"]]
    # Brute force: a severed rod loses exactly its one edge, when both of its ends are
    # junctions.
    assert {e[2] for e in lost} == severed
    assert len(lost) == len(severed)
    for a, b, element in connections["baseline"]:
        assert a < b
    base, ai, post = _measures(physiological)
    assert base["n_connections"] == len(connections["baseline"])
    assert ai["n_connections"] == len(connections["baseline"]) - len(lost)
    assert post["n_connections"] == ai["n_connections"]
    assert connections["restored_post_withdrawal"] == []
    assert base["n_intact_rods"] - ai["n_intact_rods"] == len(severed)


def test_severed_rods_lie_in_the_analysed_region(physiological):
    """Severed rods are connecting rods of the analysed region, thinner than average."""
    roi = physiological.common["trabecular"]
    labels = physiological["baseline"].reference["labels"]
    analysed = set(np.unique(labels[roi]).tolist()) - {0}
    rods = _events(physiological)["severed_rods"]
    in_region = [r["id"] in analysed for r in rods]
    assert np.mean(in_region) > 0.8  # the coarse labels may miss a rod the fine grid has
    diameters = [r["diameter"] for r in rods]
    mean_rod = 2 * 0.11  # trabecular_bone's default mean rod radius
    assert np.mean(diameters) < mean_rod


# --------------------------------------------------------------------------------------
# skeletal memory
# --------------------------------------------------------------------------------------


def test_physiological_withdrawal_never_reconnects(physiological):
    base, ai, post = _measures(physiological)
    memory = physiological.truth["memory_index"]
    assert memory["Conn.D"] == 1.0
    assert memory["n_connections"] == 1.0
    assert memory["euler"] == 1.0
    assert post["euler"] == ai["euler"]
    # Mass comes partly back (cavities refilled, formation packets), never all of it.
    assert ai["BV/TV"] < post["BV/TV"] < base["BV/TV"]
    assert 0.0 < memory["BV/TV"] < 1.0
    assert 0.0 < memory["Tb.BMD"] < 1.0
    assert post["n_open_cavities"] == 0 and post["n_formation_packets"] > 0
    # The cortex keeps its loss.
    assert post["Ct.Th"] == ai["Ct.Th"] < base["Ct.Th"]
    # Bone lost on AI, other than refilled cavities, is still missing.
    lost_on_ai = physiological["V1"].reference["bone"] & ~physiological["V2"].reference["bone"]
    back = lost_on_ai & physiological["V3"].reference["bone"]
    assert back.sum() < lost_on_ai.sum()


def test_resorbed_rods_never_come_back():
    """With whole-rod resorption, no element id severed on AI is present after withdrawal
    (in the labels of the ideal mask) although all were present at baseline."""
    series = _simulate(loss=AILoss(sever_fraction=0.3, sever_mode="resorb",
                                   perforation_fraction=0.3, cavity_volume_fraction=0.02),
                       seed=11)
    severed = {r["id"] for r in _events(series)["severed_rods"]}
    assert len(severed) >= 4
    labels = [set(np.unique(v.reference["labels"]).tolist()) for v in series.visits]
    assert severed & labels[0]
    assert not severed & labels[1]
    assert not severed & labels[2]
    assert series.truth["memory_index"]["Conn.D"] == 1.0


def test_half_reversal_restores_half_the_connectivity(half_reversal):
    events = _events(half_reversal)
    n_cut, n_holes = len(events["severed_rods"]), len(events["perforated_plates"])
    restored, closed = len(events["restored_rods"]), len(events["closed_perforations"])
    assert n_cut % 2 == 0 and n_holes % 2 == 0
    assert restored == n_cut // 2 and closed == n_holes // 2
    expected = 1 - (restored - closed) / (n_cut - n_holes)
    memory = half_reversal.truth["memory_index"]
    assert memory["Conn.D"] == pytest.approx(expected, abs=1e-12)
    assert memory["Conn.D"] == pytest.approx(0.5, abs=1e-12)
    assert memory["n_connections"] == pytest.approx(0.5, abs=1e-12)
    assert memory["Ct.Th"] == pytest.approx(0.5, abs=1e-12)
    assert 0.2 < memory["BV/TV"] < 0.8
    assert half_reversal.truth["expected_memory_index"]["Conn.D"] == 0.5


def test_full_reversal_restores_the_baseline_exactly(full_reversal):
    baseline, post = full_reversal["baseline"], full_reversal["post_withdrawal"]
    for name in ("bone", "fraction", "labels", "trabecular", "cortical"):
        np.testing.assert_array_equal(post.reference[name], baseline.reference[name])
    memory = full_reversal.truth["memory_index"]
    for key in ("Conn.D", "euler", "BV/TV", "Tb.BMD", "Tt.BMD", "Ct.Th", "n_connections"):
        assert memory[key] == 0.0, key
    # ... but it is scanned in a new position, with new noise.
    assert not np.array_equal(post.scan.native, baseline.scan.native)


def test_same_ai_course_for_every_recovery(physiological, half_reversal, full_reversal):
    """The recovery only changes the third visit."""
    for other in (half_reversal, full_reversal):
        for role in ("baseline", "on_ai"):
            np.testing.assert_array_equal(other[role].scan.native,
                                          physiological[role].scan.native)


# --------------------------------------------------------------------------------------
# effect sizes
# --------------------------------------------------------------------------------------


def test_default_effect_sizes_in_the_clinical_range():
    """Two years on AI with the default strengths, on the demo cross-section (a short
    stack): rendered densities in the true compartments fall by 3-6 % (total) and
    1-3 % (trabecular), Ct.Th by 5 % (domain notes §8.1)."""
    series = simulate_visits((16, 136, 120), seed=5, max_shift_mm=0.0, max_rotation_deg=0.0)
    scans = [v.scan for v in series.visits]
    values = []
    for visit in series.visits[:2]:
        masks = visit.masks
        values.append(measure.density(visit.scan.density, spacing=scans[0].spacing,
                                      periosteal=masks["periosteal"],
                                      trabecular=masks["trabecular"],
                                      cortical=masks["cortical"]))
    total = 100 * (values[1]["Tt.BMD"] / values[0]["Tt.BMD"] - 1)
    trabecular = 100 * (values[1]["Tb.BMD"] / values[0]["Tb.BMD"] - 1)
    assert -6.0 <= total <= -3.0
    assert -3.0 <= trabecular <= -1.0
    change = series.truth["change_percent"]["on_ai"]
    assert change["Ct.Th"] == pytest.approx(-5.0)
    assert change["Conn.D"] < -3.0
    assert change["Ct.Po"] > 0
    # The truth's scan densities are these numbers.
    assert series.truth["visits"][1]["scan"]["Tt.BMD"] == pytest.approx(values[1]["Tt.BMD"])


# --------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------


def _digest(series):
    digest = hashlib.sha256()
    for visit in series.visits:
        digest.update(visit.scan.native.tobytes())
        digest.update(np.packbits(visit.reference["bone"]).tobytes())
        digest.update(visit.reference["labels"].tobytes())
    return digest.hexdigest()


TINY = {"max_shift_mm": 0.2, "max_rotation_deg": 1.0, "cortical_thickness": 0.5}


def test_same_seed_same_volumes_any_thread_count():
    one = simulate_visits((10, 56, 50), seed=4, threads=1, **TINY)
    two = simulate_visits((10, 56, 50), seed=4, threads=2, **TINY)
    assert _digest(one) == _digest(two)
    assert one.truth == two.truth or _json_equal(one.truth, two.truth)
    other = simulate_visits((10, 56, 50), seed=5, **TINY)
    assert _digest(other) != _digest(one)


def _json_equal(a, b):
    import json

    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True,
                                                                    default=str)


def test_golden_hash():
    """The same seed gives the same volumes on any machine (update on purpose only)."""
    series = simulate_visits((12, 64, 56), seed=1, loss=AILoss(sever_fraction=0.3), **TINY)
    assert len(series.truth["events"]["severed_rods"]) == 6
    assert _digest(series) == GOLDEN


GOLDEN = "e792eab1fb4e73a32b40f03660425af2a6ac57a079befa5ce393c4a35bb075a8"


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"recovery": "rebound"}, "recovery"),
        ({"recovery": "reversal", "reversal_fraction": 1.5}, "reversal_fraction"),
        ({"spacing": (0.082, 0.06, 0.06)}, "isotropic"),
        ({"seed": -1}, "seed"),
        ({"max_rotation_deg": 30}, "10 degrees"),
        ({"oversample": 1}, "oversample"),
        ({"max_shift_mm": 3.0}, "no room"),
        ({"trabecular_options": {"seed": 3}}, "must not set"),
    ],
)
def test_invalid_arguments(options, message):
    kwargs = dict(TINY)
    kwargs.update(options)
    with pytest.raises(ValueError, match=message):
        simulate_visits((10, 56, 50), **kwargs)


def test_invalid_operator_strengths():
    with pytest.raises(ValueError, match="sever_fraction"):
        AILoss(sever_fraction=1.5)
    with pytest.raises(ValueError, match="sever_mode"):
        AILoss(sever_mode="snap")
    with pytest.raises(ValueError, match="cavity_depth_mm"):
        AILoss(cavity_depth_mm=(0.06, 0.04))
    with pytest.raises(ValueError, match="cavity_refill"):
        Withdrawal(cavity_refill=-0.1)
    with pytest.raises(TypeError, match="AILoss"):
        simulate_visits((10, 56, 50), loss={"sever_fraction": 0.1}, **TINY)
