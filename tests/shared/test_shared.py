import os
import subprocess
import sys

import numpy as np
import pytest

from microarch._shared import threads, validation


def test_threads_context_restores_numba_and_itk():
    import numba
    import SimpleITK as sitk

    numba_before = numba.get_num_threads()
    itk_before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    with threads.threads(1):
        assert numba.get_num_threads() == 1
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 1
    assert numba.get_num_threads() == numba_before
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == itk_before
    with pytest.raises(ValueError, match=">= 1"):
        threads.limit(0)


def test_spacing_and_mask_validation():
    assert validation.as_spacing(0.1) == (0.1, 0.1, 0.1)
    assert validation.as_spacing([1, 2, 3]) == (1.0, 2.0, 3.0)
    for bad in (None, (1, 2), (1, 0, 1), (1, np.nan, 1)):
        with pytest.raises(ValueError):
            validation.as_spacing(bad)
    mask = np.array([[[0, 2]]], dtype=np.uint8)
    out = validation.as_mask(mask)
    assert out.dtype == bool and out.tolist() == [[[False, True]]]
    assert mask.tolist() == [[[0, 2]]]  # input untouched
    with pytest.raises(ValueError, match="3D"):
        validation.as_mask(np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        validation.as_roi(np.zeros((2, 2, 2)), (2, 2, 3))


@pytest.mark.parametrize("value", [-1, 2.0, True, "3", None])
def test_counts_must_be_non_negative_integers(value):
    with pytest.raises(ValueError, match=r"erosion_voxels must be a non-negative integer \(voxels\)"):
        validation.non_negative_int(value, name="erosion_voxels", unit="voxels")


def test_counts_accept_numpy_integers():
    assert validation.non_negative_int(np.int64(4), name="seed") == 4
    assert type(validation.non_negative_int(np.uint8(0), name="seed")) is int


def test_import_is_light_and_side_effect_free():
    code = ("import sys, microarch, microarch.measure, microarch.io, microarch.segment, "
            "microarch.phantoms, microarch.longitudinal; "
            "print(sorted(m for m in ('numba', 'SimpleITK', 'snakemake') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8",
                         errors="replace", check=True)
    assert out.stdout.strip() == "[]"


def test_unwritable_numba_cache_does_not_break_import():
    # On a read-only install numba raises at decoration time ("no locator available");
    # simulate that and check that microarch falls back to compiling without a cache.
    code = ("import numba\n"
            "real = numba.njit\n"
            "def njit(*args, **options):\n"
            "    if options.get('cache'):\n"
            "        raise RuntimeError('cannot cache function: no locator available')\n"
            "    return real(*args, **options)\n"
            "numba.njit = njit\n"
            "import numpy as np\n"
            "from microarch import measure\n"
            "print(measure.euler_characteristic(np.ones((2, 2, 2), bool)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8",
                         errors="replace", check=False)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.strip() == "1"


def test_long_stages_report_progress_through_logging(caplog):
    import logging

    import numpy as np

    from microarch import measure

    mask = np.zeros((12, 12, 12), bool)
    mask[4:8] = True
    with caplog.at_level(logging.INFO, logger="microarch"):
        measure.trabecular(mask, spacing=0.1, smi=False)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("microarch.")]
    assert any(m.startswith("trabecular: Tb.Th (local thickness): ") for m in messages)
    assert any(m.startswith("trabecular: Tb.N (mid-axis spacing): ") for m in messages)
    assert all(m.endswith(" s") for m in messages)


def test_unwritable_numba_cache_dir_turns_caching_off(tmp_path):
    # a path below a plain file can never be created, whoever runs the tests
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    code = ("import numpy as np\n"
            "from microarch._kernels._jit import cache_enabled\n"
            "from microarch import measure\n"
            "print(cache_enabled(), measure.euler_characteristic(np.ones((2, 2, 2), bool)))\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(blocker / "cache"),
           "MICROARCH_NUMBA_CACHE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8",
                         errors="replace", env=env, check=False)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.split() == ["False", "1"]
