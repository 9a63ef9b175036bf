"""Trace-format plug-ins.

A format is a class registered in the entry-point group ``balloonreplay.trace_formats``
(built-ins register through the same group in pyproject.toml). It has:

- ``name`` and ``description``;
- ``Options``: a dataclass of reader options with documented defaults; users overlay
  them as ``key=value`` strings (CLI ``--opt``) or a mapping (config);
- ``sniff(path) -> bool`` (optional): whether a file looks like this format;
- ``reads_directory`` (default False): the source is a directory (drmemtrace), not a
  file; ingest refuses a directory for every other format, and sniffs one only with these;
- ``read(path, options) -> Iterator[pyarrow.RecordBatch]``: canonical batches (see
  ``balloonreplay.traces.schema``), streamed, with raw (not yet dense) page numbers;
- ``write(batches, path, options)`` (optional); ``writer_options`` (default None: all of
  them), the names of the options write() reads, so that export refuses the others as a
  reader refuses an unknown option; and ``writes_frees`` (default True): False when the
  format has no place for a free row and write() leaves it out.

Readers raise ``TraceError`` naming the file, the line or byte offset and what was
expected; any other failure of a plug-in (loading it, a wrong shape, its read() raising
or yielding something else than a RecordBatch) is a ``BalloonreplayError`` naming it,
``trace format plug-in 'x' (module:Class): ...``. Dense remapping, time-order checks and
the LRU filter are done once for every format by ``balloonreplay.traces.ingest``.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, ClassVar

import pyarrow as pa

from balloonreplay.errors import BalloonreplayError, TraceError
from balloonreplay.traces.schema import TraceMetadata
from balloonreplay.units import MAX_PAGE_SIZE_BYTES, page_shift

ENTRY_POINT_GROUP = "balloonreplay.trace_formats"


@dataclasses.dataclass
class NoOptions:
    pass


class TraceFormat:
    """Base class of trace-format plug-ins."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    reads_directory: ClassVar[bool] = False
    writes_frees: ClassVar[bool] = True
    writer_options: ClassVar[tuple[str, ...] | None] = None

    def sniff(self, path: str | os.PathLike) -> bool:
        return False

    def read(self, path: str | os.PathLike, options: Any) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def read_metadata(self, path: str | os.PathLike, options: Any) -> TraceMetadata:
        """What the source itself says about the trace (page size, per-VM memory, ...)."""
        return TraceMetadata(source=self.name, parameters=dataclasses.asdict(options))

    def count_accesses(self, path: str | os.PathLike, options: Any) -> int | None:
        """How many accesses read() will yield, when the source says so without being read
        (a progress bar's total); None when it cannot."""
        return None

    @property
    def can_write(self) -> bool:
        return type(self).write is not TraceFormat.write

    def write(
        self, batches: Iterable[pa.RecordBatch], path: str | os.PathLike, options: Any
    ) -> None:
        raise BalloonreplayError(f"format {self.name!r} has no writer")

    def make_options(self, overrides: Mapping[str, Any] | Iterable[str] | None = None) -> Any:
        return parse_options(self.Options, overrides, context=f"format {self.name!r}")

    def make_writer_options(self, overrides: Iterable[str] = ()) -> Any:
        """Options for write() from ``key=value`` strings, refusing one the writer does not
        read (``split_vms`` is the oracle-general reader's): ignored, it would look taken."""
        overrides = list(overrides)
        if self.writer_options is not None:
            for item in overrides:
                key = item.split("=", 1)[0].strip().replace("-", "_")
                if "=" in item and key not in self.writer_options:
                    known = ", ".join(self.writer_options) or "none"
                    raise BalloonreplayError(
                        f"format {self.name!r}: option {key!r} is not one its writer takes "
                        f"(the writer's: {known})"
                    )
        return self.make_options(overrides)


def _coerce(value: Any, default: Any, annotation: Any, key: str, context: str) -> Any:
    if not isinstance(value, str):
        return value
    kind = type(default) if default is not None else None
    text_annotation = str(annotation)
    if value.lower() in ("none", "null") and default is None:
        return None  # before the numbers: "int | None" also takes its default back
    if annotation in (bool, "bool") or kind is bool or text_annotation.startswith("bool"):
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise BalloonreplayError(f"{context}: option {key!r} expects true or false, got {value!r}")
    number = _number_kind(annotation, default)
    if number is None:
        return value
    try:
        return int(value, 0) if number == "whole" else float(value)
    except ValueError:
        expected = "a whole number" if number == "whole" else "a number"
        raise BalloonreplayError(
            f"{context}: option {key!r} expects {expected}, got {value!r}"
        ) from None


def parse_options(
    options_class: type, overrides: Mapping[str, Any] | Iterable[str] | None, context: str
) -> Any:
    """Overlay ``key=value`` strings or a mapping on the dataclass's documented defaults."""
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, Mapping):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise BalloonreplayError(f"{context}: expected key=value, got {item!r}")
            key, value = item.split("=", 1)
            pairs[key.strip().replace("-", "_")] = value.strip()
        overrides = pairs
    fields = {f.name: f for f in dataclasses.fields(options_class)}
    values = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise BalloonreplayError(f"{context}: unknown option {key!r} (known: {known})")
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else None
        values[key] = _coerce(value, default, f.type, key, context)
    options = options_class(**values)
    check_options(options, context)
    return options


def describe_options(options_class: type) -> list[tuple[str, Any, str]]:
    """(name, default, help) for each option; help comes from field metadata, followed by
    the values the option takes when it declares them ("[0..65535]")."""
    rows = []
    for f in dataclasses.fields(options_class):
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f.metadata.get("help", "")
        bounds, choices = f.metadata.get("bounds"), f.metadata.get("choices") or ()
        if bounds is not None:
            help_text += f" [{bounds.describe()}]"
        elif choices:
            help_text += f" [{' or '.join(choices)}]"
        rows.append((f.name, default, help_text))
    return rows


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The values a numeric reader option accepts: ``low``/``high`` inclusive, or ``low``
    excluded with ``above``. An option whose default is None also takes None."""

    low: float | None = None
    high: float | None = None
    above: bool = False

    def admits(self, value: float) -> bool:
        # Written so that NaN is refused by every bound.
        if self.low is not None and not (value > self.low if self.above else value >= self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        low, high = _number_text(self.low), _number_text(self.high)
        if self.low is not None and self.high is not None:
            return f"> {low} and <= {high}" if self.above else f"{low}..{high}"
        if self.low is not None:
            return f"{'>' if self.above else '>='} {low}"
        return f"<= {high}"


def _number_text(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def option(
    default: Any, help: str, *, bounds: Bounds | None = None, choices: tuple[str, ...] = ()
) -> Any:
    """A reader option with its documented default; ``bounds`` or ``choices`` say which
    values it takes, checked whenever options are parsed and before every read."""
    metadata = {"help": help, "bounds": bounds, "choices": tuple(choices)}
    return dataclasses.field(default=default, metadata=metadata)


def _number_kind(annotation: Any, default: Any) -> str | None:
    """ "whole" or "real" for a numeric option, by its annotation (``int``, ``float``,
    ``int | None``...), else by its default's type; None for any other option."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    text = text or str(annotation)
    if re.search(r"\bbool\b", text):
        return None
    if re.search(r"\bfloat\b", text):
        return "real"
    if re.search(r"\bint\b", text):
        return "whole"
    if isinstance(default, bool) or not isinstance(default, numbers.Real):
        return None
    return "whole" if isinstance(default, numbers.Integral) else "real"


def check_options(options: Any, context: str) -> None:
    """Refuse a value its option does not take (a VM index beyond 16 bits, no rows per
    batch), naming the option and what it takes, before a reader acts on it."""
    if not dataclasses.is_dataclass(options):
        return
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if value is None and default is None:
            continue
        bounds, choices = f.metadata.get("bounds"), f.metadata.get("choices") or ()
        kind = _number_kind(f.type, default)
        if bounds is not None or kind is not None:
            whole = kind == "whole"
            expected = "a whole number" if whole else "a number"
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise BalloonreplayError(
                    f"{context}: option {f.name!r} expects {expected}, got {value!r}"
                )
            if whole and not isinstance(value, numbers.Integral):
                raise BalloonreplayError(
                    f"{context}: option {f.name!r} expects a whole number, got {value!r}"
                )
            if bounds is not None and not bounds.admits(value):
                raise BalloonreplayError(
                    f"{context}: option {f.name!r} must be {bounds.describe()}, got {value!r}"
                )
        if choices and value not in choices:
            raise BalloonreplayError(
                f"{context}: option {f.name!r} must be one of {', '.join(choices)}, got {value!r}"
            )


# The bounds the built-in readers share.
VM_INDEX = Bounds(0, 65535)  # the canonical vm column is uint16
AT_LEAST_ONE = Bounds(1, 1 << 62)  # counts: far beyond any, within a C long
ROW_COUNT = Bounds(1, (1 << 31) - 1)  # rows per batch, as Arrow's int32 lengths
PAGE_SIZE = Bounds(1, MAX_PAGE_SIZE_BYTES)  # bytes, a power of two: reader_page_shift


def reader_page_shift(page_size_bytes: int, path=None) -> int:
    """log2 of a reader's option page_size_bytes (units.page_shift), or a TraceError
    naming the file and the option."""
    try:
        return page_shift(page_size_bytes)
    except ValueError as exc:
        raise TraceError(path, None, f"option 'page_size_bytes': {exc}") from None


def available_formats() -> dict[str, type[TraceFormat]]:
    """Every installed format plug-in, by name."""
    return dict(_scan_entry_points(tuple(sys.path)))


@functools.lru_cache(maxsize=8)
def _scan_entry_points(search_path: tuple[str, ...]) -> tuple:
    # Scanning every installed distribution costs ~15 ms, once per ingest and per sniffed
    # format; cached per sys.path, so a plug-in put on the path at run time is still found.
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep
    return tuple(sorted(found.items()))


def get_format(name: str) -> TraceFormat:
    eps = available_formats()
    if name not in eps:
        raise BalloonreplayError(
            f"unknown trace format {name!r} (installed: {', '.join(eps) or 'none'})"
        )
    label = f"trace format plug-in {name!r} ({eps[name].value})"
    try:
        cls = eps[name].load()
        _check_format_class(cls)
        instance = cls()
    except Exception as exc:  # a broken third-party plug-in must not look like our bug
        raise BalloonreplayError(f"{label} failed to load: {exc}") from exc
    if not instance.name:
        instance.name = name
    # Callers (ingest, open_trace) call read() and read_metadata() themselves: the
    # instance's own wrappers make any failure inside them name the plug-in.
    instance.read = _named_read(instance.read, label)
    instance.read_metadata = _named_call(instance.read_metadata, label, "read_metadata()")
    instance.count_accesses = _named_call(instance.count_accesses, label, "count_accesses()")
    return instance


def _check_format_class(cls: Any) -> None:
    """What `formats` and ingest rely on: a TraceFormat whose Options dataclass has a
    default for every option (the documented defaults users overlay)."""
    if not (isinstance(cls, type) and issubclass(cls, TraceFormat)):
        raise TypeError(f"expected a TraceFormat subclass, got {cls!r}")
    options = cls.Options
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise TypeError(f"its Options must be a dataclass, got {options!r}")
    missing = [
        f.name
        for f in dataclasses.fields(options)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise TypeError(f"every option needs a default; {', '.join(missing)} has none")


def _named_call(method, label: str, what: str):
    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except BalloonreplayError:
            raise  # TraceError already names the file and the offset
        except Exception as exc:
            raise BalloonreplayError(f"{label}: {what} raised {type(exc).__name__}: {exc}") from exc

    return call


def _named_read(read, label: str):
    @functools.wraps(read)
    def named(path: str | os.PathLike, options: Any) -> Iterator[pa.RecordBatch]:
        # Options made by hand, not parsed, are checked here, before the reader sees them.
        check_options(options, label)
        try:
            for batch in read(path, options):
                if not isinstance(batch, pa.RecordBatch):
                    raise BalloonreplayError(
                        f"{label}: read() must yield pyarrow.RecordBatch in the canonical "
                        f"schema, got {type(batch).__name__}"
                    )
                yield batch
        except BalloonreplayError:
            raise
        except Exception as exc:
            raise BalloonreplayError(
                f"{label}: read({os.fspath(path)!r}) raised {type(exc).__name__}: {exc}"
            ) from exc

    return named


def sniff_format(path: str | os.PathLike) -> TraceFormat:
    """The first installed format whose sniff() accepts `path`."""
    import warnings

    if not os.path.isdir(path):
        # An unreadable file is the file's problem, not every format's.
        try:
            open(path, "rb").close()
        except OSError as exc:
            raise TraceError(path, None, f"cannot read file ({exc})") from None
    is_directory = os.path.isdir(path)
    for name in available_formats():
        try:
            fmt = get_format(name)
        except BalloonreplayError as exc:
            warnings.warn(str(exc), stacklevel=2)
            continue
        if is_directory and not fmt.reads_directory:
            continue  # a file format's sniff has nothing to look at
        try:
            if fmt.sniff(path):
                return fmt
        except Exception as exc:  # one plug-in's bad sniff (text mode, a directory) is a "no"
            warnings.warn(
                f"trace format plug-in {name!r} ({type(fmt).__module__}:"
                f"{type(fmt).__qualname__}) failed to sniff {os.fspath(path)!r}: "
                f"{type(exc).__name__}: {exc}",
                stacklevel=2,
            )
    if is_directory:
        raise TraceError(
            path,
            None,
            "expected a trace file, or a directory in a format that reads one "
            f"({directory_formats()}), got a directory none of them recognises",
        )
    raise TraceError(path, None, "could not recognise the format; name it with --format")


def directory_formats() -> str:
    """The installed formats that read a directory, for an error about one ("none")."""
    names = []
    for name in available_formats():
        try:
            if get_format(name).reads_directory:
                names.append(name)
        except BalloonreplayError:
            continue  # `balloonreplay formats` and sniffing report a broken plug-in
    return ", ".join(names) or "none"
