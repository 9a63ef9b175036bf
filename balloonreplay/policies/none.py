"""The null host policy: no balloon targets, no proactive host swapping.

The host swaps (by its configured selection, random by default) only when it is actually
full and a VM needs a machine page; page sharing scans at the configured rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from balloonreplay.policies import HostPolicy


class NonePolicy(HostPolicy):
    name = "none"
    description = "no balloon targets; host swaps only when full"

    @dataclass
    class Params:
        pass
