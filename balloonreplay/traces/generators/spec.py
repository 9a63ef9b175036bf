"""Parse and check a workload spec (the YAML mapping documented in the package docstring).

Every error is a ConfigError whose key is the full path to the offending setting, e.g.
``vm_types.web.phases[1].alpha``, and whose message says what was expected.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from balloonreplay.errors import ConfigError, one_line
from balloonreplay.traces.io import looked_for
from balloonreplay.units import parse_size_pages

PHASE_KINDS = ("zipf", "uniform", "scan", "boot", "heap", "idle")
WRITE_CONTENT_MODES = ("fresh", "keep", "zero")
RELEASE_MODES = ("drop", "zero", "free")

# Content ids pack (kind, VM or image, index) into 64 bits; see content.py.
MAX_PAGE_SPACE = 1 << 46
MAX_VMS = 1 << 16
SHOWN_CHARS = 60  # of a bad value quoted in an error

_CONTENT_KEYS = {"zero_fraction", "image_fraction", "image_pool_pages"}
_VM_TYPE_KEYS = {"memory", "image", "mean_interaccess_ns", "repeat", "content", "phases"}
_VM_ENTRY_KEYS = {"type", "count", "name", "start_ns", "stagger_ns"}
_TOP_KEYS = {"name", "description", "content", "vm_types", "vms"}
_PHASE_COMMON_KEYS = {
    "kind",
    "accesses",
    "duration_ns",
    "footprint",
    "offset",
    "write_fraction",
    "write_content",
    "mean_interaccess_ns",
    "burst",
}
_PHASE_EXTRA_KEYS = {
    "zipf": {"alpha", "shift"},
    "uniform": {"shift"},
    "scan": {"file_backed"},
    "boot": set(),
    "heap": {"grow_fraction", "release"},
}


@dataclass(frozen=True)
class ContentModel:
    """Initial content of a page on first touch: zero, from the image's pool, or private."""

    zero_fraction: float = 0.0
    image_fraction: float = 0.0
    # 0: the pool holds one content per guest page (page p of every VM of the image has
    # the same image content); N > 0: contents drawn from N per image, so duplicates
    # also occur inside one VM.
    image_pool_pages: int = 0


@dataclass(frozen=True)
class Shift:
    """Working-set drift: the region moves by `pages` every `every_accesses` accesses."""

    every_accesses: int
    pages: int


@dataclass(frozen=True)
class Burst:
    """Activity in bursts: `on_ns` of accesses, then `off_ns` of silence, repeating."""

    on_ns: int
    off_ns: int


@dataclass(frozen=True)
class Phase:
    kind: str
    accesses: int  # 0 for idle
    duration_ns: int  # idle length; 0 for access phases
    footprint_pages: int
    offset_pages: int
    write_fraction: float
    write_content: str
    mean_interaccess_ns: float
    file_backed: bool = False
    alpha: float = 0.0
    shift: Shift | None = None
    burst: Burst | None = None
    grow_fraction: float = 0.5
    release: str = "drop"

    def max_page_end(self) -> int:
        """One past the highest page this phase can touch."""
        end = self.offset_pages + self.footprint_pages
        if self.shift is not None and self.accesses > 0:
            end += ((self.accesses - 1) // self.shift.every_accesses) * self.shift.pages
        return end


@dataclass(frozen=True)
class VmType:
    name: str
    memory_pages: int
    image: str
    mean_interaccess_ns: float
    repeat: int
    content: ContentModel
    phases: tuple[Phase, ...]

    @property
    def accesses(self) -> int:
        return self.repeat * sum(p.accesses for p in self.phases)

    @property
    def page_space(self) -> int:
        return max((p.max_page_end() for p in self.phases), default=0)


@dataclass(frozen=True)
class VmInstance:
    index: int
    name: str
    vm_type: VmType
    start_ns: int


@dataclass(frozen=True)
class WorkloadSpec:
    name: str
    vms: tuple[VmInstance, ...]
    images: tuple[str, ...]  # distinct image names, sorted; a VM's image id is its index
    raw: dict[str, Any] = field(default_factory=dict)  # the spec as given, for metadata

    @property
    def accesses(self) -> int:
        return sum(vm.vm_type.accesses for vm in self.vms)

    def image_id(self, image: str) -> int:
        return self.images.index(image)


# --- small checked getters ---------------------------------------------------------------


def _shown(value: Any) -> str:
    """``repr(value)``, cut to a length an error line can hold: a file that is no spec
    (a CSV trace) loads as one string of megabytes."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"expected a mapping, got {type(value).__name__} {_shown(value)}")
    return value


def _check_keys(obj: Mapping[str, Any], allowed: set[str], key: str) -> None:
    for name in obj:
        if name not in allowed:
            where = f"{key}.{name}" if key else str(name)
            raise ConfigError(where, f"unknown key (expected one of {', '.join(sorted(allowed))})")


def _required_mapping(value: Any, names: tuple[str, ...], key: str, unit: str = "") -> Mapping:
    """A mapping with exactly the keys `names`, each required."""
    raw = _mapping(value, key)
    _check_keys(raw, set(names), key)
    for name in names:
        if name not in raw:
            what = f"an integer number of {unit}" if unit else "an integer"
            raise ConfigError(f"{key}.{name}", f"missing ({what})")
    return raw


def _int(value: Any, key: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {_shown(value)}")
    if value < minimum:
        raise ConfigError(key, f"expected an integer >= {minimum}, got {value}")
    return value


def _fraction(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number between 0 and 1, got {_shown(value)}")
    if not 0.0 <= value <= 1.0:
        raise ConfigError(key, f"expected a number between 0 and 1, got {value}")
    return float(value)


def _positive_number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(key, f"expected a positive number, got {_shown(value)}")
    return float(value)


def _size_pages(value: Any, key: str, *, minimum: int = 0) -> int:
    if not isinstance(value, str | int) or len(str(value)) > SHOWN_CHARS:
        # parse_size_pages would quote it whole
        raise ConfigError(key, f"expected a size like 64MiB, or a page count, got {_shown(value)}")
    try:
        pages = parse_size_pages(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(key, f"{exc} (a size like 64MiB, or a page count)") from None
    if pages < minimum:
        raise ConfigError(key, f"expected at least {minimum} page(s), got {_shown(value)}")
    return pages


def _choice(value: Any, choices: tuple[str, ...], key: str) -> str:
    if value not in choices:
        raise ConfigError(key, f"expected one of {', '.join(choices)}, got {_shown(value)}")
    return value


# --- the spec ----------------------------------------------------------------------------


def _parse_content(raw: Any, key: str, base: ContentModel) -> ContentModel:
    if raw is None:
        return base
    raw = _mapping(raw, key)
    _check_keys(raw, _CONTENT_KEYS, key)
    zero = _fraction(raw.get("zero_fraction", base.zero_fraction), f"{key}.zero_fraction")
    image = _fraction(raw.get("image_fraction", base.image_fraction), f"{key}.image_fraction")
    if zero + image > 1.0 + 1e-12:
        raise ConfigError(
            f"{key}.image_fraction",
            f"zero_fraction + image_fraction must be at most 1, got {zero} + {image}",
        )
    pool = _int(
        raw.get("image_pool_pages", base.image_pool_pages), f"{key}.image_pool_pages", minimum=0
    )
    return ContentModel(zero, image, pool)


def _parse_phase(raw: Any, key: str, vm_mean_ns: float) -> Phase:
    raw = _mapping(raw, key)
    if "kind" not in raw:
        raise ConfigError(f"{key}.kind", f"missing (expected one of {', '.join(PHASE_KINDS)})")
    kind = _choice(raw["kind"], PHASE_KINDS, f"{key}.kind")
    if kind == "idle":
        _check_keys(raw, {"kind", "duration_ns"}, key)  # an idle phase has only a length
        if "duration_ns" not in raw:
            raise ConfigError(f"{key}.duration_ns", "missing (an idle phase needs its length)")
        return Phase(
            kind="idle",
            accesses=0,
            duration_ns=_int(raw["duration_ns"], f"{key}.duration_ns", minimum=1),
            footprint_pages=0,
            offset_pages=0,
            write_fraction=0.0,
            write_content="fresh",
            mean_interaccess_ns=vm_mean_ns,
        )

    _check_keys(raw, _PHASE_COMMON_KEYS | _PHASE_EXTRA_KEYS[kind], key)
    if "footprint" not in raw:
        raise ConfigError(f"{key}.footprint", "missing (a size like 64MiB, or a page count)")
    footprint = _size_pages(raw["footprint"], f"{key}.footprint", minimum=1)
    offset = _size_pages(raw.get("offset", 0), f"{key}.offset")
    mean_ns = _positive_number(
        raw.get("mean_interaccess_ns", vm_mean_ns), f"{key}.mean_interaccess_ns"
    )

    if "accesses" in raw and "duration_ns" in raw:
        raise ConfigError(f"{key}.duration_ns", "give either accesses or duration_ns, not both")
    if "accesses" in raw:
        accesses = _int(raw["accesses"], f"{key}.accesses", minimum=1)
    elif "duration_ns" in raw:
        duration_ns = _int(raw["duration_ns"], f"{key}.duration_ns", minimum=1)
        # Duration counts active time only (burst gaps come on top).
        accesses = max(1, round(duration_ns / mean_ns))
    elif kind == "boot":
        accesses = footprint  # one pass over the footprint
    else:
        raise ConfigError(f"{key}.accesses", "missing (give accesses or duration_ns)")

    write_fraction = _fraction(raw.get("write_fraction", 0.0), f"{key}.write_fraction")
    write_content = _choice(
        raw.get("write_content", "fresh"), WRITE_CONTENT_MODES, f"{key}.write_content"
    )

    burst = None
    if "burst" in raw:
        braw = _required_mapping(raw["burst"], ("on_ns", "off_ns"), f"{key}.burst", "ns")
        burst = Burst(
            on_ns=_int(braw["on_ns"], f"{key}.burst.on_ns", minimum=1),
            off_ns=_int(braw["off_ns"], f"{key}.burst.off_ns", minimum=0),
        )

    shift = None
    if "shift" in raw:
        sraw = _required_mapping(raw["shift"], ("every_accesses", "pages"), f"{key}.shift")
        shift = Shift(
            every_accesses=_int(sraw["every_accesses"], f"{key}.shift.every_accesses", minimum=1),
            pages=_size_pages(sraw["pages"], f"{key}.shift.pages"),
        )

    alpha = 0.0
    if kind == "zipf":
        if "alpha" not in raw:
            raise ConfigError(f"{key}.alpha", "missing (the Zipf exponent, e.g. 0.9)")
        alpha = raw["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
            raise ConfigError(f"{key}.alpha", f"expected a number >= 0, got {_shown(alpha)}")
        alpha = float(alpha)

    file_backed = False
    if kind == "scan":
        file_backed = raw.get("file_backed", True)
        if not isinstance(file_backed, bool):
            raise ConfigError(
                f"{key}.file_backed", f"expected true or false, got {_shown(file_backed)}"
            )

    grow_fraction, release = 0.5, "drop"
    if kind == "heap":
        grow_fraction = _fraction(raw.get("grow_fraction", 0.5), f"{key}.grow_fraction")
        release = _choice(raw.get("release", "drop"), RELEASE_MODES, f"{key}.release")
        _check_heap_pace(footprint, accesses, grow_fraction, release, key)

    return Phase(
        kind=kind,
        accesses=accesses,
        duration_ns=0,
        footprint_pages=footprint,
        offset_pages=offset,
        write_fraction=write_fraction,
        write_content=write_content,
        mean_interaccess_ns=mean_ns,
        file_backed=file_backed,
        alpha=alpha,
        shift=shift,
        burst=burst,
        grow_fraction=grow_fraction,
        release=release,
    )


def heap_split(accesses: int, grow_fraction: float) -> tuple[int, int]:
    """A heap phase's accesses while it grows and while it releases (at least one grows),
    as the generator makes them (streams._heap_live) and _check_heap_pace checks them."""
    grow_n = max(1, min(accesses, round(grow_fraction * accesses)))
    return grow_n, accesses - grow_n


def _check_heap_pace(
    footprint: int, accesses: int, grow_fraction: float, release: str, key: str
) -> None:
    """A heap phase writes each page it allocates, and zeroes or frees each page it
    releases, one page per access (streams._heap_pages): its growing part needs an access
    per page of its footprint, and so does its releasing part unless it only drops pages.
    With fewer, the live size jumped by several pages per access and only one of them was
    written or freed. A heap that only grows (grow_fraction 1) therefore cannot zero or
    free anything: with release zero or free it is refused, not left without a release."""
    grow_n, release_n = heap_split(accesses, grow_fraction)
    parts = [("grows", grow_n)]
    if release != "drop":
        parts.append((f"releases (release: {release})", release_n))
    for what, n in parts:
        if n < footprint:
            raise ConfigError(
                f"{key}.accesses",
                f"a heap phase touches one page per access while it {what}: its footprint of "
                f"{footprint} pages needs at least that many accesses there, it has {n} "
                f"({accesses} accesses, grow_fraction {grow_fraction})",
            )


def _check_file_regions(phases: tuple[Phase, ...], key: str) -> None:
    """A page is file-backed or anonymous for its whole life; regions must not mix."""
    file_regions = [(p.offset_pages, p.max_page_end()) for p in phases if p.file_backed]
    for index, phase in enumerate(phases):
        if phase.file_backed or phase.kind == "idle":
            continue
        lo, hi = phase.offset_pages, phase.max_page_end()
        for flo, fhi in file_regions:
            if lo < fhi and flo < hi:
                raise ConfigError(
                    f"{key}.phases[{index}].offset",
                    f"anonymous pages {lo}..{hi - 1} overlap file-backed scan pages "
                    f"{flo}..{fhi - 1}; give them disjoint offsets",
                )


def _parse_vm_type(name: str, raw: Any, key: str, base_content: ContentModel) -> VmType:
    raw = _mapping(raw, key)
    _check_keys(raw, _VM_TYPE_KEYS, key)
    for required in ("memory", "phases"):
        if required not in raw:
            raise ConfigError(f"{key}.{required}", "missing")
    memory = _size_pages(raw["memory"], f"{key}.memory", minimum=1)
    image = raw.get("image", name)
    if not isinstance(image, str) or not image:
        raise ConfigError(f"{key}.image", f"expected an image name, got {_shown(image)}")
    mean_ns = _positive_number(raw.get("mean_interaccess_ns", 100), f"{key}.mean_interaccess_ns")
    repeat = _int(raw.get("repeat", 1), f"{key}.repeat", minimum=1)
    content = _parse_content(raw.get("content"), f"{key}.content", base_content)
    phases_raw = raw["phases"]
    if not isinstance(phases_raw, list) or not phases_raw:
        raise ConfigError(f"{key}.phases", f"expected a non-empty list, got {_shown(phases_raw)}")
    phases = tuple(_parse_phase(p, f"{key}.phases[{i}]", mean_ns) for i, p in enumerate(phases_raw))
    if sum(p.accesses for p in phases) == 0:
        raise ConfigError(f"{key}.phases", "expected at least one phase with accesses")
    _check_file_regions(phases, key)
    vm_type = VmType(name, memory, image, mean_ns, repeat, content, phases)
    if vm_type.page_space > MAX_PAGE_SPACE:
        raise ConfigError(f"{key}.phases", f"pages reach {vm_type.page_space}, above 2^46")
    return vm_type


def parse_spec(raw: Any, *, name: str | None = None) -> WorkloadSpec:
    """Check a workload spec mapping and resolve it into VM instances."""
    raw = _mapping(raw, "workload")
    _check_keys(raw, _TOP_KEYS, "")
    workload_name = raw.get("name", name or "workload")
    if not isinstance(workload_name, str):
        raise ConfigError("name", f"expected a string, got {_shown(workload_name)}")
    base_content = _parse_content(raw.get("content"), "content", ContentModel())

    if "vm_types" not in raw:
        raise ConfigError("vm_types", "missing (a mapping of VM type name to its settings)")
    types_raw = _mapping(raw["vm_types"], "vm_types")
    if not types_raw:
        raise ConfigError("vm_types", "expected at least one VM type")
    vm_types = {
        str(tname): _parse_vm_type(str(tname), traw, f"vm_types.{tname}", base_content)
        for tname, traw in types_raw.items()
    }

    if "vms" not in raw:
        raise ConfigError("vms", "missing (a list of {type, count})")
    entries = raw["vms"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            "vms", f"expected a non-empty list of {{type, count}}, got {_shown(entries)}"
        )
    vms: list[VmInstance] = []
    used_names: set[str] = set()
    for e_index, entry in enumerate(entries):
        key = f"vms[{e_index}]"
        entry = _mapping(entry, key)
        _check_keys(entry, _VM_ENTRY_KEYS, key)
        if "type" not in entry:
            raise ConfigError(f"{key}.type", f"missing (one of {', '.join(vm_types)})")
        type_name = entry["type"]
        if type_name not in vm_types:
            raise ConfigError(
                f"{key}.type",
                f"unknown VM type {_shown(type_name)} (expected one of {', '.join(vm_types)})",
            )
        count = _int(entry.get("count", 1), f"{key}.count", minimum=1)
        start_ns = _int(entry.get("start_ns", 0), f"{key}.start_ns")
        stagger_ns = _int(entry.get("stagger_ns", 0), f"{key}.stagger_ns")
        prefix = entry.get("name", type_name)
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError(f"{key}.name", f"expected a name prefix, got {_shown(prefix)}")
        for k in range(count):
            vm_name = f"{prefix}-{k}"
            if vm_name in used_names:
                raise ConfigError(f"{key}.name", f"VM name {_shown(vm_name)} is used twice")
            used_names.add(vm_name)
            vms.append(
                VmInstance(len(vms), vm_name, vm_types[type_name], start_ns + k * stagger_ns)
            )
    if len(vms) > MAX_VMS:
        raise ConfigError("vms", f"at most {MAX_VMS} VMs, got {len(vms)}")
    images = tuple(sorted({vm.vm_type.image for vm in vms}))
    return WorkloadSpec(workload_name, tuple(vms), images, raw=copy.deepcopy(dict(raw)))


def load_spec(path: str | os.PathLike) -> WorkloadSpec:
    """Read a workload spec from a YAML file (``-`` reads standard input). Its errors name
    the file: ``spec.yaml: vm_types.web.memory: ...``."""
    if os.fspath(path) == "-":
        text, stem, source = sys.stdin.read(), "workload", "<stdin>"
    else:
        path = source = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("", "workload spec not found" + looked_for(path), source) from None
        except OSError as exc:
            raise ConfigError("", f"cannot read workload spec ({exc.strerror})", source) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                "",
                f"expected a YAML workload spec in UTF-8, got byte {exc.object[exc.start]:#04x} "
                f"at offset {exc.start}",
                source,
            ) from None
        stem = path.stem
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"expected a YAML mapping ({yaml_problem(exc)})", source) from None
    if raw is None:
        raise ConfigError(
            "", "expected a YAML mapping (a workload spec), got an empty file", source
        )
    try:
        return parse_spec(raw, name=stem)
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.detail, source) from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line, where it is first (PyYAML's own text spans several lines,
    quoting the file around the place)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or problem is None:
        return one_line(str(exc))
    context = getattr(exc, "context", None)
    return one_line(
        f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
        + (f", {context}" if context else "")
    )
