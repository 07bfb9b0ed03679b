"""Rigid registration: known transforms, identity, failure states, transform files."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from microarch.io import Scan
from microarch.longitudinal import (
    Registration,
    apply_transform,
    field_of_view,
    load_transform,
    register,
    save_transform,
)

# Fewer samples than the default keep these small registrations quick; accuracy targets
# are those of the domain spec §6.1 (TRE <= 0.5 voxel) and the issue (rotation <= 0.2°).
FAST = {"samples": 10000}


def _bone_points(baseline, spacing, every=15):
    index = np.argwhere(baseline["periosteal"])[::every]
    return index * spacing


MOTIONS = {
    "shift only": ((0.0, 0.0, 0.0), (2.0, -3.0, 1.5)),
    "rotation about z": ((3.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    "tilt": ((0.0, -2.5, 2.0), (-1.0, 0.5, 0.0)),
    "everything": ((-2.0, 1.5, 3.0), (1.5, 2.5, -2.0)),
}


@pytest.mark.parametrize("name", list(MOTIONS))
def test_recovers_known_rigid_motion(small_bone, small_baseline, name, synth):
    bone, shape, spacing = small_bone
    angles, shift_voxels = MOTIONS[name]
    centre = (np.asarray(shape) - 1) / 2 * spacing
    motion = synth.RigidMotion(angles, np.asarray(shift_voxels) * spacing, centre)
    baseline = small_baseline
    follow_up = bone.render(shape, spacing, motion, noise=60, seed=2)

    result = register(baseline["image"], follow_up["image"], spacing=spacing,
                      baseline_mask=baseline["periosteal"],
                      follow_up_mask=follow_up["periosteal"], **FAST)

    assert result.status == "ok", result.reason
    assert result.converged and result.iterations > 0
    errors = synth.tre_voxels(result, motion, _bone_points(baseline, spacing), spacing)
    assert errors.max() <= 0.5, errors.max()
    assert errors.mean() <= 0.2
    assert synth.rotation_error_deg(result, motion) <= 0.2
    assert result.dice >= 0.95 and result.overlap > 0.9
    assert result.correlation > 0.8
    assert np.isfinite(result.metric_value) and result.metric_value < -0.5


def test_different_spacing_and_shape(small_bone, small_baseline, synth):
    """An XtremeCT II follow-up (finer voxels, other shape) against an XCT I baseline."""
    bone, shape, spacing = small_bone
    fine = 0.0607
    fine_shape = (60, 90, 104)   # more planes, a wider field of view in x
    centre = (np.asarray(shape) - 1) / 2 * spacing
    motion = synth.RigidMotion((1.5, -1.0, 2.0), (0.1, -0.15, 0.2), centre)
    baseline = small_baseline
    follow_up = bone.render(fine_shape, fine, motion, seed=2)

    result = register(baseline["image"], follow_up["image"], spacing=spacing,
                      follow_up_spacing=fine, baseline_mask=baseline["periosteal"],
                      follow_up_mask=follow_up["periosteal"], **FAST)

    assert result.status == "ok", result.reason
    errors = synth.tre_voxels(result, motion, _bone_points(baseline, spacing), spacing)
    assert errors.max() <= 0.5
    assert synth.rotation_error_deg(result, motion) <= 0.2
    assert result.baseline_grid.shape == shape
    assert result.follow_up_grid.spacing == (fine,) * 3

    moved = apply_transform(follow_up["periosteal"], result, spacing=fine,
                            reference_shape=shape, reference_spacing=spacing)
    assert moved.shape == shape and moved.dtype == bool
    inside = field_of_view(fine_shape, result, spacing=fine, reference_shape=shape,
                           reference_spacing=spacing)
    dice = 2 * (moved & baseline["periosteal"] & inside).sum() / (
        (baseline["periosteal"] & inside).sum() + moved.sum())
    assert dice == pytest.approx(result.dice)


def test_same_scan_gives_identity(small_bone, small_baseline, synth):
    _bone, _shape, spacing = small_bone
    baseline = small_baseline
    result = register(baseline["image"], baseline["image"], spacing=spacing,
                      baseline_mask=baseline["periosteal"],
                      follow_up_mask=baseline["periosteal"], **FAST)
    assert result.status == "ok"
    errors = synth.tre_voxels(result, synth.IDENTITY, _bone_points(baseline, spacing), spacing)
    assert errors.max() < 0.02
    assert result.rotation_deg < 0.02
    assert result.dice == 1.0


def test_repeat_scan_with_new_noise_and_no_masks(small_bone, small_baseline, synth):
    """A repositioning-free repeat: only noise differs; no masks given."""
    bone, shape, spacing = small_bone
    first = small_baseline
    second = bone.render(shape, spacing, seed=7)
    result = register(first["image"], second["image"], spacing=spacing, **FAST)
    assert result.status == "ok", result.reason
    assert np.isnan(result.dice)
    errors = synth.tre_voxels(result, synth.IDENTITY, _bone_points(first, spacing), spacing)
    assert errors.max() < 0.1


def test_deterministic_for_fixed_seed_and_threads(small_bone, small_baseline, synth):
    bone, shape, spacing = small_bone
    centre = (np.asarray(shape) - 1) / 2 * spacing
    motion = synth.RigidMotion((1.0, 0.5, -1.0), (0.1, 0.0, -0.1), centre)
    baseline = small_baseline
    follow_up = bone.render(shape, spacing, motion, seed=2)
    kwargs = dict(spacing=spacing, baseline_mask=baseline["periosteal"],
                  follow_up_mask=follow_up["periosteal"], threads=1,
                  shrink_factors=(4, 2), smoothing_sigmas=(2, 1), **FAST)
    first = register(baseline["image"], follow_up["image"], **kwargs)
    second = register(baseline["image"], follow_up["image"], **kwargs)
    assert first.transform.GetParameters() == second.transform.GetParameters()
    assert first.iterations == second.iterations
    other_seed = register(baseline["image"], follow_up["image"], seed=5, **kwargs)
    assert other_seed.transform.GetParameters() != first.transform.GetParameters()
    two_threads = register(baseline["image"], follow_up["image"], **{**kwargs, "threads": 2})
    np.testing.assert_allclose(two_threads.transform.GetParameters(),
                               first.transform.GetParameters(), atol=1e-6)


def test_unrelated_images_fail_without_raising(small_bone, small_baseline, synth):
    _bone, shape, spacing = small_bone
    baseline = small_baseline
    stranger = synth.AnalyticBone(centre_yx=(2.0, 3.4), semi_axes=(1.2, 1.6), seed=11)
    other = stranger.render(shape, spacing, seed=3)
    result = register(baseline["image"], other["image"], spacing=spacing,
                      baseline_mask=baseline["periosteal"],
                      follow_up_mask=other["periosteal"], **FAST)
    assert result.status == "failed"
    assert not result.ok
    assert "Dice" in result.reason
    assert result.dice < 0.95


def test_noise_against_bone_fails_on_correlation(small_bone, small_baseline):
    _bone, shape, spacing = small_bone
    baseline = small_baseline
    noise = np.random.default_rng(0).normal(100, 50, shape).astype(np.float32)
    result = register(baseline["image"], noise, spacing=spacing, **FAST)
    assert result.status == "failed"
    assert "correlation" in result.reason


def test_optimiser_error_is_reported(small_bone, small_baseline):
    """Images that cannot overlap make ITK raise; the result says so instead."""
    _bone, _shape, spacing = small_bone
    baseline = small_baseline
    far = sitk.Euler3DTransform()
    far.SetTranslation((500.0, 0.0, 0.0))
    result = register(baseline["image"], baseline["image"], spacing=spacing,
                      initial_transform=far, **FAST)
    assert result.status == "failed"
    assert "error" in result.reason or "correlation" in result.reason


def test_non_convergence_is_a_failure(small_bone, small_baseline, synth):
    bone, shape, spacing = small_bone
    centre = (np.asarray(shape) - 1) / 2 * spacing
    motion = synth.RigidMotion((2.0, 0.0, 0.0), (0.2, 0.0, 0.0), centre)
    baseline = small_baseline
    follow_up = bone.render(shape, spacing, motion, seed=2)
    result = register(baseline["image"], follow_up["image"], spacing=spacing,
                      shrink_factors=(1,), smoothing_sigmas=(0,), iterations=2, **FAST)
    assert not result.converged
    assert result.status == "failed" and "converge" in result.reason
    lenient = register(baseline["image"], follow_up["image"], spacing=spacing,
                       shrink_factors=(1,), smoothing_sigmas=(0,), iterations=2,
                       require_convergence=False, min_correlation=None, **FAST)
    assert lenient.status == "ok"


def test_scan_inputs_bring_their_spacing(small_bone, small_baseline, synth):
    bone, shape, spacing = small_bone
    baseline = small_baseline
    shifted = synth.RigidMotion(shift_mm=(0.0, 0.164, 0.0))
    follow_up = bone.render(shape, spacing, shifted, seed=2)
    as_scan = [Scan(image=d["image"], spacing=(spacing,) * 3, units="mg HA/cm³")
               for d in (baseline, follow_up)]
    result = register(*as_scan, baseline_mask=baseline["periosteal"],
                      follow_up_mask=follow_up["periosteal"], **FAST)
    assert result.status == "ok"
    np.testing.assert_allclose(result.offset, [0.0, 0.164, 0.0], atol=0.02)


def test_mattes_metric(small_bone, small_baseline, synth):
    bone, shape, spacing = small_bone
    centre = (np.asarray(shape) - 1) / 2 * spacing
    motion = synth.RigidMotion((0.0, 1.0, -1.5), (0.1, 0.1, 0.0), centre)
    baseline = small_baseline
    # A different calibration (affine grey-value change) is what MI is for.
    follow_up = bone.render(shape, spacing, motion, seed=2)
    follow_up["image"] = 0.8 * follow_up["image"] + 50
    result = register(baseline["image"], follow_up["image"], spacing=spacing,
                      baseline_mask=baseline["periosteal"],
                      follow_up_mask=follow_up["periosteal"], metric="mattes", **FAST)
    assert result.status == "ok", result.reason
    assert synth.tre_voxels(result, motion, _bone_points(baseline, spacing), spacing).max() <= 0.5


def test_input_validation(small_bone, small_baseline):
    _bone, _shape, spacing = small_bone
    image = small_baseline["image"]
    with pytest.raises(ValueError, match="spacing"):
        register(image, image)
    with pytest.raises(ValueError, match="metric"):
        register(image, image, spacing=spacing, metric="mutual")
    with pytest.raises(ValueError, match="seed"):
        register(image, image, spacing=spacing, seed=0)
    with pytest.raises(ValueError, match="both"):
        register(image, image, spacing=spacing, baseline_mask=image > 0)
    with pytest.raises(ValueError, match="shape"):
        register(image, image, spacing=spacing, baseline_mask=np.ones((2, 2, 2), bool),
                 follow_up_mask=np.ones((2, 2, 2), bool))
    with pytest.raises(ValueError, match="NaN"):
        bad = image.copy()
        bad[0, 0, 0] = np.nan
        register(bad, image, spacing=spacing)
    with pytest.raises(ValueError, match="3D"):
        register(image[0], image[0], spacing=spacing)
    with pytest.raises(ValueError, match="threads"):
        register(image, image, spacing=spacing, threads=0)


# --- transforms: axes, files, composition ----------------------------------------------

def test_apply_transform_axes_and_dtypes():
    """A SimpleITK translation along its x axis moves numpy's last axis."""
    shift = sitk.Euler3DTransform()
    shift.SetTranslation((0.2, 0.0, 0.0))  # x in mm = 2 voxels of 0.1 mm
    volume = np.zeros((3, 4, 8), np.int16)
    volume[:, :, 5] = 7
    moved = apply_transform(volume, shift, spacing=0.1, reference_shape=(3, 4, 8),
                            reference_spacing=0.1)
    assert moved.dtype == np.int16
    assert np.flatnonzero(moved[0, 0]).tolist() == [3]
    grey = apply_transform(volume.astype(np.float32), shift, spacing=0.1,
                           reference_shape=(3, 4, 8), reference_spacing=0.1,
                           interpolation="bspline")
    assert grey.dtype == np.float32 and grey[0, 0, 3] == pytest.approx(7, abs=1e-3)
    with pytest.raises(ValueError, match="nearest"):
        apply_transform(volume > 0, shift, spacing=0.1, reference_shape=(3, 4, 8),
                        reference_spacing=0.1, interpolation="linear")
    with pytest.raises(TypeError):
        apply_transform(volume, "shift", spacing=0.1, reference_shape=(3, 4, 8),
                        reference_spacing=0.1)


def test_apply_transform_resamples_onto_another_grid():
    """Nearest-neighbour onto a grid of half the voxel size doubles every plane."""
    volume = np.arange(4, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    out = apply_transform(volume, sitk.Euler3DTransform(), spacing=(1.0, 1.0, 1.0),
                          reference_shape=(7, 2, 2), reference_spacing=(0.5, 1.0, 1.0))
    assert out[:, 0, 0].tolist() == [0, 1, 1, 2, 2, 3, 3] or \
        out[:, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3]


def test_transform_file_round_trip(tmp_path, small_bone, small_baseline, synth):
    bone, shape, spacing = small_bone
    centre = (np.asarray(shape) - 1) / 2 * spacing
    motion = synth.RigidMotion((1.0, 0.0, 2.0), (0.1, 0.0, 0.05), centre)
    baseline = small_baseline
    follow_up = bone.render(shape, spacing, motion, seed=2)
    result = register(baseline["image"], follow_up["image"], spacing=spacing,
                      baseline_mask=baseline["periosteal"],
                      follow_up_mask=follow_up["periosteal"],
                      shrink_factors=(4, 2), smoothing_sigmas=(2, 1), **FAST)
    path = result.save(tmp_path / "V2_to_V1.tfm")
    assert path.read_text(encoding="utf-8").startswith("#Insight Transform File")
    loaded = load_transform(path)
    points = _bone_points(baseline, spacing, every=200)
    again = Registration(transform=loaded, status="ok")
    np.testing.assert_allclose(again.transform_points(points),
                               result.transform_points(points), atol=1e-9)
    with pytest.raises(ValueError, match=".tfm"):
        save_transform(result, tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        load_transform(tmp_path / "missing.tfm")


def test_composition_order():
    """compose(a, b) applies a first, then b, like following visits in time."""
    from microarch.longitudinal._grid import compose, matrix_offset_zyx

    first = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.01, -0.02, 0.03, (0.5, 0.0, -0.2))
    second = sitk.Euler3DTransform((0.0, 1.0, 0.0), -0.02, 0.0, 0.05, (0.0, 0.3, 0.1))
    both = compose(first, second)
    point = (0.7, -1.1, 2.3)
    np.testing.assert_allclose(both.TransformPoint(point),
                               second.TransformPoint(first.TransformPoint(point)), atol=1e-12)
    composite = sitk.CompositeTransform([second, first])   # ITK applies the last first
    from microarch.longitudinal._grid import as_euler

    np.testing.assert_allclose(as_euler(composite).TransformPoint(point),
                               both.TransformPoint(point), atol=1e-12)
    a, _b = matrix_offset_zyx(both)
    np.testing.assert_allclose(a @ a.T, np.eye(3), atol=1e-12)
