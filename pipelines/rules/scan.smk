# Per scan: read -> segment -> measure -> maps -> QC montage -> metrics JSON.
# One job per scan: the scan is read once and its masks stay in memory between stages.
# A scan that fails writes a status record and a picture saying why; it never fails the
# job (unless on_error: raise), so the rest of the cohort and the tables complete.


rule analyse_scan:
    input:
        unpack(scan_input),
    output:
        metrics="results/scans/{scan_id}/metrics.json",
        montage=report(
            "results/scans/{scan_id}/qc.png",
            caption="../report/montage.rst",
            category="QC",
            subcategory="Scans",
            labels=montage_labels,
        ),
        images=directory("results/scans/{scan_id}/images"),
    log:
        "logs/scans/{scan_id}.log",
    benchmark:
        "logs/benchmarks/scans/{scan_id}.tsv"
    group:
        "scans"
    conda:
        "../envs/microarch.yaml"
    threads: 1
    resources:
        mem_mb=scan_mem_mb,
        runtime=scan_runtime,
    params:
        info=scan_info,
        spacing=scan_spacing,
        segmentation=config["segmentation"],
        measure=config["measure"],
        qc=config["qc"],
        on_error=config["on_error"],
    script:
        "../scripts/analyse_scan.py"
