"""Snakemake glue: one round of the SLO-boundary search (balloonreplay.summary.next_points)."""

import json
import sys

from balloonreplay.summary import consolidation_point, next_points, summarize_runs
from balloonreplay.traces.io import atomic_path

sm = snakemake  # noqa: F821 (snakemake is injected)
# Left open: a traceback raised at exit must still reach the log.
sys.stderr = open(sm.log[0], "w", buffering=1)  # noqa: SIM115
rows = summarize_runs(sm.input.runs, sm.input.baselines, {sm.wildcards.experiment: sm.params.slo})
within = {int(n): bool(w) for n, w in zip(rows.n_vms, rows.within_slo, strict=True)}
new = next_points(within, sm.params.max_points)
best, known = consolidation_point(within)
print(
    f"within SLO by VM count: {within}; boundary {best} (known: {known}); next: {new}",
    file=sys.stderr,
)
# Atomic (temporary file, then rename): a killed job never leaves a half-written round.
with atomic_path(sm.output[0]) as tmp, open(tmp, "w") as out:
    json.dump({"round": int(sm.wildcards.round), "within": within, "next_points": new}, out)
