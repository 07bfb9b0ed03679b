"""Draw each measure across visits, one line per subject (values in the common region)."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake's script directive)

from microarch._shared.threads import limit
from microarch.workflow import job_log, plot_trajectories

with job_log(snakemake.log[0]):
    limit(snakemake.threads)
    plot_trajectories(snakemake.input[0], measures=snakemake.params.measures,
                      folder=snakemake.output[0])
