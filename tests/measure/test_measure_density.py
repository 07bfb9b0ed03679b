import math

import numpy as np
import pytest

from microarch import measure
from microarch.measure import DegenerateInputWarning

KEYS = {"Tt.BMD", "Tb.BMD", "Ct.BMD", "Tt.V", "Tb.V", "Ct.V", "Tt.Ar", "Tb.Ar", "Ct.Ar"}


def _nested_boxes(shape=(6, 20, 24)):
    """Periosteal box with a 3-voxel cortex around a trabecular core, plus density."""
    periosteal = np.zeros(shape, bool)
    periosteal[1:5, 2:18, 3:21] = True
    trabecular = np.zeros(shape, bool)
    trabecular[1:5, 5:15, 6:18] = True
    cortical = periosteal & ~trabecular
    rng = np.random.RandomState(0)
    image = rng.normal(0, 50, shape).astype(np.float32)
    image[cortical] += 900.0
    image[trabecular] += 180.0
    image[~periosteal] = -5000.0  # outside values must not leak into any mean
    return image, periosteal, trabecular, cortical


@pytest.mark.parametrize("spacing", [0.0607, (0.082, 0.06, 0.05)])
def test_density_equals_direct_means(spacing):
    image, periosteal, trabecular, cortical = _nested_boxes()
    d = measure.density(image, spacing=spacing, periosteal=periosteal, cortical=cortical)
    assert set(d) == KEYS
    h = np.broadcast_to(spacing, 3).astype(float)
    voxel = h.prod()
    assert d["Tt.BMD"] == pytest.approx(image[periosteal].astype(np.float64).mean())
    assert d["Tb.BMD"] == pytest.approx(image[trabecular].astype(np.float64).mean())
    assert d["Ct.BMD"] == pytest.approx(image[cortical].astype(np.float64).mean())
    assert d["Tt.V"] == pytest.approx(periosteal.sum() * voxel)
    assert d["Ct.V"] == pytest.approx(cortical.sum() * voxel)
    # 4 slices hold the compartments; areas are per-slice means in mm²
    assert d["Tt.Ar"] == pytest.approx(16 * 18 * h[1] * h[2])
    assert d["Tb.Ar"] == pytest.approx(10 * 12 * h[1] * h[2])
    assert d["Tt.Ar"] == pytest.approx(d["Tb.Ar"] + d["Ct.Ar"])
    # the rendered densities come back within noise (SD 50, thousands of voxels)
    assert abs(d["Ct.BMD"] - 900.0) < 5 and abs(d["Tb.BMD"] - 180.0) < 5


def test_density_compartment_combinations():
    image, periosteal, trabecular, cortical = _nested_boxes()
    a = measure.density(image, spacing=0.1, periosteal=periosteal, cortical=cortical)
    b = measure.density(image, spacing=0.1, periosteal=periosteal, trabecular=trabecular)
    c = measure.density(image, spacing=0.1, periosteal=periosteal, trabecular=trabecular,
                        cortical=cortical)
    assert a == b == c
    only_total = measure.density(image, spacing=0.1, periosteal=periosteal)
    assert only_total["Tt.BMD"] == a["Tt.BMD"]
    assert math.isnan(only_total["Tb.BMD"]) and math.isnan(only_total["Ct.V"])


def test_density_uniform_and_integer_images():
    periosteal = np.ones((3, 4, 5), bool)
    image = np.full((3, 4, 5), 250, np.int16)
    d = measure.density(image, spacing=0.5, periosteal=periosteal)
    assert d["Tt.BMD"] == 250.0
    assert d["Tt.V"] == pytest.approx(60 * 0.125)
    assert d["Tt.Ar"] == pytest.approx(20 * 0.25)


def test_density_degenerate_and_invalid():
    image, periosteal, _, _ = _nested_boxes()
    with pytest.warns(DegenerateInputWarning, match="periosteal mask is empty"):
        d = measure.density(image, spacing=0.1, periosteal=np.zeros(image.shape, bool))
    assert math.isnan(d["Tt.BMD"]) and d["Tt.V"] == 0.0 and math.isnan(d["Tt.Ar"])
    with pytest.warns(DegenerateInputWarning, match="trabecular mask is empty"):
        d = measure.density(image, spacing=0.1, periosteal=periosteal,
                            trabecular=np.zeros(image.shape, bool))
    assert math.isnan(d["Tb.BMD"]) and d["Tb.V"] == 0.0 and d["Ct.V"] > 0
    bad = image.copy()
    bad[2, 8, 8] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        measure.density(bad, spacing=0.1, periosteal=periosteal)
    bad_outside = image.copy()
    bad_outside[0, 0, 0] = np.nan  # outside every mask: harmless
    measure.density(bad_outside, spacing=0.1, periosteal=periosteal)
    with pytest.raises(ValueError, match="shape"):
        measure.density(image, spacing=0.1, periosteal=periosteal[:, :-1])
    with pytest.raises(ValueError, match="spacing"):
        measure.density(image, spacing=-1, periosteal=periosteal)
    with pytest.raises(ValueError, match="3D"):
        measure.density(image[0], spacing=0.1, periosteal=periosteal[0])


def test_density_inputs_untouched():
    image, periosteal, _, cortical = _nested_boxes()
    copies = [a.copy() for a in (image, periosteal, cortical)]
    measure.density(image, spacing=0.1, periosteal=periosteal, cortical=cortical)
    for a, b in zip((image, periosteal, cortical), copies):
        np.testing.assert_array_equal(a, b)
