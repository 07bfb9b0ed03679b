"""A synthetic distal-radius-like scan with known masks, rendered like an XtremeCT II scan.

Geometry (built in mm, so any spacing gives the same object): an elliptical periosteal
surface, a cortical ring of constant thickness (distance to the periosteal surface), a few
Haversian-canal-like pores (cylinders along z) in the middle of the ring, and a cubic
lattice of rods (0.2 mm, a thin XtremeCT II Tb.Th) in the marrow cavity, joined to the
endocortex.

Rendering: tissue 1100 and marrow / soft tissue 25 mg HA/cm³, Gaussian blur (sigma 0.8
voxel), white Gaussian noise (SD 80 mg HA/cm³), then quantised through native int16 with
the GRAY_JOINT calibration (MuScaling 8192, slope 1603.51904, intercept -391.209015;
domain §1.2) and converted back to density.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

TISSUE = 1100.0
MARROW = 25.0
NOISE_SD = 80.0
MU_SCALING = 8192.0
SLOPE = 1603.51904
INTERCEPT = -391.209015
MU_WATER = 0.2409


def density_to_native(rho):
    """mg HA/cm³ -> Scanco native units (int16), domain §1.2."""
    native = np.rint((np.asarray(rho, float) - INTERCEPT) / SLOPE * MU_SCALING)
    return np.clip(native, -32768, 32767).astype(np.int16)


def native_to_density(native):
    return (SLOPE / MU_SCALING * native.astype(np.float64) + INTERCEPT).astype(np.float32)


def hu_to_density(hu, mu_water=MU_WATER):
    """Hounsfield units -> mg HA/cm³ with µ_air = 0 (domain §1.2)."""
    mu = (np.asarray(hu, np.float64) + 1000.0) * mu_water / 1000.0
    return (SLOPE * mu + INTERCEPT).astype(np.float32)


def make_radius_phantom(spacing=(0.0607, 0.0607, 0.0607), *, n_slices=16,
                        semi_axes=(3.0, 4.2), cortex=0.8, pore_diameter=0.3, n_pores=10,
                        rod_diameter=0.2, lattice=0.9, margin=0.9, seed=0,
                        blur=0.8, noise=NOISE_SD):
    """Return a dict of known masks and the rendered density image (see module doc)."""
    rng = np.random.default_rng(seed)
    hz, hy, hx = (float(h) for h in np.broadcast_to(spacing, 3))
    ny = int(np.ceil(2 * (semi_axes[0] + margin) / hy))
    nx = int(np.ceil(2 * (semi_axes[1] + margin) / hx))
    y = (np.arange(ny) - (ny - 1) / 2) * hy
    x = (np.arange(nx) - (nx - 1) / 2) * hx
    z = np.arange(n_slices) * hz
    yy, xx = np.meshgrid(y, x, indexing="ij")
    outer = (yy / semi_axes[0]) ** 2 + (xx / semi_axes[1]) ** 2 <= 1.0
    depth = ndi.distance_transform_edt(outer, sampling=(hy, hx))  # to the nearest outside pixel
    # a pixel belongs to the ring when its centre is within `cortex` of the surface, which
    # lies half a pixel beyond the last inside centre
    h_in = 0.5 * (hy + hx)
    ring2d = outer & (depth - 0.5 * h_in <= cortex)
    inner2d = outer & ~ring2d

    pores2d = np.zeros_like(outer)
    candidates = np.argwhere(ring2d & (np.abs(depth - 0.5 * h_in - cortex / 2) < 0.05))
    rng.shuffle(candidates)
    centres = []
    for j, i in candidates:
        if len(centres) >= n_pores:
            break
        p = np.array([y[j], x[i]])
        if all(np.hypot(*(p - c)) > 4 * pore_diameter for c in centres):
            centres.append(p)
    for c in centres:
        pores2d |= np.hypot(yy - c[0], xx - c[1]) <= pore_diameter / 2
    pores2d &= ring2d

    shape = (n_slices, ny, nx)
    periosteal = np.broadcast_to(outer, shape).copy()
    cortical = np.broadcast_to(ring2d, shape).copy()
    trabecular = np.broadcast_to(inner2d, shape).copy()
    pores = np.broadcast_to(pores2d, shape).copy()

    # cubic rod lattice with a random offset
    off = rng.uniform(0, lattice, 3)
    zz3 = z[:, None, None]
    y3 = y[None, :, None]
    x3 = x[None, None, :]

    def to_line(c, o):
        return np.abs((c - o + lattice / 2) % lattice - lattice / 2)

    dz, dy, dx = to_line(zz3, off[0]), to_line(y3, off[1]), to_line(x3, off[2])
    r = rod_diameter / 2
    rods = ((dy ** 2 + dx ** 2 <= r * r) | (dz ** 2 + dx ** 2 <= r * r)
            | (dz ** 2 + dy ** 2 <= r * r))
    trab_bone = rods & trabecular
    cort_bone = cortical & ~pores
    bone = trab_bone | cort_bone

    truth = np.where(bone, TISSUE, MARROW)
    if blur:
        truth = ndi.gaussian_filter(truth, blur, mode="nearest")
    if noise:
        truth = truth + rng.normal(0.0, noise, shape)
    image = native_to_density(density_to_native(truth))
    return {
        "image": image, "spacing": (hz, hy, hx), "periosteal": periosteal,
        "cortical": cortical, "trabecular": trabecular, "bone": bone, "pores": pores,
        "trabecular_bone": trab_bone, "cortical_bone": cort_bone, "cortex": cortex,
    }


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


@pytest.fixture(scope="session")
def phantom_factory():
    """:func:`make_radius_phantom`."""
    return make_radius_phantom


@pytest.fixture(scope="session")
def dice_score():
    """:func:`dice`."""
    return dice


@pytest.fixture(scope="session")
def calibration():
    """Conversions of the phantom's calibration (domain §1.2)."""
    return {"density_to_native": density_to_native, "native_to_density": native_to_density,
            "hu_to_density": hu_to_density}
