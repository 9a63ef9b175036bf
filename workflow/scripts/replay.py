"""Snakemake glue: replay one run (balloonreplay.experiments.run_point); stderr to the log."""

import os
import sys

sm = snakemake  # noqa: F821 (snakemake is injected)
# One job per core: numba must not start more threads than the job was given.
os.environ["NUMBA_NUM_THREADS"] = str(sm.threads)

from balloonreplay.experiments import run_point  # noqa: E402 (after NUMBA_NUM_THREADS)

# Left open: a traceback raised at exit must still reach the log.
sys.stderr = open(sm.log[0], "w", buffering=1)  # noqa: SIM115
run_point(sm.params.run, sm.input.trace, sm.output[0])
