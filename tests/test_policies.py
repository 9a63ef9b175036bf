"""Each host policy's own rule, on crafted snapshot sequences (no engine involved).

The expected numbers come from the rules as the real systems state them (cited in each
policy module), worked by hand in the comments, not from running the policies.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import numpy as np
import pytest
from policy_helpers import snapshot, start_snapshot

from balloonreplay.errors import ConfigError
from balloonreplay.policies import (
    Decision,
    HostPolicy,
    available_policies,
    call_policy,
    get_policy_class,
    make_policy,
    register_policy,
)
from balloonreplay.policies._util import round_preserving_sum, split_proportionally
from balloonreplay.policies.esx import HARD, HIGH, LOW, SOFT
from balloonreplay.policies.host_swap import linux_watermarks_pages
from balloonreplay.policies.mrc import misses_by_size
from balloonreplay.policies.xen_selfballoon import selfballoon_floor_pages

BUILT_INS = [
    "static",
    "host-swap",
    "balloon",
    "esx",
    "mom",
    "xen-selfballoon",
    "hyperv",
    "mrc",
    "free-page-reporting",
]


# ---------------------------------------------------------------------- registry, params
@pytest.mark.parametrize("name", BUILT_INS)
def test_built_in_policies_are_registered_with_documented_params(name):
    cls = get_policy_class(name)
    assert cls.name == name
    assert cls.description
    policy = make_policy(name)
    described = policy.describe()
    assert described["name"] == name
    assert isinstance(described["params"], dict)


@pytest.mark.parametrize(
    "spec, key",
    [
        # Periods of 0 or less (a timer of 0 s fired at every nanosecond), or NaN.
        ("esx:sample_period_s=0", "sample_period_s"),
        ("esx:realloc_period_s=-1", "realloc_period_s"),
        ("mom:policy_interval_s=0", "policy_interval_s"),
        ("mom:monitor_interval_s=nan", "monitor_interval_s"),
        ("hyperv:period_s=-1", "period_s"),
        ("mrc:period_s=0", "period_s"),
        ("xen-selfballoon:selfballoon_interval_s=1e300", "selfballoon_interval_s"),
        # Percentages outside 0..100 (MOM's are fractions: 0..1).
        ("esx:balloon_max_percent=-10", "balloon_max_percent"),  # negative balloon targets
        ("hyperv:host_reserve_percent=150", "host_reserve_percent"),
        ("mrc:min_percent=200", "min_percent"),
        ("mrc:host_reserve_percent=-1", "host_reserve_percent"),
        ("mrc:inflate_below_free_percent=101", "inflate_below_free_percent"),
        ("xen-selfballoon:reserved_percent=-50", "reserved_percent"),
        ("mom:min_guest_free_percent=20", "min_guest_free_percent"),
        ("mom:ksm_free_percent=-0.1", "ksm_free_percent"),
        ("mom:min_balloon_change_percent=2", "min_balloon_change_percent"),
        # Counts that crash or are silently changed.
        ("esx:fast_gain=0", "fast_gain"),
        ("esx:slow_gain=1.5", "slow_gain"),
        ("esx:share_scan_vm_pages_per_s=-1", "share_scan_vm_pages_per_s"),  # a bad decision
        ("mom:sample_history_length=0", "sample_history_length"),  # was taken as 1
        ("mom:ksm_npages_min=-100", "ksm_npages_min"),  # a negative scan rate
        ("mrc:steps=0", "steps"),  # was taken as 1
        ("mrc:reservation_pages=-5", "reservation_pages"),
        ("xen-selfballoon:selfballoon_min_usable_mb=-1", "selfballoon_min_usable_mb"),
        ("host-swap:watermark_scale_factor=-10", "watermark_scale_factor"),
        ("host-swap:watermark_scale_factor=3001", "watermark_scale_factor"),
    ],
)
def test_policies_refuse_parameters_out_of_range_at_load_naming_them(spec, key):
    with pytest.raises(ConfigError, match=rf"policy\.{key}: policy plug-in '{spec.split(':')[0]}'"):
        make_policy(spec)


def test_esx_refuses_a_sample_larger_than_the_engine_draws_naming_the_parameter():
    # 100-frame VMs: at most max(8 x 100, 1024) = 1024 draws (Decision.sample_pages).
    make_policy("esx:sample_pages=1024").start(start_snapshot([100, 100], 200))
    with pytest.raises(ConfigError, match=r"policy\.sample_pages: .*1024 for the smallest VM"):
        make_policy("esx:sample_pages=5000").start(start_snapshot([100, 100], 200))


def test_overrides_reach_the_params_with_their_types():
    esx = make_policy("esx:tax=0.5,sample_period_s=60,sample_pages=50")
    assert esx.params.tax == 0.5 and esx.params.sample_period_s == 60.0
    assert esx.params.sample_pages == 50 and isinstance(esx.params.sample_pages, int)
    mom = make_policy("mom", {"ksm": "off", "pressure_threshold": 0.3})
    assert mom.params.ksm is False and mom.params.pressure_threshold == 0.3
    with pytest.raises(ConfigError, match="no parameter 'taxx'"):
        make_policy("esx:taxx=0.5")


def test_per_vm_lists_can_be_given_on_the_command_line():
    # Commas separate k=v pairs, so per-VM values are separated by '/'.
    policy = make_policy("esx:shares=3000/1000,reservation_pages=0/10")
    policy.start(start_snapshot([1000, 1000], 2128))
    assert list(policy.shares) == [3000.0, 1000.0]
    assert list(policy.reservation) == [0, 10]
    with pytest.raises(ConfigError, match="one value per VM"):
        make_policy("esx:shares=1/2/3").start(start_snapshot([1000, 1000], 2128))


def test_a_policy_registered_at_run_time_is_found_by_name_with_its_params():
    @dataclass
    class FixedParams:
        balloon_pages: int = 0
        allow_swap: bool = True
        label: str = "x"

    class FixedBalloon(HostPolicy):
        name = "test-fixed-balloon"
        description = "every VM's balloon at a fixed size"
        Params = FixedParams

        def start(self, snapshot):
            n = snapshot.num_vms
            return Decision(
                balloon_target_pages=np.full(n, self.params.balloon_pages),
                allow_host_swap=self.params.allow_swap,
            )

    register_policy("test-fixed-balloon", FixedBalloon)
    assert "test-fixed-balloon" in available_policies()
    policy = make_policy("test-fixed-balloon:balloon_pages=7,allow_swap=no,label=y")
    assert isinstance(policy, FixedBalloon)
    assert policy.params == FixedParams(balloon_pages=7, allow_swap=False, label="y")
    decision = policy.start(start_snapshot([10, 10], 20))
    assert list(decision.balloon_target_pages) == [7, 7]
    assert decision.allow_host_swap is False


def test_a_policy_from_an_installed_third_party_package_is_found(tmp_path, monkeypatch):
    """A package that declares an entry point in `balloonreplay.policies` is found by name.

    The package is 'installed' the way pip leaves it: a module and a .dist-info directory
    with entry_points.txt on sys.path.
    """
    (tmp_path / "br_thirdparty_policy.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from balloonreplay.policies import Decision, HostPolicy

            class HalfPolicy(HostPolicy):
                name = "thirdparty-half"
                description = "balloon every VM to a fraction of its memory"

                @dataclass
                class Params:
                    fraction: float = 0.5

                def start(self, snapshot):
                    targets = (snapshot.config_pages * self.params.fraction).astype(int)
                    return Decision(balloon_target_pages=targets)
            """
        )
    )
    dist = tmp_path / "br_thirdparty_policy-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: br-thirdparty-policy\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[balloonreplay.policies]\nthirdparty-half = br_thirdparty_policy:HalfPolicy\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "thirdparty-half" in available_policies()
    policy = make_policy("thirdparty-half:fraction=0.25")
    assert policy.params.fraction == 0.25
    decision = policy.start(start_snapshot([100, 40], 140))
    assert list(decision.balloon_target_pages) == [25, 10]


# ---------------------------------------------------------------------- shared helpers
def test_split_proportionally_keeps_the_total_and_the_caps():
    assert list(split_proportionally(10, np.array([3, 1]))) == [8, 2]  # 7.5/2.5, tie -> VM 0
    assert list(split_proportionally(10, np.array([1, 1]), caps=np.array([2, 100]))) == [2, 8]
    assert list(split_proportionally(50, np.array([1, 1]), caps=np.array([2, 3]))) == [2, 3]
    assert list(round_preserving_sum(np.array([1.5, 1.5, 1.0]), 4)) == [2, 1, 1]


# ---------------------------------------------------------------------- static
def test_static_refuses_overcommit_with_a_clear_error():
    policy = make_policy("static")
    with pytest.raises(ConfigError) as error:
        policy.start(start_snapshot([600, 500], 1000, overhead=[10, 10]))
    message = str(error.value)
    assert error.value.key == "host_mem"
    assert "does not overcommit" in message
    assert "1100 pages" in message and "1000 pages" in message  # guest memory, host memory
    assert "by 120 pages" in message  # 1100 + 20 overhead - 1000


def test_static_accepts_a_host_that_fits_and_never_swaps():
    decision = make_policy("static").start(start_snapshot([600, 400], 1000))
    assert list(decision.balloon_target_pages) == [0, 0]
    assert decision.allow_host_swap is False


# ---------------------------------------------------------------------- host-swap
def test_linux_watermarks():
    # 100000 pages = 400000 KiB: min_free_kbytes = isqrt(16 * 400000) = 2529 -> 632 pages;
    # the step is max(632 // 4, 100000 * 10 // 10000) = 158.
    assert linux_watermarks_pages(100_000) == (632, 790, 948)
    # Tiny memories: min_free_kbytes is at least 128 KiB.
    assert linux_watermarks_pages(100)[0] == 32


def test_host_swap_has_no_balloon_and_kswapd_refills_to_the_high_watermark():
    policy = make_policy("host-swap")
    start = policy.start(start_snapshot([60_000, 60_000], 100_000))
    assert list(start.balloon_target_pages) == [0, 0] and start.allow_host_swap is True
    # Above the low watermark (790 free pages): nothing to do.
    assert policy.decide(snapshot([60_000, 60_000], 100_000, resident=[60_000, 39_000])) is None
    # 500 free (< 790): swap 948 - 500 = 448 pages, by backed pages 3:1.
    decision = policy.decide(
        snapshot(
            [60_000, 60_000], 100_000, resident=[60_000, 20_000], host_free=500, swapped=[5, 0]
        )
    )
    assert list(decision.host_swap_target_pages) == [5 + 336, 112]


# ---------------------------------------------------------------------- balloon
def test_balloon_inflates_in_proportion_to_vm_size_and_never_host_swaps():
    policy = make_policy("balloon")
    assert policy.start(start_snapshot([3000, 1000], 4000)).allow_host_swap is False
    # Host 4000 pages: inflate below 6% free (240 pages). 40 free -> reclaim 200, 3:1.
    decision = policy.decide(snapshot([3000, 1000], 4000, host_free=40))
    assert list(decision.balloon_target_pages) == [150, 50]
    assert decision.allow_host_swap is False and decision.host_swap_target_pages is None
    # Between 6% and 8% free: leave the balloons alone.
    assert policy.decide(snapshot([3000, 1000], 4000, balloon=[150, 50], host_free=300)) is None
    # Above 8% (320 pages): 400 free -> give back 80 of the 200, still 3:1.
    decision = policy.decide(snapshot([3000, 1000], 4000, balloon=[150, 50], host_free=400))
    assert list(decision.balloon_target_pages) == [90, 30]


def test_balloon_counts_host_swapped_pages_as_memory_to_reclaim():
    """After emergency host swapping, 300 free pages (inside the band) hide 400 guest
    pages the host swapped: the balloons grow until the host could take them back."""
    policy = make_policy("balloon")
    policy.start(start_snapshot([3000, 1000], 4000))
    decision = policy.decide(
        snapshot([3000, 1000], 4000, balloon=[150, 50], host_free=300, swapped=[300, 100])
    )
    # Effective free: 300 - 400 = -100; reclaim up to 240 (6%): 340 more pages, 3:1.
    assert list(decision.balloon_target_pages) == [405, 135]


# ---------------------------------------------------------------------- esx
ESX_FAST = "sample_period_s=1,realloc_period_s=1"


def sample(touched, sampled=100):
    """Snapshot fields of a working-set sample of `sampled` frames per VM."""
    return {"sampled": sampled, "sampled_touched": touched}


@pytest.mark.parametrize(
    "free_percent, state, swaps",
    [(10, HIGH, False), (5, HIGH, False), (3.5, SOFT, False), (2.5, SOFT, False),
     (1.9, HARD, True), (1.5, HARD, True), (0.5, LOW, True)],
)  # fmt: skip
def test_esx_host_swaps_only_below_the_hard_threshold(free_percent, state, swaps):
    host = 100_000
    config = [60_000, 60_000]
    free = int(host * free_percent / 100)
    used = host - free
    policy = make_policy(f"esx:{ESX_FAST}")
    policy.start(start_snapshot(config, host))
    decision = policy.decide(
        snapshot(config, host, resident=[used // 2, used - used // 2], **sample([2, 2]))
    )
    assert policy.state == state
    if swaps:
        # Swap until free memory is back at the soft threshold (4% = 4000 pages).
        assert decision.host_swap_target_pages.sum() == 4000 - free
    else:
        assert decision.host_swap_target_pages is None
    if state == LOW:  # low blocks the VMs above their targets when they allocate
        above = np.array([used // 2, used - used // 2]) > policy.target_pages
        assert list(decision.allow_host_swap) == list(~above) and above.any()
    else:
        assert decision.allow_host_swap is True
    # Balloons inflate from the soft state down, never in the high state.
    assert bool(decision.balloon_target_pages.sum() > 0) == (state != HIGH)


def test_esx_states_have_hysteresis_on_the_way_up():
    policy = make_policy("esx")
    host = 1000
    path = [(70, HIGH), (30, SOFT), (50, SOFT), (15, HARD), (30, HARD), (45, SOFT), (60, HIGH)]
    for free, expected in path:
        policy.state = policy.next_state(free, host)
        assert policy.state == expected, (free, expected)
    assert policy.next_state(5, host) == LOW


def test_esx_idle_tax_moves_memory_from_the_idle_vm_to_the_active_one():
    """Equal shares (equal sizes); VM 0 touches all its pages, VM 1 none.

    Host 1064 pages keeps 6% (64) free: a budget of 1000 pages. VM 0 holds 600, VM 1 440.
    tau = 0: 500 each; VM 1 holds less (440), so VM 0 gets the other 560.
    tau = 0.75 (k = 4): idle pages cost 4 times as much; at a common price c, VM 0 gets
    600 + (c - 600)/4 and VM 1 c/4, summing to 1000 at c = 1100: 725 and 275; VM 0 holds
    less than 725, so VM 1 gets the other 400.
    """
    config = [1000, 1000]
    results = {}
    for tax in (0.0, 0.75):
        policy = make_policy(f"esx:tax={tax},{ESX_FAST}")
        policy.start(start_snapshot(config, 1064))
        for t in (1, 2, 3):
            decision = policy.decide(
                # 60 of 100 sampled frames touched: 600 of 1000 configured pages active
                snapshot(config, 1064, t_s=t, resident=[600, 440], **sample([60, 0]))
            )
        assert list(policy.active_fraction) == [1.0, 0.0]
        assert policy.state == SOFT  # 24 free pages: 2.3%
        results[tax] = (list(policy.target_pages), list(decision.balloon_target_pages))
    assert results[0.0] == ([560, 500], [440, 500])
    assert results[0.75] == ([725, 400], [275, 600])


def test_esx_shares_divide_memory_when_no_one_is_idle():
    # Shares 3:1, both fully active, 1000 pages for both: 750 / 250 if both hold more.
    policy = make_policy("esx:shares=3000/1000,tax=0.75," + ESX_FAST)
    policy.start(start_snapshot([1000, 1000], 1064))
    assert list(policy.allocate(1000, np.array([1000, 1000]))) == [750, 250]
    # VM 1 holds 240, all active. Pages it does not hold yet would be idle, so at the
    # common price c its entitlement is 240 + (1000 c - 240) / 4 and VM 0's 3000 c: the
    # sum is 1000 at c = 0.2523, i.e. 757 and 243. VM 1 holds less than 243 and keeps its
    # target; VM 0 may use what VM 1 does not hold (760).
    policy.decide(snapshot([1000, 1000], 1064, resident=[800, 240], **sample([80, 24])))
    assert list(policy.target_pages) == [760, 243]


def test_esx_reservation_and_limit_bound_the_targets():
    policy = make_policy("esx:reservation_pages=0/400,limit_pages=300/1000,tax=0.75," + ESX_FAST)
    policy.start(start_snapshot([1000, 1000], 1064))
    # VM 1 is idle but reserved 400; VM 0 is limited to 300 although active.
    policy.decide(snapshot([1000, 1000], 1064, resident=[520, 520], **sample([52, 0])))
    assert policy.target_pages[0] == 300
    assert policy.target_pages[1] >= 400


def test_esx_working_set_estimate_rises_fast_and_falls_slowly():
    policy = make_policy(f"esx:{ESX_FAST}")
    config = [10_000]
    policy.start(start_snapshot(config, 20_000))
    # 10 of 100 sampled frames touched: 1000 of 10,000 pages active, all it holds.
    policy.decide(snapshot(config, 20_000, t_s=1, resident=[1000], **sample([10])))
    assert policy.active_fraction[0] == 1.0
    policy.decide(snapshot(config, 20_000, t_s=2, resident=[1000], **sample([0])))
    # fast: 1 -> 0.5, slow: 1 -> 0.9: the maximum falls slowly.
    assert policy.active_fraction[0] == pytest.approx(0.9)
    for t in range(3, 30):
        policy.decide(snapshot(config, 20_000, t_s=t, resident=[1000], **sample([0])))
    assert policy.active_fraction[0] < 0.1
    policy.decide(snapshot(config, 20_000, t_s=30, resident=[1000], **sample([10])))
    assert policy.active_fraction[0] >= 0.5  # one period brings it back up


def test_esx_asks_the_engine_for_a_new_sample_every_period():
    policy = make_policy("esx:sample_period_s=2,realloc_period_s=1,sample_pages=50")
    start = policy.start(start_snapshot([10_000, 10_000], 40_000))
    assert list(start.sample_pages) == [50, 50]
    asked = []
    for t in range(1, 7):
        decision = policy.decide(
            snapshot([10_000, 10_000], 40_000, t_s=t, resident=[1000, 1000], **sample([5, 2], 50))
        )
        asked.append(decision.sample_pages is not None)
    assert asked == [False, True, False, True, False, True]
    # 5 of 50 sampled: 1000 active pages of the 1000 held; 2 of 50: 400 of 1000.
    assert list(policy.active_fraction) == pytest.approx([1.0, 0.4])


def test_esx_rejects_a_tax_of_one():
    with pytest.raises(ConfigError, match="idle tax"):
        make_policy("esx:tax=1").start(start_snapshot([10], 10))


def test_esx_scan_rates_are_per_vm_within_the_host_total():
    policy = make_policy("esx")
    assert list(policy.start(start_snapshot([10] * 2, 20)).scan_rate_pages_per_s) == [50, 50]
    assert (
        list(make_policy("esx").start(start_snapshot([10] * 8, 80)).scan_rate_pages_per_s)
        == [25] * 8
    )


@pytest.mark.parametrize("vms", [7, 101, 150, 199, 200, 201, 400])
def test_esx_scans_the_host_total_however_many_vms(vms):
    """Mem.ShareScanTotal (200 pages/s) is the host's rate whatever the VM count: 7 VMs
    get 200 (28 or 29 each), 101 VMs 200 (1 or 2 each; an integer division gave 101 in
    all), 400 VMs 200 (0 or 1 each; it gave none). The leftover pages/s rotate, so over
    `vms` epochs every VM scans the same (200 pages/s each epoch, shared evenly)."""
    policy = make_policy("esx")
    config = [10] * vms
    rates = [policy.start(start_snapshot(config, 10 * vms)).scan_rate_pages_per_s]
    for t in range(1, vms):
        rates.append(policy.decide(snapshot(config, 10 * vms, t_s=t)).scan_rate_pages_per_s)
    rates = np.array(rates)
    assert (rates.sum(axis=1) == 200).all()
    assert rates.min() == 200 // vms and rates.max() == -(-200 // vms)
    assert (rates.sum(axis=0) == 200).all()  # 200 x vms pages/s over vms epochs, evenly


# ---------------------------------------------------------------------- mom
def run_mom_rounds(policy, config, host, host_free, used, rounds):
    """Feed one snapshot per 10 s round; the balloon reaches its target between rounds
    (a guest pushed below its used memory swaps the rest out: resident = its size)."""
    guest = config
    sizes = [guest]
    policy.start(start_snapshot([config], host, host_free=host_free))
    for r in range(1, rounds + 1):
        balloon = config - guest
        decision = policy.decide(
            snapshot([config], host, t_s=10 * r, balloon=[balloon], resident=[min(used, guest)],
                     host_free=host_free)
        )  # fmt: skip
        if decision is not None:
            guest = config - int(decision.balloon_target_pages[0])
        sizes.append(guest)
    return sizes


def test_mom_converges_in_about_log_target_over_current_by_log_095_rounds():
    """Host at 10% free: g = 0.2 * 0.10/0.20 = 0.1; the guest uses 4000 of 10000 pages.

    Fixed point: used / (1 - g) = 4444.4. Each round cuts at most 5%, so reaching it
    takes about log(4444/10000) / log(0.95) = 15.8 rounds.
    """
    config, used = 10_000, 4000
    sizes = run_mom_rounds(make_policy("mom"), config, 100_000, 10_000, used, 40)
    target = used / (1 - 0.1)
    settled = next(r for r, s in enumerate(sizes) if abs(s - target) <= 0.0025 * s + 1)
    expected = math.log(target / config) / math.log(0.95)
    assert abs(settled - expected) <= 2, (settled, expected, sizes)
    # Never more than 5% per round, never up while under pressure, and it stays put.
    steps = np.diff(sizes)
    assert (steps <= 0).all()
    assert (-steps <= 0.05 * np.array(sizes[:-1]) + 1).all()
    assert sizes[-1] == sizes[-5]


def test_mom_critical_pressure_forces_the_guest_below_its_used_memory():
    # 3% free <= 5%: g = 0.03 - 0.05 = -0.02, floor = used - 0.02 * current < used.
    config, used = 10_000, 9000
    sizes = run_mom_rounds(make_policy("mom"), config, 100_000, 3000, used, 40)
    # Once the guest is down to what it uses, used = its size (averaged over MOM's 50 s
    # window) and the floor lies 2% below it: the guest keeps shrinking, and swapping,
    # for as long as the host stays critical.
    assert min(sizes) < used
    assert (np.diff(sizes) <= 0).all()
    assert sizes[-1] < 0.85 * used


def test_mom_grows_guests_by_5_percent_without_pressure_and_respects_the_guarantee():
    policy = make_policy("mom:guaranteed_pages=6000")
    policy.start(start_snapshot([10_000], 100_000))
    # 50% free: no pressure; guest at 5000 (ballooned 5000), using 1000.
    decision = policy.decide(
        snapshot([10_000], 100_000, t_s=10, balloon=[5000], resident=[1000], host_free=50_000)
    )
    # Grow 5% -> 5250, but the guaranteed minimum 6000 wins.
    assert 10_000 - decision.balloon_target_pages[0] == 6000
    decision = policy.decide(
        snapshot([10_000], 100_000, t_s=20, balloon=[4000], resident=[1000], host_free=50_000)
    )
    assert 10_000 - decision.balloon_target_pages[0] == 6300


def test_mom_skips_changes_under_a_quarter_percent():
    policy = make_policy("mom")
    policy.start(start_snapshot([10_000], 100_000))
    # Under pressure at the floor already: used 9000, g = 0.2 * 0.15/0.2 = 0.15 -> floor
    # = 9000 + 0.15 * 9990 > 9990: no shrink; and no growth under pressure.
    decision = policy.decide(
        snapshot([10_000], 100_000, t_s=10, balloon=[10], resident=[9000], host_free=15_000)
    )
    assert decision.balloon_target_pages[0] == 10


def test_mom_ksm_rules():
    host = 100_000  # 400000 KiB: sleep = max(10, 10 * 16777216 / 400000) = 419 ms
    policy = make_policy("mom")
    start = policy.start(start_snapshot([30_000, 30_000], host, host_free=10_000))
    assert list(start.scan_rate_pages_per_s) == [0, 0]  # KSM off until MOM starts it
    # 10% free < 20%: run, pages_to_scan 100 + 300 = 400 per 419 ms = 954 pages/s.
    decision = policy.decide(snapshot([30_000, 30_000], host, t_s=10, host_free=10_000))
    assert policy.ksm_run and policy.ksm_pages_to_scan == 400 and policy.ksm_sleep_ms == 419
    assert decision.scan_rate_pages_per_s.sum() == 400 * 1000 // 419
    for r in range(2, 8):
        policy.decide(snapshot([30_000, 30_000], host, t_s=10 * r, host_free=10_000))
    assert policy.ksm_pages_to_scan == 1250  # capped
    # Plenty free and little shareable memory (60% of the host): KSM stops once the
    # average over MOM's 50 s window is above 20% free.
    for r in range(8, 12):
        decision = policy.decide(snapshot([30_000, 30_000], host, t_s=10 * r, host_free=90_000))
    assert not policy.ksm_run and decision.scan_rate_pages_per_s.sum() == 0
    # Shareable memory above 80% of the host keeps KSM on even with free memory.
    crowded = make_policy("mom")
    crowded.start(start_snapshot([45_000, 45_000], host))
    crowded.decide(snapshot([45_000, 45_000], host, t_s=10, host_free=90_000))
    assert crowded.ksm_run and crowded.ksm_pages_to_scan == 64  # 100 - 50 = 50 -> min 64


# ---------------------------------------------------------------------- xen
def test_xen_selfballoon_floor_is_the_kernels_piecewise_function():
    mib = 256  # pages
    assert selfballoon_floor_pages(10 * mib, 0) == 10 * mib  # < 16 MiB: no ballooning
    assert selfballoon_floor_pages(32 * mib, 0) == 16 * mib + 8 * mib
    assert selfballoon_floor_pages(256 * mib, 0) == 40 * mib + (216 * mib >> 3)
    assert selfballoon_floor_pages(1024 * mib, 100) == 100 + 99 * mib + (
        (1024 * mib - 100 - 99 * mib) >> 5
    )
    assert selfballoon_floor_pages(1024 * mib, 100, min_usable_mb=64) == 100 + 64 * mib
    # A fraction of a MiB, for the studies' scaled-down guests: 13% of a 4 MiB VM, what
    # the piecewise floor leaves a 1 GiB guest.
    full_size = selfballoon_floor_pages(1024 * mib, linux_watermarks_pages(1024 * mib)[2])
    scaled = selfballoon_floor_pages(4 * mib, linux_watermarks_pages(4 * mib)[2], 0.15)
    assert abs(scaled / (4 * mib) - full_size / (1024 * mib)) < 0.005
    policy = make_policy("xen-selfballoon:selfballoon_min_usable_mb=0.15")
    assert policy.params.selfballoon_min_usable_mb == 0.15


def test_xen_shrink_decays_geometrically_by_an_eighth_per_step():
    config = 100_000  # pages (~390 MiB): floor = reserve + 40 MiB + (useful - 40 MiB) / 8
    resident = 20_000
    policy = make_policy("xen-selfballoon")
    policy.start(start_snapshot([config], 400_000))
    # goal = resident + totalreserve (948, the high watermark) + 10% of memory (10000)
    goal = resident + 948 + 10_000
    assert policy.floor[0] < goal
    current = config
    gaps = [current - goal]
    for step in range(1, 25):
        decision = policy.decide(
            snapshot(
                [config], 400_000, t_s=5 * step, balloon=[config - current], resident=[resident]
            )
        )
        current = config - int(decision.balloon_target_pages[0])
        gaps.append(current - goal)
    for before, after in zip(gaps, gaps[1:], strict=False):
        assert after == before - before // 8  # the kernel's integer step
    assert gaps[8] == pytest.approx(gaps[0] * (7 / 8) ** 8, rel=0.01)


def test_xen_grows_by_the_whole_gap_at_once_and_runs_every_5_seconds():
    config = 100_000
    policy = make_policy("xen-selfballoon")
    policy.start(start_snapshot([config], 400_000))
    # Ballooned to 40000 but 50000 resident-worthy: goal = 50000 + 948 + 10000.
    assert (
        policy.decide(snapshot([config], 400_000, t_s=1, balloon=[60_000], resident=[39_000]))
        is None
    )
    decision = policy.decide(
        snapshot([config], 400_000, t_s=5, balloon=[60_000], resident=[40_000])
    )
    assert config - decision.balloon_target_pages[0] == 40_000 + 948 + 10_000
    # An epoch of 10 s holds two runs of the 5 s worker.
    policy2 = make_policy("xen-selfballoon")
    policy2.start(start_snapshot([config], 400_000))
    decision = policy2.decide(snapshot([config], 400_000, t_s=10, resident=[20_000]))
    gap = config - (20_000 + 948 + 10_000)
    gap -= gap // 8
    gap -= gap // 8
    assert config - decision.balloon_target_pages[0] == 20_000 + 948 + 10_000 + gap


@pytest.mark.parametrize("interval", ["0", "-5", "nan", "inf"])
def test_xen_refuses_a_worker_interval_the_kernel_would_not_take(interval):
    # store_selfballoon_interval refuses 0; a 0 s period used to be 1 ns here, and one
    # decide() then ran selfballoon_process once per elapsed nanosecond.
    with pytest.raises(ConfigError, match="selfballoon_interval_s: .*interval must be .* > 0"):
        make_policy(f"xen-selfballoon:selfballoon_interval_s={interval}")


@pytest.mark.parametrize("key", ["selfballoon_downhysteresis", "selfballoon_uphysteresis"])
def test_xen_refuses_a_hysteresis_of_zero_naming_it(key):
    with pytest.raises(ConfigError, match=f"policy.{key}: .*hysteresis must be >= 1"):
        make_policy(f"xen-selfballoon:{key}=0")


@pytest.mark.parametrize("hysteresis", ["downhysteresis=8", "downhysteresis=3,uphysteresis=5"])
def test_xen_many_runs_in_one_epoch_equal_the_runs_one_by_one(hysteresis):
    """An interval of 1 ms in a 1 s epoch: 1000 runs of the worker, which decide() takes
    at once; the result equals 1000 single steps, for a guest shrinking and one growing
    (resident pages above its current memory)."""
    spec = "xen-selfballoon:selfballoon_interval_s=0.001," + hysteresis.replace(
        "up", "selfballoon_up"
    ).replace("down", "selfballoon_down")
    config = [100_000, 100_000]
    policy = make_policy(spec)
    policy.start(start_snapshot(config, 400_000))
    snap = snapshot(config, 400_000, t_s=1, balloon=[0, 80_000], resident=[20_000, 19_000])
    got = config - policy.decide(snap).balloon_target_pages
    one_by_one = make_policy(spec)
    one_by_one.start(start_snapshot(config, 400_000))
    current = np.array([100_000, 20_000])
    goal = one_by_one.goal_pages(snap)
    for _ in range(1000):
        current = one_by_one.step(current, goal)
    assert list(got) == list(current)
    assert got[0] < 100_000 and got[1] > 20_000  # both moved
    # 1 ns: a billion runs in one epoch, still one quick decide (it looped per run).
    fast = make_policy("xen-selfballoon:selfballoon_interval_s=1e-9")
    fast.start(start_snapshot(config, 400_000))
    settled = config - fast.decide(snap).balloon_target_pages
    # Shrinking by (gap // 8) stops 7 pages above the goal at most; growing reaches it.
    assert 0 <= settled[0] - goal[0] < 8 and settled[1] == goal[1]


# ---------------------------------------------------------------------- hyper-v
def test_hyperv_keeps_the_buffer_above_demand():
    policy = make_policy("hyperv:minimum_pages=100")
    start = policy.start(start_snapshot([10_000], 100_000))
    # Startup 1024 MB is above the configured 10000 pages: start at the full size.
    assert start.balloon_target_pages[0] == 0
    for t, resident in ((1, 4000), (2, 5000), (3, 2500)):
        decision = policy.decide(snapshot([10_000], 100_000, t_s=t, resident=[resident]))
        assert policy.target_pages[0] == math.ceil(resident * 1.2)
        assert decision.balloon_target_pages[0] == 10_000 - math.ceil(resident * 1.2)
    policy = make_policy("hyperv:buffer_percent=50,minimum_pages=100")
    policy.start(start_snapshot([10_000], 100_000))
    policy.decide(snapshot([10_000], 100_000, t_s=1, resident=[4000]))
    assert policy.target_pages[0] == 6000


def test_hyperv_minimum_and_maximum_bound_the_target():
    policy = make_policy("hyperv:minimum_pages=3000,maximum_pages=8000")
    policy.start(start_snapshot([10_000], 100_000))
    policy.decide(snapshot([10_000], 100_000, t_s=1, resident=[1000]))
    assert policy.target_pages[0] == 3000
    policy.decide(snapshot([10_000], 100_000, t_s=2, resident=[7900]))
    assert policy.target_pages[0] == 8000


def test_hyperv_memory_weight_decides_who_goes_short():
    # Both want 1.2 * 4000 = 4800; the host has 8000 for them.
    policy = make_policy("hyperv:weight=8000/2000,minimum_pages=1000")
    policy.start(start_snapshot([10_000, 10_000], 8000))
    policy.decide(snapshot([10_000, 10_000], 8000, t_s=1, resident=[4000, 4000], host_free=0))
    # At a common level t per unit of weight, 8000 t and 2000 t: the heavier VM reaches its
    # target (4800) and the lighter one gets the remaining 3200.
    assert list(policy.target_pages) == [4800, 3200]
    equal = make_policy("hyperv:minimum_pages=1000")
    equal.start(start_snapshot([10_000, 10_000], 8000))
    equal.decide(snapshot([10_000, 10_000], 8000, t_s=1, resident=[4000, 4000], host_free=0))
    assert list(equal.target_pages) == [4000, 4000]


def test_hyperv_rejects_a_buffer_outside_5_to_2000_percent():
    with pytest.raises(ConfigError, match="5..2000"):
        make_policy("hyperv:buffer_percent=3").start(start_snapshot([10], 10))


# ---------------------------------------------------------------------- mrc
def feed_uniform(policy, vm, pages, accesses, seed):
    rng = np.random.default_rng(seed)
    policy.feed(vm, rng.integers(0, pages, accesses))


def test_mrc_gives_more_memory_to_the_vm_whose_curve_is_steeper():
    """VM 0 draws uniformly from 400 pages (miss ratio falls 1/400 per page), VM 1 from
    1600 (1/1600 per page). With 600 pages for both, each page saves 4 times more misses
    in VM 0, so VM 0 gets its whole working set (400) and VM 1 the rest."""
    policy = make_policy("mrc:min_percent=0")
    config = [2000, 2000]
    policy.start(start_snapshot(config, 600))
    feed_uniform(policy, 0, 400, 40_000, 1)
    feed_uniform(policy, 1, 1600, 40_000, 2)
    decision = policy.decide(snapshot(config, 600, resident=[300, 300]))
    assert policy.allocation_pages.sum() == 600
    assert abs(policy.allocation_pages[0] - 400) <= 600 // 256 + 1
    assert list(decision.balloon_target_pages) == list(2000 - policy.allocation_pages)


def test_mrc_looks_ahead_past_a_flat_start():
    """A loop over 300 pages misses on every access until it fits, then never: a greedy
    allocator without look-ahead would see no gain from its first pages."""
    policy = make_policy("mrc:min_percent=0")
    config = [1000, 1000]
    policy.start(start_snapshot(config, 500))
    policy.feed(0, np.tile(np.arange(300), 50))
    feed_uniform(policy, 1, 1000, 15_000, 3)
    policy.decide(snapshot(config, 500, resident=[250, 250]))
    assert policy.allocation_pages[0] >= 300


def test_mrc_leaves_everyone_alone_when_everything_fits():
    policy = make_policy("mrc")
    policy.start(start_snapshot([100, 100], 300))
    decision = policy.decide(snapshot([100, 100], 300, resident=[100, 100]))
    assert list(decision.balloon_target_pages) == [0, 0]


def test_mrc_misses_by_size_matches_the_lru_definition():
    policy = make_policy("mrc")
    policy.start(start_snapshot([10], 10))
    policy.feed(0, np.array([0, 1, 2, 0, 1, 2, 3, 0]))
    misses = misses_by_size(policy._curves[0], 5)
    # Sizes 0..5: 8 misses at 0, 1 and 2; at 3 only the 4 first touches and 0 after 3;
    # 4 first touches from 4 on.
    assert list(misses) == [8, 8, 8, 5, 4, 4]
    # A free is no access, and its page's next access is a first touch (A B A free(A) A:
    # 4 misses at 1 page, 3 at 2).
    policy = make_policy("mrc")
    policy.start(start_snapshot([10], 10))
    policy.feed(0, np.array([0, 1, 0, 0, 0]), frees=np.array([0, 0, 0, 1, 0], dtype=bool))
    assert list(misses_by_size(policy._curves[0], 3)) == [4, 4, 3, 3]


def test_mrc_without_access_streams_falls_back_to_fault_rates():
    policy = make_policy("mrc:min_percent=0")
    policy.start(start_snapshot([1000, 1000], 600))
    policy.decide(snapshot([1000, 1000], 600, resident=[300, 300], guest_faults=[900, 100]))
    # Memory in proportion to sqrt(faults * current): sqrt(900) : sqrt(100) = 3 : 1.
    assert list(policy.allocation_pages) == [450, 150]


# ---------------------------------------------------------------------- free page reporting
GIB_PAGES = 262_144  # 1 GiB in 4 KiB pages


def run_reporting(spec, config, free_by_second, seconds):
    """Feed one snapshot a second (t = 1..seconds) with the given free frames (a function
    of t, one per VM); return the unback requests and the reported counts per second."""
    policy = make_policy(spec)
    policy.start(start_snapshot(config, 4 * sum(config)))
    unbacked = []
    for t in range(1, seconds + 1):
        decision = policy.decide(snapshot(config, 4 * sum(config), t_s=t, free=free_by_second(t)))
        asked = decision.unback_free_pages if decision is not None else None
        unbacked.append([0] * len(config) if asked is None else list(asked))
    return unbacked, [list(r) for r in policy.reported_pages]


def test_free_page_reporting_reports_a_budget_per_2_s_pass():
    """mm/page_reporting.c on a 1 GiB guest with 200,000 frames free throughout.

    390 whole 2 MiB blocks; each pass (every 2 s from the driver's registration) may make
    DIV_ROUND_UP(390, 32 * 16) + 1 = 2 report requests of 32 blocks: 64 blocks = 32,768
    pages per pass, so all 390 blocks (199,680 pages) by the 7th pass, at 14 s. The
    low-watermark gate (1286 + 32 * 512 = 17,670 free pages) is far below."""
    unbacked, reported = run_reporting("free-page-reporting", [GIB_PAGES], lambda t: 200_000, 16)
    per_pass = 64 * 512
    expected = [min(390 * 512, per_pass * (t // 2)) for t in range(1, 17)]
    assert [r[0] for r in reported] == expected
    # The engine is asked at each pass only (an odd second has none), then never again.
    assert [u[0] for u in unbacked] == [e if t % 2 == 0 and t <= 14 else 0
                                        for t, e in enumerate(expected, start=1)]  # fmt: skip


def test_free_page_reporting_takes_about_30_s_on_a_large_idle_guest():
    """16 GiB guest, 3,000,000 frames free: 5859 blocks, budget DIV_ROUND_UP(5859, 512)
    = 12, so 13 requests = 416 blocks per pass; 14 passes (28 s) leave 35 blocks, the
    15th (30 s) reports them: "all pages on an idle system in about 30 seconds"."""
    _, reported = run_reporting("free-page-reporting", [16 * GIB_PAGES], lambda t: 3_000_000, 30)
    assert reported[27][0] == 14 * 416 * 512
    assert reported[29][0] == 5859 * 512


def test_free_page_reporting_needs_the_low_watermark_plus_64_mib_free():
    """A 1 GiB guest reports only with more than its low watermark (1286 pages) + 32
    blocks of 512 pages free: 17,670 pages (zone_watermark_ok is strict)."""
    low = linux_watermarks_pages(GIB_PAGES)[1]
    assert low + 32 * 512 == 17_670
    for free, blocks in ((10_000, 0), (17_670, 0), (17_671, 34)):
        _, reported = run_reporting(
            "free-page-reporting", [GIB_PAGES], lambda t, free=free: free, 4
        )
        assert reported[-1] == [blocks * 512], free


def test_free_page_reporting_takes_a_low_watermark_of_its_own():
    """A 4 MiB guest (1024 pages, Linux's low watermark 80 pages) with 4 KiB blocks: the
    gate is 80 + 32 = 112 free pages, so 100 free report nothing; with
    low_watermark_pages=0 the gate is 32 and the first pass (2 s) reports its budget, two
    requests of 32 blocks: 64 pages."""
    assert linux_watermarks_pages(1024)[1] == 80
    for spec, pages in (("", 0), (",low_watermark_pages=0", 64)):
        _, reported = run_reporting(
            f"free-page-reporting:report_order=0{spec}", [1024], lambda t: 100, 2
        )
        assert reported[-1] == [pages], spec
    with pytest.raises(ConfigError, match=r"policy\.low_watermark_pages"):
        make_policy("free-page-reporting:low_watermark_pages=-1")


def test_free_page_reporting_caps_requests_per_pass_not_in_all():
    """max_requests_per_delay=1: one request of 32 blocks (16,384 pages) per 2 s pass,
    every pass, until all 390 blocks are reported at the 13th pass (26 s). (It used to cap
    the absolute unback count: 16,384 pages, forever.)"""
    _, reported = run_reporting(
        "free-page-reporting:max_requests_per_delay=1", [GIB_PAGES], lambda t: 200_000, 30
    )
    assert [reported[t - 1][0] for t in (2, 4, 24, 26, 30)] == [
        16_384, 32_768, 12 * 16_384, 390 * 512, 390 * 512
    ]  # fmt: skip


def test_free_page_reporting_follows_reuse_and_new_frees():
    """The guest reuses reported frames, then frees memory again.

    2 s: the first pass reports 64 blocks (32,768 pages). 3 s: free falls to 20,000, so
    only 20,000 reported frames are left. 4 s: the pass its budget asked for finds
    (20,000 - 20,000) / 512 = 0 blocks unreported and goes idle. 5 s: free is back at
    200,000, a free requests a pass: at 7 s, 64 more blocks on top of the 20,000."""
    free = {1: 200_000, 2: 200_000, 3: 20_000, 4: 20_000}
    _, reported = run_reporting(
        "free-page-reporting", [GIB_PAGES], lambda t: free.get(t, 200_000), 9
    )
    assert [r[0] for r in reported] == [
        0, 32_768, 20_000, 20_000, 20_000, 20_000, 52_768, 52_768, 85_536
    ]  # fmt: skip


@pytest.mark.parametrize(
    "setting, key",
    [
        ("report_order=-1", "report_order"),  # decide() raised "negative shift count"
        ("report_order=11", "report_order"),
        ("report_delay_s=0", "report_delay_s"),
        ("report_delay_s=-5", "report_delay_s"),
        ("report_delay_s=nan", "report_delay_s"),
        ("report_delay_s=1e300", "report_delay_s"),  # beyond 64-bit nanoseconds
        ("report_capacity_blocks=0", "report_capacity_blocks"),
        ("max_requests_per_delay=-1", "max_requests_per_delay"),
        ("watermark_scale_factor=0", "watermark_scale_factor"),
        ("watermark_scale_factor=3001", "watermark_scale_factor"),
        ("oom_deflate_pages=0", "oom_deflate_pages"),  # a division by zero on OOM
        ("balloon_pages=-1/0", "balloon_pages"),
    ],
)
def test_free_page_reporting_refuses_parameters_out_of_range_at_load(setting, key):
    with pytest.raises(ConfigError, match=rf"policy\.{key}: policy plug-in 'free-page-rep"):
        make_policy(f"free-page-reporting:{setting}")


def test_free_page_reporting_takes_the_range_ends():
    """Each bound itself is accepted, and a pass with it gives a well-formed decision."""
    for setting in (
        "report_order=0",
        "report_order=10",
        "watermark_scale_factor=1",
        "watermark_scale_factor=3000",
        "oom_deflate_pages=1",
        "report_delay_s=1e-9",
    ):
        policy = make_policy(f"free-page-reporting:{setting}")
        call_policy(policy, "start", start_snapshot([4096], 8192))
        call_policy(policy, "decide", snapshot([4096], 8192, t_s=2, free=[4000]))


def test_free_page_reporting_deflates_an_admin_balloon_on_oom():
    policy = make_policy("free-page-reporting:balloon_pages=1000/0")
    assert list(policy.start(start_snapshot([4096, 4096], 8192)).balloon_target_pages) == [1000, 0]
    # VM 0 swaps out 300 pages with no free frame left: two OOM notifications of 256 pages.
    decision = policy.decide(
        snapshot([4096, 4096], 8192, balloon=[1000, 0], free=[0, 0], guest_swap_out=[300, 300])
    )
    assert list(decision.balloon_target_pages) == [1000 - 512, 0]


def test_free_page_reporting_deflates_when_a_ballooned_guest_swaps_with_no_free_frame():
    """The stand-in for Linux's OOM notifier (the model has no OOM path): any swap-out
    with no free frame left at the boundary deflates, 256 pages per 256 swapped; a guest
    that swapped but still has free frames, or has no balloon, keeps its balloon."""
    policy = make_policy("free-page-reporting:balloon_pages=1000/1000/0")
    config = [4096, 4096, 4096]
    policy.start(start_snapshot(config, 3 * 4096))
    decision = policy.decide(
        snapshot(config, 3 * 4096, balloon=[1000, 1000, 0], free=[0, 5, 0],
                 guest_swap_out=[1, 300, 300])
    )  # fmt: skip
    assert list(decision.balloon_target_pages) == [1000 - 256, 1000, 0]


def test_esx_keeps_the_estimate_of_a_vm_without_a_sample():
    policy = make_policy(f"esx:{ESX_FAST}")
    policy.start(start_snapshot([1000, 1000], 4000))
    policy.decide(snapshot([1000, 1000], 4000, t_s=1, resident=[500, 500], **sample([20, 10])))
    assert list(policy.active_fraction) == pytest.approx([0.4, 0.2])
    # VM 1 has no sample this period (0 drawn): only VM 0's estimate moves.
    policy.decide(
        snapshot([1000, 1000], 4000, t_s=2, resident=[500, 500], sampled=[100, 0],
                 sampled_touched=[50, 0])
    )  # fmt: skip
    assert policy.fast[0] == pytest.approx(0.7) and policy.fast[1] == pytest.approx(0.2)


def test_mrc_does_not_balloon_while_host_memory_is_ample():
    """Configured memory exceeds the host, but 40% of it is free: a VM that has not
    started (flat curve) keeps its memory; once free memory falls below 6%, mrc
    partitions."""
    policy = make_policy("mrc:period_s=1,min_percent=10")
    policy.start(start_snapshot([1000, 1000], 1500))
    ample = policy.decide(snapshot([1000, 1000], 1500, t_s=1, resident=[600, 0]))
    assert list(ample.balloon_target_pages) == [0, 0]
    tight = policy.decide(
        snapshot([1000, 1000], 1500, t_s=2, resident=[900, 560], guest_faults=[900, 100])
    )
    assert tight.balloon_target_pages.sum() > 0
