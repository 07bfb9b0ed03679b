"""Local thickness: kernel == brute-force oracle, plates exact, conventions, edges."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from oracles import local_thickness_bonej, local_thickness_continuous

from microarch import measure
from microarch._shared.threads import threads
from microarch.measure import _thickness

small_volumes = arrays(bool, st.tuples(*[st.integers(1, 6)] * 3), elements=st.booleans())
spacings = st.one_of(
    st.just(1.0),
    st.tuples(*[st.sampled_from([0.5, 0.8, 1.0, 1.3])] * 3),
)


@settings(max_examples=60, deadline=None)
@given(small_volumes, spacings, st.sampled_from(["continue", "background"]))
def test_continuous_equals_oracle(mask, spacing, edge):
    if edge == "continue" and mask.all():
        return  # unbounded, tested separately
    got = measure.local_thickness(mask, spacing=spacing, edge=edge)
    expected = local_thickness_continuous(mask, spacing, edge)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(small_volumes, spacings)
def test_bonej_before_clean_up_equals_oracle(mask, spacing):
    if mask.all():
        return
    spacing_t = _thickness.as_spacing(spacing)
    got = _thickness._ball_radius_sq(mask, spacing_t, convention="bonej", edge="continue")
    got = 2 * np.sqrt(got)
    np.testing.assert_allclose(got, local_thickness_bonej(mask, spacing), rtol=1e-5, atol=1e-6)


def test_random_volumes_larger_than_hypothesis():
    rng = np.random.default_rng(7)
    for _ in range(4):
        mask = rng.random((9, 8, 10)) < 0.6
        got = measure.local_thickness(mask, spacing=(0.9, 1.0, 1.1))
        np.testing.assert_allclose(got, local_thickness_continuous(mask, (0.9, 1.0, 1.1)),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("spacing", [0.082, (0.1, 0.06, 0.07)])
def test_plates_measure_exactly_n_voxels(axis, spacing):
    h = np.broadcast_to(spacing, 3)[axis]
    for n in range(1, 13):
        shape = [12, 12, 12]
        shape[axis] = n + 6
        mask = np.zeros(shape, bool)
        index = [slice(None)] * 3
        index[axis] = slice(3, 3 + n)
        mask[tuple(index)] = True
        lt = measure.local_thickness(mask, spacing=spacing)
        assert np.allclose(lt[mask], n * h, rtol=1e-6), (n, np.unique(lt[mask]))
        assert np.all(lt[~mask] == 0)


def test_bonej_parity_convention():
    for n in range(1, 8):
        mask = np.zeros((n + 6, 10, 10), bool)
        mask[3 : 3 + n] = True
        lt = measure.local_thickness(mask, spacing=1.0, convention="bonej")
        assert np.allclose(lt[mask], n + (n % 2))


def test_plate_lattice_thickness_and_separation():
    period, t = 10, 3
    lines = (np.arange(60) % period >= 3) & (np.arange(60) % period < 3 + t)
    mask = np.broadcast_to(lines[:, None, None], (60, 16, 16)).copy()
    h = 0.061
    tb_th = measure.local_thickness(mask, spacing=h)
    tb_sp = measure.local_thickness(~mask, spacing=h)
    assert np.allclose(tb_th[mask], t * h)
    # the marrow layers cut by the image border continue beyond it (edge="continue")
    inner = ~mask
    inner[:3] = inner[-4:] = False
    assert np.allclose(tb_sp[inner], (period - t) * h)


def test_edge_background_thins_structures_at_the_border():
    mask = np.ones((6, 20, 20), bool)
    lt = measure.local_thickness(mask, spacing=1.0, edge="background")
    assert lt.max() == pytest.approx(6.0)
    with pytest.warns(measure.DegenerateInputWarning, match="fills the image"):
        assert np.isnan(measure.local_thickness(mask, spacing=1.0)).all()


def test_column_blocks_give_the_same_map(monkeypatch):
    rng = np.random.default_rng(2)
    mask = rng.random((40, 24, 24)) < 0.55
    whole = measure.local_thickness(mask, spacing=(0.9, 1.0, 1.0))
    monkeypatch.setattr(_thickness, "_SLAB_BYTES_PER_VOXEL", 0)  # forces 8-column blocks
    sliced = measure.local_thickness(mask, spacing=(0.9, 1.0, 1.0))
    np.testing.assert_array_equal(whole, sliced)


def test_threads_agree_and_input_untouched():
    rng = np.random.default_rng(5)
    mask = rng.random((32, 30, 28)) < 0.5
    copy = mask.copy()
    with threads(1):
        one = measure.local_thickness(mask, spacing=0.1)
    with threads(2):
        two = measure.local_thickness(mask, spacing=0.1)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(mask, copy)
    assert one.dtype == np.float32


def test_empty_and_invalid_inputs():
    empty = np.zeros((5, 5, 5), bool)
    assert not measure.local_thickness(empty, spacing=1).any()
    with pytest.raises(ValueError, match="convention"):
        measure.local_thickness(empty, spacing=1, convention="scanco")
    with pytest.raises(ValueError, match="positive"):
        measure.local_thickness(empty, spacing=-1)
    with pytest.raises(ValueError, match="NaN"):
        measure.local_thickness(np.full((3, 3, 3), np.nan), spacing=1)


def test_statistics():
    stats = measure.thickness_statistics(np.array([0.0, 1.0, 2.0, 3.0]))
    assert stats["mean"] == 2.0 and stats["max"] == 3.0 and stats["n"] == 3
    assert stats["sd"] == pytest.approx(1.0)
    assert measure.thickness_statistics(np.zeros(3))["n"] == 0


@pytest.mark.parametrize("ddof", [0, 1])
def test_statistics_equal_numpy_on_the_selected_values(ddof):
    rng = np.random.default_rng(5)
    values = rng.gamma(2.0, 0.1, (23, 31, 17)).astype(np.float32)[:, ::2]  # not contiguous
    where = rng.random(values.shape) < 0.6
    selected = values[where].astype(np.float64)
    with threads(1):
        stats = measure.thickness_statistics(values, where=where, ddof=ddof)
    assert stats["n"] == selected.size
    assert stats["mean"] == pytest.approx(selected.mean(), rel=1e-12)
    assert stats["sd"] == pytest.approx(selected.std(ddof=ddof), rel=1e-12)
    assert stats["max"] == selected.max()
    with threads(2):
        assert measure.thickness_statistics(values, where=where, ddof=ddof) == stats
    n_selected = selected.size + (0 if where[0, 0, 0] else 1)
    values[0, 0, 0], where[0, 0, 0] = np.nan, True  # a NaN spoils every statistic
    stats = measure.thickness_statistics(values, where=where)
    assert np.isnan([stats["mean"], stats["sd"], stats["max"]]).all()
    assert stats["n"] == n_selected
    with pytest.raises(ValueError, match="shape"):
        measure.thickness_statistics(values, where=where[1:])


def test_window_and_envelope_passes_agree(monkeypatch):
    from microarch._kernels import thickness as kernels

    rng = np.random.default_rng(11)
    mask = rng.random((20, 22, 18)) < 0.5
    spacing = (0.9, 1.0, 1.1)
    windowed = measure.local_thickness(~mask, spacing=spacing, edge="background")
    monkeypatch.setattr(kernels, "_WINDOW_LIMIT", 0)
    enveloped = measure.local_thickness(~mask, spacing=spacing, edge="background")
    np.testing.assert_allclose(windowed, enveloped, rtol=1e-6)


def _paint_by_brute_force(targets, centres, radius2, spacing, cube_overlap):
    """Every voxel takes the largest ball that covers it (cube overlap or centre)."""
    grid = np.stack(np.indices(targets.shape), axis=-1).astype(float)
    half = 0.5 if cube_overlap else 0.0
    out = np.zeros(targets.shape, np.float64)
    for centre, r2 in zip(centres, radius2):
        gap = np.maximum(np.abs(grid - centre) - half, 0.0) * spacing
        d2 = (gap * gap).sum(axis=-1)
        covered = d2 < r2 if cube_overlap else d2 <= r2
        out = np.where(covered & (r2 > out), r2, out)
    return np.where(targets, out, 0.0)


@pytest.mark.parametrize("cube_overlap", [True, False])
@pytest.mark.parametrize("n_chunks", [1, 3, 8, 12])
@pytest.mark.parametrize("layout", ["uniform", "uneven"])
def test_paint_equals_brute_force_across_tiles_blocks_and_chunks(cube_overlap, n_chunks,
                                                                  layout):
    # 37 x 41 x 45 voxels: several 16-voxel blocks along each axis, partial at the end;
    # 10 layers of tiles, so 12 chunks leave some empty. "uneven" puts most targets in a
    # few slices, so that the chunks, which balance target counts, are of unequal depth.
    from microarch._kernels import thickness as kernels

    rng = np.random.default_rng(7)
    shape = (37, 41, 45)
    spacing = np.array([0.9, 1.0, 1.2])
    targets = rng.random(shape) < 0.8
    if layout == "uneven":
        targets[:, :30] &= (np.arange(shape[0]) > 28)[:, None, None]
    n = 300
    doubled = np.stack([rng.integers(0, 2 * s - 1, n) for s in shape], axis=1)
    # distinct squared radii well apart, so float32 rounding decides no tie
    radius2 = rng.permutation(np.arange(1, n + 1)) * 0.25
    bits = radius2.astype(np.float32).view(np.uint32).astype(np.uint64)
    nj2, ni2 = 2 * shape[1] - 1, 2 * shape[2] - 1
    index = (doubled[:, 0] * nj2 + doubled[:, 1]) * ni2 + doubled[:, 2]
    keys = np.sort((bits << np.uint64(32)) | index.astype(np.uint64))
    painted = kernels.paint(targets, keys, nj2, ni2, *spacing, cube_overlap, n_chunks)
    expected = _paint_by_brute_force(targets, doubled / 2.0, radius2, spacing, cube_overlap)
    np.testing.assert_array_equal(painted, expected.astype(np.float32))


@pytest.mark.parametrize(("per_layer", "n_chunks", "expected"), [
    ([5, 5, 5, 5], 2, [0, 2, 4]),
    ([1, 1, 1, 1, 1, 1, 10, 10], 2, [0, 7, 8]),  # the middle of layer 6 is before the goal
    ([0, 0, 0], 2, [0, 3, 3]),  # no targets: the first chunk takes everything
    ([3], 3, [0, 0, 1, 1]),  # more chunks than layers: the layer's middle is in the 2nd
])
def test_paint_chunks_hold_equal_target_counts(per_layer, n_chunks, expected):
    from microarch._kernels.thickness import _balanced_layers

    start = _balanced_layers(np.array(per_layer, np.int64), n_chunks)
    assert start.tolist() == expected
