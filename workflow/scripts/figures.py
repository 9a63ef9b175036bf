"""Snakemake glue: the study's six figures (balloonreplay.plots.study_figures)."""

import sys

from balloonreplay.plots import study_figures

sm = snakemake  # noqa: F821 (snakemake is injected)
# Left open: a traceback raised at exit must still reach the log.
sys.stderr = open(sm.log[0], "w", buffering=1)  # noqa: SIM115
study_figures(
    sm.input.summary,
    sm.input.consolidation,
    sm.input.timeline[0] if sm.input.timeline else None,
    dict(sm.params.roles),
    sm.params.out_dir,
    balloon_runs=list(sm.input.balloon_runs),
)
