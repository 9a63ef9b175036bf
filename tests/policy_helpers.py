"""Crafted snapshots for the host-policy tests: consistent defaults, override what matters."""

from __future__ import annotations

import numpy as np

from balloonreplay.policies import Snapshot

SECOND_NS = 1_000_000_000


def snapshot(
    config,
    host_pages: int,
    *,
    t_s: float = 1.0,
    epoch: int = 0,
    epoch_ns: int = SECOND_NS,
    balloon=None,
    free=None,
    resident=None,
    backed=None,
    shared=None,
    swapped=None,
    touched=None,
    free_backed=None,
    sampled=None,
    sampled_touched=None,
    accesses=None,
    guest_faults=None,
    guest_swap_out=None,
    overhead=None,
    host_used: int | None = None,
    host_free: int | None = None,
) -> Snapshot:
    """A snapshot whose unspecified fields agree with the given ones.

    Frames: resident = config - balloon - free. Backing: every resident page backed.
    Host: used = backed + shared + overhead unless `host_used` or `host_free` is given.
    """
    config = np.asarray(config, dtype=np.int64)
    n = len(config)

    def vec(value, default):
        if value is None:
            value = default
        return np.broadcast_to(np.asarray(value, dtype=np.int64), (n,)).copy()

    zeros = np.zeros(n, dtype=np.int64)
    balloon = vec(balloon, zeros)
    if resident is None and free is None:
        free = zeros
    if resident is None:
        resident = config - balloon - vec(free, zeros)
    resident = vec(resident, zeros)
    free = config - balloon - resident
    backed = vec(backed, resident)
    shared = vec(shared, zeros)
    overhead = vec(overhead, zeros)
    if host_free is not None:
        host_used = host_pages - host_free
    if host_used is None:
        host_used = int(backed.sum() + shared.sum() + overhead.sum())
    return Snapshot(
        epoch=epoch,
        t_ns=int(round(t_s * SECOND_NS)),
        epoch_ns=epoch_ns,
        host_pages=host_pages,
        host_used_pages=int(host_used),
        overhead_pages=overhead,
        config_pages=config,
        balloon_pages=balloon,
        balloon_target_pages=balloon.copy(),
        free_pages=free,
        resident_pages=resident,
        backed_pages=backed,
        shared_pages=shared,
        host_swapped_pages=vec(swapped, zeros),
        touched_pages=vec(touched, zeros),
        free_backed_pages=vec(free_backed, zeros),
        sampled_pages=vec(sampled, zeros),
        sampled_touched_pages=vec(sampled_touched, zeros),
        accesses=vec(accesses, zeros),
        guest_frees=zeros.copy(),
        guest_faults=vec(guest_faults, zeros),
        guest_swap_in=zeros.copy(),
        guest_swap_out=vec(guest_swap_out, zeros),
        host_swap_in=zeros.copy(),
        host_swap_out=zeros.copy(),
        blocked_ns=zeros.copy(),
        stall_ns=zeros.copy(),
        finished=np.zeros(n, dtype=bool),
    )


def start_snapshot(config, host_pages: int, **kwargs) -> Snapshot:
    """The snapshot before the first access: host time 0, nothing resident."""
    config = np.asarray(config, dtype=np.int64)
    kwargs.setdefault("free", config)
    return snapshot(config, host_pages, t_s=0.0, epoch=-1, **kwargs)
