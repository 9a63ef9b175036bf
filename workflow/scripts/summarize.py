"""Snakemake glue: the study's summary and consolidation tables
(balloonreplay.summary.summarize_study), each experiment judged by its configured SLO."""

import sys

from balloonreplay.summary import (
    consolidation,
    consolidation_report,
    summarize_study,
    write_summary,
)

sm = snakemake  # noqa: F821 (snakemake is injected)
# Left open: a traceback raised at exit must still reach the log.
sys.stderr = open(sm.log[0], "w", buffering=1)  # noqa: SIM115
paths = list(sm.input.runs)
for listing in sm.input.sweeps:
    with open(listing) as fh:
        paths += [line.strip() for line in fh if line.strip()]
summary = summarize_study(paths, dict(sm.params.slo), absolute=list(sm.params.absolute))
ratios = consolidation(summary)
write_summary(summary, sm.output.summary)
write_summary(ratios, sm.output.consolidation)
for line in consolidation_report(summary, ratios, sm.output.summary):
    print(line, file=sys.stderr)
