"""Compare the visits of one subject at one site (registration, common region, memory)."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake's script directive)

from microarch._shared.threads import limit
from microarch.workflow import compare_subject, job_log

with job_log(snakemake.log[0]):
    limit(snakemake.threads)
    compare_subject(
        snakemake.params.visits,
        scans=snakemake.input.scans,
        metrics=snakemake.input.metrics,
        images=snakemake.input.images,
        subject=snakemake.wildcards.subject,
        site=snakemake.wildcards.site,
        change=snakemake.output.change,
        memory=snakemake.output.memory,
        registration=snakemake.output.registration,
        remodelling=snakemake.output.remodelling,
        connections=snakemake.output.connections,
        summary=snakemake.output.summary,
        figure=snakemake.output.figure,
        longitudinal=snakemake.params.longitudinal,
        on_error=snakemake.params.on_error,
    )
