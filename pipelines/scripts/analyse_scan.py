"""Analyse one scan: read, segment, measure, maps, QC montage, metrics JSON with status."""
# ruff: noqa: F821  (`snakemake` is injected by Snakemake's script directive)

from microarch._shared.threads import limit
from microarch.workflow import analyse_scan, job_log

with job_log(snakemake.log[0]):
    limit(snakemake.threads)
    analyse_scan(
        snakemake.input.scan,
        scan_id=snakemake.wildcards.scan_id,
        metrics=snakemake.output.metrics,
        montage=snakemake.output.montage,
        images=snakemake.output.images,
        mask=snakemake.input.get("mask"),
        spacing=snakemake.params.spacing,
        info=snakemake.params.info,
        segmentation=snakemake.params.segmentation,
        measure=snakemake.params.measure,
        qc=snakemake.params.qc,
        on_error=snakemake.params.on_error,
    )
