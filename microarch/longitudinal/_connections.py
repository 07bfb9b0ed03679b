"""Reserved: connection-level tracking between registered visits (not implemented yet).

The skeletal-memory signature of domain spec §9.4 is, at its finest, a statement about
individual connections: trabecular junctions present at baseline, lost on AI therapy and
never re-formed after withdrawal. Counting them needs the junction graph of the plate/rod
decomposition (``microarch.measure.plate_rod`` / ``microarch.measure.skeleton``), which
is being written separately. The intended design, so the pieces fit when it lands:

* input: the bone masks of the visits on the baseline grid and the common region, as
  :func:`~microarch.longitudinal.compare_visits` already produces them
  (``keep_resampled=True``);
* per visit: the junction graph (nodes = junctions with positions in mm, edges =
  trabecular elements with their plate/rod type), restricted to the common region;
* matching: baseline junctions to follow-up junctions by position after registration
  (nearest neighbour within a tolerance of about one trabecular thickness), then edges by
  their end nodes;
* output: per pair of visits, counts and densities (1/mm³) of connections kept, lost and
  new, split by type (P-P, P-R, R-R); the memory statement is then "lost on AI and not
  new after withdrawal". The result goes into ``Comparison.connections``.
"""
