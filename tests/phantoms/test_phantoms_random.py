"""random_trabecular: exact BV/TV, determinism, connectivity, speed."""

import time

import numpy as np
import pytest
from scipy import ndimage

from microarch.phantoms import Phantom, random_trabecular


def test_bv_tv_is_met_and_counted():
    for bv_tv in (0.1, 0.2, 0.35):
        p = random_trabecular((40, 36, 32), seed=1, bv_tv=bv_tv, spacing=(0.08, 0.06, 0.06))
        assert isinstance(p, Phantom)
        n = int(p.mask.sum())
        assert abs(n - bv_tv * p.mask.size) <= 1
        assert p.truth["n_voxels"] == n
        assert p.truth["BV"] == pytest.approx(n * 0.08 * 0.06 * 0.06)


def test_deterministic_and_seed_dependent():
    a = random_trabecular((32, 32, 32), seed=4)
    b = random_trabecular((32, 32, 32), seed=4)
    c = random_trabecular((32, 32, 32), seed=5)
    assert np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.mask, c.mask)


def test_bone_is_mostly_one_network():
    p = random_trabecular((64, 64, 64), seed=2)
    labels, _n = ndimage.label(p.mask, structure=np.ones((3, 3, 3)))
    largest = np.bincount(labels.ravel())[1:].max()
    assert largest > 0.9 * p.mask.sum()


def test_fast():
    random_trabecular((16, 16, 16), seed=0)
    start = time.perf_counter()
    random_trabecular((128, 128, 128), seed=0)
    assert time.perf_counter() - start < 5.0  # about 0.2 s on 2 cores


@pytest.mark.parametrize(
    "kwargs", [{"bv_tv": 0.0}, {"bv_tv": 1.0}, {"seed": -2}, {"correlation_mm": 0.0}]
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        random_trabecular((8, 8, 8), **kwargs)
