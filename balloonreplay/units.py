"""Memory sizes as users write them: ``512MiB``, ``2GiB``, ``4096`` (bytes) or ``1000p`` (pages)."""

from __future__ import annotations

import re

PAGE_SIZE_BYTES = 4096  # x86 base page
PAGE_SIZE_EXPECTED = "a power of two (bytes: 4096, 8192, ...)"
MAX_PAGE_SIZE_BYTES = 1 << 30  # 1 GiB, x86's largest: what a reader or ingest accepts
# The engine counts pages in int64: a size beyond would overflow it (OverflowError deep in
# a replay) rather than be refused as the user wrote it.
MAX_SIZE_PAGES = (1 << 63) - 1

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_PAGE_UNITS = ("p", "page", "pages")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def page_shift(page_size_bytes: int) -> int:
    """log2 of a page size in bytes, which must be a power of two. The one check of a page
    size (trace readers, a trace's metadata, `ingest --page-size`, a config's ingest
    options); its ValueError says what was expected, and each caller adds whose page size
    it is (the file, the option, the config key)."""
    value = page_size_bytes
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(f"expected {PAGE_SIZE_EXPECTED}, got {value!r}")
    return value.bit_length() - 1


def is_page_count(text: str | int) -> bool:
    """Whether a size counts pages (``1000p``, or a bare integer) rather than bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return True
    match = _SIZE_RE.match(str(text))
    return bool(match) and match.group(2).lower() in _PAGE_UNITS


def parse_size_pages(text: str | int, page_size_bytes: int = PAGE_SIZE_BYTES) -> int:
    """Return a size in pages. A bare integer is pages; strings take a unit or a ``p`` suffix.
    A size of more than MAX_SIZE_PAGES pages is a ValueError."""
    if isinstance(text, bool):
        raise ValueError(f"expected a memory size, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"memory size must not be negative, got {text}")
        return _within_engine(text, text, page_size_bytes)
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ValueError(f"expected a memory size like 512MiB, 2GiB or 1000p (pages), got {text!r}")
    number, unit = match.groups()
    unit = unit.lower()
    if unit in _PAGE_UNITS:
        if "." in number:
            raise ValueError(f"a page count must be a whole number, got {text!r}")
        return _within_engine(int(number), text, page_size_bytes)
    if unit not in _UNITS:
        raise ValueError(f"unknown size unit {unit!r} in {text!r} (use B, KiB, MiB, GiB, TiB or p)")
    size_bytes = float(number) * _UNITS[unit]
    # Compared as a float first: a few hundred digits make it infinite, which int() refuses.
    if not size_bytes // page_size_bytes <= MAX_SIZE_PAGES:
        return _within_engine(MAX_SIZE_PAGES + 1, text, page_size_bytes)
    return _within_engine(int(size_bytes // page_size_bytes), text, page_size_bytes)


def _within_engine(pages: int, text: str | int, page_size_bytes: int) -> int:
    if pages > MAX_SIZE_PAGES:
        shown = str(text) if len(str(text)) <= 40 else str(text)[:40] + "..."
        raise ValueError(
            f"expected a size below 2**63 pages (of {page_size_bytes} bytes), got {shown!r}"
        )
    return pages


def size_parts(value) -> list:
    """The sizes of a size list: ``"512MiB,1GiB"`` split at its commas (empty parts
    skipped, so ``"1GiB,"`` is one size), a list or tuple of sizes, or one size."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value) if isinstance(value, list | tuple) else [value]


def parse_sizes_pages(value, page_size_bytes: int = PAGE_SIZE_BYTES) -> list[int]:
    """One size or several in pages (size_parts), or one page count; ValueError names a
    size that is none."""
    return [parse_size_pages(v, page_size_bytes) for v in size_parts(value)]


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")
