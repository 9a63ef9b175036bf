"""The ``balloonreplay`` command."""

from __future__ import annotations

import functools
import sys

import click

from balloonreplay.errors import BalloonreplayError
from balloonreplay.units import MAX_PAGE_SIZE_BYTES

# The highest scan or balloon rate the CLI takes: far above any real one, and small
# enough that rate times a quantum of up to a second stays within 64-bit credits.
MAX_RATE_PAGES_PER_S = 10**9


def reports_errors(func):
    """Turn a BalloonreplayError into one clear line on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except BalloonreplayError as exc:
            click.echo(f"error: {_as_option(exc) or exc}", err=True)
            sys.exit(1)
        except MemoryError as exc:
            # numpy names the allocation ("Unable to allocate 8.00 GiB for an array ...").
            click.echo(f"error: not enough memory: {exc or 'an allocation failed'}", err=True)
            sys.exit(1)

    return wrapper


def _as_option(exc: BalloonreplayError) -> str | None:
    """A ConfigError about a value the user gave as an option of the running command,
    named as that option (``--vm-mem: ...``) rather than as a config key (``config:
    vm_mem: ...``): on the command line there is no config to look in."""
    from balloonreplay.errors import ConfigError

    context = click.get_current_context(silent=True)
    if context is None or not isinstance(exc, ConfigError) or exc.source is not None:
        return None  # (an error in a file names the file and the key in it)
    name = _OPTION_OF_KEY.get(exc.key, exc.key)
    for param in context.command.params:
        if isinstance(param, click.Option) and param.name == name:
            return f"{max(param.opts, key=len)}: {exc.detail}"
    return None


# Config keys whose command-line option has another name (the config's engine options
# are ReplayConfig's fields; --overhead is named as a size, not in pages).
_OPTION_OF_KEY = {"overhead_pages": "overhead"}


def _terminate(signum, frame):
    """SIGTERM (scancel, Snakemake, timeout) unwinds like Ctrl-C, so an output being
    written is removed (traces.io.atomic_path) instead of left behind half written."""
    sys.exit(128 + signum)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="balloonreplay")
def main() -> None:
    """Replay guest page-access traces through a model of memory overcommitment."""
    import signal
    import threading
    import warnings

    if threading.current_thread() is threading.main_thread():  # where signals can be set
        signal.signal(signal.SIGTERM, _terminate)
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning is one line, as an error is: Python's default adds the warning's source
    file and the line of code that raised it, which mean nothing to a user."""
    from balloonreplay.errors import one_line

    click.echo(f"warning: {one_line(str(message))}", err=True)


# Shared by every command that writes a canonical trace (ingest, generate).
lru_filter_option = click.option(
    "--lru-filter",
    "lru_filter_pages",
    type=click.IntRange(min=1),
    default=None,
    metavar="K",
    help="exact LRU reduction: keep what a K-page LRU needs (exact for memories >= K pages)",
)


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
            setting = f"{opt_name}={default!s}"
            click.echo(f"    {setting:28s} {help_text}")


def _progress(total: int | None, desc: str, unit: str, quiet: bool):
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, CI), so logs stay readable.
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        disable=True if quiet else None,
        leave=False,
    )


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
@lru_filter_option
@click.option(
    "--vm-mem",
    default=None,
    metavar="SIZE[,SIZE...]",
    help="configured memory per VM to record (512MiB, 2GiB, 1000p)",
)
@click.option(
    "--page-size",
    "page_size_bytes",
    type=click.IntRange(min=1, max=MAX_PAGE_SIZE_BYTES),
    default=None,
    callback=lambda ctx, param, value: _power_of_two(value),
    help="page size in bytes (a power of two): the one a reader of addresses cuts pages at "
    "(its option page_size_bytes), else the one the page ids are recorded with",
)
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@reports_errors
def ingest_command(
    source, output, format_name, options, lru_filter_pages, vm_mem, page_size_bytes, quiet
):
    """Convert SOURCE (any installed format) into a canonical trace. One --vm-mem size
    is recorded for every VM."""
    from balloonreplay.traces.ingest import ingest
    from balloonreplay.traces.io import check_output_path

    _check_canonical_name(output)
    check_output_path(output, source)
    overrides = {"page_size_bytes": page_size_bytes}
    # --vm-mem is checked and converted to pages by ingest() alone (vm_mem_pages), before it
    # reads an access, once the trace's page size is known (--page-size, else the source's
    # and the reader's).
    stats: dict = {}
    with _progress(None, "ingest", "acc", quiet) as bar:
        # Counted here: a disabled bar (no terminal) counts nothing.
        read = _Counter(bar)
        meta = ingest(
            source,
            output,
            format_name=format_name,
            options=list(options),
            lru_filter_pages=lru_filter_pages,
            metadata_overrides=overrides,
            vm_mem=vm_mem or None,  # --vm-mem "" is no --vm-mem
            progress=read,
            stats=stats,
        )
    if not quiet:
        kept = (
            f" ({meta.accesses / max(read.n, 1):.1%} kept by the LRU filter)"
            if lru_filter_pages
            else ""
        )
        click.echo(
            f"{output}: {_accesses_and_frees(stats)}{kept}, {len(meta.pages_per_vm)} VMs, "
            f"{sum(meta.pages_per_vm)} distinct pages",
            err=True,
        )


def _accesses_and_frees(stats: dict) -> str:
    """``75384 accesses and 384 frees`` from write_canonical's stats (its rows are both;
    a free is no access)."""
    frees = stats["frees"]
    text = f"{stats['accesses_out'] - frees} accesses"
    return text + (f" and {frees} frees" if frees else "")


def _parse_slo(settings: tuple[str, ...], experiments: set) -> dict[str, float]:
    """``--slo 1.2`` (every experiment) and ``--slo overcommit=1.3`` as {experiment: SLO}."""
    slo: dict[str, float] = {}
    # One experiment's SLO wins over every experiment's, whatever their order.
    for setting in sorted(settings, key=lambda text: "=" in text):
        name, _, text = setting.rpartition("=")
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value >= 1.0 or value == float("inf"):
            raise click.BadParameter(
                f"expected a slowdown of at least 1 (e.g. 1.10), got {setting!r}",
                param_hint="--slo",
            )
        if name and name not in experiments:
            known = ", ".join(sorted(str(e) for e in experiments if e)) or "none"
            raise click.BadParameter(
                f"no run of experiment {name!r} (the runs': {known})", param_hint="--slo"
            )
        for experiment in [name] if name else experiments:
            slo[experiment] = value
    return slo


class _Counter:
    """Counts the accesses a progress bar is advanced by, and advances it."""

    def __init__(self, bar) -> None:
        self.bar = bar
        self.n = 0

    def update(self, n: int) -> None:
        self.n += n
        self.bar.update(n)

    @property
    def total(self) -> int | None:
        return self.bar.total

    @total.setter
    def total(self, total: int | None) -> None:  # known once the format is (ingest)
        self.bar.total = total
        self.bar.refresh()


# Names that promise another format than the Parquet that ingest and generate (traces),
# mrc, replay and summarize (tables) write whatever the name (out.csv would be Parquet in
# disguise, as would curves.png). Other names, dotted ones among them (zipf_alpha0.9),
# are taken as they are.
OTHER_FORMAT_SUFFIXES = (
    *(".csv", ".tsv", ".txt", ".json", ".bin", ".gz", ".zst", ".xz"),
    *(".png", ".pdf", ".svg"),
)


def _names_another_format(output: str) -> str | None:
    """The format a file name promises when it is not Parquet: csv, oracle-general, or
    "another format" for a suffix above; None for a name Parquet may have."""
    from pathlib import Path

    name = Path(output).name.lower()
    if name.endswith(".parquet"):  # whatever it says before (w.oracleGeneral.parquet)
        return None
    if "oraclegeneral" in name:
        return "oracle-general"
    if name.endswith(".csv"):
        return "csv"
    return "another format" if name.endswith(OTHER_FORMAT_SUFFIXES) else None


def _check_canonical_name(output: str) -> None:
    _check_parquet_name(
        output,
        "a canonical trace, which is Parquet",
        " (`balloonreplay export` writes it in another format)",
    )


def _check_parquet_name(output: str | None, what: str, hint: str = "", option: str = "-o") -> None:
    """Refuse a name that promises another format than the Parquet a command writes (the
    rule ingest and generate apply to traces, and mrc, replay and summarize to tables)."""
    if output is not None and _names_another_format(output) is not None:
        raise click.BadParameter(
            f"{output!r}: this command writes {what}; name it *.parquet{hint}",
            param_hint=option,
        )


def _check_distinct_outputs(
    first: str, second: str | None, first_option: str, second_option: str
) -> None:
    """Refuse two outputs of one command at one path, the second of which would replace the
    first (check_output_path compares an output with the inputs, and only existing files)."""
    from pathlib import Path

    from balloonreplay.errors import OutputError

    if second is not None and Path(first).resolve() == Path(second).resolve():
        raise OutputError(
            second, f"{second_option} names the same file as {first_option}, which it would replace"
        )


def _power_of_two(value: int | None) -> int | None:
    from balloonreplay.units import page_shift

    if value is not None:
        try:
            page_shift(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None  # click names --page-size
    return value


@main.command("generate")
@click.argument("workload_spec", required=False, type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(), help="canonical trace to write (.parquet)"
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    help="random seed (required with a spec file; overrides the config's)",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="experiment config holding named workloads (with --workload)",
)
@click.option("--workload", "workload_name", default=None, help="workload name in --config")
@lru_filter_option
@click.option(
    "--chunk-accesses",
    type=click.IntRange(min=1),
    default=1 << 20,
    show_default=True,
    help="accesses generated per chunk (memory bound; never changes the result)",
)
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@reports_errors
def generate_command(
    workload_spec, output, seed, config_path, workload_name, lru_filter_pages, chunk_accesses, quiet
):
    """Generate a synthetic workload from WORKLOAD_SPEC (YAML, - for stdin), or from
    --config CONFIG --workload NAME, into a canonical trace."""
    from balloonreplay.traces.generators import generate_trace, load_spec
    from balloonreplay.traces.generators.named import load_named_workload
    from balloonreplay.traces.io import check_output_path

    _check_canonical_name(output)
    check_output_path(output, workload_spec, config_path)
    if (workload_spec is None) == (config_path is None or workload_name is None):
        raise click.UsageError("give either WORKLOAD_SPEC or both --config and --workload")
    if workload_spec is not None:
        if seed is None:
            raise click.UsageError("--seed is required with a workload spec file")
        spec = load_spec(workload_spec)
    else:
        named = load_named_workload(config_path, workload_name)
        spec = named.spec
        seed = named.seed if seed is None else seed
        lru_filter_pages = lru_filter_pages or named.lru_filter_pages
    stats: dict = {}
    with _progress(spec.accesses, f"generate {spec.name}", "acc", quiet) as bar:
        meta = generate_trace(
            spec,
            output,
            seed,
            chunk_accesses=chunk_accesses,
            lru_filter_pages=lru_filter_pages,
            progress=bar,
            stats=stats,
        )
    if not quiet:
        click.echo(
            f"{output}: {_accesses_and_frees(stats)}, {len(meta.pages_per_vm)} VMs, "
            f"{sum(meta.pages_per_vm)} distinct pages (seed {seed})",
            err=True,
        )


@main.command("export")
@click.argument("trace", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="file to write")
@click.option(
    "-f",
    "--format",
    "format_name",
    default=None,
    help="a format with a writer (see `balloonreplay formats`); default: by the output's "
    "name (*.csv: csv, *oracleGeneral*: oracle-general)",
)
@click.option(
    "--opt", "options", multiple=True, metavar="KEY=VALUE", help="writer option, repeatable"
)
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@reports_errors
def export_command(trace, output, format_name, options, quiet):
    """Write canonical TRACE in another format, e.g. oracleGeneral for libCacheSim. The
    rows are the trace's own (dense page ids); what only the footer holds (per-VM memory,
    seed) is not written. oracle-general keeps each access's VM, page and second (obj_id =
    vm << 48 | page; read it back with --opt split_vms=true), not writes, contents or
    file-backed flags, and leaves frees out; its obj_size is the trace's page size unless
    --opt page_size_bytes=... says otherwise. csv keeps every column."""
    import dataclasses

    from balloonreplay.traces.formats import get_format
    from balloonreplay.traces.io import check_output_path, open_trace

    check_output_path(output, trace)
    named = _names_another_format(output)
    if format_name and named in ("csv", "oracle-general") and named != format_name:
        raise click.BadParameter(
            f"{output!r} names a {named} file, but -f says {format_name}", param_hint="-o"
        )
    name = format_name or _format_by_name(output)
    if name == "parquet":  # its writer would drop the footer that makes a trace canonical
        raise click.BadParameter("TRACE is already a canonical Parquet trace", param_hint="-f")
    fmt = get_format(name)
    if not fmt.can_write:
        raise BalloonreplayError(f"format {name!r} has no writer (see `balloonreplay formats`)")
    opened = open_trace(trace)
    given = {item.split("=", 1)[0].strip().replace("-", "_") for item in options}
    known = {field.name for field in dataclasses.fields(fmt.Options)}
    if fmt.writer_options is not None:
        known &= set(fmt.writer_options)
    defaults = []
    if "page_size_bytes" in known and "page_size_bytes" not in given:
        defaults.append(f"page_size_bytes={opened.metadata.page_size_bytes}")
    writer_options = fmt.make_writer_options([*defaults, *options])
    frees = 0
    with _progress(opened.num_rows, f"export {name}", "acc", quiet) as bar:
        counted = _Counter(bar)

        def batches():
            nonlocal frees
            for batch in opened.iter_batches():
                yield batch
                counted.update(batch.num_rows)
                frees += batch.column("free").true_count

        fmt.write(batches(), output, writer_options)
    if not quiet:
        written = f" and {frees} frees" if frees and fmt.writes_frees else ""
        left_out = f" ({frees} frees left out)" if frees and not fmt.writes_frees else ""
        click.echo(f"{output}: {counted.n - frees} accesses{written} as {name}{left_out}", err=True)


def _format_by_name(output: str) -> str:
    named = _names_another_format(output)
    if named in ("csv", "oracle-general"):
        return named
    raise click.BadParameter(
        f"{output!r}: cannot tell the format from the name; give -f (csv, oracle-general)",
        param_hint="-o",
    )


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
    if info.frees:
        click.echo(f"frees            {info.frees}")
    idle = f" ({len(info.vms)} with rows)" if len(info.vms) != info.num_vms else ""
    click.echo(f"VMs              {info.num_vms}{idle}")
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
    from balloonreplay.traces.io import check_output_path, open_trace

    check_output_path(output, trace)
    _check_parquet_name(output, "its curves as Parquet")
    if plot_path:
        from balloonreplay.plots import check_figure_path

        check_output_path(plot_path, trace, output)
        _check_distinct_outputs(output, plot_path, "-o", "--plot")
        check_figure_path(plot_path)
    opened = open_trace(trace)
    with _progress(opened.num_rows, "mrc", "acc", quiet) as bar:
        curves = miss_ratio_curves(trace, progress=bar)
    write_curves(curves, output, trace)
    if plot_path:
        from balloonreplay.plots import plot_miss_ratio_curves

        plot_miss_ratio_curves(curves, plot_path, opened.metadata.page_size_bytes)
    if not quiet:
        click.echo(f"{output}: {curves.vm.nunique()} VMs, {len(curves)} sizes", err=True)


@main.command("replay")
@click.argument("trace", type=click.Path())
@click.option(
    "--host-mem", default=None, help="host memory (512MiB, 2GiB, 1000p); default: sum of --vm-mem"
)
@click.option(
    "--vm-mem",
    default=None,
    help="memory per VM, SIZE[,SIZE...]; default: the trace's config_pages",
)
@click.option(
    "--guest-policy",
    type=click.Choice(["lru", "clock", "fifo", "twolist"]),
    default="lru",
    show_default=True,
)
@click.option("--policy", default="none", show_default=True, help="host policy NAME[:k=v,...]")
@click.option("-o", "--output", type=click.Path(), default=None, help="metrics (.parquet)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as one JSON object")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar, no summary line")
@click.option("--seed", type=int, default=0, show_default=True, help="host PRNG seed")
@click.option("--epoch", default="1s", show_default=True, help="policy epoch (1s, 500ms, ns)")
@click.option("--quantum", default="100us", show_default=True, help="VM interleaving quantum")
@click.option("--latencies", default="ssd", show_default=True, help="latency set: ssd or hdd")
@click.option(
    "--sharing/--no-sharing",
    default=None,
    help="page sharing [default: on for policies that share (esx, mom), else off]",
)
@click.option("--inter-vm-sharing", is_flag=True, help="share across VMs (default: within one VM)")
@click.option(
    "--scan-rate",
    type=click.IntRange(min=0, max=MAX_RATE_PAGES_PER_S),
    default=None,
    help="sharing scan pages/s per VM (ESX: 50)",
)
@click.option(
    "--host-selection",
    type=click.Choice(["random", "lru-sampled"]),
    default="random",
    show_default=True,
)
@click.option(
    "--balloon-rate",
    type=click.IntRange(min=0, max=MAX_RATE_PAGES_PER_S),
    default=None,
    help="balloon pages/s",
)
@click.option(
    "--overhead",
    default=None,
    help="host overhead per VM, SIZE[,SIZE...] (one size: every VM's) in the trace's pages",
)
@click.option("--debug-checks", is_flag=True, help="check the invariants at every quantum")
@click.option(
    "--engine", type=click.Choice(["numba", "reference"]), default="numba", show_default=True
)
@reports_errors
def replay_command(
    trace,
    host_mem,
    vm_mem,
    guest_policy,
    policy,
    output,
    as_json,
    quiet,
    seed,
    epoch,
    quantum,
    latencies,
    sharing,
    inter_vm_sharing,
    scan_rate,
    host_selection,
    balloon_rate,
    overhead,
    debug_checks,
    engine,
):
    """Replay TRACE through the overcommit model and write per-epoch metrics."""
    import json

    from balloonreplay.replay import parse_duration_ns, replay, summary_json, summary_line

    _check_parquet_name(output, "its metrics as Parquet")
    options = {}
    if scan_rate is not None:
        options["scan_rate_pages_per_s"] = scan_rate
    if balloon_rate is not None:
        options["balloon_rate_pages_per_s"] = balloon_rate
    if overhead is not None:
        options["overhead_pages"] = overhead  # sizes in the trace's pages (build_config)
    result = replay(
        trace,
        vms=vm_mem,
        host=host_mem,
        policy=policy,
        guest_policy=guest_policy,
        engine=engine,
        progress=not (quiet or as_json),
        output=output,
        latencies=latencies,
        seed=seed,
        epoch_ns=parse_duration_ns(epoch, "epoch"),
        quantum_ns=parse_duration_ns(quantum, "quantum"),
        sharing=sharing,
        intra_vm_sharing_only=not inter_vm_sharing,
        host_selection=host_selection,
        debug_checks=debug_checks,
        **options,
    )
    if as_json:
        click.echo(json.dumps(summary_json(result.summary)))
    elif not quiet:
        click.echo(summary_line(result.summary))


@main.command("summarize")
@click.argument("runs", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--runs-from",
    "run_lists",
    multiple=True,
    type=click.File("r"),
    help="a file listing metrics files, one per line (repeatable)",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(), help="summary table to write (.parquet)"
)
@click.option(
    "--consolidation",
    "consolidation_path",
    default=None,
    type=click.Path(),
    help="also write the consolidation ratio per experiment, workload and policy (.parquet)",
)
@click.option(
    "--slo",
    "slo_settings",
    multiple=True,
    metavar="[EXPERIMENT=]SLOWDOWN",
    help="the SLO slowdown (every experiment's, or one's; repeatable); default: what each "
    "run records, else 1.10",
)
@click.option(
    "--absolute",
    "absolute",
    multiple=True,
    metavar="EXPERIMENT",
    help="judge EXPERIMENT's runs by their absolute slowdown, with no baseline (the "
    "workflow's slo: {baseline: none}; repeatable)",
)
@reports_errors
def summarize_command(runs, run_lists, output, consolidation_path, slo_settings, absolute):
    """Summarise metrics files (one row per run) and find each policy's consolidation
    ratio. Baseline runs among RUNS (the workflow's results/baselines/) are matched to
    the runs they serve, not summarised; a run of policy none without host_mem serves
    as the baseline of its VM set, unless its experiment is judged --absolute."""
    from balloonreplay.metrics import read_metrics_metadata
    from balloonreplay.summary import (
        consolidation,
        consolidation_report,
        summarize_study,
        write_summary,
    )
    from balloonreplay.traces.io import check_output_path

    runs = list(runs) + [line.strip() for fh in run_lists for line in fh if line.strip()]
    if not runs:
        raise click.UsageError("no metrics files: give RUNS or --runs-from")
    for path in (output, consolidation_path):
        if path is not None:
            check_output_path(path, *runs)
    _check_parquet_name(output, "its summary as Parquet")
    _check_parquet_name(consolidation_path, "its ratios as Parquet", option="--consolidation")
    _check_distinct_outputs(output, consolidation_path, "-o", "--consolidation")
    records = [read_metrics_metadata(p).get("run", {}) for p in runs]
    experiments = {run.get("experiment") for run in records}
    slo = _parse_slo(slo_settings, experiments)
    for name in absolute:
        if name not in experiments:
            known = ", ".join(sorted(str(e) for e in experiments if e)) or "none"
            raise click.BadParameter(
                f"no run of experiment {name!r} (the runs': {known})", param_hint="--absolute"
            )
    summary = summarize_study(runs, slo, records, absolute)
    write_summary(summary, output)
    ratios = consolidation(summary)
    if consolidation_path:
        write_summary(ratios, consolidation_path)
    for line in consolidation_report(summary, ratios, output):
        click.echo(line, err=True)
