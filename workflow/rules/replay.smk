# Replays: one job per experiment x policy x sweep point, the baselines the SLO compares
# against, and the search that refines a VM-count sweep until the SLO boundary is known
# to one VM. The run itself is balloonreplay.experiments.run_point.


# numba compiles the engine's kernels once into its on-disk cache; every replay waits for
# this job, so parallel replays load the cache instead of all compiling at once.
rule warm_numba_cache:
    output:
        "results/.numba-cache-warm",
    log:
        "logs/numba-cache-warm.log",
    benchmark:
        "logs/benchmarks/numba-cache-warm.tsv"
    conda:
        "../envs/balloonreplay.yaml"
    params:
        python=sys.executable,
    shell:
        "{params.python:q} -c 'from balloonreplay.replay import warm_up; warm_up()'"
        " 2> {log:q} && touch {output:q}"


rule replay:
    input:
        trace=run_trace,
        # ancient(): a newer cache stamp must not make finished runs stale.
        warm=ancient("results/.numba-cache-warm"),
    output:
        "results/runs/{experiment}/{policy}/{point}.parquet",
    log:
        "logs/runs/{experiment}/{policy}/{point}.log",
    benchmark:
        "logs/benchmarks/runs/{experiment}/{policy}/{point}.tsv"
    conda:
        "../envs/balloonreplay.yaml"
    threads: 1
    resources:
        mem_mb=replay_resource("mem_mb", run_spec),
        runtime=replay_resource("runtime", run_spec),
        cpus_per_task=replay_resource("cpus_per_task", run_spec),
    params:
        run=run_spec,
    script:
        "../scripts/replay.py"


rule replay_baseline:
    input:
        trace=baseline_trace,
        warm=ancient("results/.numba-cache-warm"),
    output:
        "results/baselines/{experiment}/{point}.parquet",
    log:
        "logs/baselines/{experiment}/{point}.log",
    benchmark:
        "logs/benchmarks/baselines/{experiment}/{point}.tsv"
    conda:
        "../envs/balloonreplay.yaml"
    threads: 1
    resources:
        mem_mb=replay_resource("mem_mb", baseline_spec),
        runtime=replay_resource("runtime", baseline_spec),
        cpus_per_task=replay_resource("cpus_per_task", baseline_spec),
    params:
        run=baseline_spec,
    script:
        "../scripts/replay.py"


# Round r of the search: from the runs known so far, the VM counts that narrow the gap
# between the last count within the SLO and the first one outside it.
checkpoint refine_sweep:
    input:
        unpack(round_inputs),
    output:
        "results/sweeps/{experiment}/{policy}/{workload}.round{round}.json",
    log:
        "logs/sweeps/{experiment}/{policy}/{workload}.round{round}.log",
    benchmark:
        "logs/benchmarks/sweeps/{experiment}/{policy}/{workload}.round{round}.tsv"
    conda:
        "../envs/balloonreplay.yaml"
    params:
        max_points=max_points_per_round,
        slo=lambda wildcards: X.slo_slowdown(EXPERIMENTS[wildcards.experiment]),
    script:
        "../scripts/refine_sweep.py"


# All runs of one searched sweep, once its search has ended.
rule sweep_runs:
    input:
        unpack(sweep_inputs),
    output:
        "results/sweeps/{experiment}/{policy}/{workload}.runs.txt",
    log:
        "logs/sweeps/{experiment}/{policy}/{workload}.runs.log",
    benchmark:
        "logs/benchmarks/sweeps/{experiment}/{policy}/{workload}.runs.tsv"
    conda:
        "../envs/balloonreplay.yaml"
    shell:
        # {input} is the runs, then the baselines; named inputs would not format in a
        # dry run, where the search's checkpoints have not run yet.
        "printf '%s\\n' {input:q} > {output:q} 2> {log:q}"
