"""Connection-level tracking: which trabecular connections of the baseline survive.

Skeletal memory (domain spec §9.4) is, at its finest, a statement about individual
connections: trabeculae present at baseline, severed on aromatase-inhibitor (AI) therapy,
and never re-formed after withdrawal. Conn.D and Tb.N only say how many connections
there are; this module follows each baseline connection through the registered visits.

What a connection is
--------------------
The baseline bone is decomposed into plates, rods and junction sites
(:func:`microarch.measure._plate_rod.junction_graph`, the graph behind
:func:`microarch.measure.plate_rod`), with one difference: a junction site is the
skeleton's junction voxels alone (``junction_reach=0``), not grown by a step as for the
plate/rod measures. At HR-pQCT resolution trabeculae are two or three voxels thick and a
few long, and the thinned skeleton holds many junction voxels close together; sites
grown by a step fuse into a few large clusters that swallow the rods between them. On
simulated 82 µm subjects the smaller sites tracked about three times as many connections
and found four to seven times as many lost on AI. With the graph built as
:func:`~microarch.longitudinal.compare_visits` builds it (no cortex; see Counting),
96-99 % of the connections found lost on the scans lie at bone the simulator removed,
and 65-78 % of the severed rods are found (``benchmarks/results/memory.md``); from the
true masks, registered, the counts lost and restored are within 5 % of the severed and
restored rods under strong loss. The price is at thick nodes: thinning a node several
voxels wide can leave it as two sites a few voxels apart (seen on the cut-open outer
nodes of a rod lattice at 4 voxels per rod diameter).

A *junction* is a site where two or more elements meet. A *connection* is an element
spanning between two junctions -- the trabecular segment joining two nodes of the
picture behind Conn.D. A rod between two junctions is one connection. An element
touching ``k`` junctions (a plate bounded by several rods and plates, rarely a rod with
a side junction) contributes the ``k - 1`` edges of the minimum spanning tree of its
junctions under the shortest-path distance through its own skeleton, so that each
element links its junctions once and its edges follow its shape. With ``E`` connections,
``V`` junctions and ``C`` connected networks, ``E - V + C`` is the cycle rank of the
junction graph, the quantity Conn.D estimates: on rod lattices it equals ``1 - euler``
exactly (tested). Elements with fewer than two junctions (free-ended rods, isolated
pieces) make no connection.

When a connection is present
----------------------------
At every visit (bone mask resampled onto the baseline grid), a baseline connection
between junctions ``a`` and ``b`` through element ``e`` is *present* when the visit's bone
still links the two junctions locally: one 26-connected component of the visit's bone
inside the *tube* of ``e`` touches both end regions (the skeleton voxels of junction
``a``, resp. ``b``, grown by ``ceil(tolerance_voxels)`` voxels, a cube).

The tube is built from the baseline skeleton. Every voxel belongs to its nearest
skeleton voxel (a Voronoi partition of the skeleton, Euclidean distance in mm) when it
lies within that voxel's ball radius (the distance to the nearest marrow voxel centre,
as in the plate/rod reconstruction); the balls of the element's own skeleton voxels are
grown by ``tolerance_voxels`` times the largest voxel size. The tube of ``e`` is what
belongs to the skeleton of ``e`` and to the skeleton voxels of its junctions, inside the
region. Neighbouring trabeculae own the space nearest to their own skeletons, so they
cannot carry a link for ``e`` however close they run; the junction balls are not grown,
because junctions are where the neighbours meet.

The tolerance absorbs misregistration and the jitter of resampled and re-segmented
masks: with the default of one voxel, a rod that moved by up to about a voxel still lies
in its tube (rigidly registered HR-pQCT visits reach 0.5 voxel, domain spec §6.1). A
larger tolerance lets more unrelated bone into the tube; without it thin rods that moved
by a voxel fall out of it.

The test is local: a connection severed on therapy is lost even when its two junctions
are still joined by a detour through the rest of the network, and a plate perforated
between two junctions stays present as long as its bone still joins them around the
hole. Where the baseline graph puts two junctions on one short element that other bone
also joins directly (clusters of short rods), removing the element leaves the link --
correctly, under this definition -- present.

Counting
--------
Only connections whose two junctions lie wholly inside the region (the common region of
all visits) are tracked, and only elements lying mostly (at least half of their
skeleton) inside it; bone within ``margin_voxels`` of the region is decomposed with it,
so that the skeleton is not distorted where the region border cuts through trabeculae.
:func:`~microarch.longitudinal.compare_visits` keeps no margin in a compartment: its
border is anatomical, and the cortex beyond it would enter the decomposition as a shell.
Those present at baseline by the same test (nearly all) are the population: "lost on AI"
are connections present at baseline and absent at the last on-AI visit before a
post-withdrawal visit; "restored" are those of them present again at the post-withdrawal
visit; the fraction restored is restored / lost (NaN, with a reason, when nothing was
lost). The counts are also split into connections through rods and through plates. New
connections formed after baseline are not counted: they have no baseline element to
follow.

Validation (``tests/longitudinal/test_longitudinal_connections.py``): on Voronoi
phantoms seen through 1-2 degree rotations and 1-2 voxel shifts, registered, resampled
and re-segmented, the rod connections lost and restored match the simulated severed and
restored rods within 5 %; whole-network counts agree with those of the same scans
without motion within 5 %. A removed rod also cuts the link of a plate when the
decomposition had merged pieces of that rod into the plate; such losses are counted with
the plates.

References
----------
Liu XS, Sajda P, Saha PK, et al. (2008) Complete volumetric decomposition of individual
trabecular plates and rods and its morphological correlations with anisotropic elastic
moduli in human trabecular bone. J Bone Miner Res 23:223-235. doi:10.1359/jbmr.071009
Guo XE, Kim CH (2002) Mechanical consequence of trabecular bone loss and its treatment:
a three-dimensional model simulation. Bone 30:404-411.
Mehlhorn K (1988) A faster approximation algorithm for the Steiner problem in graphs.
Inf Process Lett 27:125-128. doi:10.1016/0020-0190(88)90066-X
Odgaard A, Gundersen HJG (1993) Quantification of connectivity in cancellous bone, with
special emphasis on 3-D reconstructions. Bone 14:173-182.
doi:10.1016/8756-3282(93)90245-6
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real

import numpy as np

from microarch._shared.validation import as_mask, as_roi, as_spacing, non_negative_int
from microarch.longitudinal._change import check_roles

DEFAULT_TOLERANCE_VOXELS = 1
DEFAULT_MARGIN_VOXELS = 4
# junction sites are the junction voxels alone (see "What a connection is")
TRACKING_JUNCTION_REACH = 0

_MEMORY_COLUMNS = ["baseline_visit", "on_ai_visit", "post_visit", "tracked",
                   "present_baseline", "lost_on_ai", "restored", "still_lost",
                   "lost_after_withdrawal", "fraction_restored", "index",
                   "rods_lost_on_ai", "rods_restored", "plates_lost_on_ai",
                   "plates_restored", "lost_on_ai_density", "restored_density", "reason"]


@dataclass(frozen=True, eq=False)
class ConnectionGraph:
    """The baseline junction graph: junctions and the connections between them.

    Attributes
    ----------
    shape : tuple of 3 int
        Shape of the baseline grid.
    spacing : tuple of 3 float
        Voxel size (mm, z, y, x).
    junctions : dict of ndarray
        One row per junction inside the region (columns for ``pandas.DataFrame``):
        ``id`` (site id), ``type`` ("P-P", "P-R", "R-R"), ``degree`` (elements meeting),
        ``n_voxels`` (skeleton voxels of the site), ``z``, ``y``, ``x`` (centre, mm).
    connections : dict of ndarray
        One row per connection: ``id`` (0, 1, ...), ``element`` (element id in the
        decomposition), ``kind`` ("rod" or "plate"), ``junction_a``, ``junction_b``
        (junction ids), ``type_a``, ``type_b``, ``z_a``, ``y_a``, ``x_a``, ``z_b``,
        ``y_b``, ``x_b`` (junction centres, mm) and ``distance`` (between the centres,
        mm).
    region_volume : float
        Volume (mm³) of the region the connections were taken from (the whole image
        without a region).
    n_elements : int
        Elements (plates and rods) of the decomposition.
    """

    shape: tuple
    spacing: tuple
    junctions: dict
    connections: dict
    region_volume: float
    n_elements: int
    # private, for the presence tests: every skeleton voxel of the decomposition (n, 3)
    # on the grid, its ball radius (mm), and its owner: the junction id (>= 1) for the
    # voxels of the junctions above, else minus its element id
    _skeleton_voxels: np.ndarray = field(repr=False)
    _skeleton_radius: np.ndarray = field(repr=False)
    _skeleton_owner: np.ndarray = field(repr=False)
    _junction_voxels: dict = field(repr=False)

    @property
    def n_connections(self) -> int:
        """Number of connections in the graph."""
        return int(self.connections["id"].size)

    def skeleton_voxels(self, element) -> np.ndarray:
        """Voxel indices (n, 3; z, y, x) of an element's skeleton, its junctions' excluded.

        Examples
        --------
        >>> import numpy as np
        >>> bone = np.zeros((32, 24, 24), bool)
        >>> bone[4:7, 2:22, 2:22] = bone[25:28, 2:22, 2:22] = bone[5:27, 11:13, 11:13] = True
        >>> graph = connection_graph(bone, spacing=0.06)
        >>> rod = graph.connections["element"][0]
        >>> voxels = graph.skeleton_voxels(rod)
        >>> bool((voxels[:, 1:] == 11).all()), int(voxels[:, 0].min()), int(voxels[:, 0].max())
        (True, 8, 23)
        """
        return self._skeleton_voxels[self._skeleton_owner == -int(element)]

    def junction_voxels(self, junction) -> np.ndarray:
        """Voxel indices (n, 3; z, y, x) of a junction's skeleton voxels (its site)."""
        try:
            return self._junction_voxels[int(junction)]
        except KeyError:
            raise ValueError(f"junction {junction!r} is not in the graph; see "
                             "graph.junctions['id']") from None

    def connections_table(self):
        """The connections as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame(self.connections)

    def junctions_table(self):
        """The junctions as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame(self.junctions)


@dataclass(frozen=True, eq=False)
class Connections:
    """Baseline connections followed through the visits (:func:`track_connections`).

    Attributes
    ----------
    graph : ConnectionGraph
        The baseline junction graph.
    visits : list of (id, role)
        In the order given.
    baseline : str
        The visit whose bone defined the graph.
    presence : dict
        ``{visit_id: bool ndarray}``, one entry per connection of ``graph`` (row order of
        ``graph.connections``): whether the visit's bone still links its two junctions.
    tolerance_voxels : float
        Growth of the tubes and end regions (voxels) used by the presence test.
    memory : list of dict
        The connection memory summary, one row per post-withdrawal visit (or one row
        without a post visit): ``baseline_visit``, ``on_ai_visit``, ``post_visit``,
        ``tracked`` (connections tested), ``present_baseline``, ``lost_on_ai`` (present at
        baseline, absent on AI), ``restored`` (lost on AI, present after withdrawal),
        ``still_lost``, ``lost_after_withdrawal`` (present on AI, absent after
        withdrawal), ``fraction_restored`` (restored / lost on AI), ``index``
        (1 - fraction restored: 1 = no lost connection came back, as the skeletal-memory
        index), ``rods_lost_on_ai``, ``rods_restored``, ``plates_lost_on_ai``,
        ``plates_restored`` (the same counts for connections through rods and through
        plates), ``lost_on_ai_density`` and ``restored_density`` (1/mm³ of the region),
        ``reason`` (why the fraction is NaN; empty otherwise).
    """

    graph: ConnectionGraph
    visits: list
    baseline: str
    presence: dict
    tolerance_voxels: float
    memory: list

    def _headline(self, key):
        return self.memory[0][key] if self.memory else math.nan

    @property
    def present_baseline(self) -> int:
        """Connections present at baseline (the tracked population)."""
        return int(np.count_nonzero(self.presence[self.baseline]))

    @property
    def lost_on_ai(self):
        """Connections lost on AI (first row of :attr:`memory`)."""
        return self._headline("lost_on_ai")

    @property
    def restored(self):
        """Lost connections present again after withdrawal (first row of :attr:`memory`)."""
        return self._headline("restored")

    @property
    def fraction_restored(self) -> float:
        """restored / lost on AI (first row of :attr:`memory`); NaN when nothing was lost."""
        return self._headline("fraction_restored")

    @property
    def reason(self) -> str:
        """Why :attr:`fraction_restored` is NaN (empty when it is a number)."""
        return self._headline("reason") if self.memory else "no summary"

    def visit_rows(self):
        """One dict per visit: connections present and lost relative to baseline."""
        at_baseline = self.presence[self.baseline]
        n_baseline = int(np.count_nonzero(at_baseline))
        volume = self.graph.region_volume
        rows = []
        for visit, role in self.visits:
            present = self.presence[visit] & at_baseline
            n_present = int(np.count_nonzero(present))
            rows.append({
                "visit": visit, "role": role, "present": n_present,
                "lost": n_baseline - n_present,
                "fraction_present": n_present / n_baseline if n_baseline else math.nan,
                "present_density": n_present / volume if volume > 0 else math.nan,
                "plates_present": int(np.count_nonzero(
                    present & (self.graph.connections["kind"] == "plate"))),
                "rods_present": int(np.count_nonzero(
                    present & (self.graph.connections["kind"] == "rod"))),
            })
        return rows

    def visits_table(self):
        """Per-visit counts (:meth:`visit_rows`) as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame(self.visit_rows())

    def memory_table(self):
        """The connection memory summary (:attr:`memory`) as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame(self.memory, columns=_MEMORY_COLUMNS)

    def table(self):
        """One row per baseline connection, with a ``present_<visit>`` column per visit."""
        import pandas as pd

        table = pd.DataFrame(self.graph.connections)
        for visit, _role in self.visits:
            table[f"present_{visit}"] = self.presence[visit]
        return table


def _distance_voxels(value, name):
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or value < 0:
        raise ValueError(f"{name} must be a non-negative number of voxels; got {value!r}")
    return float(value)


_FORWARD = np.array([(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1)
                     for dx in (-1, 0, 1) if (dz, dy, dx) > (0, 0, 0)], np.int64)


def _spanning_pairs(junction_ids, junction_voxels, skeleton_voxels, spacing):
    """Junction pairs an element links: the minimum spanning tree of its junctions under
    the shortest-path distance through the element's skeleton.

    ``junction_voxels`` is a list of (n_j, 3) voxel arrays, ``skeleton_voxels`` the
    element's own skeleton voxels. Computed as in Mehlhorn (1988): one multi-source
    Dijkstra from all junctions partitions the skeleton into their geodesic Voronoi
    cells; skeleton steps between two cells are candidate edges (length through that
    step), and the spanning tree of the candidates is a spanning tree of the full
    geodesic distance network. Junctions the skeleton does not join stay unlinked.
    """
    if len(junction_ids) == 2:
        return [(int(junction_ids[0]), int(junction_ids[1]))]
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra, minimum_spanning_tree

    owner = np.concatenate([np.full(len(v), k, np.int64)
                            for k, v in enumerate(junction_voxels)]
                           + [np.full(len(skeleton_voxels), -1, np.int64)])
    voxels = np.concatenate(list(junction_voxels) + [skeleton_voxels])
    lo = voxels.min(axis=0)
    dims = voxels.max(axis=0) - lo + 3
    codes = np.ravel_multi_index((voxels - lo + 1).T, dims)
    codes, first = np.unique(codes, return_index=True)   # junction voxels first
    owner = owner[first]
    strides = np.array([dims[1] * dims[2], dims[2], 1], np.int64)
    steps = np.sqrt(((_FORWARD * np.asarray(spacing)) ** 2).sum(axis=1))
    rows, cols, weights = [], [], []
    for offset, length in zip(_FORWARD @ strides, steps):
        target = np.searchsorted(codes, codes + offset)
        target = np.minimum(target, codes.size - 1)
        hit = codes[target] == codes + offset
        rows.append(np.flatnonzero(hit))
        cols.append(target[hit])
        weights.append(np.full(int(hit.sum()), length))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    weights = np.concatenate(weights)
    n = codes.size
    network = coo_matrix((weights, (rows, cols)), shape=(n, n)).tocsr()
    sources = np.flatnonzero(owner >= 0)
    distance, _, nearest = dijkstra(network, directed=False, indices=sources,
                                    min_only=True, return_predecessors=True)
    cell = np.where(nearest >= 0, owner[np.maximum(nearest, 0)], -1)
    a, b = cell[rows], cell[cols]
    crossing = (a >= 0) & (b >= 0) & (a != b)
    k = len(junction_ids)
    if not crossing.any():
        return []
    length = distance[rows] + weights + distance[cols]
    a, b, length = a[crossing], b[crossing], length[crossing]
    low, high = np.minimum(a, b), np.maximum(a, b)
    best = np.full((k, k), np.inf)
    np.minimum.at(best, (low, high), length)
    linked = np.isfinite(best)
    # csgraph reads 0 as "no edge"
    candidates = coo_matrix((best[linked] + 1e-12, np.nonzero(linked)), shape=(k, k))
    tree = minimum_spanning_tree(candidates).tocoo()
    order = np.lexsort((tree.col, tree.row))
    return [(int(junction_ids[tree.row[i]]), int(junction_ids[tree.col[i]]))
            for i in order]


def connection_graph(mask, *, spacing, region=None, margin_voxels=DEFAULT_MARGIN_VOXELS):
    """Junctions and connections (elements spanning two junctions) of a bone mask.

    Parameters
    ----------
    mask : (Z, Y, X) array_like of bool
        Baseline bone mask.
    spacing : float or sequence of 3 floats
        Voxel size in mm (z, y, x).
    region : (Z, Y, X) array_like of bool, optional
        Where connections are taken: both junctions of a connection must lie wholly
        inside. Bone further than ``margin_voxels`` from the region is left out of the
        decomposition.
    margin_voxels : int
        Bone kept around the region for the decomposition, so that elements crossing
        the region border are not cut right at it. Use it where the border cuts through
        trabeculae (a box, the field of view); at an anatomical border give 0 or limit
        ``mask`` to the compartment, since a margin of cortex becomes one large plate
        that swallows the trabeculae attached to it (:func:`compare_visits` does both).

    Returns
    -------
    ConnectionGraph

    Notes
    -----
    The decomposition is the plate/rod decomposition of
    :func:`microarch.measure.plate_rod`; the module documentation of
    :mod:`microarch.longitudinal._connections` defines junctions and connections.

    References
    ----------
    Liu XS et al. (2008) J Bone Miner Res 23:223-235. doi:10.1359/jbmr.071009
    Mehlhorn K (1988) A faster approximation algorithm for the Steiner problem in
    graphs. Inf Process Lett 27:125-128. doi:10.1016/0020-0190(88)90066-X

    Examples
    --------
    A rod between two plates is one connection; the plates touch one junction each and
    make none:

    >>> import numpy as np
    >>> bone = np.zeros((32, 24, 24), bool)
    >>> bone[4:7, 2:22, 2:22] = bone[25:28, 2:22, 2:22] = True   # two plates
    >>> bone[5:27, 11:13, 11:13] = True                          # a rod joining them
    >>> graph = connection_graph(bone, spacing=0.06)
    >>> graph.n_connections, graph.connections["kind"].tolist()
    (1, ['rod'])
    >>> round(float(graph.connections["distance"][0]), 2)   # between the junction sites
    1.02
    """
    from microarch.longitudinal._region import bounding_box, dilate_cube
    from microarch.measure._plate_rod import junction_graph

    mask = as_mask(mask)
    spacing = as_spacing(spacing)
    region = as_roi(region, mask.shape, name="region")
    margin = non_negative_int(margin_voxels, name="margin_voxels", unit="voxels")
    voxel_volume = float(np.prod(spacing))
    region_volume = (mask.size if region is None else int(np.count_nonzero(region))) \
        * voxel_volume

    keep = mask if region is None else mask & dilate_cube(region, margin)
    if not keep.any():
        return _empty_graph(mask.shape, spacing, region_volume)
    box = tuple(slice(lo, hi) for lo, hi in bounding_box(keep, 1))
    origin = np.array([s.start for s in box], np.int64)
    graph = junction_graph(keep[box], spacing=spacing,
                           junction_reach=TRACKING_JUNCTION_REACH)
    del keep
    del graph["labels"]
    is_plate = graph["is_plate"]
    voxels = graph["skeleton_voxels"] + origin
    owner = graph["skeleton_element"].astype(np.int64)
    site = graph["skeleton_junction"]
    radius = graph["skeleton_radius"]
    n_sites = graph["n_junctions"]

    # junctions: sites touching two or more elements, wholly inside the region
    contacts = graph["contacts"]
    degree = np.bincount(contacts[:, 0], minlength=n_sites + 1)
    plates_at = np.bincount(contacts[:, 0], weights=is_plate[contacts[:, 1]],
                            minlength=n_sites + 1)
    types = np.where(plates_at == degree, "P-P", np.where(plates_at == 0, "R-R", "P-R"))
    on_site = np.flatnonzero(site > 0)
    on_site = on_site[np.argsort(site[on_site], kind="stable")]
    bounds = np.searchsorted(site[on_site], np.arange(n_sites + 2))
    junction_points = {}
    for j in np.flatnonzero(degree >= 2):
        rows = on_site[bounds[j]:bounds[j + 1]]
        v = voxels[rows]
        if v.size and (region is None or region[v[:, 0], v[:, 1], v[:, 2]].all()):
            junction_points[int(j)] = rows
    kept = np.array(sorted(junction_points), np.int64)
    centres = {j: voxels[rows].mean(axis=0) * np.asarray(spacing)
               for j, rows in junction_points.items()}
    junctions = {
        "id": kept,
        "type": types[kept].astype("<U3"),
        "degree": degree[kept].astype(np.int64),
        "n_voxels": np.array([junction_points[j].size for j in kept], np.int64),
        "z": np.array([centres[j][0] for j in kept], float),
        "y": np.array([centres[j][1] for j in kept], float),
        "x": np.array([centres[j][2] for j in kept], float),
    }

    # connections: each element links its junctions along a minimum spanning tree
    inside = np.zeros(n_sites + 1, bool)
    inside[kept] = True
    usable = contacts[inside[contacts[:, 0]]]
    usable = usable[np.lexsort((usable[:, 0], usable[:, 1]))]
    elements, first = np.unique(usable[:, 1], return_index=True)
    ends = np.append(first, usable.shape[0])
    by_element = np.argsort(owner, kind="stable")
    element_bounds = np.searchsorted(owner[by_element], np.arange(owner.max() + 2))
    rows = []
    for k, element in enumerate(elements):
        ids = usable[ends[k]:ends[k + 1], 0]
        if ids.size < 2:
            continue
        own = by_element[element_bounds[element]:element_bounds[element + 1]]
        if region is not None and own.size and \
                2 * np.count_nonzero(region[tuple(voxels[own].T)]) < own.size:
            continue    # an element lying mostly outside the region (e.g. the cortex)
        pairs = _spanning_pairs(ids, [voxels[junction_points[int(j)]] for j in ids],
                                voxels[own], spacing)
        rows.extend((int(element), a, b) for a, b in pairs)
    connections = _connection_columns(rows, centres, is_plate, types)
    skeleton_owner = -owner
    for j, points in junction_points.items():
        skeleton_owner[points] = j
    return ConnectionGraph(
        shape=tuple(mask.shape), spacing=spacing, junctions=junctions,
        connections=connections, region_volume=float(region_volume),
        n_elements=int(graph["n_elements"]), _skeleton_voxels=voxels,
        _skeleton_radius=radius, _skeleton_owner=skeleton_owner,
        _junction_voxels={j: voxels[r] for j, r in junction_points.items()})


def _connection_columns(rows, centres, is_plate, types):
    n = len(rows)
    element = np.array([r[0] for r in rows], np.int64)
    a = np.array([r[1] for r in rows], np.int64)
    b = np.array([r[2] for r in rows], np.int64)
    pa = np.array([centres[j] for j in a]).reshape(n, 3)
    pb = np.array([centres[j] for j in b]).reshape(n, 3)
    return {
        "id": np.arange(n, dtype=np.int64),
        "element": element,
        "kind": np.where(is_plate[element], "plate", "rod").astype("<U5"),
        "junction_a": a, "junction_b": b,
        "type_a": types[a].astype("<U3"),
        "type_b": types[b].astype("<U3"),
        "z_a": pa[:, 0], "y_a": pa[:, 1], "x_a": pa[:, 2],
        "z_b": pb[:, 0], "y_b": pb[:, 1], "x_b": pb[:, 2],
        "distance": np.linalg.norm(pb - pa, axis=1),
    }


def _empty_graph(shape, spacing, region_volume):
    empty = np.zeros(0, np.int64)
    return ConnectionGraph(
        shape=tuple(shape), spacing=spacing,
        junctions={"id": empty, "type": np.zeros(0, "<U3"), "degree": empty,
                   "n_voxels": empty, "z": np.zeros(0), "y": np.zeros(0),
                   "x": np.zeros(0)},
        connections=_connection_columns([], {}, np.zeros(1, bool), np.zeros(1, "<U3")),
        region_volume=float(region_volume), n_elements=0,
        _skeleton_voxels=np.zeros((0, 3), np.int64), _skeleton_radius=np.zeros(0),
        _skeleton_owner=np.zeros(0, np.int64), _junction_voxels={})


def _cube_offsets(radius):
    r = np.arange(-radius, radius + 1)
    return np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)


_SLAB_PLANES = 32


def _cells(graph, region, reach):
    """Where each element and junction may carry bone: the owner map and its box.

    Every voxel belongs to its nearest skeleton voxel (Euclidean, in mm), as in a
    Voronoi partition of the skeleton, and to nothing when it lies farther from it than
    that voxel's ball radius -- grown by ``reach`` mm for element voxels, not for the
    junctions' own voxels (junctions are where the neighbours meet). Returns
    ``(owner, lo)``: int32 owner codes on the box starting at ``lo`` (junction id >= 1,
    minus the element id, 0 for nobody) and the box origin (grid coordinates).
    """
    from scipy import ndimage as ndi

    voxels = graph._skeleton_voxels
    spacing = np.asarray(graph.spacing)
    allowed = graph._skeleton_radius + np.where(graph._skeleton_owner < 0, reach, 0.0)
    margin = np.ceil(allowed.max() / spacing).astype(np.int64) + 1
    lo = np.maximum(voxels.min(axis=0) - margin, 0)
    hi = np.minimum(voxels.max(axis=0) + margin + 1, np.asarray(graph.shape))
    shape = tuple(int(n) for n in hi - lo)
    seed = np.zeros(shape, np.int32)        # 1 + index of the skeleton voxel there
    seed[tuple((voxels - lo).T)] = np.arange(1, voxels.shape[0] + 1, dtype=np.int32)
    owner = np.zeros(shape, np.int32)
    codes = graph._skeleton_owner.astype(np.int32)
    # in slabs along z, each with enough planes around it that no nearer seed is missed
    for z0 in range(0, shape[0], _SLAB_PLANES):
        z1 = min(z0 + _SLAB_PLANES, shape[0])
        a, b = max(z0 - margin[0], 0), min(z1 + margin[0], shape[0])
        part = seed[a:b]
        if not part.any():      # no skeleton within reach of these planes
            continue
        distance, nearest = ndi.distance_transform_edt(part == 0, sampling=spacing,
                                                       return_indices=True)
        inner = slice(z0 - a, z1 - a)
        index = part[nearest[0][inner], nearest[1][inner], nearest[2][inner]] - 1
        del nearest
        inside = distance[inner] < allowed[index]
        owner[z0:z1] = np.where(inside, codes[index], 0)
    if region is not None:
        owner[~region[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]] = 0
    return owner, lo


def _presence(graph, bones, region, tolerance):
    """(n_visits, n_connections) bool: does each visit's bone link each connection?"""
    from scipy import ndimage as ndi

    from microarch._kernels.tracking import presence

    n = graph.n_connections
    present = np.zeros((len(bones), n), bool)
    if n == 0:
        return present
    shape = np.asarray(graph.shape)
    spacing = np.asarray(graph.spacing)
    owner, origin = _cells(graph, region, tolerance * float(spacing.max()))
    n_ids = max(int(owner.max()), max(graph._junction_voxels, default=0)) + 1
    junction_lo, junction_hi = _boxes(ndi.find_objects(np.where(owner > 0, owner, 0)),
                                      n_ids)
    # end region of each junction: its site voxels grown by the tolerance (a cube), on
    # the owner grid; the junction's box takes it in
    offsets = _cube_offsets(math.ceil(tolerance))
    end_ptr = np.zeros(n_ids + 1, np.int64)
    ends = []
    for j in sorted(graph._junction_voxels):
        v = graph._junction_voxels[j]
        grown = (v[:, None, :] + offsets[None, :, :]).reshape(-1, 3)
        grown = grown[np.all((grown >= 0) & (grown < shape), axis=1)]
        flat = np.unique(np.ravel_multi_index(tuple(grown.T), tuple(shape)))
        points = np.stack(np.unravel_index(flat, tuple(shape)), axis=1) - origin
        ends.append(points)
        end_ptr[j + 1] = points.shape[0]
        junction_lo[j] = np.minimum(junction_lo[j], points.min(axis=0))
        junction_hi[j] = np.maximum(junction_hi[j], points.max(axis=0) + 1)
    end_ptr = np.cumsum(end_ptr)
    ends = np.ascontiguousarray(np.concatenate(ends), dtype=np.int64)

    # per element: its connections, its junctions and the box holding their cells
    table = graph.connections
    element = table["element"].astype(np.int64)
    junction_a = table["junction_a"].astype(np.int64)
    junction_b = table["junction_b"].astype(np.int64)
    rows = np.argsort(element, kind="stable")
    starts = np.flatnonzero(np.r_[True, element[rows][1:] != element[rows][:-1]])
    row_ptr = np.r_[starts, n].astype(np.int64)
    elements = element[rows[starts]]
    pairs = np.unique(np.stack([np.r_[element, element], np.r_[junction_a, junction_b]],
                               axis=1), axis=0)
    junction_ptr = np.r_[0, np.cumsum(np.bincount(np.searchsorted(elements, pairs[:, 0]),
                                                  minlength=elements.size))]
    junctions = np.ascontiguousarray(pairs[:, 1])
    element_lo, element_hi = _boxes(ndi.find_objects(np.where(owner < 0, -owner, 0)),
                                    int(elements.max()) + 1)
    lo = np.minimum(element_lo[elements],
                    np.minimum.reduceat(junction_lo[junctions], junction_ptr[:-1]))
    hi = np.maximum(element_hi[elements],
                    np.maximum.reduceat(junction_hi[junctions], junction_ptr[:-1]))
    boxes = np.ascontiguousarray(
        np.concatenate([np.maximum(lo, 0), np.minimum(hi, owner.shape)], axis=1),
        dtype=np.int64)
    origin = origin.astype(np.int64)
    junction_ptr = junction_ptr.astype(np.int64)

    seen = np.zeros(owner.shape, np.int32)  # component stamps, never cleared
    base = 0
    for k, bone in enumerate(bones):
        base = presence(owner, np.ascontiguousarray(bone), origin, boxes, elements,
                        junction_ptr, junctions, row_ptr, rows, junction_a, junction_b,
                        end_ptr, ends, present[k], seen, base)
    return present


def _boxes(objects, size):
    """(lo, hi) arrays indexed by label from ``ndimage.find_objects``; empty labels
    get an inverted box that any min/max with a real one replaces."""
    lo = np.full((size, 3), np.iinfo(np.int64).max, np.int64)
    hi = np.full((size, 3), np.iinfo(np.int64).min, np.int64)
    for label, box in enumerate(objects[:size - 1], start=1):
        if box is not None:
            lo[label] = [s.start for s in box]
            hi[label] = [s.stop for s in box]
    return lo, hi


def _memory_rows(order, roles, baseline, presence, volume, kinds):
    posts = [v for v in order if roles[v] == "post_withdrawal"]
    at_baseline = presence[baseline]
    n_baseline = int(np.count_nonzero(at_baseline))
    rows = []
    for post in posts or [None]:
        on_ai_visits = [v for v in order if roles[v] == "on_ai"
                        and (post is None or order.index(v) < order.index(post))]
        on_ai = on_ai_visits[-1] if on_ai_visits else None
        row = dict.fromkeys(_MEMORY_COLUMNS, math.nan)
        row.update({"baseline_visit": baseline, "on_ai_visit": on_ai, "post_visit": post,
                    "tracked": int(at_baseline.size), "present_baseline": n_baseline,
                    "reason": ""})
        reasons = []
        if on_ai is not None:
            lost = at_baseline & ~presence[on_ai]
            row["lost_on_ai"] = int(np.count_nonzero(lost))
            row["rods_lost_on_ai"] = int(np.count_nonzero(lost & (kinds == "rod")))
            row["plates_lost_on_ai"] = int(np.count_nonzero(lost & (kinds == "plate")))
            row["lost_on_ai_density"] = row["lost_on_ai"] / volume if volume > 0 \
                else math.nan
            if post is not None:
                back = lost & presence[post]
                row["restored"] = int(np.count_nonzero(back))
                row["rods_restored"] = int(np.count_nonzero(back & (kinds == "rod")))
                row["plates_restored"] = int(np.count_nonzero(back & (kinds == "plate")))
                row["still_lost"] = row["lost_on_ai"] - row["restored"]
                row["restored_density"] = row["restored"] / volume if volume > 0 \
                    else math.nan
                row["lost_after_withdrawal"] = int(np.count_nonzero(
                    at_baseline & presence[on_ai] & ~presence[post]))
        if roles[baseline] != "baseline":
            reasons.append("no baseline visit (the first visit is the reference)")
        if n_baseline == 0:
            reasons.append("no baseline connection in the region")
        if on_ai is None:
            reasons.append("no on_ai visit" + (" before the post_withdrawal visit"
                                               if post is not None else ""))
        if post is None:
            reasons.append("no post_withdrawal visit")
        if not reasons and row["lost_on_ai"] == 0:
            reasons.append("no connection was lost on AI")
        if reasons:
            row["reason"] = "; ".join(reasons)
        else:
            row["fraction_restored"] = row["restored"] / row["lost_on_ai"]
            row["index"] = 1.0 - row["fraction_restored"]
        rows.append(row)
    return rows


def track_connections(masks, *, spacing, roles=None, region=None,
                      tolerance_voxels=DEFAULT_TOLERANCE_VOXELS, graph=None,
                      margin_voxels=DEFAULT_MARGIN_VOXELS):
    """Follow the baseline's trabecular connections through registered visits.

    Parameters
    ----------
    masks : mapping
        ``{visit_id: bone mask}`` in chronological order, all on the baseline grid (e.g.
        ``Comparison.resampled[visit]["bone"]`` of :func:`compare_visits` with
        ``keep_resampled=True``).
    spacing : float or sequence of 3 floats
        Voxel size of the baseline grid in mm (z, y, x).
    roles : mapping, optional
        ``{visit_id: role}``: ``"baseline"``, ``"on_ai"``, ``"post_withdrawal"`` or
        ``"other"`` (default). The first baseline visit (else the first visit) defines
        the connections; for each post-withdrawal visit, the last on-AI visit before it
        is the end of therapy.
    region : (Z, Y, X) array_like of bool, optional
        Common region of the visits (e.g. ``Comparison.common_region``): connections are
        tracked only with both junctions inside it, and only bone inside it counts.
    tolerance_voxels : float
        How far (in voxels of the largest voxel size) each connection's tube reaches
        beyond its baseline bone, and (rounded up, a cube) how far its end regions
        reach beyond its junctions: the misregistration and resampling jitter the
        presence test tolerates (see Notes).
    graph : ConnectionGraph, optional
        A graph of the baseline already built by :func:`connection_graph` (with the same
        region); built from the baseline mask otherwise.
    margin_voxels : int
        Passed to :func:`connection_graph`.

    Returns
    -------
    Connections
        ``presence`` per visit and connection (:meth:`Connections.table`), the
        per-visit counts (:meth:`Connections.visits_table`) and the memory summary
        (:attr:`Connections.memory`: present at baseline, lost on AI, restored after
        withdrawal, fraction restored).

    Raises
    ------
    ValueError
        No masks, masks of different shapes, unknown roles, a region or graph of another
        shape, a negative tolerance.

    Notes
    -----
    A connection is an element of the baseline plate/rod decomposition spanning two
    junctions; it is present at a visit when that visit's bone still links the two
    junctions inside a tube around the baseline element (module documentation of
    :mod:`microarch.longitudinal._connections`). With the default tolerance of one
    voxel the test holds through registration errors below about one voxel: rigidly
    registered HR-pQCT visits reach 0.5 voxel (domain spec §6.1).

    References
    ----------
    Liu XS et al. (2008) J Bone Miner Res 23:223-235. doi:10.1359/jbmr.071009
    Guo XE, Kim CH (2002) Bone 30:404-411.

    Examples
    --------
    Three rods between two plates: 7 connections (the three rods, and each plate links
    its three junctions by two). Therapy severs two rods, withdrawal brings one back:

    >>> import numpy as np
    >>> base = np.zeros((32, 24, 40), bool)
    >>> base[4:7, 2:22, 2:38] = base[25:28, 2:22, 2:38] = True
    >>> for x in (8, 19, 30):
    ...     base[5:27, 11:13, x:x + 2] = True
    >>> on_ai = base.copy()
    >>> on_ai[12:20, :, 17:33] = False          # cut the middle and right rods
    >>> post = on_ai.copy()
    >>> post[12:20, 11:13, 19:21] = True        # the middle rod re-forms
    >>> result = track_connections({"V1": base, "V2": on_ai, "V3": post}, spacing=0.06,
    ...     roles={"V1": "baseline", "V2": "on_ai", "V3": "post_withdrawal"})
    >>> result.present_baseline, result.lost_on_ai, result.restored
    (7, 2, 1)
    >>> result.fraction_restored
    0.5
    """
    if not isinstance(masks, Mapping) or not masks:
        raise ValueError("masks must be a non-empty mapping visit id -> bone mask "
                         "(all on the baseline grid)")
    spacing = as_spacing(spacing)
    tolerance = _distance_voxels(tolerance_voxels, "tolerance_voxels")
    roles = check_roles(masks, roles, data="masks")
    order = list(masks)
    bones = {}
    shape = None
    for visit in order:
        bone = as_mask(getattr(masks[visit], "image", masks[visit]),
                       name=f"mask of visit {visit!r}")
        if shape is None:
            shape = bone.shape
        elif bone.shape != shape:
            raise ValueError(f"mask of visit {visit!r} has shape {bone.shape}, the first "
                             f"visit's {shape}: resample every visit onto the baseline "
                             "grid first (compare_visits(keep_resampled=True))")
        bones[visit] = bone
    region = as_roi(region, shape, name="region")
    baselines = [v for v in order if roles[v] == "baseline"]
    baseline = baselines[0] if baselines else order[0]
    if graph is None:
        graph = connection_graph(bones[baseline], spacing=spacing, region=region,
                                 margin_voxels=margin_voxels)
    elif not isinstance(graph, ConnectionGraph):
        raise TypeError(f"graph must be a ConnectionGraph from connection_graph(); "
                        f"got {type(graph).__name__}")
    elif tuple(graph.shape) != tuple(shape):
        raise ValueError(f"graph was built on a grid of shape {graph.shape}; the masks "
                         f"have shape {shape}")
    present = _presence(graph, [bones[v] for v in order], region, tolerance)
    presence = {v: present[k] for k, v in enumerate(order)}
    memory = _memory_rows(order, roles, baseline, presence, graph.region_volume,
                          graph.connections["kind"])
    return Connections(graph=graph, visits=[(v, roles[v]) for v in order],
                       baseline=baseline, presence=presence, tolerance_voxels=tolerance,
                       memory=memory)
