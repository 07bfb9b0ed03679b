"""QC figures: slice montages with segmentation overlays, contact sheets, trajectories."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from microarch._shared.validation import as_spacing

# overlay colours of the masks a montage knows, in drawing order
_MASK_STYLES = {
    "periosteal": ("#f2c14e", 1.2),
    "endosteal": ("#f78154", 1.0),
    "trabecular": ("#4d9de0", 1.0),
    "cortical": ("#e15554", 1.0),
}
_BONE_COLOUR = (0.30, 0.85, 0.45, 0.35)  # translucent green fill for the bone mask


def _figure(width_in, height_in, dpi):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=dpi)


def _save(figure, path):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=figure.dpi, bbox_inches="tight", facecolor="black"
                       if figure.get_facecolor()[:3] == (0, 0, 0) else "white")
    return figure


def montage(image, *, spacing, bone=None, masks=None, n_slices=6, axis=0, window=None,
            title=None, path=None, dpi=100):
    """Evenly spaced slices of a scan with its segmentation drawn on top.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Grey-scale scan (e.g. mg HA/cm³) or a mask.
    spacing : float or sequence of 3 floats
        Voxel size in mm (z, y, x); slices are drawn with the right aspect ratio and a
        scale bar.
    bone : (Z, Y, X) ndarray of bool, optional
        Bone mask, drawn as a translucent fill.
    masks : dict of str -> (Z, Y, X) ndarray of bool, optional
        Compartment masks drawn as contours; known names ("periosteal", "endosteal",
        "trabecular", "cortical") get fixed colours, others the default cycle.
    n_slices : int
        Number of slices, evenly spaced through the volume (ends excluded).
    axis : int
        Slicing axis (0: axial slices of a (z, y, x) scan).
    window : (float, float), optional
        Grey-value display range; default the 1st-99.5th percentiles.
    title : str, optional
    path : path-like, optional
        Where to write the PNG.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((8, 32, 32), np.float32)
    >>> image[:, 8:24, 8:24] = 800.0
    >>> figure = montage(image, spacing=0.082, bone=image > 400, n_slices=2)
    >>> len(figure.axes)
    2
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be 3D (z, y, x); got shape {image.shape}")
    spacing = as_spacing(spacing)
    n_slices = int(max(1, min(n_slices, image.shape[axis])))
    positions = np.linspace(0, image.shape[axis] - 1, n_slices + 2)[1:-1].round().astype(int)
    plane_spacing = [s for a, s in enumerate(spacing) if a != axis]
    finite = image[np.isfinite(image)] if image.dtype.kind == "f" else image.ravel()
    if window is None:
        low, high = (np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0))
        window = (float(low), float(high) if high > low else float(low) + 1.0)

    columns = min(n_slices, 3)
    rows = math.ceil(n_slices / columns)
    aspect = plane_spacing[0] * image.shape[1 if axis != 1 else 0] / (
        plane_spacing[1] * image.shape[2 if axis != 2 else 1])
    figure = _figure(3.2 * columns, 3.2 * rows * aspect + (0.4 if title else 0.0), dpi)
    figure.set_facecolor("black")
    for n, position in enumerate(positions):
        ax = figure.add_subplot(rows, columns, n + 1)
        ax.set_axis_off()
        plane = np.take(image, position, axis=axis)
        extent = (0, plane.shape[1] * plane_spacing[1], plane.shape[0] * plane_spacing[0], 0)
        ax.imshow(plane, cmap="gray", vmin=window[0], vmax=window[1], extent=extent,
                  interpolation="nearest")
        if bone is not None:
            fill = np.zeros(plane.shape + (4,))
            fill[np.take(np.asarray(bone, bool), position, axis=axis)] = _BONE_COLOUR
            ax.imshow(fill, extent=extent, interpolation="nearest")
        for name, mask in (masks or {}).items():
            section = np.take(np.asarray(mask, bool), position, axis=axis)
            if section.any() and not section.all():
                colour, width = _MASK_STYLES.get(name, (None, 1.0))
                ax.contour(section.astype(float), levels=[0.5], colors=colour,
                           linewidths=width, extent=(extent[0], extent[1], extent[3],
                                                     extent[2]), origin="upper")
        ax.set_title(f"{'zyx'[axis]} = {position}", color="white", fontsize=8)
        if n == 0:
            _scale_bar(ax, extent)
    if title:
        figure.suptitle(title, color="white", fontsize=10)
    return _save(figure, path)


def _scale_bar(ax, extent):
    target = max(extent[1] / 4, 1e-6)  # about a quarter of the panel width
    decade = 10 ** math.floor(math.log10(target))
    length = max(m * decade for m in (1, 2, 5) if m * decade <= target)
    x0, y0 = extent[1] * 0.05, extent[2] * 0.93
    ax.plot([x0, x0 + length], [y0, y0], color="white", linewidth=2)
    ax.text(x0, y0 * 0.97, f"{length:g} mm", color="white", fontsize=7)


def contact_sheet(images, *, labels=None, columns=6, path=None, dpi=100):
    """Thumbnails of many QC pictures on one page (one per scan).

    Parameters
    ----------
    images : sequence of path-like or (H, W[, 3|4]) arrays
        PNG files (e.g. per-scan montages) or image arrays.
    labels : sequence of str, optional
        A caption per thumbnail (e.g. scan id and status).
    columns : int
    path : path-like, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.image import imread

    images = list(images)
    labels = list(labels) if labels is not None else [""] * len(images)
    if len(labels) != len(images):
        raise ValueError("labels and images differ in length")
    n = max(len(images), 1)
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    figure = _figure(2.4 * columns, 2.6 * rows, dpi)
    for index, (item, label) in enumerate(zip(images, labels)):
        ax = figure.add_subplot(rows, columns, index + 1)
        ax.set_axis_off()
        picture = imread(item) if isinstance(item, (str, Path)) else np.asarray(item)
        ax.imshow(picture)
        ax.set_title(label, fontsize=7)
    if not images:
        ax = figure.add_subplot(1, 1, 1)
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no QC pictures", ha="center", va="center")
    return _save(figure, path)


def trajectories(table, *, measure, x="visit", value="value", group="subject",
                 unit=None, path=None, dpi=100):
    """One line per subject: a measure across visits.

    Parameters
    ----------
    table : pandas.DataFrame or dict of columns
        Tidy rows with at least the ``group``, ``x``, ``value`` and a ``measure`` column.
    measure : str
        The measure to plot (rows whose "measure" column equals it).
    x, value, group : str
        Column names; ``x`` values keep their order of first appearance.
    unit : str, optional
        Axis label unit.
    path : path-like, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> rows = {"subject": ["a", "a", "b", "b"], "visit": ["base", "ai", "base", "ai"],
    ...         "measure": ["Conn.D"] * 4, "value": [4.0, 3.0, 5.0, 4.5]}
    >>> figure = trajectories(rows, measure="Conn.D", unit="1/mm³")
    >>> len(figure.axes[0].lines)
    2
    """
    import pandas as pd

    frame = pd.DataFrame(table)
    frame = frame[frame["measure"] == measure]
    order = list(dict.fromkeys(frame[x]))
    figure = _figure(4.5, 3.2, dpi)
    ax = figure.add_subplot(1, 1, 1)
    for name, rows in frame.groupby(group, sort=True):
        rows = rows.assign(_position=rows[x].map(order.index)).sort_values("_position")
        ax.plot(rows["_position"], rows[value], marker="o", label=str(name))
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([str(o) for o in order])
    ax.set_ylabel(f"{measure} ({unit})" if unit else measure)
    ax.set_title(measure)
    if frame[group].nunique() <= 12:
        ax.legend(fontsize=7, frameon=False)
    figure.tight_layout()
    return _save(figure, path)
