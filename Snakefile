# microarch: HR-pQCT bone microarchitecture of a cohort, from scanner files to tables,
# maps, QC pictures, longitudinal change and skeletal-memory indices.
#
#   snakemake --cores 2                     # the demo cohort in sample_data/
#   snakemake --cores 8 --configfile my.yaml
#   snakemake --report report.html          # after a run
#
# Configuration: config/config.yaml and config/samples.tsv (see config/README.md).
# Outputs go to results/ and logs/ under the working directory (--directory).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "pipelines/report/workflow.rst"


include: "pipelines/rules/common.smk"
include: "pipelines/rules/scan.smk"
include: "pipelines/rules/subject.smk"
include: "pipelines/rules/cohort.smk"


rule all:
    default_target: True
    input:
        cohort_targets(),
