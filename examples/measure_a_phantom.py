"""Trabecular morphometry of a synthetic bone with a known answer.

A Voronoi network of plates and rods at HR-pQCT resolution (60.7 µm voxels); its truth
(BV/TV, plate/rod counts, Euler characteristic) comes with it.
"""

from microarch import measure, phantoms

bone = phantoms.trabecular_bone((96, 96, 96), spacing=0.0607, seed=1)
record = measure.trabecular(bone.mask, spacing=bone.spacing)
for symbol in ("BV/TV", "Tb.Th", "Tb.Sp", "Tb.N", "Conn.D", "SMI"):
    print(f"{symbol:7s} {record[symbol]:8.3f} {measure.UNITS[symbol]}")
print(f"BV/TV truth {bone.truth['BV/TV']:.3f}")
