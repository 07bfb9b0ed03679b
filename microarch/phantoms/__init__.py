"""Synthetic bone volumes with known answers, and a model of the scanner that images them.

Three families, all deterministic (fixed seeds) and all in physical units (mm):

- analytic phantoms with closed-form truth, to check every measure: :func:`plate`,
  :func:`rod`, :func:`sphere`, :func:`hollow_sphere`, :func:`torus`,
  :func:`plate_with_holes`, :func:`plate_lattice`, :func:`rod_lattice` (each returns a
  :class:`Phantom`: ``mask``, ``spacing``, ``truth``);
- realistic trabecular bone at HR-pQCT scale, with an element-level label map and junction
  graph: :func:`trabecular_bone` (:class:`TrabecularPhantom`), a quick random structure for
  benchmarks, :func:`random_trabecular`, and a cortical shell with the true compartments:
  :func:`embed_in_cortex`, :func:`distal_radius` (:class:`CorticalPhantom`);
- the imaging model: :func:`render_scan` (:class:`SyntheticScan`: native int16 image,
  calibration, density).

Submodules (and numba) load on first use, so ``import microarch.phantoms`` stays cheap.
"""

from microarch._shared.lazy import lazy_exports

# public name -> private module that defines it
_EXPORTS = {
    "Phantom": "_analytic",
    "DigitisationWarning": "_analytic",
    "plate": "_analytic",
    "rod": "_analytic",
    "sphere": "_analytic",
    "hollow_sphere": "_analytic",
    "torus": "_analytic",
    "plate_with_holes": "_analytic",
    "plate_lattice": "_analytic",
    "rod_lattice": "_analytic",
    "TrabecularPhantom": "_trabecular",
    "trabecular_bone": "_trabecular",
    "random_trabecular": "_random",
    "CorticalPhantom": "_cortex",
    "embed_in_cortex": "_cortex",
    "distal_radius": "_cortex",
    "SyntheticScan": "_imaging",
    "render_scan": "_imaging",
    "XTREMECT2_CALIBRATION": "_imaging",
    "AILoss": "_simulation",
    "Withdrawal": "_simulation",
    "RigidTransform": "_simulation",
    "SimulatedVisit": "_simulation",
    "VisitSeries": "_simulation",
    "simulate_visits": "_simulation",
    "write_demo_cohort": "_cohort",
    "visits_figure": "_cohort",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
