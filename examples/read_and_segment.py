"""Read a Scanco AIM file, convert to density and segment bone into compartments.

The scan is synthetic (a distal-radius-like phantom rendered the way an XtremeCT II
writes it: blur, noise, native int16 with the scanner's calibration), written as a
genuine AIM v020 file into a temporary folder.
"""

import tempfile
from pathlib import Path

from microarch import io, measure, phantoms, segment

site = phantoms.distal_radius((24, 96, 80), spacing=0.0607, seed=3, cortical_thickness=0.6)
rendered = phantoms.render_scan(site, seed=3)
calibration = io.Calibration(**{k: v for k, v in rendered.calibration.items()
                                if k in ("mu_scaling", "density_slope",
                                         "density_intercept", "mu_water")})

with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "RADIUS.AIM"
    io.write_aim(path, rendered.native, spacing=rendered.spacing, calibration=calibration)
    scan = io.read_scan(path)  # float32 mg HA/cm³, axes (z, y, x), spacing in mm

print(f"{scan.shape} voxels of {scan.spacing} mm, units {scan.units}")
parts = segment.compartments(scan.image, spacing=scan.spacing)
densities = measure.density(scan.image, spacing=scan.spacing, periosteal=parts.periosteal,
                            trabecular=parts.trabecular, cortical=parts.cortical)
cortex = measure.cortical(parts.cortical, spacing=scan.spacing, periosteal=parts.periosteal,
                          bone=parts.bone)
print(f"Tt.BMD {densities['Tt.BMD']:.0f}  Tb.BMD {densities['Tb.BMD']:.0f}  "
      f"Ct.BMD {densities['Ct.BMD']:.0f} mg HA/cm³")
print(f"Ct.Th {cortex['Ct.Th']:.3f} mm (truth {site.truth['Ct.Th']:.3f} mm), "
      f"Ct.Po {cortex['Ct.Po']:.3f}")
