"""Direct Tb.N: mid-axis spacing against brute force, and exact plate lattices."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from oracles import mid_axis_spacing as mid_axis_spacing_oracle

from microarch import measure


@settings(max_examples=40, deadline=None)
@given(arrays(bool, st.tuples(*[st.integers(2, 6)] * 3), elements=st.booleans()),
       st.sampled_from([1.0, (0.8, 1.0, 1.3)]))
def test_mid_axis_spacing_equals_oracle(skeleton, spacing):
    if not skeleton.any() or skeleton.all():
        return
    got, used = measure.mid_axis_spacing(skeleton, spacing=spacing, skeleton=skeleton)
    assert used is not skeleton or np.array_equal(used, skeleton)
    np.testing.assert_allclose(got, mid_axis_spacing_oracle(skeleton, spacing),
                               rtol=1e-5, atol=1e-6)


def _plate_lattice(period, thickness, n_periods=6, width=16, axis=0):
    z = np.arange(n_periods * period) % period
    line = (z >= 2) & (z < 2 + thickness)
    shape = [width, width, width]
    shape[axis] = n_periods * period
    index = [None, None, None]
    index[axis] = slice(None)
    mask = np.broadcast_to(line[tuple(index)], shape).copy()
    roi = np.zeros(shape, bool)
    inner = [slice(None)] * 3
    inner[axis] = slice(period, -period)
    roi[tuple(inner)] = True
    return mask, roi


@pytest.mark.parametrize("axis", [0, 2])
@pytest.mark.parametrize("period,thickness", [(8, 2), (9, 3), (11, 4)])
def test_plate_lattice_number_is_inverse_period(period, thickness, axis):
    mask, roi = _plate_lattice(period, thickness, axis=axis)
    spacing = (0.08, 0.061, 0.07)
    h = spacing[axis]
    number, sd = measure.trabecular_number(mask, spacing=spacing, roi=roi, return_sd=True)
    assert number == pytest.approx(1 / (period * h), rel=1e-5)
    assert sd == pytest.approx(0.0, abs=1e-6)


def test_trabecular_record_of_plate_lattice():
    period, t, h = 10, 3, 0.061
    mask, roi = _plate_lattice(period, t)
    record = measure.trabecular(mask, spacing=h, roi=roi, smi=False)
    assert record["BV/TV"] == pytest.approx(t / period)
    assert record["Tb.Th"] == pytest.approx(t * h, rel=0.02)
    assert record["Tb.Sp"] == pytest.approx((period - t) * h, rel=0.02)
    assert record["Tb.N"] == pytest.approx(1 / (period * h), rel=0.02)
    assert record["notes"] == ""
    assert set(measure.UNITS) == set(record)


def test_degenerate_number_and_record():
    empty = np.zeros((6, 6, 6), bool)
    with pytest.warns(measure.DegenerateInputWarning, match="empty"):
        assert np.isnan(measure.trabecular_number(empty, spacing=0.1))
    with pytest.warns(measure.DegenerateInputWarning, match="no bone"):
        record = measure.trabecular(empty, spacing=0.1)
    assert record["BV/TV"] == 0 and np.isnan(record["Tb.Th"]) and "no bone" in record["notes"]
    with pytest.warns(measure.DegenerateInputWarning, match="ROI is empty"):
        record = measure.trabecular(~empty, spacing=0.1, roi=empty)
    assert np.isnan(record["BV/TV"])


def test_region_and_roi_restriction_leave_the_roi_values_unchanged():
    """A closed cortex in soft tissue: measuring only inside the periosteal envelope (and
    painting only the ROI) gives the same numbers as measuring the whole image."""
    from microarch import phantoms

    site = phantoms.distal_radius((20, 72, 64), spacing=0.0607, seed=5, cortical_thickness=0.4,
                                  porosity=0.0)
    bone, roi = site.mask, site.trabecular
    whole = measure.trabecular(bone, spacing=site.spacing, roi=roi, smi=False)
    fast = measure.trabecular(bone, spacing=site.spacing, roi=roi, region=site.periosteal,
                              smi=False)
    for key in ("Tb.Th", "Tb.Sp", "Tb.Sp.SD", "Tb.N", "Conn.D", "BV/TV"):
        assert fast[key] == pytest.approx(whole[key], rel=1e-6), key


def test_site_rows_are_the_sites_and_the_midpoints_of_neighbouring_sites():
    from microarch._kernels.thickness import _site_row

    rng = np.random.default_rng(4)
    sites = rng.random((4, 5, 6)) < 0.4
    voxels = np.argwhere(sites)
    # a doubled point is outside when it is a + b for site voxels a, b at most one step
    # apart along every axis (a == b: the site itself)
    expected = np.zeros(tuple(2 * n - 1 for n in sites.shape), bool)
    for a in voxels:
        for b in voxels:
            if np.abs(a - b).max() <= 1:
                expected[tuple(a + b)] = True
    for k in range(expected.shape[0]):
        for j in range(expected.shape[1]):
            for w_lo in (0, 3):
                row = np.empty(expected.shape[2] - w_lo, bool)
                _site_row(sites, k, j, w_lo, row)
                assert np.array_equal(row, expected[k, j, w_lo:]), (k, j, w_lo)
