"""Host policies: the interface the replay engine calls at every epoch, and the registry.

A policy *decides*, the engine *executes* (DESIGN.md, "The layout"). At the start of the
replay and at the end of every epoch the engine hands the policy a :class:`Snapshot` of
the host and returns to the trace with the :class:`Decision` it gets back. Decisions take
effect from the next access (never inside one).

Policies are registered by name in the entry-point group ``balloonreplay.policies``;
built-ins register through the same group (pyproject.toml). A test or a notebook can add
one at run time with :func:`register_policy`. Parameters are a dataclass ``Params`` on the
policy class whose defaults are documented; ``name:k=v,k=v`` overlays them, e.g.
``esx:tax=0.5``, and :meth:`HostPolicy.check_params` refuses values out of range when the
policy is made (so a config check finds them at load, before any replay).

A policy is third-party code run inside the engine: a failure in it (loading it, its
start/decide, a malformed decision) is reported as a :class:`BalloonreplayError` naming the
plug-in (``policy plug-in 'esx' (balloonreplay.policies.esx:EsxPolicy): ...``), never as a
bare traceback that looks like the engine's bug.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

import numpy as np

from balloonreplay.errors import BalloonreplayError, ConfigError

ENTRY_POINT_GROUP = "balloonreplay.policies"


@dataclass
class Snapshot:
    """The host as a policy sees it at an epoch boundary. Arrays are indexed by VM.

    Counters (``*_faults``, ``*_swap_*``, ...) cover the epoch that just ended; gauges
    (``*_pages``) are the state at its end. ``epoch`` is -1 for the call before the first
    access (all counters zero).
    """

    epoch: int
    t_ns: int  # host time of the boundary
    epoch_ns: int
    host_pages: int
    host_used_pages: int  # backed + distinct shared contents + overhead
    overhead_pages: np.ndarray
    config_pages: np.ndarray
    balloon_pages: np.ndarray
    balloon_target_pages: np.ndarray
    free_pages: np.ndarray  # guest free frames
    resident_pages: np.ndarray  # frames holding a page
    backed_pages: np.ndarray  # private machine pages
    shared_pages: np.ndarray  # frames backed by a shared copy-on-write page
    host_swapped_pages: np.ndarray
    touched_pages: np.ndarray  # distinct frames accessed in the epoch (access bits)
    free_backed_pages: np.ndarray  # guest free frames still backed or shared (reportable)
    # The working-set sample the policy asked for (Decision.sample_pages): draws, and
    # draws whose frame was accessed since the sample was drawn.
    sampled_pages: np.ndarray
    sampled_touched_pages: np.ndarray
    accesses: np.ndarray
    guest_frees: np.ndarray  # free rows of the trace replayed in the epoch
    guest_faults: np.ndarray
    guest_swap_in: np.ndarray
    guest_swap_out: np.ndarray
    host_swap_in: np.ndarray
    host_swap_out: np.ndarray
    blocked_ns: np.ndarray
    stall_ns: np.ndarray
    finished: np.ndarray  # bool: the VM has replayed all its accesses (False at epoch -1)

    # The per-VM fields a replay fills from its gauges and its epoch counters, by name.
    GAUGES: ClassVar[tuple[str, ...]] = (
        "balloon_pages",
        "balloon_target_pages",
        "free_pages",
        "resident_pages",
        "backed_pages",
        "shared_pages",
        "host_swapped_pages",
        "touched_pages",
        "free_backed_pages",
    )
    COUNTERS: ClassVar[tuple[str, ...]] = (
        "accesses",
        "guest_frees",
        "guest_faults",
        "guest_swap_in",
        "guest_swap_out",
        "host_swap_in",
        "host_swap_out",
        "blocked_ns",
        "stall_ns",
    )

    @classmethod
    def from_measures(cls, gauges: dict, counters: dict, **fields: Any) -> Snapshot:
        """A snapshot whose per-VM gauges and counters are taken by name from `gauges`
        and `counters` (one value per VM each); `fields` gives the rest."""
        for names, source in ((cls.GAUGES, gauges), (cls.COUNTERS, counters)):
            for name in names:
                fields[name] = np.asarray(source[name], dtype=np.int64)
        return cls(**fields)

    @property
    def num_vms(self) -> int:
        return len(self.config_pages)

    @property
    def host_free_pages(self) -> int:
        return self.host_pages - self.host_used_pages


@dataclass
class Decision:
    """What a policy wants from the next access on. ``None`` leaves a setting unchanged.

    - ``balloon_target_pages``: per-VM balloon size the driver moves toward at the
      configured rate (clamped to 0..config_pages-1 by the engine).
    - ``host_swap_target_pages``: per-VM number of frames the host wants swapped out; the
      host swaps the VM's pages out (by its selection) at the boundary until reached.
    - ``allow_host_swap``: whether the host may swap on demand when it is full, for every
      VM (a bool) or per VM (an array: the VM that needs the page decides); a VM not
      allowed that needs a machine page blocks until memory frees.
    - ``scan_rate_pages_per_s``: per-VM page-sharing scan rate (used only with sharing on).
    - ``unback_free_pages``: per VM, how many of the guest's longest-free frames the host
      unbacks now (free page reporting); backing comes back on reuse as a zero page.
    - ``sample_pages``: per VM, start a new working-set sample of that many random frames
      (0 ends it); the snapshots that follow report how many of them were touched. Frames
      are drawn with replacement, so a sample may exceed the VM's frames, up to
      ``max(SAMPLE_DRAWS_PER_FRAME * config_pages, SAMPLE_DRAWS_ANY_VM)`` draws.

    Values must be whole numbers within 64 bits; every field but ``balloon_target_pages``
    must be >= 0 (a ConfigError names the field otherwise). Balloon targets outside
    0..config_pages-1 are clamped, which lets a policy compute them without bounds checks.
    """

    balloon_target_pages: Any = None
    host_swap_target_pages: Any = None
    allow_host_swap: Any = None
    scan_rate_pages_per_s: Any = None
    unback_free_pages: Any = None
    sample_pages: Any = None

    PER_VM_FIELDS: ClassVar[tuple[str, ...]] = (
        "balloon_target_pages",
        "host_swap_target_pages",
        "scan_rate_pages_per_s",
        "unback_free_pages",
        "sample_pages",
    )

    # Only balloon targets may be negative (clamped to 0, see above): a negative count of
    # pages to swap, unback, scan or sample is a policy's bug, not a request for none.
    CLAMPED_FIELDS: ClassVar[tuple[str, ...]] = ("balloon_target_pages",)

    def checked(self, num_vms: int, config_pages: Any = None) -> Decision:
        """This decision with every per-VM field as an int64 array of one value per VM
        (``allow_host_swap``: one bool, or one per VM), or a ConfigError naming the field.
        With `config_pages`, sample sizes are bounded too (see the class docstring)."""
        out = Decision()
        for name in self.PER_VM_FIELDS:
            value = getattr(self, name)
            if value is not None:
                array = _per_vm_values(value, num_vms, name, np.int64)
                if name not in self.CLAMPED_FIELDS and np.any(array < 0):
                    raise ConfigError(
                        f"decision.{name}", f"expected page counts >= 0 per VM, got {value!r}"
                    )
                setattr(out, name, array)
        if out.sample_pages is not None and config_pages is not None:
            frames = np.asarray(config_pages, dtype=np.int64)
            limit = np.maximum(SAMPLE_DRAWS_PER_FRAME * frames, SAMPLE_DRAWS_ANY_VM)
            if np.any(out.sample_pages > limit):
                raise ConfigError(
                    "decision.sample_pages",
                    f"a sample draws at most max({SAMPLE_DRAWS_PER_FRAME} x the VM's frames, "
                    f"{SAMPLE_DRAWS_ANY_VM}) pages (frames per VM: {frames.tolist()}), got "
                    f"{out.sample_pages.tolist()}",
                )
        if self.allow_host_swap is not None:
            allow = np.asarray(self.allow_host_swap)
            if allow.ndim == 0:
                out.allow_host_swap = np.full(num_vms, bool(allow))
            else:
                out.allow_host_swap = _per_vm_values(allow, num_vms, "allow_host_swap", bool)
        return out


# Bounds on a working-set sample's draws (Decision.sample_pages), which the engine holds
# in memory (8 bytes each): per frame of the VM, so a sample never costs more than the
# 88 bytes the engine keeps per frame, and for any VM however small (ESX samples 100).
SAMPLE_DRAWS_PER_FRAME = 8
SAMPLE_DRAWS_ANY_VM = 1024


def _per_vm_values(value: Any, num_vms: int, name: str, dtype) -> np.ndarray:
    try:
        array = np.asarray(value)
        if array.shape != (num_vms,):
            raise ValueError(f"shape {array.shape}")
        if dtype is bool:
            return array.astype(bool)
        as_float = array.astype(np.float64)
        if not np.all(np.isfinite(as_float)) or np.any(array != np.round(array)):
            raise ValueError("non-integer values")
        # astype(int64) wraps what is beyond 64 bits (1e20, 2**63) to arbitrary values.
        if np.any(np.abs(as_float) >= 2.0**63):
            raise ValueError("values beyond the 64-bit range")
        return array.astype(np.int64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"decision.{name}",
            f"a policy must give one {'bool' if dtype is bool else 'whole number'} per VM "
            f"({num_vms} VMs), got {value!r} ({exc})",
        ) from None


class HostPolicy:
    """Base class. Subclasses set ``name``, ``description``, a ``Params`` dataclass, and
    override :meth:`decide` (and :meth:`start` if they act before the first access)."""

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    # The real system shares pages (ESX's scanner, MOM's KSM rules): a replay turns page
    # sharing on for it unless told otherwise.
    wants_sharing: ClassVar[bool] = False

    @dataclass
    class Params:
        pass

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    def check_params(self) -> None:
        """Raise ConfigError (key ``policy.<param>``) for a parameter out of range.

        What can be judged without the host: called by :func:`make_policy`, so a config
        check refuses it at load, and by the policy's own start() for a policy built
        directly from its Params. Checks that need the VMs' sizes stay in start()."""

    def attach(self, trace: Any) -> None:
        """Called once before :meth:`start` with the trace being replayed (an object with
        ``metadata`` and ``iter_batches()`` of canonical batches, its own iterator each
        call), for a policy that follows the access streams itself (``mrc``)."""

    def start(self, snapshot: Snapshot) -> Decision | None:
        """Called once before the first access."""
        return None

    def decide(self, snapshot: Snapshot) -> Decision | None:
        """Called at the end of every epoch; return None to change nothing."""
        return None

    def describe(self) -> dict[str, Any]:
        """Name and parameters, recorded in the metrics file."""
        params = dataclasses.asdict(self.params) if dataclasses.is_dataclass(self.params) else {}
        return {"name": self.name, "params": params}


_RUNTIME_POLICIES: dict[str, type[HostPolicy]] = {}


def register_policy(name: str, cls: type[HostPolicy]) -> None:
    """Register a policy class at run time (tests, notebooks); wins over entry points."""
    _check_policy_class(cls, f"policy {name!r}")
    _RUNTIME_POLICIES[name] = cls


def _check_policy_class(cls: Any, label: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, HostPolicy)):
        raise ConfigError(
            "policy", f"{label} is not usable: expected a HostPolicy subclass, got {cls!r}"
        )
    if not (isinstance(cls.Params, type) and dataclasses.is_dataclass(cls.Params)):
        raise ConfigError(
            "policy",
            f"{label} is not usable: its Params must be a dataclass with documented "
            f"defaults, got {cls.Params!r}",
        )


def policy_label(policy: HostPolicy) -> str:
    """``policy plug-in 'esx' (balloonreplay.policies.esx:EsxPolicy)``: for error messages."""
    cls = type(policy)
    return f"policy plug-in {policy.name!r} ({cls.__module__}:{cls.__qualname__})"


@contextlib.contextmanager
def plugin_errors(label: str, what: str) -> Iterator[None]:
    """Name the plug-in in any failure of its code.

    Our own errors keep their class and attributes (a ConfigError its key) and get the
    label in their message; anything else becomes a BalloonreplayError saying what raised
    it, with the original chained. KeyboardInterrupt and SystemExit pass untouched.
    """
    try:
        yield
    except BalloonreplayError as exc:
        text = str(exc)
        if label not in text:
            head = f"config: {exc.key}: " if isinstance(exc, ConfigError) else ""
            if head and text.startswith(head):
                exc.args = (f"{head}{label}: {text[len(head) :]}",)
            else:
                exc.args = (f"{label}: {text}",)
        raise
    except Exception as exc:
        raise BalloonreplayError(f"{label}: {what} raised {type(exc).__name__}: {exc}") from exc


def call_policy(policy: HostPolicy, method: str, snapshot: Snapshot) -> Decision | None:
    """``policy.start(snapshot)`` or ``policy.decide(snapshot)``, its decision checked
    (:meth:`Decision.checked`, samples bounded by the VMs' frames), or an error naming the
    policy and what was wrong. Both engines call policies through this."""
    label = policy_label(policy)
    with plugin_errors(label, f"{method}()"):
        decision = getattr(policy, method)(snapshot)
    if decision is None:
        return None
    if not isinstance(decision, Decision):
        raise ConfigError(
            "decision",
            f"{label}: {method}() must return a Decision or None, got "
            f"{type(decision).__name__} {decision!r:.200}",
        )
    with plugin_errors(label, f"checking the decision of {method}()"):
        return decision.checked(snapshot.num_vms, snapshot.config_pages)


def available_policies() -> list[str]:
    names = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names | set(_RUNTIME_POLICIES))


def get_policy_class(name: str) -> type[HostPolicy]:
    if name in _RUNTIME_POLICIES:
        return _RUNTIME_POLICIES[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            label = f"policy plug-in {name!r} ({ep.value})"
            try:
                cls = ep.load()
            except Exception as exc:  # a broken third-party plug-in must not look like our bug
                raise ConfigError("policy", f"{label} failed to load: {exc!r}") from exc
            _check_policy_class(cls, label)
            return cls
    raise ConfigError(
        "policy", f"unknown host policy {name!r}; installed: {', '.join(available_policies())}"
    )


def _coerce(text: str, field: dataclasses.Field, default: Any, key: str, policy: str) -> Any:
    """Turn a ``k=v`` string into the type of the documented default or, when the default
    is None or a list (neither says what the parameter holds), by the field's annotation."""
    if default is None or isinstance(default, list | tuple):
        return _coerce_by_annotation(text, field, default, key, policy)
    try:
        if isinstance(default, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ConfigError(
            f"policy.{key}", f"expected a {type(default).__name__}, got {text!r}"
        ) from None
    return text


def _coerce_by_annotation(text: str, field: dataclasses.Field, default: Any, key: str, policy: str):
    from balloonreplay.policies._util import parse_per_vm_text
    from balloonreplay.traces.formats import _coerce as coerce_option

    # A class (`x: int`) or, under `from __future__ import annotations`, its text.
    annotation = field.type.__name__ if isinstance(field.type, type) else str(field.type)
    if default is None and text.lower() in ("none", "null"):
        return None
    if "list" in annotation.lower() or isinstance(default, list | tuple):
        values = parse_per_vm_text(text, key)
        # A per-VM parameter: one number for every VM, or one per VM ("3000/1000").
        if "int" in annotation:
            values = [int(v) if v.is_integer() else v for v in np.atleast_1d(values).tolist()]
            values = values[0] if len(values) == 1 else values
        return values
    try:
        return coerce_option(text, default, annotation, key, f"policy {policy!r}")
    except BalloonreplayError as exc:
        raise ConfigError(f"policy.{key}", str(exc)) from None


def parse_policy_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"esx:tax=0.5,period=30"`` -> ``("esx", {"tax": "0.5", "period": "30"})``."""
    name, _, rest = spec.partition(":")
    overrides: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("policy", f"expected k=v in {spec!r}, got {item!r}")
        overrides[key.strip()] = value.strip()
    return name.strip(), overrides


def make_policy(spec: str | HostPolicy, overrides: dict[str, Any] | None = None) -> HostPolicy:
    """Build a policy from ``name[:k=v,...]`` (plus a mapping from config) with its
    parameters checked (:meth:`HostPolicy.check_params`), or pass an instance through.

    An instance is used as it is: `overrides` with it are refused (set them on its
    ``params``, or give the policy by name) rather than silently dropped.
    """
    if isinstance(spec, HostPolicy):
        if overrides:
            raise ConfigError(
                "policy_params",
                f"parameters {sorted(overrides)} given with a policy instance "
                f"({policy_label(spec)}); set them on its params, or give the policy by name",
            )
        return spec
    if not isinstance(spec, str):
        raise ConfigError(
            "policy",
            "a policy must be a name ('esx:tax=0.5') or a HostPolicy instance, got "
            f"{type(spec).__name__} {spec!r:.100}",
        )
    name, text_overrides = parse_policy_spec(spec)
    cls = get_policy_class(name)
    label = f"policy plug-in {name!r} ({cls.__module__}:{cls.__qualname__})"
    with plugin_errors(label, "Params()"):
        params = cls.Params()
    fields = {f.name: f for f in dataclasses.fields(params)}
    merged: dict[str, Any] = dict(overrides or {})
    merged.update(text_overrides)
    for key, value in merged.items():
        if key not in fields:
            raise ConfigError(
                f"policy.{key}",
                f"policy {name!r} has no parameter {key!r}; it has: {', '.join(fields) or 'none'}",
            )
        default = getattr(params, key)
        if isinstance(value, str) and not isinstance(default, str):
            value = _coerce(value, fields[key], default, key, name)
        else:
            from balloonreplay.config_check import type_problem

            problem = type_problem(value, default, fields[key].type)
            if problem:
                raise ConfigError(f"policy.{key}", f"policy {name!r}: {problem}")
        setattr(params, key, value)
    with plugin_errors(label, "its constructor"):
        policy = cls(params)
    if policy.name == HostPolicy.name:  # no name of its own: the one it is registered by
        policy.name = name
    with plugin_errors(label, "check_params()"):
        policy.check_params()
    return policy


__all__ = [
    "Decision",
    "HostPolicy",
    "Snapshot",
    "available_policies",
    "call_policy",
    "get_policy_class",
    "make_policy",
    "parse_policy_spec",
    "plugin_errors",
    "policy_label",
    "register_policy",
]
