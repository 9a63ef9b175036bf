"""What the commands do with bad input and bad output paths: one `error:` line, a
non-zero exit and no output, before the work where the problem can be seen then."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from balloonreplay.cli import main
from balloonreplay.traces.io import open_trace, write_trace
from balloonreplay.traces.schema import TraceMetadata, make_batch


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def raw_trace(path, vms=2, n=400, page_size_bytes=4096):
    """A trace as a user writes it (raw page numbers, not ingested)."""
    rng = np.random.default_rng(0)
    vm = np.arange(n) % vms
    t = np.arange(n) // vms * 100
    write_trace(
        [make_batch(vm, t, rng.integers(0, 40, n), rng.random(n) < 0.25)],
        path,
        TraceMetadata(config_pages=[32] * vms, source="test", page_size_bytes=page_size_bytes),
    )
    return path


@pytest.fixture
def trace(tmp_path):
    """An ingested 2-VM trace."""
    raw_trace(tmp_path / "raw.parquet")
    result = run("ingest", tmp_path / "raw.parquet", "-o", tmp_path / "t.parquet", "-q")
    assert result.exit_code == 0, result.output
    return tmp_path / "t.parquet"


def no_files_but(directory, *names):
    return sorted(p.name for p in directory.iterdir()) == sorted(names)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--vm-mem", "0p", "expected at least 1 page of 4096 bytes per VM, got '0p'"),
        ("--page-size", "3000", "expected a power of two (bytes: 4096, 8192, ...), got 3000"),
        # A power of two, but above what every reader accepts (formats.PAGE_SIZE).
        ("--page-size", str(2**31), "is not in the range 1<=x<=1073741824"),
    ],
)
def test_ingest_refuses_metadata_no_reader_would_open(tmp_path, option, value, message):
    raw_trace(tmp_path / "raw.parquet")
    result = run("ingest", tmp_path / "raw.parquet", "-o", tmp_path / "t.parquet", option, value)
    assert result.exit_code == (1 if option == "--vm-mem" else 2)  # --vm-mem: by ingest()
    assert message in result.output
    assert no_files_but(tmp_path, "raw.parquet")


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--vm-mem: expected at least 1 page of 4096 bytes per VM, got '100'"),
        (["--page-size", "8192"], "at least 1 page of 8192 bytes per VM, got '6KiB'"),
    ],
)
def test_ingest_refuses_a_vm_smaller_than_the_traces_page(tmp_path, extra, message):
    raw_trace(tmp_path / "raw.parquet")
    size = "6KiB" if extra else "100"
    out = tmp_path / "t.parquet"
    result = run("ingest", tmp_path / "raw.parquet", "-o", out, "--vm-mem", size, *extra)
    assert result.exit_code == 1
    assert message in result.output
    assert no_files_but(tmp_path, "raw.parquet")


def test_ingest_refuses_a_vm_mem_beyond_the_engines_page_counts(tmp_path):
    # Found by an audit: the size passed the parser and the footer's check said "expected
    # a list of pages >= 1", which it was.
    raw_trace(tmp_path / "raw.parquet")
    out = tmp_path / "t.parquet"
    result = run(
        "ingest", tmp_path / "raw.parquet", "-o", out, "--vm-mem", "99999999999999999999TiB"
    )
    assert result.exit_code == 1
    assert result.output == (
        "error: --vm-mem: expected a size below 2**63 pages (of 4096 bytes), "
        "got '99999999999999999999TiB'\n"
    )
    assert no_files_but(tmp_path, "raw.parquet")


def test_ingest_converts_vm_mem_with_the_page_size_the_reader_gives(tmp_path):
    # Found by a workflow audit: with a reader's page_size_bytes=8192 (what the workflow's
    # ingest passes) the sizes were converted in 4 KiB pages, doubling every VM's memory.
    from balloonreplay.traces.io import open_trace

    source = tmp_path / "t.csv"
    source.write_text("vm,t_ns,addr,write\n0,0,0,1\n1,5,8192,0\n0,9,16384,1\n")
    out = tmp_path / "t.parquet"
    args = ["-f", "csv", "--opt", "page_size_bytes=8192", "--vm-mem", "2MiB,1MiB", "-q"]
    assert run("ingest", source, "-o", out, *args).exit_code == 0
    meta = open_trace(out).metadata
    assert meta.page_size_bytes == 8192
    assert meta.config_pages == [256, 128]


def test_ingest_checks_metadata_given_through_the_api(tmp_path):
    from balloonreplay.errors import TraceError
    from balloonreplay.traces.ingest import ingest

    raw_trace(tmp_path / "raw.parquet")
    with pytest.raises(TraceError, match=r"metadata field 'config_pages': .*pages >= 1, got \[0"):
        ingest(
            tmp_path / "raw.parquet",
            tmp_path / "t.parquet",
            metadata_overrides={"config_pages": [0, 4]},
        )
    assert no_files_but(tmp_path, "raw.parquet")


def test_ingest_records_one_vm_memory_for_every_vm(tmp_path):
    raw_trace(tmp_path / "raw.parquet", vms=3)
    result = run(
        "ingest", tmp_path / "raw.parquet", "-o", tmp_path / "t.parquet", "--vm-mem", "1MiB", "-q"
    )
    assert result.exit_code == 0, result.output
    assert open_trace(tmp_path / "t.parquet").metadata.config_pages == [256, 256, 256]


def test_ingest_refuses_more_vm_sizes_than_vms(tmp_path):
    raw_trace(tmp_path / "raw.parquet", vms=1)
    result = run(
        "ingest", tmp_path / "raw.parquet", "-o", tmp_path / "t.parquet", "--vm-mem", "4p,4p"
    )
    assert result.exit_code == 1
    assert "the trace has 1 VMs but config_pages (from the command line" in result.output
    assert "gives 2 values; expected one per VM" in result.output
    assert no_files_but(tmp_path, "raw.parquet")


def test_the_lru_filter_share_is_right_without_a_terminal(tmp_path):
    """CliRunner's stderr is no terminal, so the progress bar is disabled and counts
    nothing: the share kept must come from the accesses read, not from the bar."""
    raw_trace(tmp_path / "raw.parquet")
    result = run(
        "ingest", tmp_path / "raw.parquet", "-o", tmp_path / "t.parquet", "--lru-filter", "8"
    )
    assert result.exit_code == 0, result.output
    kept = open_trace(tmp_path / "t.parquet").num_rows
    assert f"({kept / 400:.1%} kept by the LRU filter)" in result.output


@pytest.mark.parametrize("command", ["replay", "mrc", "ingest"])
@pytest.mark.parametrize("where", ["directory", "under a file", "the input", "empty"])
def test_an_output_path_that_cannot_be_written_is_refused_before_the_work(
    tmp_path, trace, command, where
):
    (tmp_path / "adir").mkdir()
    output, expected = {
        "directory": (tmp_path / "adir", "it is a directory; expected a file name"),
        "under a file": (trace / "m.parquet", f"{trace} is not a directory"),
        "the input": (trace, "it is this command's input, which it would replace"),
        "empty": ("", "expected a file name, got an empty one"),
    }[where]
    before = trace.read_bytes()
    result = run(command, trace, "-o", output, "-q")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ")
    assert f"cannot write output: {expected}" in result.output
    assert trace.read_bytes() == before
    assert no_files_but(tmp_path, "raw.parquet", "t.parquet", "adir")


def test_an_output_that_fails_at_the_rename_is_an_error_naming_it(tmp_path, trace, monkeypatch):
    real_replace = os.replace

    def refuse(src, dst):  # only for the metrics: numba's cache renames files too
        if os.fspath(dst) == os.fspath(tmp_path / "m.parquet"):
            raise PermissionError(13, "Permission denied", os.fspath(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    result = run("replay", trace, "-o", tmp_path / "m.parquet", "-q")
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {tmp_path / 'm.parquet'}: cannot write output: ")
    assert "Permission denied" in result.output
    assert no_files_but(tmp_path, "raw.parquet", "t.parquet")


def test_a_plot_format_matplotlib_cannot_write_is_refused_before_the_curves(tmp_path, trace):
    result = run("mrc", trace, "-o", tmp_path / "c.parquet", "--plot", tmp_path / "c.txt", "-q")
    assert result.exit_code == 1
    assert "c.txt: cannot write output: expected a figure file name ending in one of" in (
        result.output
    )
    assert no_files_but(tmp_path, "raw.parquet", "t.parquet")


def test_overhead_sizes_are_in_the_trace_pages_and_one_is_every_vm(tmp_path):
    raw_trace(tmp_path / "raw.parquet", page_size_bytes=8192)
    run("ingest", tmp_path / "raw.parquet", "-o", tmp_path / "t.parquet", "-q")
    for overhead in ("1MiB,1MiB", "1MiB", "128p"):
        result = run("replay", tmp_path / "t.parquet", "--overhead", overhead, "--json")
        assert result.exit_code == 0, result.output
        # 2 VMs of 32 pages, and 1 MiB of 8 KiB pages each
        assert json.loads(result.output)["host_pages"] == 2 * 32 + 2 * 128


@pytest.mark.parametrize(
    "args, message",
    [
        (["--host-mem", ""], "error: --host-mem: expected one size for the whole host, got ''"),
        (["--host-mem", "16MiB,1GiB"], "error: --host-mem: expected one size for the whole host"),
        (["--overhead", "12XB"], "error: --overhead: unknown size unit 'xb'"),
        (["--host-mem", "50%"], "error: --host-mem: expected a memory size like 512MiB"),
        (["--vm-mem", "0p"], "error: --vm-mem: every VM needs at least 1 page, got [0, 0]"),
        (["--epoch", "inf"], "epoch: expected a duration like 1s"),
        (["--epoch", "nan"], "epoch: expected a duration like 1s"),
        (["--scan-rate", str(10**20)], "is not in the range 0<=x<=1000000000"),
        # Found by an audit: 1000 read as bytes (0 pages) was not said, and --overhead's
        # count was named overhead_pages without the VMs'.
        (["--vm-mem", "1000"], "got [0, 0] (sizes round down to whole pages, and one without"),
        (
            ["--overhead", "1MiB,2MiB,3MiB"],
            "error: --overhead: expected one size per VM (2 VMs), got 3",
        ),
        # Found by an audit: 2**63 pages or more were an OverflowError in the engine.
        (["--vm-mem", "99999999999999999999TiB"], "error: --vm-mem: expected a size below 2**63"),
        (["--host-mem", "99999999999999999999TiB"], "error: --host-mem: expected a size below"),
        (["--overhead", "9" * 400 + "TiB"], "error: --overhead: expected a size below 2**63"),
        (["--vm-mem", f"{2**62}p"], "error: --vm-mem: the VMs' memory must be below 2**63 pages"),
        (["--overhead", f"{2**62}p"], "error: --overhead: the VMs' overhead must be below 2**63"),
        (["--overhead", f"{2**62 - 1}p"], "error: --host-mem: host memory (by default the VMs'"),
    ],
)
def test_replay_options_out_of_their_domain_are_clear_errors(trace, args, message):
    result = run("replay", trace, "-q", *args)
    assert result.exit_code in (1, 2)
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("bad", ["a trace", "not parquet", "missing"])
def test_summarize_names_an_input_that_is_not_a_metrics_file(tmp_path, trace, bad):
    (tmp_path / "notpq.parquet").write_text("hello\n")
    path, message = {
        "a trace": (trace, "expected a metrics file written by a replay"),
        "not parquet": (tmp_path / "notpq.parquet", "expected a metrics file (Parquet)"),
        "missing": (tmp_path / "missing.parquet", "file not found"),
    }[bad]
    (tmp_path / "runs.txt").write_text(f"{path}\n")
    result = run("summarize", "--runs-from", tmp_path / "runs.txt", "-o", tmp_path / "s.parquet")
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {path}: {message}")
    assert not (tmp_path / "s.parquet").exists()


def test_two_outputs_of_one_command_at_one_path_are_refused(tmp_path, trace):
    # Found by an audit: mrc -o X --plot X wrote the curves, then the PNG over them.
    same = tmp_path / "curves"  # a Parquet name, and a figure's (PNG without a suffix)
    result = run("mrc", trace, "-o", same, "--plot", same, "-q")
    assert result.exit_code == 1
    assert result.output == (
        f"error: {same}: cannot write output: --plot names the same file as -o, which it "
        "would replace\n"
    )
    same = tmp_path / "same.parquet"
    args = ("summarize", trace, "-o", same, "--consolidation", tmp_path / "." / "same.parquet")
    result = run(*args)
    assert result.exit_code == 1
    assert "--consolidation names the same file as -o" in result.output
    assert no_files_but(tmp_path, "raw.parquet", "t.parquet")


@pytest.mark.parametrize(
    ("command", "option", "name", "what"),
    [
        ("mrc", "-o", "x.csv", "its curves as Parquet"),
        ("mrc", "-o", "x.png", "its curves as Parquet"),
        ("replay", "-o", "x.csv", "its metrics as Parquet"),
        ("summarize", "-o", "x.csv", "its summary as Parquet"),
        ("summarize", "--consolidation", "x.csv", "its ratios as Parquet"),
        ("ingest", "-o", "x.pdf", "a canonical trace, which is Parquet"),
    ],
)
def test_a_table_named_for_another_format_is_refused_as_ingest_refuses_a_trace(
    tmp_path, trace, command, option, name, what
):
    # Found by an audit: mrc and replay wrote Parquet under -o x.csv, which ingest and
    # generate refuse.
    args = [command, trace, "-q"] if command != "summarize" else [command, trace]
    if option != "-o":
        args += ["-o", tmp_path / "s.parquet"]
    result = run(*args, option, tmp_path / name)
    assert result.exit_code == 2
    assert f"this command writes {what}; name it *.parquet" in result.output
    assert no_files_but(tmp_path, "raw.parquet", "t.parquet")


def test_a_workload_spec_that_is_not_utf8_is_a_clear_error(tmp_path, trace):
    result = run("generate", trace, "--seed", "1", "-o", tmp_path / "g.parquet", "-q")
    assert result.exit_code == 1
    assert "expected a YAML workload spec in UTF-8, got byte" in result.output
    assert not (tmp_path / "g.parquet").exists()


def test_running_out_of_memory_is_one_line(trace, monkeypatch):
    import balloonreplay.replay as replay_module

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 8.00 GiB for an array")

    monkeypatch.setattr(replay_module, "replay", exhausted)
    result = run("replay", trace, "-q")
    assert result.exit_code == 1
    assert result.output == "error: not enough memory: Unable to allocate 8.00 GiB for an array\n"


def test_formats_lines_up_each_option_help():
    lines = [line for line in run("formats").output.splitlines() if line.startswith("    ")]
    assert len(lines) > 3
    # each help text starts in the same column, whatever the length of key=default
    starts = {len(line) - len(line[4:].split("  ", 1)[1].lstrip()) for line in lines}
    assert len(starts) == 1, lines


def test_sigterm_removes_the_output_being_written(tmp_path):
    """scancel, Snakemake and timeout stop a command with SIGTERM: the partial output,
    a hidden temporary file beside the final name, goes as it does on Ctrl-C."""
    spec = tmp_path / "w.yaml"
    spec.write_text(
        "name: w\nvm_types:\n  app:\n    memory: 64MiB\n    mean_interaccess_ns: 1000\n"
        "    phases:\n      - {kind: zipf, footprint: 32MiB, alpha: 0.9, accesses: 50_000_000}\n"
        "vms:\n  - {type: app, count: 2}\n"
    )
    out = tmp_path / "w.parquet"
    command = [sys.executable, "-c", "from balloonreplay.cli import main; main()"]
    child = subprocess.Popen(
        [*command, "generate", str(spec), "--seed", "1", "-q", "-o", str(out)],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".w.parquet.*")) and time.monotonic() < deadline:
        assert child.poll() is None, child.stderr.read().decode()
        time.sleep(0.05)
    assert list(tmp_path.glob(".w.parquet.*")), "the output was never started"
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 128 + signal.SIGTERM
    assert no_files_but(tmp_path, "w.yaml")


def test_a_trace_error_is_one_line_whatever_its_path_and_values():
    from balloonreplay.errors import TraceError

    message = str(TraceError("odd\nname.csv", "line 2", "expected a number, got '1\r\n'"))
    assert "\n" not in message and "\r" not in message
    assert message == "odd\\nname.csv: line 2: expected a number, got '1\\r\\n'"


@pytest.mark.parametrize(
    "args",
    [
        ["replay", "absent.parquet"],
        ["info", "absent.parquet"],
        ["mrc", "absent.parquet", "-o", "mrc.parquet"],
        ["export", "absent.parquet", "-o", "x.csv"],
        ["ingest", "absent.parquet", "-o", "t.parquet"],
        ["generate", "absent.yaml", "--seed", "1", "-o", "t.parquet"],
        ["generate", "--config", "absent.yaml", "--workload", "w", "-o", "t.parquet"],
        ["summarize", "absent.parquet", "-o", "s.parquet"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_missing_input_written_relative_names_its_absolute_path_too(tmp_path, monkeypatch, args):
    """A relative path is taken from the working directory, which the user may not have
    in mind (a script, a Snakemake rule): the error says where it looked."""
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 1
    assert result.output.startswith("error: ")
    absent = next(a for a in args if a.startswith("absent"))
    assert f"looked for {tmp_path / absent}" in result.output
    # Written absolute, the path is already the one looked for: said once.
    result = run(*[str(tmp_path / a) if a == absent else a for a in args])
    assert result.exit_code == 1
    assert "looked for" not in result.output and str(tmp_path / absent) in result.output
