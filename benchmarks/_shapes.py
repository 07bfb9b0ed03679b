"""Digitised rods, spheres and plates with a known diameter, for the per-shape error table.

Rasterisation: a voxel is bone when its centre lies in the closed continuous shape
(distance to the rod axis or sphere centre <= d/2). Centres are shifted by a sub-voxel
offset along every axis across the shape, so the table averages over how the shape
falls on the grid.

Every tool treats the image border differently, so rods run through the image along z
and plates span it laterally, the structure goes on for ``d + 2`` voxels beyond the
measured region on each side, and only the central region is averaged: no border
convention can reach it. Spheres sit in background with a 3-voxel margin.
"""

from __future__ import annotations

import math

import numpy as np

MARGIN = 3  # background voxels around a rod or sphere
MEASURED = 4  # length (voxels) of the measured central region of rods and plates


def _lateral_grid(diameter, offset):
    half = math.ceil(diameter / 2) + MARGIN
    n = 2 * half + 1
    centre = half + offset
    return n, centre


def rod(diameter, offset):
    """Rod along z; returns (mask, measured region)."""
    n, centre = _lateral_grid(diameter, offset)
    pad = math.ceil(diameter) + 2
    nz = 2 * pad + MEASURED
    y, x = np.mgrid[:n, :n]
    disc = (y - centre) ** 2 + (x - centre) ** 2 <= (diameter / 2) ** 2
    mask = np.broadcast_to(disc, (nz, n, n)).copy()
    region = np.zeros_like(mask)
    region[pad:pad + MEASURED] = True
    return mask, region


def sphere(diameter, offset):
    n, centre = _lateral_grid(diameter, offset)
    z, y, x = np.mgrid[:n, :n, :n]
    mask = (z - centre) ** 2 + (y - centre) ** 2 + (x - centre) ** 2 <= (diameter / 2) ** 2
    return mask, np.ones_like(mask)


def plate(thickness):
    """Plate normal to z, ``thickness`` voxels; returns (mask, measured region)."""
    pad = thickness + 2
    lateral = 2 * pad + MEASURED
    mask = np.zeros((thickness + 2 * MARGIN, lateral, lateral), bool)
    mask[MARGIN:MARGIN + thickness] = True
    region = np.zeros_like(mask)
    region[:, pad:pad + MEASURED, pad:pad + MEASURED] = True
    return mask, region


def digitised_diameter(kind, mask, region):
    """Diameter of the circle/ball with the digitised area/volume (rasterisation error)."""
    if kind == "rod":
        area = np.count_nonzero(mask[np.nonzero(region.any(axis=(1, 2)))[0][0]])
        return 2 * math.sqrt(area / math.pi)
    if kind == "sphere":
        return (6 * np.count_nonzero(mask) / math.pi) ** (1 / 3)
    return float(mask.any(axis=(1, 2)).sum())


def cases(diameters, offsets, plate_thicknesses):
    """Yield (kind, nominal diameter, offset, mask, region)."""
    for kind, build in (("rod", rod), ("sphere", sphere)):
        for d in diameters:
            for offset in offsets:
                mask, region = build(d, offset)
                yield kind, d, offset, mask, region
    for t in plate_thicknesses:
        mask, region = plate(t)
        yield "plate", t, 0.0, mask, region
