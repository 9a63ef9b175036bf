# The study's tables and figures: results/summary.parquet (one row per run, with the
# consolidation ratio), results/consolidation.parquet (one row per experiment x workload
# x policy) and results/figures/*.png|pdf with a caption each for `snakemake --report`.


rule summarize:
    input:
        sweeps=sweep_lists(),
        runs=unsearched_files(),
    output:
        summary="results/summary.parquet",
        consolidation="results/consolidation.parquet",
    log:
        "logs/summarize.log",
    benchmark:
        "logs/benchmarks/summarize.tsv"
    conda:
        "../envs/balloonreplay.yaml"
    resources:
        mem_mb=2000,
    params:
        # Applied here, not recorded by each replay: another SLO reruns no replay.
        slo={name: X.slo_slowdown(EXPERIMENTS[name]) for name in sorted(EXPERIMENTS)},
        # slo: {baseline: none}: judged by the absolute slowdown, even where a run of
        # policy none would serve as the baseline.
        absolute=sorted(
            name for name in EXPERIMENTS if not X.needs_baseline(EXPERIMENTS[name])
        ),
    script:
        "../scripts/summarize.py"


rule figures:
    input:
        summary="results/summary.parquet",
        consolidation="results/consolidation.parquet",
        timeline=timeline_run(),
        # Its figure counts guest faults per epoch (after the warm-up and the balloon's
        # inflation), so it reads the balloon-equivalence runs, not just their totals.
        balloon_runs=[
            run_path(run)
            for run in X.role_runs(
                EXPERIMENTS, FIGURE_ROLES.get("balloon_equivalence")
            )
        ],
    output:
        swap_traffic=report(
            "results/figures/swap_traffic.png",
            caption="../report/swap_traffic.rst",
            category="Figures",
        ),
        consolidation=report(
            "results/figures/consolidation.png",
            caption="../report/consolidation.rst",
            category="Figures",
        ),
        timeline=report(
            "results/figures/timeline.png",
            caption="../report/timeline.rst",
            category="Figures",
        ),
        sharing=report(
            "results/figures/sharing.png",
            caption="../report/sharing.rst",
            category="Figures",
        ),
        balloon_equivalence=report(
            "results/figures/balloon_equivalence.png",
            caption="../report/balloon_equivalence.rst",
            category="Figures",
        ),
        double_paging=report(
            "results/figures/double_paging.png",
            caption="../report/double_paging.rst",
            category="Figures",
        ),
        pdf=expand("results/figures/{figure}.pdf", figure=FIGURES),
    log:
        "logs/figures.log",
    benchmark:
        "logs/benchmarks/figures.tsv"
    conda:
        "../envs/balloonreplay.yaml"
    resources:
        mem_mb=2000,
    params:
        roles=X.canonical(X.figure_roles(FIGURE_ROLES, EXPERIMENTS)),
        out_dir=lambda wildcards, output: os.path.dirname(output.swap_traffic),
    script:
        "../scripts/figures.py"


# The paper study (config/paper.yaml) in its own directory, paper/: a nested Snakemake run
# of this workflow, so the default study's results/ stay as they are.
rule paper:
    input:
        config=repo_path("config/paper.yaml"),
        # What the paper config uses: the nested run is started only if one has changed.
        used=config_inputs(repo_path("config/paper.yaml")),
    output:
        "paper/results/summary.parquet",
        "paper/results/consolidation.parquet",
        expand(
            "paper/results/figures/{figure}.{ext}", figure=FIGURES, ext=["png", "pdf"]
        ),
    log:
        "logs/paper.log",
    benchmark:
        "logs/benchmarks/paper.tsv"
    conda:
        "../envs/balloonreplay.yaml"
    # Asked for only when the paper target is: a SLURM run (no --cores) still parses.
    threads: lambda wildcards: workflow.cores
    params:
        snakemake=os.path.join(os.path.dirname(sys.executable), "snakemake"),
        snakefile=workflow.main_snakefile,
    shell:
        "{params.snakemake:q} --cores {threads} --snakefile {params.snakefile:q}"
        " --configfile {input.config:q} --directory paper --rerun-incomplete 2> {log:q}"
