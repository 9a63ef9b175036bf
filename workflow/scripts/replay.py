"""Snakemake glue: replay one run (balloonreplay.experiments.run_point); stderr to the log."""

import os
import sys

sm = snakemake  # noqa: F821 (snakemake is injected)
# One job per core: numba must not start more threads than the job was given.
os.environ["NUMBA_NUM_THREADS"] = str(sm.threads)

from balloonreplay.config_check import check_run_vms  # noqa: E402 (after NUMBA_NUM_THREADS)
from balloonreplay.errors import BalloonreplayError  # noqa: E402
from balloonreplay.experiments import run_point  # noqa: E402

# Left open: a traceback raised at exit must still reach the log.
sys.stderr = open(sm.log[0], "w", buffering=1)  # noqa: SIM115
try:
    # What the load could not check: per-VM settings against the VMs of a trace that
    # only its data tells (an ingested CSV's vm column, say).
    check_run_vms(sm.config["experiments"], sm.params.run, sm.input.trace)
    run_point(sm.params.run, sm.input.trace, sm.output[0])
except BalloonreplayError as exc:
    # One line naming what to fix, as the balloonreplay command reports it; a traceback
    # would bury it (and a bug, raising anything else, still gets one).
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)
