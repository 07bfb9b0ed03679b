"""All scans' QC montages on one page, captioned with scan id and status."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake's script directive)

from microarch._shared.threads import limit
from microarch.workflow import contact_sheet, job_log

with job_log(snakemake.log[0]):
    limit(snakemake.threads)
    contact_sheet(snakemake.input.montages, snakemake.input.metrics,
                  path=snakemake.output[0], columns=snakemake.params.columns)
