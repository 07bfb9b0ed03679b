"""The library side of the microarch Snakemake workflow and of the ``microarch`` command.

The rule scripts in ``pipelines/scripts/`` are thin: each unpacks the ``snakemake``
object and calls one function from here, so everything the workflow does is importable,
testable and usable without Snakemake.

Per scan
    `analyse_scan` reads a scan, segments it, measures it (trabecular, plate/rod,
    density, cortical), writes maps, a QC montage and a metrics JSON with provenance
    and a status (``"ok"`` or ``"failed"`` with the stage and the reason). A scan that
    cannot be read or segmented yields a status record, never an exception.
Per subject
    `compare_subject` registers the visits of one subject at one site, re-measures them
    in their common region and writes change, skeletal-memory and registration tables
    (through :func:`microarch.longitudinal.compare_visits`); failed visits are left out.
Per cohort
    `collect_cohort` gathers the per-scan and per-subject outputs into cohort tables;
    `plot_trajectories` and `contact_sheet` draw the cohort figures.
Sample sheets and configuration
    `read_samples` validates a sample sheet and reports every problem at once, by row
    (`SampleSheetError`); `guess_samples` and `init_config` write a sheet from a folder
    of scans; `load_config` reads and validates a workflow configuration.
Finding the workflow
    `workflow_dir`, `snakefile` and `schema_path` locate the Snakefile, ``pipelines/``
    and ``config/``: the checkout first, then the copy packaged in the wheel.

Submodules load on first use, so ``import microarch.workflow`` stays cheap (no numba,
pandas or Snakemake at import).
"""

from microarch._shared.lazy import lazy_exports

# public name -> private module that defines it
_EXPORTS = {
    "workflow_dir": "_paths",
    "snakefile": "_paths",
    "schema_path": "_paths",
    "default_config_path": "_paths",
    "SampleSheetError": "_samples",
    "read_samples": "_samples",
    "check_samples": "_samples",
    "parse_spacing": "_samples",
    "SAMPLE_COLUMNS": "_samples",
    "ROLES": "_samples",
    "ConfigError": "_config",
    "load_config": "_config",
    "validate_config": "_config",
    "analyse_scan": "_scan",
    "measure_scan": "_scan",
    "ScanResult": "_scan",
    "read_compartments": "_scan",
    "compare_subject": "_subject",
    "collect_cohort": "_cohort",
    "plot_trajectory": "_cohort",
    "plot_trajectories": "_cohort",
    "contact_sheet": "_cohort",
    "MEMORY_COLUMNS": "_cohort",
    "LONGITUDINAL_COLUMNS": "_cohort",
    "guess_samples": "_init_config",
    "init_config": "_init_config",
    "provenance": "_provenance",
    "checksum": "_provenance",
    "job_log": "_logging",
    "measure_slug": "_records",
    "unit_of": "_records",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
