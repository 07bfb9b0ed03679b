"""Synthetic visits with known geometry for the longitudinal tests.

`AnalyticBone` is a bone defined in millimetres by closed-form functions, so it can be
rendered on any grid (spacing, shape) and under any known rigid motion without
resampling a voxel image: an elliptical periosteal surface, a cortical shell of constant
width and a trabecular pattern thresholded from a sum of random plane waves, with
edges smoothed over ~0.03 mm (a partial-volume-like blur), plus white noise.

A rigid motion ``T(p) = R (p - c) + c + t`` (numpy order z, y, x; mm) maps baseline
points to follow-up points: the follow-up image is ``F(q) = B(T^-1(q))``, so a perfect
registration returns T itself.

`lattice_subject` builds the skeletal-memory oracle of domain spec §9.4 with a known
topology: a cubic rod lattice inside a cortical ring (baseline); rods between lattice
nodes removed at random (on AI); the survivors thickened by one voxel, never bridging a
gap (post withdrawal). Connectivity lost on AI therefore cannot come back.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi


def rotation(angles_deg):
    """Rotation matrix (numpy order) from angles (deg) about the z, y and x axes."""
    a, b, c = np.deg2rad(angles_deg)
    about_z = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    about_y = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    about_x = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return about_z @ about_y @ about_x


def grid_points(shape, spacing):
    """Physical positions (mm, z, y, x) of all voxel centres, shape (N, 3)."""
    index = np.indices(shape).reshape(3, -1).T.astype(float)
    return index * np.broadcast_to(np.asarray(spacing, float), (3,))


class RigidMotion:
    """q = R (p - c) + c + t, numpy order, mm."""

    def __init__(self, angles_deg=(0.0, 0.0, 0.0), shift_mm=(0.0, 0.0, 0.0),
                 centre_mm=(0.0, 0.0, 0.0)):
        self.matrix = rotation(angles_deg)
        self.shift = np.asarray(shift_mm, float)
        self.centre = np.asarray(centre_mm, float)

    def forward(self, p):
        return (p - self.centre) @ self.matrix.T + self.centre + self.shift

    def inverse(self, q):
        return (q - self.centre - self.shift) @ self.matrix + self.centre


IDENTITY = RigidMotion()


class AnalyticBone:
    """Closed-form bone (see module docstring); all lengths in mm."""

    def __init__(self, *, centre_yx, semi_axes=(2.2, 1.8), cortex=0.45, seed=0, n_waves=40,
                 wavelengths=(0.5, 0.9), level=0.55, tissue=1000.0, marrow=30.0,
                 edge=0.03):
        rng = np.random.default_rng(seed)
        directions = rng.normal(size=(n_waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        lengths = rng.uniform(*wavelengths, n_waves)
        self.waves = directions * (2 * np.pi / lengths)[:, None]
        self.phases = rng.uniform(0, 2 * np.pi, n_waves)
        self.centre_yx = np.asarray(centre_yx, float)
        self.semi_axes = np.asarray(semi_axes, float)
        self.cortex, self.level = cortex, level
        self.tissue, self.marrow, self.edge = tissue, marrow, edge

    def _distance_inside(self, p):
        """Approximate signed distance (mm) inside the periosteal ellipse (>0 inside)."""
        dy = (p[:, 1] - self.centre_yx[0]) / self.semi_axes[0]
        dx = (p[:, 2] - self.centre_yx[1]) / self.semi_axes[1]
        return (1.0 - np.sqrt(dy * dy + dx * dx)) * self.semi_axes.mean()

    def _step(self, d):
        return 0.5 * (1.0 + np.tanh(d / (2.0 * self.edge)))

    def density(self, p):
        pattern = np.cos(p @ self.waves.T + self.phases).sum(axis=1)
        pattern /= np.sqrt(len(self.waves) / 2.0)
        outside_in = self._distance_inside(p)
        inside = self._step(outside_in)
        in_marrow = self._step(outside_in - self.cortex)
        trabecular = self._step((pattern - self.level) * 0.15)
        tissue_fraction = np.maximum(inside * (1.0 - in_marrow), in_marrow * trabecular)
        return inside * (self.marrow + (self.tissue - self.marrow) * tissue_fraction)

    def periosteal(self, p):
        return self._distance_inside(p) >= 0

    def trabecular(self, p):
        return self._distance_inside(p) >= self.cortex

    def render(self, shape, spacing, motion=IDENTITY, *, noise=60.0, seed=0):
        """Grey image and masks of this bone seen through ``motion`` on a grid."""
        q = grid_points(shape, spacing)
        p = motion.inverse(q)
        image = self.density(p).reshape(shape)
        rng = np.random.default_rng(seed)
        image = (image + rng.normal(0.0, noise, shape)).astype(np.float32)
        return {"image": image,
                "periosteal": self.periosteal(p).reshape(shape),
                "trabecular": self.trabecular(p).reshape(shape)}


@pytest.fixture(scope="session")
def small_bone():
    """A bone that fills a 40 x 72 x 72 grid of 0.082 mm voxels (XtremeCT I)."""
    spacing = 0.082
    return AnalyticBone(centre_yx=(36 * spacing, 36 * spacing), seed=3), (40, 72, 72), spacing


@pytest.fixture(scope="session")
def small_baseline(small_bone):
    """The baseline rendering of `small_bone` (noise SD 60, seed 1); do not modify."""
    bone, shape, spacing = small_bone
    rendered = bone.render(shape, spacing, seed=1)
    for array in rendered.values():
        array.flags.writeable = False
    return rendered


def tre_voxels(registration, motion, points, voxel):
    """Target registration errors (in voxels) of ``points`` (mm, z, y, x)."""
    estimated = registration.transform_points(points)
    return np.linalg.norm(estimated - motion.forward(points), axis=1) / voxel


def rotation_error_deg(registration, motion):
    difference = registration.matrix @ motion.matrix.T
    return float(np.degrees(np.arccos(np.clip((np.trace(difference) - 1) / 2, -1, 1))))


# --- lattice subject -------------------------------------------------------------------

def lattice_subject(*, shape=(40, 64, 64), period=8, removed_fraction=0.35, seed=0):
    """Baseline, on-AI and post-withdrawal bone masks with known topology.

    Returns a dict with ``bone`` (list of 3 masks), ``periosteal`` and ``trabecular``
    (identical for all visits) on an unshifted grid.
    """
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    centre = (np.asarray(shape[1:]) - 1) / 2.0
    radius = np.hypot(y - centre[0], x - centre[1])
    periosteal = radius <= shape[1] / 2 - 4
    trabecular = radius <= shape[1] / 2 - 8
    cortex = periosteal & ~trabecular

    offset = period // 2
    near = [(np.abs((c - offset + period // 2) % period - period // 2) <= 1) for c in (z, y, x)]
    # Rods along each axis: near the lattice lines in the two other coordinates.
    rods = [near[1] & near[2], near[0] & near[2], near[0] & near[1]]
    lattice = (rods[0] | rods[1] | rods[2]) & trabecular
    nodes = near[0] & near[1] & near[2]

    # Segments: a rod piece between two adjacent nodes, identified by its axis and the
    # lattice cell index along that axis.
    removed = np.zeros(shape, bool)
    cell = [(c - offset) // period for c in (z, y, x)]
    line = [(c - offset + period // 2) // period for c in (z, y, x)]
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        piece = rods[axis] & ~nodes & trabecular
        keys = np.stack([cell[axis], line[others[0]], line[others[1]]], axis=-1)[piece]
        unique, counts = np.unique(keys, axis=0, return_counts=True)
        # Only whole segments between two complete nodes: removing a partial one next to
        # the cortex would leave a gap that thickening could bridge.
        whole = unique[counts == (period - 3) * 9]
        chosen = whole[rng.random(len(whole)) < removed_fraction]
        chosen_set = {tuple(k) for k in chosen}
        hit = np.array([tuple(k) in chosen_set for k in keys], bool)
        sel = np.zeros(shape, bool)
        sel[piece] = hit
        removed |= sel
    baseline = lattice | cortex
    on_ai = (lattice & ~removed) | cortex
    # Thicken the survivors by one voxel (6-connected), away from the cortex: the gaps
    # left by removed segments (5 voxels) and the lattice windows stay open, and narrow
    # rod-cortex gaps are not closed.
    cross = ndi.generate_binary_structure(3, 1)
    thick = ndi.binary_dilation(on_ai & trabecular, cross)
    away_from_cortex = ndi.binary_erosion(trabecular, cross, iterations=3)
    post = (thick & away_from_cortex) | on_ai
    return {"bone": [baseline, on_ai, post], "periosteal": periosteal,
            "trabecular": trabecular}


def render_mask(mask, *, noise=30.0, seed=0, tissue=1000.0, marrow=30.0, blur=0.8):
    rng = np.random.default_rng(seed)
    image = ndi.gaussian_filter(np.where(mask, tissue, marrow).astype(np.float32), blur)
    return (image + rng.normal(0.0, noise, mask.shape)).astype(np.float32)


def shift_volume(volume, shift):
    """Integer shift (z, y, x) with zero fill (no wrap-around)."""
    out = np.zeros_like(volume)
    src = tuple(slice(max(0, -s), volume.shape[i] - max(0, s)) for i, s in enumerate(shift))
    dst = tuple(slice(max(0, s), volume.shape[i] - max(0, -s)) for i, s in enumerate(shift))
    out[dst] = volume[src]
    return out


@pytest.fixture(scope="session")
def synth():
    """The helpers of this conftest, for test modules (conftest is not importable with
    ``--import-mode=importlib``)."""
    import types

    return types.SimpleNamespace(
        AnalyticBone=AnalyticBone, RigidMotion=RigidMotion, IDENTITY=IDENTITY,
        grid_points=grid_points, rotation=rotation, tre_voxels=tre_voxels,
        rotation_error_deg=rotation_error_deg, lattice_subject=lattice_subject,
        render_mask=render_mask, shift_volume=shift_volume)
