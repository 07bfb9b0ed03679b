"""Gather every scan's metrics and every subject's tables into the cohort tables."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake's script directive)

from microarch._shared.threads import limit
from microarch.workflow import collect_cohort, job_log

with job_log(snakemake.log[0]):
    limit(snakemake.threads)
    collect_cohort(
        snakemake.input.metrics,
        changes=snakemake.input.changes,
        memories=snakemake.input.memories,
        registrations=snakemake.input.registrations,
        remodellings=snakemake.input.remodellings,
        connections=snakemake.input.connections,
        metrics_path=snakemake.output.metrics,
        longitudinal_path=snakemake.output.longitudinal,
        memory_path=snakemake.output.memory,
        registration_path=snakemake.output.registration,
        remodelling_path=snakemake.output.remodelling,
        connections_path=snakemake.output.connections,
        units_path=snakemake.output.units,
    )
