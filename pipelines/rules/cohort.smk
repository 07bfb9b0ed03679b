# Per cohort: the tables, one trajectory plot per measure, a contact sheet of all montages.
# These jobs are light (tables and pictures), so on a cluster they run where Snakemake runs.


localrules:
    cohort_tables,
    trajectories,
    contact_sheet,


rule cohort_tables:
    input:
        metrics=scan_outputs("metrics.json"),
        changes=comparison_outputs("change.tsv"),
        memories=comparison_outputs("memory.tsv"),
        registrations=comparison_outputs("registration.tsv"),
        remodellings=comparison_outputs("remodelling.tsv"),
        connections=comparison_outputs("connections.tsv"),
    output:
        metrics=report(
            "results/metrics.tsv",
            caption="../report/metrics.rst",
            category="Metrics",
        ),
        units="results/units.tsv",
        longitudinal=report(
            "results/longitudinal.tsv",
            caption="../report/longitudinal.rst",
            category="Longitudinal",
        ),
        memory=report(
            "results/memory.tsv",
            caption="../report/memory.rst",
            category="Longitudinal",
        ),
        registration="results/registration.tsv",
        remodelling="results/remodelling.tsv",
        connections=report(
            "results/connections.tsv",
            caption="../report/connections.rst",
            category="Longitudinal",
        ),
    log:
        "logs/cohort/tables.log",
    conda:
        "../envs/microarch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/collect_cohort.py"


rule trajectories:
    input:
        "results/longitudinal.tsv",
    output:
        report(
            directory("results/trajectories"),
            patterns=["{measure}.png"],
            caption="../report/trajectory.rst",
            category="Longitudinal",
            subcategory="Trajectories",
            labels={"measure": "{measure}"},
        ),
    log:
        "logs/cohort/trajectories.log",
    conda:
        "../envs/microarch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        measures=config["cohort"]["trajectories"],
    script:
        "../scripts/plot_trajectories.py"


rule contact_sheet:
    input:
        montages=scan_outputs("qc.png"),
        metrics=scan_outputs("metrics.json"),
    output:
        report(
            "results/qc/contact_sheet.png",
            caption="../report/contact_sheet.rst",
            category="QC",
            subcategory="Cohort",
        ),
    log:
        "logs/cohort/contact_sheet.log",
    conda:
        "../envs/microarch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        columns=config["qc"]["columns"],
    script:
        "../scripts/contact_sheet.py"
