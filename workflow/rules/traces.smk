# Canonical traces: traces/{workload}.parquet, generated from a workload spec or
# ingested from a file in any installed format.


rule generate_trace:
    input:
        spec=generator_spec,
    output:
        "traces/{workload}.parquet",
    log:
        "logs/traces/{workload}.log",
    benchmark:
        "logs/benchmarks/traces/{workload}.tsv"
    wildcard_constraints:
        workload=one_of(GENERATED),
    conda:
        "../envs/balloonreplay.yaml"
    resources:
        mem_mb=2000,
    params:
        cli=BALLOONREPLAY,
        seed=generator_seed,
        flags=generator_flags,
    shell:
        "{params.cli:q} generate {input.spec:q} --seed {params.seed} {params.flags}"
        " -o {output:q} --quiet 2> {log:q}"


rule ingest_trace:
    input:
        source=ingest_source,
    output:
        "traces/{workload}.parquet",
    log:
        "logs/traces/{workload}.log",
    benchmark:
        "logs/benchmarks/traces/{workload}.tsv"
    wildcard_constraints:
        workload=one_of(INGESTED),
    conda:
        "../envs/balloonreplay.yaml"
    resources:
        mem_mb=2000,
        runtime=ingest_runtime_min,
    params:
        cli=BALLOONREPLAY,
        flags=ingest_flags,
    shell:
        "{params.cli:q} ingest {input.source:q} {params.flags}"
        " -o {output:q} --quiet 2> {log:q}"
