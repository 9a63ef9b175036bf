"""Named workloads from an experiment config (``config/config.yaml``).

A generated workload is configured as::

    workloads:
      zipf4:
        generate:
          spec: config/workloads/zipf4.yaml   # relative to the repository root
          seed: 1
          lru_filter_pages: 256               # optional

The workflow validates the whole config against workflow/schemas/config.schema.yaml;
this module checks only what ``balloonreplay generate --config`` needs. Paths are read as
the workflow reads them, relative to the repository root: the directory above the config
holding the Snakefile (``config_check.config_repo_root``), from any working directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from balloonreplay.config_check import config_repo_root, not_found, repo_path
from balloonreplay.errors import ConfigError
from balloonreplay.traces.generators.spec import WorkloadSpec, load_spec, yaml_problem
from balloonreplay.traces.generators.workload import check_seed
from balloonreplay.traces.io import looked_for


@dataclass(frozen=True)
class NamedWorkload:
    spec: WorkloadSpec
    seed: int
    lru_filter_pages: int | None


def load_named_workload(config_path: str | os.PathLike, name: str) -> NamedWorkload:
    """The workload `name` of the config at `config_path`; errors name the config file and
    the key in it (``config.yaml: workloads.x.generate.seed: ...``)."""
    try:
        config = yaml.safe_load(Path(config_path).read_text())
    except FileNotFoundError:
        raise ConfigError("", "config not found" + looked_for(config_path), config_path) from None
    except OSError as exc:
        raise ConfigError("", f"cannot read config ({exc.strerror})", config_path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            "", f"expected a YAML mapping ({yaml_problem(exc)})", config_path
        ) from None
    workloads = (config or {}).get("workloads") if isinstance(config, dict) else None
    if not isinstance(workloads, dict):
        raise ConfigError("workloads", "missing (a mapping of workload names)", config_path)
    if name not in workloads:
        raise ConfigError(
            f"workloads.{name}",
            f"no such workload (configured: {', '.join(workloads)})",
            config_path,
        )
    entry = workloads[name]
    if not isinstance(entry, dict) or not isinstance(entry.get("generate"), dict):
        raise ConfigError(
            f"workloads.{name}.generate",
            "missing: this workload is not generated (ingest it with `balloonreplay ingest`)",
            config_path,
        )
    generate = entry["generate"]
    if "spec" not in generate:
        raise ConfigError(
            f"workloads.{name}.generate.spec", "missing (a workload spec file)", config_path
        )
    # As the workflow reads the config (config_check): relative to the repository root.
    repo_root = config_repo_root(config_path)
    spec_path = repo_path(str(generate["spec"]), repo_root)
    if not os.path.exists(spec_path):
        raise ConfigError(
            f"workloads.{name}.generate.spec",
            not_found(str(generate["spec"]), repo_root),
            config_path,
        )
    spec = load_spec(spec_path)
    spec = WorkloadSpec(name, spec.vms, spec.images, spec.raw)
    seed = generate.get("seed", 0)
    try:
        check_seed(seed)
    except ConfigError as exc:
        raise ConfigError(f"workloads.{name}.generate.seed", exc.detail, config_path) from None
    lru = generate.get("lru_filter_pages")
    if lru is not None and (isinstance(lru, bool) or not isinstance(lru, int) or lru < 1):
        raise ConfigError(
            f"workloads.{name}.generate.lru_filter_pages",
            f"expected an integer >= 1, got {lru!r}",
            config_path,
        )
    return NamedWorkload(spec, seed, lru)
