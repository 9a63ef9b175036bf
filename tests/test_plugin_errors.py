"""A broken or misbehaving plug-in (host policy or trace format) fails with one error that
names it (``policy plug-in 'x' (module:Class): ...``), never a bare traceback that looks
like the engine's bug; values a policy cannot take fail when it is made, or at config load.

Each test installs its plug-ins the way pip leaves a package: a module and a .dist-info
directory with entry_points.txt on sys.path.
"""

from __future__ import annotations

import itertools
import textwrap
import warnings

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from conftest import TEST_DATA
from policy_helpers import start_snapshot

import balloonreplay
from balloonreplay.cli import main
from balloonreplay.config_check import _check_policy
from balloonreplay.errors import BalloonreplayError, ConfigError, TraceError
from balloonreplay.policies import (
    Decision,
    HostPolicy,
    call_policy,
    get_policy_class,
    make_policy,
)
from balloonreplay.policies._util import per_vm
from balloonreplay.traces.formats import get_format, sniff_format

_PACKAGES = itertools.count()

POLICIES = """
from dataclasses import dataclass
import numpy as np
from balloonreplay.errors import ConfigError
from balloonreplay.policies import Decision, HostPolicy

class NotSub:
    pass

class PlainParams(HostPolicy):
    Params = dict

class Ok(HostPolicy):
    name = "pe-ok"

    @dataclass
    class Params:
        frac: float = 0.5
        cap: int | None = None
        per_vm: list[int] | None = None

    def start(self, s):
        t = (s.config_pages * self.params.frac).astype(np.int64)
        if self.params.cap is not None:
            t = np.minimum(t, self.params.cap)
        return Decision(balloon_target_pages=t)

class NoName(HostPolicy):
    def start(self, s):
        return Decision(balloon_target_pages=s.config_pages // 2)

class Raises(HostPolicy):
    name = "pe-raises"
    def decide(self, s):
        raise RuntimeError("boom in decide")

class DictDecision(HostPolicy):
    name = "pe-dict"
    def start(self, s):
        return {"balloon_target_pages": [0] * s.num_vms}

class Short(HostPolicy):
    name = "pe-short"
    def start(self, s):
        return Decision(balloon_target_pages=np.zeros(s.num_vms + 1, dtype=np.int64))

class OwnConfigError(HostPolicy):
    name = "pe-own"
    def start(self, s):
        raise ConfigError("host_mem", "too small for this policy")

class Interrupted(HostPolicy):
    name = "pe-interrupted"
    def start(self, s):
        raise KeyboardInterrupt
"""

FORMATS = """
import dataclasses
import numpy as np
from balloonreplay.errors import TraceError
from balloonreplay.traces.formats import TraceFormat, option
from balloonreplay.traces.schema import make_batch

@dataclasses.dataclass
class Opts:
    ns_per_line: int = option(10, "ns per line")

class Fmt(TraceFormat):  # lines "PAGE R|W" after a "#pefmt" line
    name = "pefmt"
    description = "PAGE R|W per line"
    Options = Opts

    def sniff(self, path):
        with open(path, "rb") as fh:
            return fh.read(6) == b"#pefmt"

    def read(self, path, options):
        rows = [l.split() for l in open(path) if l.strip() and not l.startswith("#")]
        yield make_batch(vm=0, t_ns=np.arange(len(rows)) * options.ns_per_line,
                         page=[int(p) for p, _ in rows], write=[op == "W" for _, op in rows])

class NotSub:
    name = "notsub"

class DictOptions(Fmt):
    Options = dict

@dataclasses.dataclass
class Required:
    needed: int

class RequiredOption(Fmt):
    Options = Required

class TextSniff(Fmt):
    def sniff(self, path):
        with open(path) as fh:  # text mode: UnicodeDecodeError on binary files
            return fh.read(6) == "#pefmt"

class Raises(Fmt):
    def read(self, path, options):
        raise ValueError("boom in read")
        yield

class NotBatch(Fmt):
    def read(self, path, options):
        yield {"vm": [0], "t_ns": [0], "page": [1], "write": [True]}

class OwnTraceError(Fmt):
    def read(self, path, options):
        raise TraceError(path, "line 2", "expected PAGE R|W")
        yield
"""


def install(tmp_path, monkeypatch, source: str, entry_points: dict[str, dict[str, str]]) -> str:
    """Install `source` as a fresh module with these entry points ({group: {name: attr}}),
    and beside it a module `<module>_broken` that fails on import."""
    module = f"br_plugin_errors_{next(_PACKAGES)}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    (tmp_path / f"{module}_broken.py").write_text("raise ImportError('deliberately broken')\n")
    dist = tmp_path / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {module}{attr}" for name, attr in entries.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    # A new sys.path: the format registry's entry-point cache is keyed by it.
    monkeypatch.syspath_prepend(str(tmp_path))
    return module


@pytest.fixture
def policies(tmp_path, monkeypatch):
    return install(
        tmp_path,
        monkeypatch,
        POLICIES,
        {
            "balloonreplay.policies": {
                "pe-importerr": "_broken:X",
                "pe-notsub": ":NotSub",
                "pe-plainparams": ":PlainParams",
                "pe-missing": ":DoesNotExist",
                "pe-ok": ":Ok",
                "pe-noname": ":NoName",
                "pe-raises": ":Raises",
                "pe-dict": ":DictDecision",
                "pe-short": ":Short",
                "pe-own": ":OwnConfigError",
                "pe-interrupted": ":Interrupted",
            }
        },
    )


@pytest.fixture
def formats(tmp_path, monkeypatch):
    return install(
        tmp_path,
        monkeypatch,
        FORMATS,
        {
            "balloonreplay.trace_formats": {
                "aaa-notsub": ":NotSub",
                "pefmt-dictoptions": ":DictOptions",
                "pefmt-required": ":RequiredOption",
                "aaa-textsniff": ":TextSniff",
                "pefmt-raises": ":Raises",
                "pefmt-notbatch": ":NotBatch",
                "pefmt-traceerror": ":OwnTraceError",
            }
        },
    )


def tiny_table() -> pa.Table:
    """Two VMs, four pages each, a few accesses: dense ids, no dense flag (in memory)."""
    n = 16
    return pa.table(
        {
            "vm": pa.array(np.arange(n) % 2, pa.uint16()),
            "t_ns": pa.array(np.arange(n) * 100_000, pa.uint64()),
            "page": pa.array((np.arange(n) // 2) % 4, pa.uint64()),
            "write": pa.array(np.arange(n) % 3 == 0),
        }
    )


def run_replay(policy, **options):
    return balloonreplay.replay(
        tiny_table(), vms="8p", host="12p", policy=policy, epoch_ns=200_000, **options
    )


# ---------------------------------------------------------------- 1: loading a policy
def test_a_policy_plug_in_that_fails_to_load_is_named(policies):
    cases = {
        "pe-importerr": f"({policies}_broken:X) failed to load: ImportError",
        "pe-missing": f"({policies}:DoesNotExist) failed to load: AttributeError",
        "pe-notsub": f"({policies}:NotSub) is not usable: expected a HostPolicy subclass",
        "pe-plainparams": f"({policies}:PlainParams) is not usable: its Params must be a",
    }
    for name, expected in cases.items():
        with pytest.raises(ConfigError) as caught:
            get_policy_class(name)
        assert caught.value.key == "policy"
        assert f"policy plug-in {name!r} {expected}" in str(caught.value)
    # The config check names the policy entry instead of letting the ImportError escape.
    with pytest.raises(ConfigError) as caught:
        _check_policy("experiments.e.policies[0]", {"name": "pe-importerr"})
    assert caught.value.key == "experiments.e.policies[0].name"
    assert "failed to load" in str(caught.value)


def test_the_cli_reports_a_broken_policy_in_one_line(policies):
    result = CliRunner().invoke(
        main, ["replay", str(TEST_DATA / "touch_pages.parquet"), "--policy", "pe-notsub"]
    )
    assert result.exit_code == 1
    assert "error: --policy: policy plug-in 'pe-notsub'" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- 2: a policy at run time
@pytest.mark.parametrize(
    ("name", "key", "expected"),
    [
        ("pe-raises", None, "decide() raised RuntimeError: boom in decide"),
        ("pe-dict", "decision", "start() must return a Decision or None, got dict"),
        ("pe-short", "decision.balloon_target_pages", "one whole number per VM (2 VMs)"),
    ],
)
@pytest.mark.parametrize("engine", ["numba", "reference"])
def test_a_failure_inside_a_policy_names_it(policies, name, key, expected, engine):
    with pytest.raises(BalloonreplayError) as caught:
        run_replay(name, engine=engine)
    message = str(caught.value)
    assert f"policy plug-in {name!r} ({policies}:" in message
    assert expected in message
    assert getattr(caught.value, "key", None) == key
    if name == "pe-raises":
        assert isinstance(caught.value.__cause__, RuntimeError)  # the original, chained


def test_our_own_errors_from_a_policy_keep_their_class_key_and_message(policies):
    snapshot = start_snapshot([8, 8], 12)
    with pytest.raises(ConfigError) as caught:
        call_policy(make_policy("pe-own"), "start", snapshot)
    assert caught.value.key == "host_mem"
    assert str(caught.value) == (
        f"config: host_mem: policy plug-in 'pe-own' ({policies}:OwnConfigError): "
        "too small for this policy"
    )
    with pytest.raises(KeyboardInterrupt):
        call_policy(make_policy("pe-interrupted"), "start", snapshot)


# ---------------------------------------------------------------- 3: listing and sniffing
def test_a_wrong_shaped_format_is_listed_as_broken(formats):
    result = CliRunner().invoke(main, ["formats"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line[:1] != " "}
    assert "[broken]" in lines["aaa-notsub"]
    assert "expected a TraceFormat subclass" in lines["aaa-notsub"]
    assert "[broken]" in lines["pefmt-dictoptions"]
    assert "Options must be a dataclass" in lines["pefmt-dictoptions"]
    assert "[broken]" in lines["pefmt-required"]
    assert "needed has none" in lines["pefmt-required"]
    assert "[read/write]" in lines["csv"]  # the others are still listed


def test_a_sniff_that_raises_counts_as_not_this_format(tmp_path, formats):
    binary = tmp_path / "trace.csv"
    binary.write_bytes(b"vm,t_ns,page,write\n0,0,1,1\n\xb5\xff\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sniff_format(binary).name == "csv"
    messages = [str(w.message) for w in caught]
    assert any("'aaa-textsniff'" in m and "UnicodeDecodeError" in m for m in messages)
    assert any("'aaa-notsub'" in m and "failed to load" in m for m in messages)
    with pytest.raises(TraceError, match="cannot read file"):
        sniff_format(tmp_path / "trace.csv" / "not-a-dir")
    # The CLI prints each warning as one line, without Python's source location.
    result = CliRunner().invoke(main, ["ingest", str(binary), "-o", str(tmp_path / "t.parquet")])
    lines = result.output.splitlines()
    assert any(
        line.startswith("warning: trace format plug-in 'aaa-textsniff'") for line in lines
    ), result.output
    assert "warnings.warn(" not in result.output and "UserWarning" not in result.output


# ---------------------------------------------------------------- 4: a format's read()
def test_a_failing_read_names_the_format(tmp_path, formats):
    source = tmp_path / "t.pe"
    source.write_text("#pefmt\n1 R\n2 W\n")
    out = tmp_path / "t.parquet"
    cases = {
        "pefmt-raises": "read(" + repr(str(source)) + ") raised ValueError: boom in read",
        "pefmt-notbatch": "read() must yield pyarrow.RecordBatch in the canonical schema, got dict",
    }
    for name, expected in cases.items():
        result = CliRunner().invoke(main, ["ingest", str(source), "-f", name, "-o", str(out)])
        assert result.exit_code == 1, result.output
        assert f"error: trace format plug-in {name!r} ({formats}:" in result.output
        assert expected in result.output
    # A TraceError of the plug-in's own already names the file and the place: kept as is.
    fmt = get_format("pefmt-traceerror")
    with pytest.raises(TraceError) as caught:
        list(fmt.read(source, fmt.make_options()))
    assert str(caught.value) == f"{source}: line 2: expected PAGE R|W"


# ---------------------------------------------------------------- 5, 6: parameter text
def test_overrides_of_optional_and_list_params_are_typed_by_annotation(policies):
    ok = make_policy("pe-ok:cap=3,per_vm=4/5")
    assert ok.params.cap == 3 and isinstance(ok.params.cap, int)
    assert ok.params.per_vm == [4, 5]
    assert make_policy("pe-ok:per_vm=7").params.per_vm == 7  # one value for every VM
    assert make_policy("pe-ok:cap=none").params.cap is None
    with pytest.raises(ConfigError) as caught:
        make_policy("pe-ok:cap=three")
    assert caught.value.key == "policy.cap"


@pytest.mark.parametrize(
    "spec", ["esx:shares=abc", "hyperv:weight=x", "esx:limit_pages=lots", "esx:shares=1/x"]
)
def test_bad_per_vm_text_names_the_parameter(spec):
    key = spec.split(":")[1].split("=")[0]
    with pytest.raises(ConfigError) as caught:
        make_policy(spec)
    assert caught.value.key == f"policy.{key}"
    assert "one per VM" in str(caught.value)


def test_per_vm_refuses_text_that_is_not_numbers():
    with pytest.raises(ConfigError, match="policy.shares"):
        per_vm("abc", 2, 1.0, "shares", np.float64)
    assert list(per_vm("3/4", 2, 1, "x")) == [3, 4]


# ---------------------------------------------------------------- 7: ranges at config load
@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ("esx:tax=1.5", "p"),
        ({"name": "esx", "params": {"tax": 1.5}}, "p.params.tax"),
        (
            {"name": "balloon", "params": {"max_balloon_percent": 200}},
            "p.params.max_balloon_percent",
        ),
        ({"name": "esx", "params": {"sample_pages": -5}}, "p.params.sample_pages"),
        ({"name": "esx", "params": {"shares": "abc"}}, "p.params.shares"),
        ({"name": "hyperv", "params": {"weight": [20000]}}, "p.params.weight"),
        ({"name": "mrc", "params": {"decay": 0}}, "p.params.decay"),
        ({"name": "esx", "params": {"reservation_pages": [10, -1]}}, "p.params.reservation_pages"),
        ({"name": "hyperv", "params": {"minimum_pages": -5}}, "p.params.minimum_pages"),
    ],
)
def test_parameters_out_of_range_fail_at_config_load(entry, key):
    with pytest.raises(ConfigError) as caught:
        _check_policy("p", entry)
    assert caught.value.key == key


def test_a_policy_built_from_its_params_still_checks_them_at_start():
    cls = get_policy_class("esx")
    policy = cls(cls.Params(tax=1.5))
    with pytest.raises(ConfigError, match="idle tax"):
        policy.start(start_snapshot([100, 100], 200))


# ---------------------------------------------------------------- 8, 9, 12: replay(policy=)
def test_policy_params_with_an_instance_are_refused(policies):
    with pytest.raises(ConfigError) as caught:
        run_replay(make_policy("pe-ok"), policy_params={"frac": 0.1})
    assert caught.value.key == "policy_params"


def test_a_policy_without_a_name_of_its_own_is_recorded_by_its_entry_point(policies):
    assert run_replay("pe-noname").policy["name"] == "pe-noname"


def test_a_duck_typed_policy_is_refused():
    class Duck:
        name = "duck"

        def start(self, snapshot):
            return None

    with pytest.raises(ConfigError, match="a policy must be a name .* or a HostPolicy instance"):
        run_replay(Duck())


# ---------------------------------------------------------------- 10: decision ranges
class _Fixed(HostPolicy):
    name = "fixed-decision"

    def __init__(self, **decision):
        super().__init__()
        self.decision = decision

    def start(self, snapshot):
        return Decision(**self.decision)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("balloon_target_pages", np.full(2, 1e20), "beyond the 64-bit range"),
        ("balloon_target_pages", np.full(2, 2**63, dtype=np.uint64), "beyond the 64-bit range"),
        ("host_swap_target_pages", [-1, 0], ">= 0"),
        ("unback_free_pages", [0, -1], ">= 0"),
        ("scan_rate_pages_per_s", [-5, -5], ">= 0"),
        ("sample_pages", [10**12, 1], "a sample draws at most max(8 x the VM's frames, 1024)"),
    ],
)
def test_out_of_range_decisions_are_refused_naming_the_field(field, value, expected):
    with pytest.raises(ConfigError) as caught:
        call_policy(_Fixed(**{field: value}), "start", start_snapshot([8, 8], 12))
    assert caught.value.key == f"decision.{field}"
    assert "policy plug-in 'fixed-decision'" in str(caught.value)
    assert expected in str(caught.value)


def test_in_range_balloon_targets_are_still_clamped():
    policy = _Fixed(balloon_target_pages=[-3, 100])
    assert list(run_replay(policy).metrics.groupby("vm").balloon_target_pages.max()) == [0, 7]


# ---------------------------------------------------------------- 13: sparse page ids
def test_huge_page_ids_in_a_table_are_blamed_on_the_page_ids():
    table = tiny_table()
    sparse = table.set_column(2, "page", pa.compute.add(table["page"], pa.scalar(0x7F0000000)))
    with pytest.raises(TraceError) as caught:
        balloonreplay.replay(sparse, vms="2p")
    assert "page ids up to" in str(caught.value)
    assert "ingest the trace first" in str(caught.value)
    assert "vm_mem" not in str(caught.value)
    assert run_replay("none").summary["accesses"] == 16  # small ids still replay
