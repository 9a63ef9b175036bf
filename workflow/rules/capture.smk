# Real workloads: a program's memory trace recorded on this machine by `memtrace record`
# and ingested (reduced by the exact LRU filter) into traces/{workload}.parquet.


rule capture_trace:
    input:
        stdin=capture_stdin,
        # An input, not a param: a changed script re-records.
        script=repo_path("workflow/scripts/capture-memtrace.sh"),
    output:
        "traces/{workload}.parquet",
    log:
        "logs/traces/{workload}.log",
    benchmark:
        "logs/benchmarks/traces/{workload}.tsv"
    wildcard_constraints:
        workload=one_of(CAPTURED),
    conda:
        "../envs/balloonreplay.yaml"
    resources:
        mem_mb=2000,
        # The raw recording lives in a scratch directory until it is ingested.
        disk_mb=4000,
    params:
        memtrace=MEMTRACE,
        cli=BALLOONREPLAY,
        scratch="traces/.capture-{workload}",
        vm_mem=lambda wildcards: WORKLOADS[wildcards.workload]["capture"]["vm_mem"],
        lru=lambda wildcards: WORKLOADS[wildcards.workload]["capture"].get(
            "lru_filter_pages", 0
        ),
        stdin=lambda wildcards, input: input.stdin or "-",
        command=capture_command,
    shell:
        "bash {input.script:q} {params.memtrace:q} {params.cli:q} {params.scratch:q}"
        " {output:q} {params.vm_mem:q} {params.lru} {params.stdin:q} {params.command}"
        " 2> {log:q}"
