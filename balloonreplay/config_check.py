"""Checking an experiment config at load, before any job runs (workflow/rules/common.smk).

Two passes, each raising :class:`ConfigError` whose key is the offending setting's path in
the config (``experiments.overcommit.policies[2].params.tax``):

- :func:`check_schema`: the JSON Schema (workflow/schemas/config.schema.yaml), reporting the
  most specific violation by its path rather than jsonschema's nested report;
- :func:`check_values`: what the schema cannot say: names refer to configured workloads,
  policies, formats and labels; policy plug-ins load and accept their parameters, in
  range (HostPolicy.check_params); memory sizes are at
  least one page; engine options and latencies are known, of the right type and in range.

A bad value thus fails at load, naming its key, instead of in the middle of a replay job.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping
from typing import Any

import yaml

from balloonreplay.errors import BalloonreplayError, ConfigError
from balloonreplay.traces.schema import TraceMetadata
from balloonreplay.units import PAGE_SIZE_BYTES, page_shift, parse_size_pages


def key_path(parts) -> str:
    """``["experiments", "x", "policies", 2]`` -> ``experiments.x.policies[2]``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def check_config(
    config: Mapping[str, Any], schema_path: str | os.PathLike, repo_root, workdir=None
) -> None:
    check_schema(config, schema_path)
    check_values(config, repo_root, workdir)


def check_schema(config: Mapping[str, Any], schema_path: str | os.PathLike) -> None:
    import jsonschema

    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    # JSON Schema's integer is any number with a zero fraction: 3.0 VMs would pass (and
    # become a point named 'w-n3.0' that no job makes). Here a count is an int.
    whole = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    validator_class = jsonschema.validators.extend(
        jsonschema.Draft202012Validator, type_checker=whole
    )
    error = jsonschema.exceptions.best_match(validator_class(schema).iter_errors(config))
    if error is None:
        return
    # best_match stops at a oneOf (a policy is a name or a mapping); the deepest error of
    # the alternative that got furthest names the key precisely.
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    if error.validator == "type" and error.validator_value == "integer":
        message = f"expected a whole number, got {error.instance!r}"
    elif error.schema == schema["$defs"]["size"] and _is_number(error.instance):
        message = _bare_size_message(error.instance)
    else:
        message = error.message
    raise ConfigError(key_path(error.absolute_path), message)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bare_size_message(number) -> str:
    """Why a bare YAML number is refused as a size, and how to write what was meant: it
    is ambiguous, since a workload spec reads ``memory: 4096`` as pages while the command
    line reads ``--host-mem 4096`` as bytes (units.parse_size_pages)."""
    return (
        f"expected a size with its unit, got the bare number {number!r}, which could be "
        f"pages or bytes: write {number}MiB (or another unit), {number}p for pages, or "
        f'"{number}" in quotes for bytes'
    )


def check_values(config: Mapping[str, Any], repo_root, workdir=None) -> None:
    """What JSON Schema cannot say (the config must already match the schema).

    ``workdir``: the study's directory; a capture whose trace is already there
    (traces/NAME.parquet) does not need its program any more."""
    workloads = config["workloads"]
    experiments = config["experiments"]
    for name, workload in workloads.items():
        _check_workload(name, workload, repo_root, workdir)
    # Each ingested source's metadata read once (_source_metadata).
    recorded: dict[tuple, TraceMetadata] = {}
    for name, experiment in experiments.items():
        _check_experiment(name, experiment, workloads)
        _check_configured_memory(name, experiment, workloads, repo_root, recorded)
        _check_trace_vm_counts(name, experiment, workloads, repo_root, recorded)
    _check_figures(config.get("figures") or {}, experiments)


def repo_path(path: str, repo_root) -> str:
    """A path of the config as the workflow reads it: relative to the repository root."""
    return path if os.path.isabs(path) else os.path.join(repo_root, path)


def config_repo_root(config_path: str | os.PathLike) -> str:
    """The repository root a config outside the workflow (``generate --config``) takes its
    paths from: the nearest directory above the config holding a Snakefile, which the
    workflow's own root is (its basedir); the working directory for a config in none."""
    directory = os.path.dirname(os.path.abspath(config_path))
    while True:
        if os.path.isfile(os.path.join(directory, "Snakefile")):
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return os.getcwd()
        directory = parent


def not_found(path: str, repo_root) -> str:
    from balloonreplay.traces.io import looked_for

    return f"file not found: {path}{looked_for(path, repo_path(path, repo_root))}"


def _check_size(key: str, text: str) -> None:
    try:
        pages = parse_size_pages(text, PAGE_SIZE_BYTES)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None
    if pages < 1:
        raise ConfigError(
            key, f"expected at least one page ({PAGE_SIZE_BYTES} bytes), got {text!r}"
        )


def _source_metadata(
    workload: str, ingest: Mapping[str, Any], repo_root, recorded
) -> TraceMetadata:
    """What an ingest's source says about itself (its format's read_metadata: the VMs'
    configured memory, their number, if it records them), read once per source (format,
    file and reader options) and kept in ``recorded``, since the config is checked at
    every Snakemake start, for every experiment replaying it."""
    from balloonreplay.traces.formats import get_format

    path = repo_path(ingest["path"], repo_root)
    options = dict(ingest.get("options") or {})
    key = (ingest["format"], os.path.realpath(path), yaml.safe_dump(options, sort_keys=True))
    if key not in recorded:
        fmt = get_format(ingest["format"])
        try:
            recorded[key] = fmt.read_metadata(path, fmt.make_options(options))
        except BalloonreplayError as exc:
            raise ConfigError(f"workloads.{workload}.ingest.path", str(exc)) from None
    return recorded[key]


def _source_records_memory(workload: str, ingest: Mapping[str, Any], repo_root, recorded) -> bool:
    """Whether an ingest's source records each VM's configured memory."""
    return _source_metadata(workload, ingest, repo_root, recorded).config_pages is not None


def _trace_vm_count(workload: str, settings: Mapping[str, Any], repo_root, recorded) -> int | None:
    """The VMs of a workload's trace as far as the config tells at load, else None (then
    only the trace's data tells: a CSV's vm column, say)."""
    from balloonreplay.traces.generators import load_spec

    if "generate" in settings:
        # Checked by _check_workload already; a small YAML file read again.
        return len(load_spec(repo_path(settings["generate"]["spec"], repo_root)).vms)
    if "capture" in settings:
        return 1  # one program, ingested as VM 0 (workflow/scripts/capture-memtrace.sh)
    ingest = settings["ingest"]
    sizes = ingest.get("vm_mem") or []
    if len(sizes) > 1:
        return len(sizes)  # the ingest refuses a trace of any other number of VMs
    return _source_metadata(workload, ingest, repo_root, recorded).num_vms


def _check_workload(name: str, workload: Mapping[str, Any], repo_root, workdir=None) -> None:
    from balloonreplay.traces.formats import get_format
    from balloonreplay.traces.generators import load_spec

    prefix = f"workloads.{name}"
    if "generate" in workload:
        try:
            load_spec(repo_path(workload["generate"]["spec"], repo_root))
        except BalloonreplayError as exc:
            raise ConfigError(f"{prefix}.generate.spec", str(exc)) from None
    if "ingest" in workload:
        ingest = workload["ingest"]
        if not os.path.exists(repo_path(ingest["path"], repo_root)):
            raise ConfigError(f"{prefix}.ingest.path", not_found(ingest["path"], repo_root))
        try:
            fmt = get_format(ingest["format"])
        except BalloonreplayError as exc:
            raise ConfigError(f"{prefix}.ingest.format", str(exc)) from None
        try:
            options = fmt.make_options(dict(ingest.get("options") or {}))
        except BalloonreplayError as exc:
            raise ConfigError(f"{prefix}.ingest.options", str(exc)) from None
        page_size = getattr(options, "page_size_bytes", None)
        if page_size is not None:
            try:
                page_shift(page_size)
            except ValueError as exc:
                raise ConfigError(f"{prefix}.ingest.options.page_size_bytes", str(exc)) from None
        for i, size in enumerate(ingest.get("vm_mem") or []):
            _check_size(f"{prefix}.ingest.vm_mem[{i}]", size)
    if "capture" in workload:
        capture = workload["capture"]
        _check_size(f"{prefix}.capture.vm_mem", capture["vm_mem"])
        _check_program(name, capture["program"], workdir)
        stdin = capture.get("stdin")
        if stdin and not os.path.exists(repo_path(stdin, repo_root)):
            raise ConfigError(f"{prefix}.capture.stdin", not_found(stdin, repo_root))


def _check_program(name: str, program: str, workdir) -> None:
    """A capture runs its program from a scratch directory, so the path is absolute; it
    must exist unless the recording is already made (a recording is kept, README)."""
    key = f"workloads.{name}.capture.program"
    if not os.path.isabs(program):
        found = shutil.which(program)
        hint = f" ({found}?)" if found else ""
        raise ConfigError(key, f"expected an absolute path, got {program!r}{hint}")
    recorded = workdir is not None and os.path.exists(
        os.path.join(workdir, "traces", f"{name}.parquet")
    )
    if not recorded and not (os.path.isfile(program) and os.access(program, os.X_OK)):
        raise ConfigError(
            key,
            f"{program}: not found or not executable (install it, e.g. apt-get install "
            "sqlite3, or give the path of the program)",
        )


def _check_configured_memory(
    name: str,
    experiment: Mapping[str, Any],
    workloads,
    repo_root,
    recorded: dict[tuple, TraceMetadata],
):
    """Every VM needs a configured memory: the experiment's vm_mem, else the trace's. A
    generated or captured trace records one; an ingested one only when its ingest gives
    vm_mem or its source records it (a canonical Parquet trace may). ``recorded``: what
    each source says, shared by the experiments (check_values)."""
    from balloonreplay import experiments as X

    if experiment.get("vm_mem"):
        return
    entries = X.policy_entries(experiment)
    if all(e["vm_mem_equals_host"] for e in entries) and not X.needs_baseline(experiment):
        return  # every run is configured with the host's memory
    for workload in experiment["workloads"]:
        ingest = workloads[workload].get("ingest")
        if not ingest or ingest.get("vm_mem"):
            continue
        if not _source_records_memory(workload, ingest, repo_root, recorded):
            raise ConfigError(
                f"experiments.{name}.vm_mem",
                f"the VMs of workload {workload!r} have no configured memory: neither "
                f"experiments.{name}.vm_mem nor workloads.{workload}.ingest.vm_mem is given, "
                f"and its {ingest['format']} source records none; give vm_mem in the "
                "workload's ingest or in the experiment",
            )


def _check_experiment(name: str, experiment: Mapping[str, Any], workloads) -> None:
    from balloonreplay import experiments as X
    from balloonreplay.summary import display_name

    prefix = f"experiments.{name}"
    for i, workload in enumerate(experiment["workloads"]):
        if workload not in workloads:
            raise ConfigError(
                f"{prefix}.workloads[{i}]",
                f"unknown workload {workload!r} (configured: {', '.join(workloads)})",
            )
    for key in ("vm_mem", "host_mem"):
        if key in experiment:
            _check_size(f"{prefix}.{key}", experiment[key])
    # Equal as the points are named (experiments.host_point: page counts by count, byte
    # sizes by bytes), which is what makes two points one; 1p and 4KiB are two points,
    # equal only in 4 KiB pages, and a trace may have others. (Imported here: policies
    # import this module for type_problem, and experiments brings pandas and pyarrow.)
    from balloonreplay.experiments import host_point

    seen: dict[str, str] = {}
    for i, size in enumerate((experiment.get("sweep") or {}).get("host_mem") or []):
        _check_size(f"{prefix}.sweep.host_mem[{i}]", size)
        point = host_point("", None, size)
        if point in seen:
            raise ConfigError(
                f"{prefix}.sweep.host_mem[{i}]", f"{size!r} is the same size as {seen[point]!r}"
            )
        seen[point] = size
    if experiment.get("vms") and "vms" in (experiment.get("sweep") or {}):
        raise ConfigError(prefix, "give `vms` or `sweep.vms`, not both")
    counts = _vm_counts(experiment)
    for key, what, values in _per_vm_settings(name, experiment):
        _check_per_vm_length(key, what, values, counts)
    labels = X.policy_labels(experiment)
    for i, label in enumerate(labels):
        if "/" in label:  # a policy given as text is its own label, a directory name
            raise ConfigError(
                f"{prefix}.policies[{i}]",
                f"{label!r} would name nested directories of results/runs; give it as a "
                "mapping with params (shares: [3000, 1000]) and a label",
            )
    if len(set(labels)) != len(labels):
        raise ConfigError(
            f"{prefix}.policies",
            f"labels must be unique, got {labels}; give variants a `label:`",
        )
    # Figures and tables tell policies apart by these names ('esx:tax=0.5' and
    # 'esx: tax=0.5' are two labels, but both are drawn as 'VMware ESX (tax=0.5)').
    drawn: dict[str, int] = {}
    for i, entry in enumerate(X.policy_entries(experiment)):
        shown = display_name(entry["label"], entry["name"])
        if shown in drawn:
            raise ConfigError(
                f"{prefix}.policies[{i}]",
                f"would be drawn as {shown!r}, as policies[{drawn[shown]}] is; give one of "
                "them as a mapping with name, params and a label",
            )
        drawn[shown] = i
    _check_engine(prefix, experiment)


def _vm_counts(experiment: Mapping[str, Any]) -> tuple[list[int], bool]:
    """The VM counts the experiment's runs have, as far as the config says (none: the
    trace's), and whether the search for the SLO boundary may add any count up to the
    largest."""
    from balloonreplay import experiments as X

    if X.sweep_kind(experiment) == "vms":
        return sorted(experiment["sweep"]["vms"]), X.refines(experiment)
    return ([experiment["vms"]] if experiment.get("vms") else []), False


def _per_vm_settings(
    name: str, experiment: Mapping[str, Any], labels=None
) -> list[tuple[str, str, list]]:
    """Each setting of the experiment given as one value per VM, as (its key, what the
    message calls it, its values): per-VM policy parameters (of the policies labelled
    ``labels``; None: all, each policy checked on the way) and engine.overhead_pages."""
    from balloonreplay import experiments as X

    prefix = f"experiments.{name}"
    found = []
    entries = X.policy_entries(experiment)
    for i, entry in enumerate(experiment.get("policies", ["none"])):
        if labels is not None and entries[i]["label"] not in labels:
            continue
        policy = _check_policy(f"{prefix}.policies[{i}]", entry)
        for param, values in _per_vm_lists(policy.params):
            where, what = (
                (f"{prefix}.policies[{i}]", f"parameter {param!r}: ")
                if isinstance(entry, str)
                else (f"{prefix}.policies[{i}].params.{param}", "")
            )
            found.append((where, what, values))
    overhead = (experiment.get("engine") or {}).get("overhead_pages")
    if isinstance(overhead, list | tuple) and len(overhead) > 1:  # one value: every VM's
        found.append((f"{prefix}.engine.overhead_pages", "", list(overhead)))
    return found


def _check_trace_vm_counts(
    name: str, experiment: Mapping[str, Any], workloads, repo_root, recorded
) -> None:
    """An experiment that sets no VM count runs each workload's trace as it is: its
    per-VM settings must have one value per VM of every workload's trace, checked here
    where the config tells the count (else at replay: check_run_vms)."""
    if _vm_counts(experiment)[0]:
        return  # checked against the configured counts (_check_experiment)
    settings = _per_vm_settings(name, experiment)
    if not settings:
        return
    for workload in experiment["workloads"]:
        n_vms = _trace_vm_count(workload, workloads[workload], repo_root, recorded)
        if n_vms is not None:
            for key, what, values in settings:
                _check_trace_vm_length(key, what, values, workload, n_vms)


def _check_trace_vm_length(key: str, what: str, values, workload: str, n_vms: int) -> None:
    if len(values) != n_vms:
        raise ConfigError(
            key,
            f"{what}{len(values)} values (one per VM), but workload {workload!r} runs its "
            f"trace's {n_vms} VM{'s' if n_vms != 1 else ''} (the experiment sets no vms); "
            "give one value for every VM, or set vms",
        )


def check_run_vms(
    experiments: Mapping[str, Any], run: Mapping[str, Any], trace_path: str | os.PathLike
) -> None:
    """At replay, once the trace exists: a run of an experiment that sets no VM count
    against its trace's VMs, which the load could not always know (an ingested trace
    whose data alone tells). Raises ConfigError naming the setting, as the load does."""
    from balloonreplay.traces.io import open_trace

    name = run["experiment"]
    experiment = experiments[name]
    if _vm_counts(experiment)[0]:
        return  # checked at load
    # A baseline runs no policy of the experiment, but its engine options.
    labels = () if run.get("sweep") == "baseline" else (run["policy"],)
    settings = _per_vm_settings(name, experiment, labels)
    n_vms = open_trace(trace_path).metadata.num_vms if settings else None
    for key, what, values in settings if n_vms is not None else ():
        _check_trace_vm_length(key, what, values, run["workload"], n_vms)


def _per_vm_lists(params) -> list[tuple[str, list]]:
    """The parameters given as one value per VM (a list, or "3000/1000" text)."""
    from balloonreplay.policies._util import given_values

    found = []
    for field in dataclasses.fields(params) if dataclasses.is_dataclass(params) else ():
        value = getattr(params, field.name)
        if isinstance(value, list | tuple | str) and "list" in str(field.type):
            values = given_values(value, field.name)
            if values.ndim == 1:
                found.append((field.name, values.tolist()))
    return found


def _check_per_vm_length(key: str, what: str, values, counts: tuple[list[int], bool]) -> None:
    """A list of one value per VM must have as many values as every run has VMs."""
    known, searched = counts
    if searched and max(known) > 1:
        raise ConfigError(
            key,
            f"{what}one value per VM ({len(values)} values) cannot fit a searched VM-count "
            f"sweep: the search may run any count from 1 to {max(known)}; give one value "
            "for every VM, or refine: {enabled: false} with a single VM count",
        )
    wrong = [n for n in known if n != len(values)]
    if wrong:
        raise ConfigError(
            key,
            f"{what}{len(values)} values (one per VM), but the experiment runs "
            f"{', '.join(map(str, known))} VMs; give one value for every VM, or one per VM "
            "for a single VM count",
        )


def _check_policy(key: str, entry):
    """The policy an entry of ``policies:`` makes, with its parameters checked."""
    from balloonreplay.policies import make_policy

    name, params = (entry, {}) if isinstance(entry, str) else (entry["name"], entry.get("params"))
    try:
        # make_policy loads the plug-in and runs its check_params(): a broken plug-in or
        # a value out of range fails here, at load, not in the middle of a replay job.
        return make_policy(name, dict(params or {}))
    except ConfigError as exc:
        message = str(exc).removeprefix(f"config: {exc.key}: ")
        param = exc.key.removeprefix("policy.") if exc.key.startswith("policy.") else None
        if isinstance(entry, str):  # "esx:tax=x": the entry itself, naming the parameter
            where = key
            message = f"parameter {param!r}: {message}" if param else message
        else:
            where = f"{key}.params.{param}" if param else f"{key}.name"
        raise ConfigError(where, message) from None
    except BalloonreplayError as exc:  # the plug-in's own code failed (named in the message)
        raise ConfigError(key if isinstance(entry, str) else f"{key}.name", str(exc)) from None


# ReplayConfig fields an experiment sets itself (experiments._replay_options).
EXPERIMENT_LEVEL_OPTIONS = ("sharing", "seed", "epoch_ns")


def _check_engine(prefix: str, experiment: Mapping[str, Any]) -> None:
    """Engine options, latencies and the epoch, through the engine's own checks."""
    from balloonreplay.engine.config import ReplayConfig
    from balloonreplay.latencies import get_latencies

    try:
        latencies = get_latencies(experiment.get("latencies", "ssd"))
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc.key}", str(exc).split(": ", 2)[-1]) from None
    fields = {f.name: f for f in dataclasses.fields(ReplayConfig)}
    settable = set(fields) - {"config_pages", "host_pages", "latencies", "guest_policy"}
    options = dict(experiment.get("engine") or {})
    for key, value in options.items():
        if key in EXPERIMENT_LEVEL_OPTIONS:
            # A run takes these from the experiment: under engine they were overridden.
            raise ConfigError(
                f"{prefix}.engine.{key}",
                f"set it as {prefix}.{key} (an experiment setting), not under engine",
            )
        if key not in settable:
            raise ConfigError(
                f"{prefix}.engine.{key}",
                f"unknown engine option; known: {', '.join(sorted(settable))}",
            )
        problem = type_problem(value, fields[key].default, fields[key].type)
        if problem:
            raise ConfigError(f"{prefix}.engine.{key}", problem)
    if experiment.get("epoch_ns") is not None:
        options["epoch_ns"] = experiment["epoch_ns"]
    overhead = options.get("overhead_pages")
    # As many VMs as overheads given (their number is checked against the runs' VMs).
    vms = len(overhead) if isinstance(overhead, list | tuple) and overhead else 1
    try:
        ReplayConfig(config_pages=[1] * vms, host_pages=1 << 40, latencies=latencies, **options)
    except ConfigError as exc:
        # The engine names a setting ("rates" for both rates); find the option behind it.
        culprits = {"rates": ("scan_rate_pages_per_s", "balloon_rate_pages_per_s")}
        culprit = next((k for k in culprits.get(exc.key, (exc.key,)) if k in options), exc.key)
        where = "epoch_ns" if exc.key == "epoch_ns" and "epoch_ns" in experiment else None
        where = where or (f"engine.{culprit}" if culprit in options else exc.key)
        raise ConfigError(f"{prefix}.{where}", str(exc).split(": ", 2)[-1]) from None


def type_problem(value: Any, default: Any, annotation: Any) -> str | None:
    """Why `value` does not fit a field with this default and annotation, or None."""
    text = str(annotation)
    if default is dataclasses.MISSING:
        default = None
    kind = type(default) if default is not None else None
    if kind is bool or text == "bool":
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int or text == "int":
        whole = number and isinstance(value, int)
        return None if whole else f"expected a whole number, got {value!r}"
    if kind is float or text == "float":
        return None if number else f"expected a number, got {value!r}"
    if kind is str or text == "str":
        return None if isinstance(value, str) else f"expected a string, got {value!r}"
    if text.startswith("list"):  # per-VM values: a list, one value for all, or "a/b" text
        items = value if isinstance(value, list | tuple) else [value]
        if isinstance(value, str) or all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in items
        ):
            return None
        return f"expected a number or a list of numbers (one per VM), got {value!r}"
    return None


def _check_figures(figures: Mapping[str, Any], experiments) -> None:
    """Each figure role names an experiment of the kind its figure draws (a typo or the
    wrong kind gave a placeholder or a meaningless figure, or failed building the jobs)."""
    from balloonreplay import experiments as X

    def experiment_of(key: str, name: str):
        if name not in experiments:
            raise ConfigError(
                key, f"unknown experiment {name!r} (configured: {', '.join(experiments)})"
            )
        return experiments[name]

    def vm_sweep(key: str, name: str, figure: str):
        experiment = experiment_of(key, name)
        if X.sweep_kind(experiment) != "vms":
            raise ConfigError(
                key,
                f"experiment {name!r} is not a VM-count sweep (sweep: {{vms: [...]}}), "
                f"which the {figure} draws",
            )
        return experiment

    if "overcommit" in figures:
        vm_sweep("figures.overcommit", figures["overcommit"], "swap-traffic figure")
    if "sharing" in figures:
        vm_sweep("figures.sharing", figures["sharing"], "page-sharing figure")
    if "double_paging" in figures:
        experiment_of("figures.double_paging", figures["double_paging"])
        if "double_paging_vms" in figures:
            raise ConfigError(
                "figures.double_paging_vms",
                "not used with figures.double_paging (that figure draws the experiment's "
                "most overcommitted point); give one or the other",
            )
    elif "double_paging_vms" in figures:
        _check_double_paging_vms(figures, experiments)
    timeline = figures.get("timeline")
    if timeline:
        experiment = experiment_of("figures.timeline.experiment", timeline["experiment"])
        if timeline["policy"] not in X.policy_labels(experiment):
            raise ConfigError(
                "figures.timeline.policy",
                f"{timeline['policy']!r} is not a policy of experiment {timeline['experiment']!r}",
            )
        if "workload" in timeline and timeline["workload"] not in experiment["workloads"]:
            raise ConfigError(
                "figures.timeline.workload",
                f"{timeline['workload']!r} is not a workload of experiment "
                f"{timeline['experiment']!r}",
            )
        _check_timeline_vms(timeline, experiment)
    equivalence = figures.get("balloon_equivalence")
    if equivalence:
        experiment = experiment_of(
            "figures.balloon_equivalence.experiment", equivalence["experiment"]
        )
        for role in ("ballooned", "configured"):
            if equivalence[role] not in X.policy_labels(experiment):
                raise ConfigError(
                    f"figures.balloon_equivalence.{role}",
                    f"{equivalence[role]!r} is not a policy label of experiment "
                    f"{equivalence['experiment']!r}",
                )


def _check_timeline_vms(timeline: Mapping[str, Any], experiment: Mapping[str, Any]) -> None:
    """The timeline draws a run of a VM-count sweep (a count it runs, or any count if the
    sweep is searched) or of a single-point experiment; never of a host-memory sweep."""
    from balloonreplay import experiments as X

    name, vms = timeline["experiment"], timeline.get("vms")
    kind = X.sweep_kind(experiment)
    if kind == "host_mem":
        raise ConfigError(
            "figures.timeline.experiment",
            f"experiment {name!r} sweeps host memory; the timeline draws a run of a "
            "VM-count sweep or of a single-point experiment",
        )
    if vms is None:
        return
    if kind == "vms" and vms not in experiment["sweep"]["vms"] and not X.refines(experiment):
        raise ConfigError(
            "figures.timeline.vms",
            f"{vms} is not a VM count of experiment {name!r} (sweep.vms: "
            f"{experiment['sweep']['vms']})",
        )
    if kind == "single" and vms != experiment.get("vms"):
        runs = f"{experiment['vms']} VMs" if experiment.get("vms") else "the trace's VMs"
        raise ConfigError(
            "figures.timeline.vms", f"experiment {name!r} runs {runs} only; leave vms out"
        )


def _check_double_paging_vms(figures: Mapping[str, Any], experiments) -> None:
    """Without figures.double_paging, the figure draws this VM count of the overcommit
    experiment (experiments.overcommit_experiment, the rule the figures follow)."""
    from balloonreplay import experiments as X

    vms = figures["double_paging_vms"]
    name = X.overcommit_experiment(figures, experiments)
    if name is None:
        raise ConfigError(
            "figures.double_paging_vms",
            "no VM-count sweep on a fixed host to take it from; set figures.overcommit "
            "or figures.double_paging",
        )
    counts = experiments[name]["sweep"]["vms"]
    if vms not in counts:
        raise ConfigError(
            "figures.double_paging_vms",
            f"{vms} is not a VM count of experiment {name!r}, which always runs {counts}",
        )
