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
        try:
            fmt = get_format(name)
        except BalloonreplayError as exc:
            click.echo(f"{name:16s} [broken] {exc}")
            continue
        flags = "read" + ("/write" if fmt.can_write else "")
        click.echo(f"{name:16s} [{flags}] {fmt.description}")
        for opt_name, default, help_text in describe_options(fmt.Options):
            click.echo(f"    {opt_name}={default!s:12s} {help_text}")


def _progress(total: int | None, desc: str, unit: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=quiet, leave=False)


@main.command("ingest")
@click.argument("source", type=click.Path(dir_okay=True))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(),
    help="canonical trace to write (.parquet)",
)
@click.option(
    "-f",
    "--format",
    "format_name",
    default=None,
    help="trace format (see `balloonreplay formats`); sniffed when omitted",
)
@click.option(
    "--opt", "options", multiple=True, metavar="KEY=VALUE", help="reader option, repeatable"
)
@click.option(
    "--lru-filter",
    "lru_filter_pages",
    type=click.IntRange(min=1),
    default=None,
    metavar="K",
    help="exact LRU reduction: keep what a K-page LRU needs (exact for memories >= K pages)",
)
@click.option(
    "--vm-mem",
    default=None,
    metavar="SIZE[,SIZE...]",
    help="configured memory per VM to record (512MiB, 2GiB, 1000p)",
)
@click.option(
    "--page-size",
    "page_size_bytes",
    type=click.IntRange(min=1),
    default=None,
    help="page size in bytes to record",
)
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@reports_errors
def ingest_command(
    source, output, format_name, options, lru_filter_pages, vm_mem, page_size_bytes, quiet
):
    """Convert SOURCE (any installed format) into a canonical trace."""
    from balloonreplay.traces.ingest import ingest

    overrides = {"page_size_bytes": page_size_bytes}
    if vm_mem:
        overrides["config_pages"] = parse_vm_mem(vm_mem, page_size_bytes)
    with _progress(None, "ingest", "acc", quiet) as bar:
        meta = ingest(
            source,
            output,
            format_name=format_name,
            options=list(options),
            lru_filter_pages=lru_filter_pages,
            metadata_overrides=overrides,
            progress=bar,
        )
        read = bar.n
    if not quiet:
        kept = (
            f" ({meta.accesses / max(read, 1):.1%} kept by the LRU filter)"
            if lru_filter_pages
            else ""
        )
        click.echo(
            f"{output}: {meta.accesses} accesses{kept}, {len(meta.pages_per_vm)} VMs, "
            f"{sum(meta.pages_per_vm)} distinct pages",
            err=True,
        )


def parse_vm_mem(text: str, page_size_bytes: int | None = None) -> list[int]:
    from balloonreplay.units import PAGE_SIZE_BYTES, parse_size_pages

    try:
        return [
            parse_size_pages(part, page_size_bytes or PAGE_SIZE_BYTES) for part in text.split(",")
        ]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--vm-mem") from None


@main.command("info")
@click.argument("trace", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@reports_errors
def info_command(trace, as_json, quiet):
    """Summarise a canonical trace: accesses, VMs, pages, writes, content, duration."""
    import json

    from balloonreplay.traces.info import trace_info
    from balloonreplay.traces.io import open_trace

    with _progress(open_trace(trace).num_rows, "info", "acc", quiet) as bar:
        info = trace_info(trace, progress=bar)
    if as_json:
        click.echo(json.dumps(info.to_dict(), default=str))
        return
    meta = info.metadata
    click.echo(f"trace            {info.path}")
    click.echo(f"source           {meta.source or 'unknown'} (seed {meta.seed})")
    click.echo(f"accesses         {info.accesses}")
    click.echo(f"VMs              {len(info.vms)}")
    click.echo(f"write fraction   {info.write_fraction:.3f}")
    click.echo(f"zero pages       {info.zero_page_fraction:.3f} of touched pages")
    click.echo(f"shareable pages  {info.shareable_page_fraction:.3f} of touched pages")
    click.echo(f"duration         {info.duration_ns / 1e9:.3f} s")
    if meta.lru_filter_pages:
        click.echo(f"LRU filter       {meta.lru_filter_pages} pages")
    click.echo("vm  accesses      distinct_pages  config_pages  write_frac  duration_s")
    for v in info.vms:
        click.echo(
            f"{v.vm:<3d} {v.accesses:<13d} {v.distinct_pages:<15d} {v.config_pages!s:<13s} "
            f"{v.write_fraction:<11.3f} {v.duration_ns / 1e9:.3f}"
        )


@main.command("mrc")
@click.argument("trace", type=click.Path())
@click.option(
    "-o", "--output", required=True, type=click.Path(), help="miss-ratio curves (.parquet)"
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(),
    default=None,
    help="also draw the curves (.png or .pdf)",
)
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@reports_errors
def mrc_command(trace, output, plot_path, quiet):
    """Each VM's exact LRU miss-ratio curve over all memory sizes, in one pass."""
    from balloonreplay.mrc import miss_ratio_curves, write_curves
    from balloonreplay.traces.io import open_trace

    with _progress(open_trace(trace).num_rows, "mrc", "acc", quiet) as bar:
        curves = miss_ratio_curves(trace, progress=bar)
    write_curves(curves, output, trace)
    if plot_path:
        from balloonreplay.plots import plot_miss_ratio_curves

        plot_miss_ratio_curves(curves, plot_path)
    if not quiet:
        click.echo(f"{output}: {curves.vm.nunique()} VMs, {len(curves)} sizes", err=True)
