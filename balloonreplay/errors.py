"""Errors a user sees: each names what was wrong, where, and what was expected."""

from __future__ import annotations

import os


class BalloonreplayError(Exception):
    """Base class for errors the CLI reports as one clear line and a non-zero exit."""


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped: a value quoted from a file (or by pyarrow)
    may hold one, which would split the CLI's one-line error or warning."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class ConfigError(BalloonreplayError):
    """An invalid configuration value; `key` names the offending setting, `source` the file
    it is in (a workload spec, a config given on the command line), when there is one:
    ``spec.yaml: vm_types.web.memory: ...``; otherwise ``config: key: ...``. An empty key
    is an error about the whole file."""

    def __init__(self, key: str, message: str, source: str | os.PathLike | None = None):
        self.key = key
        self.detail = message
        self.source = None if source is None else os.fspath(source)
        where = [self.source or "config"] + ([key] if key else [])
        super().__init__(one_line(": ".join(where) + f": {message}"))


class TraceError(BalloonreplayError):
    """Bad trace input.

    `where` is a human-readable position such as ``line 12`` or ``byte offset 4096``;
    `expected` says what the reader wanted to find there.
    """

    def __init__(self, path: str | os.PathLike | None, where: str | None, expected: str):
        self.path = None if path is None else os.fspath(path)
        self.where = where
        self.expected = expected
        parts = [self.path or "<trace>"]
        if where:
            parts.append(where)
        super().__init__(one_line(": ".join(parts) + f": {expected}"))


class OutputError(BalloonreplayError):
    """An output file that cannot be written where it was asked for."""

    def __init__(self, path: str | os.PathLike, expected: str):
        self.path = os.fspath(path)
        super().__init__(f"{self.path or repr(self.path)}: cannot write output: {expected}")
