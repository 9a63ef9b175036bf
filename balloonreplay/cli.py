"""The ``balloonreplay`` command."""

from __future__ import annotations

import functools
import sys

import click

from balloonreplay.errors import BalloonreplayError


def reports_errors(func):
    """Turn a BalloonreplayError into one clear line on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except BalloonreplayError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="balloonreplay")
def main() -> None:
    """Replay guest page-access traces through a model of memory overcommitment."""


@main.command("formats")
@reports_errors
def formats_command() -> None:
    """List the installed trace-format plug-ins and their options."""
    from balloonreplay.traces.formats import available_formats, describe_options, get_format

    for name in available_formats():
        fmt = get_format(name)
        flags = "read" + ("/write" if fmt.can_write else "")
        click.echo(f"{name:16s} [{flags}] {fmt.description}")
        for opt_name, default, help_text in describe_options(fmt.Options):
            click.echo(f"    {opt_name}={default!s:12s} {help_text}")
