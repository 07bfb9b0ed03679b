"""Pictures people look at instead of reading numbers: QC montages, contact sheets and
trajectory plots.

Everything draws on a private :class:`matplotlib.figure.Figure` (never pyplot's global
state), so it is safe in scripts, workers and Snakemake jobs, and returns the figure;
pass ``path=`` to also write a PNG.
"""

from microarch.qc._figures import contact_sheet, montage, trajectories

__all__ = ["contact_sheet", "montage", "trajectories"]
