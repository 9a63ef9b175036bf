"""Small helpers the host policies share: per-VM parameters, integer splits, budgets, timers.

Everything here is deterministic: ties go to the lower VM index, so two runs of a policy
on the same snapshots return the same decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from balloonreplay.errors import ConfigError
from balloonreplay.policies import Snapshot


def per_vm(
    values: Sequence[float] | float | None,
    num_vms: int,
    default: np.ndarray | float,
    key: str,
    dtype=np.int64,
) -> np.ndarray:
    """Expand a per-VM parameter (a list, one value for all, or None for the default)."""
    if values is None:
        return np.broadcast_to(np.asarray(default, dtype=dtype), (num_vms,)).copy()
    values = given_values(values, key, dtype)
    if values.ndim == 0:
        return np.full(num_vms, values, dtype=dtype)
    if values.shape != (num_vms,):
        raise ConfigError(
            f"policy.{key}", f"expected one value per VM ({num_vms}), got {values.tolist()!r}"
        )
    return values


def given_values(values: Sequence[float] | float | str, key: str, dtype=np.float64) -> np.ndarray:
    """A per-VM parameter's values as given (one value: a 0-d array), for range checks
    that need no VM count (HostPolicy.check_params), or a ConfigError naming the key."""
    if isinstance(values, str):
        values = parse_per_vm_text(values, key)
    try:
        array = np.asarray(values, dtype=np.float64)
        if array.ndim > 1 or not np.all(np.isfinite(array)):
            raise ValueError(values)
        return array.astype(dtype)
    except (TypeError, ValueError):
        raise ConfigError(
            f"policy.{key}",
            f"expected a number or a list of numbers (one per VM), got {values!r}",
        ) from None


def check_non_negative(params, keys: Sequence[str]) -> None:
    """Refuse a negative value among the per-VM parameters ``keys`` of ``params`` (None:
    the default), naming the parameter."""
    for key in keys:
        values = getattr(params, key)
        if values is not None and np.any(given_values(values, key) < 0):
            raise ConfigError(f"policy.{key}", f"must be >= 0, got {values!r}")


# Host times are 64-bit nanoseconds: no period may be longer (about 292 years).
MAX_PERIOD_S = (2**63 - 1) / 1e9


def check_period(params, key: str, what: str = "a period") -> None:
    """Refuse a period (seconds) that is not a number > 0 that host time can hold, naming
    the parameter: a timer with a period of 0 would fire at every nanosecond."""
    value = getattr(params, key)
    if not (isinstance(value, int | float) and 0 < value <= MAX_PERIOD_S):
        raise ConfigError(
            f"policy.{key}",
            f"{what} must be a number of seconds > 0 (and <= 2**63 ns), got {value!r}",
        )


def check_within(params, key: str, low: float | None, high: float | None, why: str = "") -> None:
    """Refuse a scalar parameter outside low..high (None: unbounded), naming it."""
    value = getattr(params, key)
    if (low is not None and not value >= low) or (high is not None and not value <= high):
        bounds = (
            f"within {low}..{high}"
            if low is not None and high is not None
            else f">= {low}"
            if low is not None
            else f"<= {high}"
        )
        raise ConfigError(f"policy.{key}", f"must be {bounds}{why}, got {value!r}")


def parse_per_vm_text(text: str, key: str) -> float | list[float]:
    """A per-VM parameter given as text: ``"2000"`` (every VM) or ``"3000/1000"`` (one per
    VM; a CLI override cannot use commas, which separate k=v pairs)."""
    try:
        values = [float(v) for v in text.replace(";", " ").replace("/", " ").split()]
    except ValueError:
        values = []
    if not values:
        raise ConfigError(
            f"policy.{key}",
            f"expected a number, or one per VM separated by '/' (3000/1000), got {text!r}",
        )
    return values[0] if len(values) == 1 else values


def round_preserving_sum(
    shares: np.ndarray, total: int, caps: np.ndarray | None = None
) -> np.ndarray:
    """Integer parts of non-negative `shares` that add up to `total` (largest remainder).

    `caps` bounds each part; the remainder goes to the largest fractional parts first, ties
    to the lower VM index.
    """
    shares = np.asarray(shares, dtype=np.float64)
    base = np.floor(shares).astype(np.int64)
    if caps is not None:
        base = np.minimum(base, caps)
    left = int(total - base.sum())
    if left > 0:
        fraction = shares - np.floor(shares)
        # Stable sort on -fraction keeps lower indices first among equal fractions.
        order = np.argsort(-fraction, kind="stable")
        while left > 0:
            moved = 0
            for i in order:
                if left == 0:
                    break
                if caps is None or base[i] < caps[i]:
                    base[i] += 1
                    left -= 1
                    moved += 1
            if moved == 0:
                break
    return base


def split_proportionally(
    total: int, weights: np.ndarray, caps: np.ndarray | None = None
) -> np.ndarray:
    """Split `total` pages in proportion to `weights`, never giving a VM more than its cap.

    What a capped VM cannot take goes to the others, still in proportion (water filling).
    """
    weights = np.asarray(weights, dtype=np.float64)
    num_vms = weights.shape[0]
    if total <= 0 or num_vms == 0:
        return np.zeros(num_vms, dtype=np.int64)
    if caps is not None:
        caps = np.asarray(caps, dtype=np.int64)
        total = min(total, int(caps.sum()))
    result = np.zeros(num_vms, dtype=np.float64)
    open_vms = weights > 0
    if not open_vms.any():
        open_vms = np.ones(num_vms, dtype=bool)
        weights = np.ones(num_vms)
    remaining = float(total)
    while remaining > 1e-9 and open_vms.any():
        share = remaining * weights * open_vms / weights[open_vms].sum()
        if caps is None:
            result += share
            break
        room = caps - result
        capped = open_vms & (share >= room)
        if not capped.any():
            result += share
            break
        result[capped] = caps[capped]
        remaining = total - result.sum()
        open_vms &= ~capped
    return round_preserving_sum(result, total, caps)


def solve_level(
    allocation_at: Callable[[float], np.ndarray], total: float, iterations: int = 200
) -> float:
    """Smallest level t >= 0 at which the monotone `allocation_at(t)` sums to `total`.

    Used to equalise a per-VM ratio (shares per page, weight per page): each VM's
    allocation grows with the common level until the budget is spent.
    """
    low, high = 0.0, 1.0
    while allocation_at(high).sum() < total and high < 1e300:
        high *= 2.0
    for _ in range(iterations):
        if high - low <= 1e-12 * high:
            break
        middle = 0.5 * (low + high)
        if allocation_at(middle).sum() < total:
            low = middle
        else:
            high = middle
    return high


def guest_pages(snapshot: Snapshot) -> np.ndarray:
    """Guest frames each VM may use now: configured memory minus its balloon."""
    return (snapshot.config_pages - snapshot.balloon_pages).astype(np.int64)


def consumed_pages(snapshot: Snapshot) -> np.ndarray:
    """Guest frames with machine backing (private or shared), per VM."""
    return (snapshot.backed_pages + snapshot.shared_pages).astype(np.int64)


def sharing_savings_pages(snapshot: Snapshot) -> int:
    """Machine pages that page sharing saves: frames backed minus machine pages used for them."""
    frames = int(consumed_pages(snapshot).sum()) + int(snapshot.overhead_pages.sum())
    return max(0, frames - int(snapshot.host_used_pages))


def guest_budget_pages(snapshot: Snapshot, free_reserve_pages: int = 0) -> int:
    """Backed guest frames the host can hold while keeping `free_reserve_pages` free.

    Host memory minus per-VM overheads minus the reserve, plus what sharing saves (frames
    backed by one shared copy cost less than a page each).
    """
    budget = (
        int(snapshot.host_pages)
        - int(snapshot.overhead_pages.sum())
        - int(free_reserve_pages)
        + sharing_savings_pages(snapshot)
    )
    return max(0, budget)


def seconds_to_ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


class PeriodicTimer:
    """Fires at host times 0, period, 2·period, ... as seen at epoch boundaries.

    `due(t_ns)` returns how many periods have elapsed since it last fired (0: not yet), so
    a policy with a period shorter than the engine's epoch can apply several steps at once.
    """

    def __init__(self, period_s: float):
        # Kept in seconds and converted when used: a policy builds its timers in its
        # constructor, before check_params() has refused a period that is not a number.
        self.period_s = period_s
        self.next_ns: int | None = None

    @property
    def period_ns(self) -> int:
        return max(1, seconds_to_ns(self.period_s))

    def due(self, t_ns: int) -> int:
        if self.next_ns is None:
            self.next_ns = int(t_ns) + self.period_ns
            return 1
        if t_ns < self.next_ns:
            return 0
        steps = 1 + (int(t_ns) - self.next_ns) // self.period_ns
        self.next_ns += steps * self.period_ns
        return steps
