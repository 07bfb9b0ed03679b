"""Compare visits of one person: registration, common region, change, skeletal memory.

The longitudinal stage of microarch. For each subject, follow-up scans are rigidly
registered to the baseline, resampled once onto the baseline grid, and re-measured in
the region every visit saw; changes are judged against least significant changes, and
the skeletal-memory index says how much of what was lost on aromatase-inhibitor (AI)
therapy came back after withdrawal.

One call per subject
--------------------
>>> from microarch.io import read_scan
>>> from microarch.longitudinal import compare_visits
>>> comparison = compare_visits(                                     # doctest: +SKIP
...     [("V1", "baseline", read_scan("S01_V1.AIM"), {"periosteal": p1, "trabecular": t1}),
...      ("V2", "on_ai", read_scan("S01_V2.AIM"), {"periosteal": p2, "trabecular": t2}),
...      ("V3", "post_withdrawal", read_scan("S01_V3.AIM"),
...       {"periosteal": p3, "trabecular": t3})],
...     subject="S01")
>>> comparison.registration_table()      # status, Dice, rotation, shift   # doctest: +SKIP
>>> comparison.change                    # tidy: measure x visit, change, LSC  # doctest: +SKIP
>>> comparison.memory                    # skeletal-memory index per measure   # doctest: +SKIP
>>> comparison.remodelling_table()       # FV/BV0, RV/BV0 per pair of visits   # doctest: +SKIP
>>> comparison.connections_table()       # connections lost on AI, restored  # doctest: +SKIP

Building blocks
---------------
`compare_visits`, `Visit`, `Comparison`, `default_measure`
    The whole stage for one subject (above); ``measure=`` takes any
    ``f(bone, *, spacing, roi[, image][, masks]) -> dict``, e.g.
    ``microarch.measure.trabecular``.
`register`
    Rigid (Euler3D) SimpleITK registration, follow-up -> baseline, with a quality verdict
    (`Registration.status` "ok"/"failed" and a reason; Dice of the periosteal masks).
`apply_transform`, `field_of_view`, `save_transform`, `load_transform`
    Resample once onto the baseline grid (grey linear/B-spline, masks nearest
    neighbour); ``.tfm`` files.
`common_region`
    Intersection of the registered compartments of all visits, eroded by one voxel.
`change_table`, `skeletal_memory`, `memory_index`, `DEFAULT_LSC`
    Change from baseline and its significance; ``1 - (post - on_ai) / (baseline - on_ai)``.
`remodelling`
    Formation / resorption / quiescent voxels between two registered visits
    (225 mg HA/cm³, clusters of >= 12 voxels on XtremeCT II).
`track_connections`, `connection_graph`, `Connections`, `ConnectionGraph`
    Connection-level tracking: the baseline's plate/rod junction graph (elements
    spanning two junctions) followed through the registered visits -- present at
    baseline, lost on AI, restored after withdrawal, and the fraction restored.

Frame convention
----------------
Arrays are (z, y, x) with ``spacing`` in mm, as everywhere in microarch; SimpleITK's
(x, y, z) appears only inside this subpackage. Each visit's grid has its first voxel
centre at the physical origin and axes along the array axes: file origins and
direction cosines are ignored (Scanco positions change between visits; the registration
is initialised by aligning the bones' centres of mass). A transform maps baseline-grid
physical points to follow-up-grid physical points in this frame, as do the ``.tfm``
files written here.

References
----------
Christen P, Ito K, Ellouz R, et al. (2014) Bone remodelling in humans is load-driven but
not lazy. Nat Commun 5:4855. doi:10.1038/ncomms5855
Burghardt AJ, Pialat JB, Kazakia GJ, et al. (2013) Multicenter precision of cortical and
trabecular bone quality measures assessed by high-resolution peripheral quantitative
computed tomography. J Bone Miner Res 28:524-536. doi:10.1002/jbmr.1795

Submodules load on first use, so ``import microarch.longitudinal`` stays cheap (it does
not import SimpleITK, scipy or pandas).
"""

from microarch._shared.lazy import lazy_exports

# public name -> private module that defines it
_EXPORTS = {
    "register": "_registration",
    "Registration": "_registration",
    "apply_transform": "_transform",
    "field_of_view": "_transform",
    "save_transform": "_transform",
    "load_transform": "_transform",
    "common_region": "_region",
    "change_table": "_change",
    "skeletal_memory": "_change",
    "memory_index": "_change",
    "LSC": "_change",
    "DEFAULT_LSC": "_change",
    "FALLBACK_LSC": "_change",
    "MEMORY_MEASURES": "_change",
    "ROLES": "_change",
    "remodelling": "_remodelling",
    "Remodelling": "_remodelling",
    "PROFILES": "_remodelling",
    "LABELS": "_remodelling",
    "compare_visits": "_compare",
    "Comparison": "_compare",
    "Visit": "_compare",
    "default_measure": "_compare",
    "track_connections": "_connections",
    "connection_graph": "_connections",
    "Connections": "_connections",
    "ConnectionGraph": "_connections",
    "Grid": "_grid",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
