# Per subject and site: register the visits, common region, change, skeletal memory.
# Failed scans are left out; the comparison runs wherever two usable visits remain.


rule compare_subject:
    input:
        unpack(subject_input),
    output:
        change="results/subjects/{subject}/{site}/change.tsv",
        memory="results/subjects/{subject}/{site}/memory.tsv",
        registration="results/subjects/{subject}/{site}/registration.tsv",
        remodelling="results/subjects/{subject}/{site}/remodelling.tsv",
        connections="results/subjects/{subject}/{site}/connections.tsv",
        summary="results/subjects/{subject}/{site}/comparison.json",
        figure=report(
            "results/subjects/{subject}/{site}/registration.png",
            caption="../report/registration.rst",
            category="Longitudinal",
            subcategory="Registration",
            labels={"subject": "{subject}", "site": "{site}"},
        ),
    log:
        "logs/subjects/{subject}_{site}.log",
    benchmark:
        "logs/benchmarks/subjects/{subject}_{site}.tsv"
    group:
        "subjects"
    conda:
        "../envs/microarch.yaml"
    threads: 1
    resources:
        mem_mb=subject_mem_mb,
        runtime=subject_runtime,
    params:
        visits=subject_visits,
        longitudinal=config["longitudinal"],
        on_error=config["on_error"],
    script:
        "../scripts/compare_subject.py"
