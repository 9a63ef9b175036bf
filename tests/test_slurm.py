"""The `.test/` study through the SLURM executor plug-in on a real single-node SLURM.

scripts/slurm-local.sh brings SLURM up (installing it with apt-get when missing). The
study of `.test/config/config.yaml` (the one tests/test_workflow.py runs locally) then runs
twice: through `--workflow-profile profiles/slurm`, and locally with `--cores 2`. The test
shows from `sacct` that every job but the local rules ran as a SLURM job of this run, with
the rule, wildcards and resources Snakemake asked for, that every replay output has its
job, and that both runs produced the same results, value for value. Then SLURM is brought
down again.

A captured trace is not reproducible (memtrace records a real program, sqlite3, whose
accesses vary from run to run), so the local run starts once the SLURM run has captured
its traces, with copies of them; every other trace is made again by the local run. Both
runs then proceed at once: a SLURM job spends most of its time starting Snakemake twice
and waiting for the plug-in's status checks, so the local run fills the idle CPU.

Needs root on Debian (apt-get, system daemons). Where it cannot run it skips with the
reason, except under CI=true, where it fails with the reason instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from balloonreplay.metrics import read_metrics_metadata

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
PROFILE = REPO / "profiles" / "slurm"
STUDY = REPO / ".test" / "config" / "config.yaml"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
PARTITION = os.environ.get("SLURM_LOCAL_PARTITION", "main")
ACCOUNT = os.environ.get("SLURM_LOCAL_ACCOUNT", "balloonreplay")
# Rules that run in the Snakemake process on the submit host (`localrules:` in
# workflow/rules/common.smk, and the target rule).
LOCAL_RULES = {"all", "refine_sweep", "sweep_runs"}
# The only values that may differ between two runs of the same study: the wall-clock time
# a replay took (a column of the summary, and a key of each run's summary metadata).
WALL_CLOCK = "replay_seconds"
RUN_TIMEOUT_S = 1800
CAPTURED = sorted(
    name for name, w in yaml.safe_load(STUDY.read_text())["workloads"].items() if "capture" in w
)

pytestmark = pytest.mark.slurm


def _cannot_run_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "needs root: scripts/slurm-local.sh installs packages and starts system daemons"
    if not Path("/etc/debian_version").exists():
        return "needs Debian: scripts/slurm-local.sh installs SLURM with apt-get"
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        return "SLURM is not installed and apt-get is not available to install it"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    return None


def _script(action: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), action],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _running(pid: int) -> bool:
    """Whether PID is a live process (an exited one that waits to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def slurm():
    """SLURM up for the module; down afterwards unless it was already up before."""
    reason = _cannot_run_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the SLURM test must run under CI=true but cannot: {reason}")
        pytest.skip(reason)
    was_up = _script("status", timeout=60).returncode == 0
    started = time.monotonic()
    # `up` bounds each of its waits itself and names the daemon and its log on a timeout.
    up = _script("up", timeout=1800)
    assert up.returncode == 0, f"slurm-local.sh up failed:\n{up.stdout}\n{up.stderr}"
    print(f"slurm-local.sh up: {time.monotonic() - started:.1f}s\n{up.stdout}")
    status = _script("status", timeout=60)
    assert status.returncode == 0, f"not all daemons run after up:\n{status.stdout}"
    ours = [int(pid) for pid in re.findall(r"\(pid (\d+), started by this script\)", status.stdout)]
    try:
        yield
    finally:
        if not was_up:
            down = _script("down", timeout=300)
            assert down.returncode == 0, (
                f"slurm-local.sh down failed:\n{down.stdout}\n{down.stderr}"
            )
            alive = [pid for pid in ours if _running(pid)]
            assert not alive, f"daemons started by slurm-local.sh still run after down: {alive}"


def _start_study(workdir: Path, log: Path, *args: str, env=None) -> subprocess.Popen:
    workdir.mkdir(exist_ok=True)
    cmd = [
        str(SNAKEMAKE),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(STUDY),
        *args,
    ]
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)


def _finish(proc: subprocess.Popen, log: Path, what: str, started: float) -> str:
    try:
        proc.wait(timeout=max(1.0, started + RUN_TIMEOUT_S - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=60)
    text = log.read_text()
    print(f"{what}: {time.monotonic() - started:.1f}s")
    assert proc.returncode == 0, f"{what} failed (exit {proc.returncode}):\n{text[-6000:]}"
    return text


def _submissions(log: str) -> dict[str, tuple[str, dict[str, str]]]:
    """SLURM job id -> (rule, resources) of each job the plug-in submitted, from the log:
    each job's block (rule, Snakemake job id, resources) precedes its submission line."""
    blocks: dict[str, tuple[str, dict[str, str]]] = {}
    submitted = {}
    block = None
    for line in log.splitlines():
        if m := re.fullmatch(r"(local)?(rule|checkpoint) (\w+):", line):
            block = {"rule": m.group(3), "local": bool(m.group(1))}
        elif block is not None and (m := re.fullmatch(r"\s+jobid: (\d+)", line)):
            block["jobid"] = m.group(1)
        elif block is not None and (m := re.fullmatch(r"\s+resources: (.*)", line)):
            resources = dict(item.split("=", 1) for item in m.group(1).split(", "))
            blocks[block["jobid"]] = (block["rule"], resources)
        elif m := re.match(r"Job (\d+) has been submitted with SLURM jobid (\d+)", line):
            submitted[m.group(2)] = blocks[m.group(1)]
    return submitted


def _sacct(run_id: str) -> dict[str, dict[str, str]]:
    """The run's jobs from the accounting database: job id -> fields."""
    fields = ["JobIDRaw", "State", "Partition", "Account", "Comment", "ReqMem"]
    fields += ["TimelimitRaw", "ReqCPUS"]
    out = subprocess.run(
        [
            "sacct",
            "-X",
            "--parsable2",
            "--noheader",
            f"--format={','.join(fields)}",
            f"--starttime={datetime.now() - timedelta(days=1):%Y-%m-%dT%H:%M}",
            "--endtime=now",
            f"--name={run_id}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()]
    return {row["JobIDRaw"]: row for row in rows}


def _outputs(root: Path, kind: str) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "results" / kind).rglob("*.parquet")}


def _comment(rule: str, output: str) -> str:
    """The plug-in's `sbatch --comment` for a replay or baseline output: the rule and its
    wildcards, joined by `_` (no name in the study contains `_`)."""
    parts = Path(output).with_suffix("").parts[2:]
    return f"rule_{rule}_wildcards_{'_'.join(parts)}"


def _assert_same_results(local: Path, cluster: Path) -> None:
    for kind in ("runs", "baselines"):
        files = _outputs(local, kind)
        assert files, f"the local run wrote no results/{kind}"
        assert _outputs(cluster, kind) == files
        for name in sorted(files):
            pd.testing.assert_frame_equal(
                pd.read_parquet(cluster / name), pd.read_parquet(local / name), obj=name
            )
            meta = [read_metrics_metadata(root / name) for root in (local, cluster)]
            for m in meta:
                m.get("summary", {}).pop(WALL_CLOCK, None)
            assert meta[1] == meta[0], f"{name}: metadata differ"
    key = ["experiment", "policy", "point"]
    summaries = []
    for root in (local, cluster):
        summary = pd.read_parquet(root / "results" / "summary.parquet")
        summaries.append(summary.drop(columns=[WALL_CLOCK]).sort_values(key, ignore_index=True))
    pd.testing.assert_frame_equal(summaries[1], summaries[0], obj="summary.parquet")
    assert len(summaries[0]) == len(_outputs(local, "runs"))
    pd.testing.assert_frame_equal(
        pd.read_parquet(cluster / "results" / "consolidation.parquet"),
        pd.read_parquet(local / "results" / "consolidation.parquet"),
        obj="consolidation.parquet",
    )


def test_study_runs_as_slurm_jobs_and_equals_a_local_run(slurm, tmp_path):
    env = dict(
        os.environ,
        BALLOONREPLAY_SLURM_PARTITION=PARTITION,
        BALLOONREPLAY_SLURM_ACCOUNT=ACCOUNT,
    )
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    started = time.monotonic()
    cluster_run = _start_study(
        cluster, tmp_path / "slurm.log", "--workflow-profile", str(PROFILE), env=env
    )
    # The captured traces, once the SLURM run has them (they are written atomically).
    captured = [Path("traces") / f"{name}.parquet" for name in CAPTURED]
    while not all((cluster / path).exists() for path in captured):
        if cluster_run.poll() is not None or time.monotonic() > started + RUN_TIMEOUT_S:
            break
        time.sleep(1)
    for path in captured:
        if (cluster / path).exists():
            (local / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cluster / path, local / path)
    local_run = _start_study(local, tmp_path / "local.log", "--cores", "2")
    log = _finish(cluster_run, tmp_path / "slurm.log", "run through SLURM", started)
    local_log = _finish(local_run, tmp_path / "local.log", "local run", started)

    run_ids = set(re.findall(r"SLURM run ID: (\S+)", log))
    assert len(run_ids) == 1, f"no single SLURM run id in the log:\n{log[-3000:]}"
    run_id = run_ids.pop()
    submitted = _submissions(log)
    assert submitted, f"no job was submitted to SLURM:\n{log[-3000:]}"

    # Every job but the local rules went to SLURM; the local rules ran here.
    all_rules = set(re.findall(r"^local(?:rule|checkpoint) (\w+):$", local_log, re.M))
    all_rules |= {"capture_trace"} if CAPTURED else set()  # captured by the SLURM run only
    assert {rule for rule, _ in submitted.values()} == all_rules - LOCAL_RULES
    ran_here = set(re.findall(r"^local(?:rule|checkpoint) (\w+):$", log, re.M))
    assert ran_here == LOCAL_RULES

    # The accounting database has each of them, completed, with the rule and wildcards
    # (the plug-in's comment), partition, account and resources asked for. slurmdbd
    # records a job's end asynchronously, so give it a little time.
    deadline = time.monotonic() + 60
    while True:
        jobs = _sacct(run_id)
        done = {j for j, row in jobs.items() if row["State"] == "COMPLETED"}
        if done >= set(submitted) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(jobs) == set(submitted), f"sacct --name {run_id}: {sorted(jobs)}"
    for job_id, (rule, resources) in submitted.items():
        row = jobs[job_id]
        assert (row["State"], row["Partition"], row["Account"]) == (
            "COMPLETED",
            PARTITION,
            ACCOUNT,
        ), row
        assert row["Comment"] == f"rule_{rule}" or row["Comment"].startswith(
            f"rule_{rule}_wildcards_"
        ), row
        asked = (f"{resources['mem_mb']}M", resources["runtime"], resources["cpus_per_task"])
        assert (row["ReqMem"], row["TimelimitRaw"], row["ReqCPUS"]) == asked, row

    # Every replay output, and every baseline, was written by its own SLURM job.
    comments = {row["Comment"] for row in jobs.values()}
    for rule, kind in (("replay", "runs"), ("replay_baseline", "baselines")):
        want = {_comment(rule, name) for name in _outputs(cluster, kind)}
        got = {c for c in comments if c.startswith(f"rule_{rule}_wildcards_")}
        assert got == want, f"{rule}: sacct {sorted(got)}, outputs {sorted(want)}"

    _assert_same_results(local, cluster)
