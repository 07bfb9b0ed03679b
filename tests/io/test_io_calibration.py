"""Calibration: the formulas of domain spec §1.2 and its threshold table."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microarch.io import Calibration, CalibrationError

XCT2_A = Calibration(mu_scaling=8192, density_slope=1603.51904, density_intercept=-391.209015,
                     mu_water=0.2409)
XCT2_B = Calibration(mu_scaling=8192, density_slope=1632.71997, density_intercept=-396.135986,
                     mu_water=0.2402)
XCT1 = Calibration(mu_scaling=8192, density_slope=1441.13599, density_intercept=-356.445007,
                   mu_water=0.2464)


# domain spec §1.2 "Threshold conversions": density -> (native, HU) per calibration
@pytest.mark.parametrize(
    "cal,density,native,hu",
    [
        (XCT2_A, 320, 3633, 841), (XCT2_A, 450, 4298, 1178), (XCT2_A, 225, 3148, 595),
        (XCT2_B, 320, 3593, 826), (XCT2_B, 450, 4245, 1158), (XCT2_B, 225, 3116, 584),
        (XCT1, 320, 3845, 905), (XCT1, 450, 4584, 1271), (XCT1, 225, 3305, 637),
    ],
)
def test_domain_threshold_table(cal, density, native, hu):
    assert round(float(cal.to_native(density))) == native
    assert round(float(cal.to_hu(density, from_quantity="density"))) == hu


def test_mu_of_the_table():
    assert float(XCT2_A.to_mu(320.0, from_quantity="density")) == pytest.approx(0.4435, abs=1e-4)
    assert float(XCT2_A.to_mu(450.0, from_quantity="density")) == pytest.approx(0.5246, abs=1e-4)


def test_formulas_literally():
    native = np.array([-2134, 0, 3633, 10544], dtype=np.int16)
    mu = native / 8192.0
    np.testing.assert_allclose(XCT2_A.to_mu(native), mu, rtol=1e-6)
    np.testing.assert_allclose(XCT2_A.to_density(native), 1603.51904 * mu - 391.209015,
                               atol=1e-3)
    np.testing.assert_allclose(XCT2_A.to_hu(native), 1000 * (mu - 0.2409) / 0.2409, atol=1e-3)
    assert XCT2_A.to_density(native).dtype == np.float32


def test_conversion_does_not_touch_the_input():
    native = np.array([[1, 2], [3, 4]], dtype=np.int16)
    copy = native.copy()
    XCT1.to_density(native)
    np.testing.assert_array_equal(native, copy)


@given(st.floats(-3000, 3000), st.sampled_from(["native", "mu", "hu", "density"]),
       st.sampled_from(["native", "mu", "hu", "density"]))
def test_affine_round_trip(value, first, second):
    scale, offset = XCT2_B.affine(first, second)
    back_scale, back_offset = XCT2_B.affine(second, first)
    assert back_scale * (scale * value + offset) + back_offset == pytest.approx(value, abs=1e-6)


def test_missing_pieces_raise_calibration_error():
    mu_only = Calibration(mu_scaling=4096)
    assert mu_only.has_mu and not mu_only.has_density and not mu_only.has_hu
    assert float(mu_only.to_mu(4096)) == 1.0
    with pytest.raises(CalibrationError, match="density"):
        mu_only.to_density(1)
    with pytest.raises(CalibrationError, match="HU"):
        mu_only.to_hu(1)


@pytest.mark.parametrize("kwargs", [
    {"mu_scaling": 0}, {"mu_scaling": -1}, {"mu_scaling": float("nan")},
    {"density_slope": 0.0}, {"density_slope": float("inf")}, {"mu_water": -0.2},
    {"density_intercept": "abc"},
])
def test_invalid_calibration_values(kwargs):
    with pytest.raises(ValueError):
        Calibration(**kwargs)


def test_density_unit_spellings_are_normalised():
    assert Calibration(density_unit="mg HA/ccm").density_unit == "mg HA/cm³"
    assert Calibration(density_unit="mg  HA/cm3").density_unit == "mg HA/cm³"
    assert Calibration(density_unit="g/l").density_unit == "g/l"


def test_unknown_quantity():
    with pytest.raises(ValueError, match="quantity"):
        XCT1.convert(1, "native", "kelvin")


def test_as_dict():
    assert XCT1.as_dict()["density_slope"] == 1441.13599
