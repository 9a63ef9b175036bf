"""VMware ESX Server's memory allocation and reclamation (Waldspurger, OSDI 2002).

Allocation: min-funding revocation with an idle memory tax (section 5). A VM with S
shares holding P pages, a fraction f of them active, pays

    rho = S / (P * (f + k * (1 - f))),    k = 1 / (1 - tau),

shares per page; memory is taken from the VM paying least. Taken to its fixed point, every
VM above its reservation and below its limit pays the same rho, which is what
:meth:`EsxPolicy.allocate` solves for. With tau = 0 this is pure proportional share; the
default tau = 0.75 (``Mem.IdleTax``) charges an idle page 4 times an active one.

Working sets (section 5.3): every sampling period (30 s in the paper, ``Mem.SamplePeriod``
later defaults to 60 s) 100 random pages of each VM are watched (the engine draws them
with the run's seeded PRNG and reports how many were touched: ``Decision.sample_pages``,
``Snapshot.sampled_touched_pages``); the touched fraction feeds a fast and a slow
exponentially weighted moving average and f is their maximum (and that of the fast
average updated with the period in progress), so an estimate rises quickly and falls
slowly. The sample is drawn from all of the VM's configured frames, so the touched
fraction times configured memory estimates its active pages, and f is that over the
pages it holds. Draws are with replacement (ESX watches distinct pages; the difference
matters only for VMs of a few hundred pages).

Reclamation (section 6.3): four free-memory states. Below 4% free the host is *soft* and
balloons VMs toward their targets; below 2% it is *hard* and also swaps pages out itself
(at random); below 1% it is *low*: ESX keeps swapping and blocks the execution of every VM
above its target. The model does less in the low state: the policy forbids on-demand host
swapping for the VMs holding more than their targets (``allow_host_swap`` per VM), and the
engine consults that only when a frame needs a machine page and the host has none free
(reference.py: a VM not allowed to make the host swap blocks). So between 1% and 0% free
those VMs keep running and keep taking machine pages from what is left; once the host is
full, such a VM blocks at an access that needs a machine page (a fault on an unbacked
frame, a host swap-in, a COW break) until memory frees, while its hits to frames in
memory still run; the VMs at or below their targets make the host swap for them. The
hard state's swapping (back to the soft threshold) goes on every epoch meanwhile, and an
engine *emergency* quantum lets the host swap for anyone (README, "What it models").
Blocking them from 1% on, as ESX does, would need a decision the engine lacks: one that
stops a VM's accesses (hits included) until the policy lets it run again. The way back up
has hysteresis: a state is left only when free memory reaches the threshold of the
state above (soft -> high at 6%). Targets are recomputed every 15 s, or at once when the
state gets worse. Page sharing scans 50 pages/s per VM within 200 pages/s for the host
(``Mem.ShareScanVM``, ``Mem.ShareScanTotal``): min(50 x VMs, 200) pages/s split evenly
over the VMs, in whole pages/s, the leftover rotating over them epoch by epoch
(:meth:`EsxPolicy.scan_rates`); the scan rates take effect when the replay
runs with page sharing on (``sharing=True``), which a policy cannot switch on itself. Which
pages the host swaps is the replay's host selection (``random``, as ESX does, by default).

"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from balloonreplay.errors import ConfigError
from balloonreplay.policies import (
    SAMPLE_DRAWS_ANY_VM,
    SAMPLE_DRAWS_PER_FRAME,
    Decision,
    HostPolicy,
    Snapshot,
)
from balloonreplay.policies._util import (
    PeriodicTimer,
    check_non_negative,
    check_period,
    check_within,
    consumed_pages,
    guest_budget_pages,
    per_vm,
    solve_level,
    split_proportionally,
)
from balloonreplay.units import PAGE_SIZE_BYTES

HIGH, SOFT, HARD, LOW = 0, 1, 2, 3
STATE_NAMES = ("high", "soft", "hard", "low")
PAGES_PER_MIB = (1 << 20) // PAGE_SIZE_BYTES


class EsxPolicy(HostPolicy):
    name = "esx"
    description = "VMware ESX: shares with idle memory tax, sampled working sets, free states"
    wants_sharing = True

    @dataclass
    class Params:
        # Idle memory tax rate tau in [0, 1): ESX Mem.IdleTax default 75%.
        tax: float = 0.75
        # Per-VM shares (list, "a/b/c" on the CLI); None = ESX "normal" shares, 10 per MiB
        # of configured memory (ESX Server resource management guide).
        shares: list[int] | None = None
        # Per-VM reservation (guaranteed minimum) in pages; None = 0 (ESX default).
        reservation_pages: list[int] | None = None
        # Per-VM limit in pages; None = configured memory (ESX default: unlimited).
        limit_pages: list[int] | None = None
        # Working-set sampling: 100 pages per period (Waldspurger 2002, section 5.3).
        sample_pages: int = 100
        # Sampling period: 30 s in the paper; later ESX Mem.SamplePeriod defaults to 60 s.
        sample_period_s: float = 30.0
        # Gains of the fast and slow moving averages. Not published; chosen so the fast
        # one follows a change within about two periods and the slow one over about ten.
        fast_gain: float = 0.5
        slow_gain: float = 0.1
        # Target reallocation period: 15 s (ESX Server resource management guide).
        realloc_period_s: float = 15.0
        # Free-memory state thresholds, % of host memory (Waldspurger 2002, section 6.3).
        high_free_percent: float = 6.0
        soft_free_percent: float = 4.0
        hard_free_percent: float = 2.0
        low_free_percent: float = 1.0
        # Largest balloon, % of a VM's memory: ESX Mem.CtlMaxPercent default 65.
        balloon_max_percent: float = 65.0
        # Page-sharing scan rates: Mem.ShareScanVM 50 pages/s, Mem.ShareScanTotal 200 pages/s
        # (ESX Server 2/3).
        share_scan_vm_pages_per_s: int = 50
        share_scan_total_pages_per_s: int = 200

    def __init__(self, params=None):
        super().__init__(params)
        self.state = HIGH
        self.active_fraction: np.ndarray | None = None  # f per VM, None before a sample
        self.fast: np.ndarray | None = None
        self.slow: np.ndarray | None = None
        self.target_pages: np.ndarray | None = None  # allocation targets (machine pages)
        self.shares: np.ndarray | None = None
        self._sample_timer = PeriodicTimer(self.params.sample_period_s)
        self._realloc_timer = PeriodicTimer(self.params.realloc_period_s)
        self._state_at_realloc = HIGH
        self._balloon_targets: np.ndarray | None = None
        self._scan_cursor = 0  # the VM whose turn it is for a leftover page/s (scan_rates)

    # -- set-up ---------------------------------------------------------------------

    def check_params(self) -> None:
        p = self.params
        if not 0.0 <= p.tax < 1.0:
            raise ConfigError("policy.tax", f"the idle tax must be within [0, 1), got {p.tax}")
        if not (
            100
            >= p.high_free_percent
            >= p.soft_free_percent
            >= p.hard_free_percent
            >= p.low_free_percent
            >= 0
        ):
            raise ConfigError(
                "policy.high_free_percent",
                "need 100 >= high >= soft >= hard >= low >= 0 free-memory thresholds",
            )
        if p.sample_pages < 1:
            raise ConfigError("policy.sample_pages", "must be at least 1")
        check_period(p, "sample_period_s", "the sampling period")
        check_period(p, "realloc_period_s", "the reallocation period")
        for key in ("fast_gain", "slow_gain"):
            # A gain of 0 freezes an average; above 1 it overshoots and can leave 0..1.
            if not 0 < getattr(p, key) <= 1:
                raise ConfigError(
                    f"policy.{key}",
                    f"a moving average's gain must be within (0, 1], got {getattr(p, key)}",
                )
        check_within(p, "balloon_max_percent", 0.0, 100.0)
        check_within(p, "share_scan_vm_pages_per_s", 0, None)
        check_within(p, "share_scan_total_pages_per_s", 0, None)
        check_non_negative(p, ("shares", "reservation_pages", "limit_pages"))

    def _setup(self, snapshot: Snapshot) -> None:
        self.check_params()
        p = self.params
        n = snapshot.num_vms
        config = snapshot.config_pages.astype(np.int64)
        self.shares = per_vm(p.shares, n, 10 * config / PAGES_PER_MIB, "shares", np.float64)
        self.shares = np.maximum(self.shares, 1e-9)  # zero shares: last to keep memory
        self.reservation = per_vm(p.reservation_pages, n, 0, "reservation_pages")
        self.limit = np.minimum(per_vm(p.limit_pages, n, config, "limit_pages"), config)
        # What the engine lets a sample draw (Decision.sample_pages), checked here by name.
        most = int(np.maximum(SAMPLE_DRAWS_PER_FRAME * config, SAMPLE_DRAWS_ANY_VM).min())
        if p.sample_pages > most:
            raise ConfigError(
                "policy.sample_pages",
                f"a sample draws at most max({SAMPLE_DRAWS_PER_FRAME} x the VM's frames, "
                f"{SAMPLE_DRAWS_ANY_VM}) pages: {most} for the smallest VM here, got "
                f"{p.sample_pages}",
            )
        if np.any(self.reservation > self.limit):
            raise ConfigError("policy.reservation_pages", "a reservation exceeds its VM's limit")
        self._balloon_targets = np.zeros(n, dtype=np.int64)

    def start(self, snapshot: Snapshot) -> Decision:
        self._setup(snapshot)
        self._sample_timer.due(snapshot.t_ns)
        self._realloc_timer.due(snapshot.t_ns)
        return Decision(
            balloon_target_pages=self._balloon_targets.copy(),
            allow_host_swap=True,
            scan_rate_pages_per_s=self.scan_rates(snapshot.num_vms),
            sample_pages=self._sample_sizes(snapshot.num_vms),
        )

    def _sample_sizes(self, num_vms: int) -> np.ndarray:
        return np.full(num_vms, self.params.sample_pages, dtype=np.int64)

    def scan_rates(self, num_vms: int) -> np.ndarray:
        """Page-sharing scan rates: the host scans min(per-VM rate x VMs, host total)
        pages/s, split evenly over the VMs.

        The engine takes whole pages/s, so when the total does not divide evenly the
        leftover pages/s go one each to the next VMs in turn, continuing at the next
        call (each epoch): every VM then averages total / VMs over time, and the host's
        total is exact at every epoch, also with more VMs than pages/s (ESX scans them
        all, each more slowly; a plain integer division gave such VMs nothing).
        """
        p = self.params
        if num_vms == 0:
            return np.zeros(0, dtype=np.int64)
        total = min(p.share_scan_vm_pages_per_s * num_vms, p.share_scan_total_pages_per_s)
        even = split_proportionally(
            total, np.ones(num_vms), caps=np.full(num_vms, p.share_scan_vm_pages_per_s)
        )
        # split_proportionally gives the leftover to the lowest VM indices; rotate it.
        leftover = total % num_vms
        rates = np.roll(even, self._scan_cursor)
        self._scan_cursor = (self._scan_cursor + leftover) % num_vms
        return rates.astype(np.int64)

    # -- working sets ------------------------------------------------------------------

    def _sampled_fraction(self, snapshot: Snapshot) -> np.ndarray:
        """Active fraction f of the pages each VM holds, from the engine's sample: the
        touched share of the sampled frames, times configured memory, over held pages.
        NaN for a VM without a sample (nothing to estimate from)."""
        sampled = snapshot.sampled_pages.astype(np.float64)
        touched = np.divide(
            snapshot.sampled_touched_pages,
            sampled,
            out=np.full(len(sampled), np.nan),
            where=sampled > 0,
        )
        active_pages = touched * snapshot.config_pages
        held = np.maximum(consumed_pages(snapshot), 1)
        return np.minimum(active_pages / held, 1.0)

    def _sample(self, snapshot: Snapshot) -> None:
        """A period ended: feed its sampled fraction to the moving averages (of the VMs
        that had a sample; the others keep their estimate, 1 before any)."""
        p = self.params
        sampled = self._sampled_fraction(snapshot)
        seen = ~np.isnan(sampled)
        if not seen.any():
            return
        if self.fast is None:
            self.fast = np.where(seen, sampled, 1.0)
            self.slow = self.fast.copy()
        else:
            self.fast[seen] += p.fast_gain * (sampled[seen] - self.fast[seen])
            self.slow[seen] += p.slow_gain * (sampled[seen] - self.slow[seen])
        # Rise fast, fall slowly.
        self.active_fraction = np.maximum(self.fast, self.slow)

    def _include_current_period(self, snapshot: Snapshot) -> None:
        """The paper's third average: the fast one updated with the current, unfinished
        period's sample so far, so a working set that grows is seen before the period
        ends. It can only raise the estimate."""
        if self.fast is None:
            return
        partial = self._sampled_fraction(snapshot)
        updated = self.fast + self.params.fast_gain * (np.nan_to_num(partial, nan=0.0) - self.fast)
        self.active_fraction = np.maximum(np.maximum(self.fast, self.slow), updated)

    # -- allocation ---------------------------------------------------------------------

    def allocate(self, budget_pages: int, held_pages: np.ndarray) -> np.ndarray:
        """Targets (machine pages per VM) that equalise the taxed shares-per-page ratio.

        A VM holding P pages with A = f * P active ones is charged A + k * (P - A) for
        them; at a common price t (pages charged per share) it is entitled to the P with
        charge S * t, clamped to [reservation, limit]. VMs holding less than their
        entitlement keep what they hold and free the rest for the others (their targets
        stay at their entitlement, so they may grow back to it).
        """
        held = held_pages.astype(np.float64)
        f = np.ones(len(held)) if self.active_fraction is None else self.active_fraction
        active = f * held
        k = 1.0 / (1.0 - self.params.tax)
        lo = self.reservation.astype(np.float64)
        hi = self.limit.astype(np.float64)
        fixed = np.zeros(len(held), dtype=bool)
        entitlement = hi.copy()
        for _ in range(len(held) + 1):
            open_vms = ~fixed
            budget = budget_pages - held[fixed].sum()
            if not open_vms.any():
                break

            def at(price, open_vms=open_vms):
                charge = self.shares * price
                pages = np.where(charge <= active, charge, active + (charge - active) / k)
                return np.where(open_vms, np.clip(pages, lo, hi), 0.0)

            if at(1e300).sum() <= budget:
                level_alloc = np.where(open_vms, hi, 0.0)
            else:
                level_alloc = at(solve_level(at, max(budget, lo[open_vms].sum())))
            entitlement[open_vms] = level_alloc[open_vms]
            newly = open_vms & (held < entitlement)
            if not newly.any():
                break
            fixed |= newly
        return np.floor(entitlement).astype(np.int64)

    # -- states ---------------------------------------------------------------------------

    def _thresholds_pages(self, host_pages: int) -> np.ndarray:
        p = self.params
        percents = [p.high_free_percent, p.soft_free_percent, p.hard_free_percent]
        percents.append(p.low_free_percent)
        return np.array([host_pages * x / 100.0 for x in percents])

    def next_state(self, free_pages: int, host_pages: int) -> int:
        """Enter soft/hard/low below 4/2/1%; leave a state only at the threshold above it."""
        thresholds = self._thresholds_pages(host_pages)
        state = self.state
        for lower in (SOFT, HARD, LOW):
            if free_pages < thresholds[lower]:
                state = max(state, lower)
        while state > HIGH and free_pages >= thresholds[state - 1]:
            state -= 1
        return state

    # -- the epoch hook ---------------------------------------------------------------------

    def decide(self, snapshot: Snapshot) -> Decision:
        if self.shares is None:
            self._setup(snapshot)
        new_sample = self._sample_timer.due(snapshot.t_ns) > 0
        if new_sample:
            self._sample(snapshot)
        else:
            self._include_current_period(snapshot)
        host = int(snapshot.host_pages)
        free = snapshot.host_free_pages
        self.state = self.next_state(free, host)
        held = consumed_pages(snapshot)
        realloc = self._realloc_timer.due(snapshot.t_ns) > 0
        if realloc or self.state > self._state_at_realloc or self.target_pages is None:
            reserve = int(np.ceil(host * self.params.high_free_percent / 100.0))
            self.target_pages = self.allocate(guest_budget_pages(snapshot, reserve), held)
            self._state_at_realloc = self.state
        config = snapshot.config_pages.astype(np.int64)
        cap = np.minimum(
            np.floor(config * self.params.balloon_max_percent / 100.0).astype(np.int64),
            config - 1,
        )
        wanted = np.clip(config - self.target_pages, 0, cap)
        if self.state == HIGH:
            # No reclamation: balloons may only shrink toward the targets.
            balloons = np.minimum(self._balloon_targets, wanted)
        else:
            balloons = wanted
        self._balloon_targets = balloons
        decision = Decision(
            balloon_target_pages=balloons.copy(),
            # Low: VMs above their targets may not make the host swap, so they block when
            # they need a machine page with the host full (not at 1% free, as ESX blocks
            # them: see the module docstring); the others may still make it swap.
            allow_host_swap=True if self.state != LOW else held <= self.target_pages,
            scan_rate_pages_per_s=self.scan_rates(snapshot.num_vms),
        )
        if new_sample:
            decision.sample_pages = self._sample_sizes(snapshot.num_vms)
        if self.state >= HARD:
            # Swap until free memory is back at the soft threshold, taking from the VMs
            # furthest above their targets (all backed VMs if none is above).
            need = int(np.ceil(self._thresholds_pages(host)[SOFT])) - free
            backed = snapshot.backed_pages.astype(np.int64)
            excess = np.minimum(np.maximum(held - self.target_pages, 0), backed)
            weights = excess if excess.sum() > 0 else backed
            swap = split_proportionally(need, weights, caps=backed)
            decision.host_swap_target_pages = snapshot.host_swapped_pages + swap
        return decision
