"""The trace commands as a user runs them: clear errors, non-zero exits, no partial output."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TEST_DATA

from balloonreplay.cli import main
from balloonreplay.traces.formats.oracle_general import RECORD
from balloonreplay.traces.io import open_trace, write_trace
from balloonreplay.traces.schema import TraceMetadata, make_batch


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def small_trace(path, n=500):
    rng = np.random.default_rng(0)
    vm = np.tile([0, 1], n // 2)
    t = np.repeat(np.arange(n // 2), 2) * 100
    content = rng.integers(0, 20, n)
    write_trace(
        [make_batch(vm, t, rng.integers(0, 40, n) << 12, rng.random(n) < 0.25, content)],
        path,
        TraceMetadata(config_pages=[32, 32], seed=5, source="test"),
    )


def test_formats_lists_the_canonical_format():
    result = run("formats")
    assert result.exit_code == 0
    assert "parquet" in result.output


def test_ingest_then_info(tmp_path):
    small_trace(tmp_path / "raw.parquet")
    result = run("ingest", tmp_path / "raw.parquet", "-o", tmp_path / "t.parquet", "-q")
    assert result.exit_code == 0, result.output
    trace = open_trace(tmp_path / "t.parquet")
    assert trace.metadata.dense and trace.num_rows == 500
    result = run("info", tmp_path / "t.parquet", "--json", "-q")
    info = json.loads(result.output)
    assert info["accesses"] == 500
    assert [v["accesses"] for v in info["vms"]] == [250, 250]
    assert all(v["distinct_pages"] <= 40 for v in info["vms"])
    assert 0.15 < info["write_fraction"] < 0.35
    assert info["duration_ns"] == 249 * 100


def test_ingest_records_vm_memory_given_on_the_command_line(tmp_path):
    small_trace(tmp_path / "raw.parquet")
    result = run(
        "ingest",
        tmp_path / "raw.parquet",
        "-o",
        tmp_path / "t.parquet",
        "--vm-mem",
        "1MiB,64p",
        "-q",
    )
    assert result.exit_code == 0, result.output
    assert open_trace(tmp_path / "t.parquet").metadata.config_pages == [256, 64]


def test_ingest_with_lru_filter_reports_reduction(tmp_path):
    small_trace(tmp_path / "raw.parquet")
    result = run(
        "ingest", tmp_path / "raw.parquet", "-o", tmp_path / "t.parquet", "--lru-filter", "8"
    )
    assert result.exit_code == 0
    assert "kept by the LRU filter" in result.output
    assert open_trace(tmp_path / "t.parquet").metadata.lru_filter_pages == 8


def test_unknown_format_is_a_clear_error(tmp_path):
    small_trace(tmp_path / "raw.parquet")
    result = run("ingest", tmp_path / "raw.parquet", "-o", tmp_path / "t.parquet", "-f", "nope")
    assert result.exit_code == 1
    assert "unknown trace format 'nope'" in result.output
    assert not (tmp_path / "t.parquet").exists()


def test_missing_file_and_bad_option(tmp_path):
    result = run("ingest", tmp_path / "absent.csv", "-o", tmp_path / "t.parquet")
    assert result.exit_code == 1 and "file not found" in result.output
    small_trace(tmp_path / "raw.parquet")
    result = run(
        "ingest",
        tmp_path / "raw.parquet",
        "-o",
        tmp_path / "t.parquet",
        "-f",
        "parquet",
        "--opt",
        "colour=blue",
    )
    assert result.exit_code == 1 and "unknown option 'colour'" in result.output


def test_bad_vm_memory_size(tmp_path):
    small_trace(tmp_path / "raw.parquet")
    result = run(
        "ingest", tmp_path / "raw.parquet", "-o", tmp_path / "t.parquet", "--vm-mem", "lots"
    )
    assert result.exit_code == 1 and "512MiB" in result.output


def test_ingest_and_generate_refuse_an_output_named_for_another_format(tmp_path):
    small_trace(tmp_path / "raw.parquet")
    result = run("ingest", tmp_path / "raw.parquet", "-o", tmp_path / "t.csv", "-q")
    assert result.exit_code == 2
    assert "canonical trace, which is Parquet" in result.output
    assert "balloonreplay export" in result.output
    assert not (tmp_path / "t.csv").exists()
    spec = tmp_path / "w.yaml"
    spec.write_text("name: w\naccesses: 10\nvms:\n  - pages: 4\n")
    result = run("generate", spec, "--seed", "1", "-o", tmp_path / "g.oracleGeneral.bin", "-q")
    assert result.exit_code == 2 and "name it *.parquet" in result.output


def test_export_to_csv_and_oracle_general_round_trips(tmp_path):
    small_trace(tmp_path / "raw.parquet")
    trace = tmp_path / "t.parquet"
    assert run("ingest", tmp_path / "raw.parquet", "-o", trace, "-q").exit_code == 0
    rows = open_trace(trace).read_table()

    result = run("export", trace, "-o", tmp_path / "t.csv")
    assert result.exit_code == 0, result.output
    assert "500 accesses as csv" in result.output
    back = tmp_path / "back.parquet"
    assert run("ingest", tmp_path / "t.csv", "-f", "csv", "-o", back, "-q").exit_code == 0
    again = open_trace(back).read_table()
    for column in ("vm", "t_ns", "page", "write", "content"):
        assert again[column].equals(rows[column]), column

    oracle = tmp_path / "t.oracleGeneral.bin"
    assert run("export", trace, "-o", oracle, "-q").exit_code == 0
    records = np.fromfile(oracle, dtype=RECORD)
    assert len(records) == 500
    assert set(records["obj_size"]) == {4096}  # the trace's page size
    result = run(
        "ingest", oracle, "-f", "oracle-general", "--opt", "split_vms=true", "-o", back, "-q"
    )
    assert result.exit_code == 0, result.output
    again = open_trace(back).read_table()
    for column in ("vm", "page"):
        assert again[column].equals(rows[column]), column
    assert again["write"].to_pylist() == [False] * 500  # the format has no writes


def test_export_refuses_what_it_cannot_write(tmp_path):
    small_trace(tmp_path / "raw.parquet")
    trace = tmp_path / "raw.parquet"
    result = run("export", trace, "-o", tmp_path / "t.txt")
    assert result.exit_code == 2 and "give -f" in result.output
    result = run("export", trace, "-o", tmp_path / "t.txt", "-f", "lackey")
    assert result.exit_code == 1 and "format 'lackey' has no writer" in result.output
    result = run("export", trace, "-o", tmp_path / "t.parquet", "-f", "parquet")
    assert result.exit_code == 2 and "already a canonical" in result.output
    result = run("export", trace, "-o", trace, "-f", "csv")
    assert result.exit_code != 0  # its own input
    assert not (tmp_path / "t.txt").exists()


def test_export_gives_oracle_general_the_traces_page_size(tmp_path):
    small_trace(tmp_path / "raw.parquet")
    trace = tmp_path / "t.parquet"
    args = ("ingest", tmp_path / "raw.parquet", "-o", trace, "--page-size", "8192", "-q")
    assert run(*args).exit_code == 0
    oracle = tmp_path / "t.oracleGeneral"
    assert run("export", trace, "-o", oracle, "-q").exit_code == 0
    assert set(np.fromfile(oracle, dtype=RECORD)["obj_size"]) == {8192}
    assert run("export", trace, "-o", oracle, "--opt", "page_size_bytes=512", "-q").exit_code == 0
    assert set(np.fromfile(oracle, dtype=RECORD)["obj_size"]) == {512}


def test_a_dotted_name_is_a_canonical_name_and_export_refuses_a_name_for_another_format(
    tmp_path,
):
    small_trace(tmp_path / "raw.parquet")
    dotted = tmp_path / "zipf_alpha0.9"
    assert run("ingest", tmp_path / "raw.parquet", "-o", dotted, "-q").exit_code == 0
    assert open_trace(dotted).num_rows == 500
    # A Parquet name that mentions another format is still a Parquet name (review).
    named = tmp_path / "w89.oracleGeneral.parquet"
    assert run("ingest", tmp_path / "raw.parquet", "-o", named, "-q").exit_code == 0
    assert open_trace(named).num_rows == 500
    result = run("export", dotted, "-o", tmp_path / "x.csv", "-f", "oracle-general")
    assert result.exit_code == 2 and "names a csv file, but -f says oracle-general" in result.output


def test_export_to_oracle_general_leaves_frees_out(tmp_path):
    # Found by a review: a free row became a request, so libCacheSim (or a re-ingest)
    # counted it as an access.
    path = tmp_path / "frees.parquet"
    free = np.array([False, False, True, False, True, False])
    batch = make_batch([0, 0, 0, 1, 1, 1], np.arange(6), [0, 1, 0, 0, 1, 1], free, free=free)
    write_trace([batch], path, TraceMetadata(config_pages=[4, 4], source="test"))
    oracle = tmp_path / "f.oracleGeneral.bin"
    assert run("export", path, "-o", oracle, "-q").exit_code == 0
    records = np.fromfile(oracle, dtype=RECORD)
    assert len(records) == 4
    assert list(records["obj_id"] & np.uint64((1 << 48) - 1)) == [0, 1, 0, 1]
    assert list(records["next_access_vtime"]) == [-1, -1, -1, -1]  # each page once per VM


def test_info_counts_no_free_as_an_access_nor_its_content(tmp_path):
    # Found by an audit: info counted free rows as accesses (and their writes and
    # contents), so a heap trace showed 24,000 accesses for 22,800.
    from balloonreplay.traces.info import trace_info

    path = tmp_path / "frees.parquet"
    free = np.array([False, False, False, True, False])
    write = np.array([True, False, True, True, False])
    content = [0, 7, 7, 0, None]  # page 0 is a zero page until freed; 1 and 2 share 7
    batch = make_batch([0] * 5, np.arange(5), [0, 1, 2, 0, 3], write, content, free=free)
    write_trace([batch], path, TraceMetadata(config_pages=[8], source="test"))
    info = trace_info(path)
    assert info.accesses == 4 and info.vms[0].accesses == 4 and info.frees == 1
    assert info.write_fraction == 2 / 4  # the free's write flag is not a write
    assert info.vms[0].distinct_pages == 4
    assert info.zero_page_fraction == 0  # page 0 was freed: no content any more
    assert info.shareable_page_fraction == 2 / 4


@pytest.mark.parametrize(
    "vm_mem, answer",
    [
        ("1MiB,64p", [256, 64]),
        ("1MiB,", [256, 256]),  # empty parts are skipped, as in every size list
        (" 1MiB , 64p ,", [256, 64]),
        ("lots", "expected a memory size like 512MiB, 2GiB or 1000p (pages), got 'lots'"),
        (",", "expected one size or more (512MiB, 2GiB or 1000p), got ','"),
        ("0p", "expected at least 1 page of 4096 bytes per VM, got '0p'"),
        ("1MiB,100", "expected at least 1 page of 4096 bytes per VM, got '100' in '1MiB,100'"),
    ],
)
def test_ingest_vm_mem_has_one_answer_on_the_command_line_and_through_the_api(
    tmp_path, vm_mem, answer
):
    # The command line checked --vm-mem itself before ingest() checked it again: a trailing
    # comma was refused by one and skipped by the other, and their messages differed.
    from balloonreplay.errors import ConfigError
    from balloonreplay.traces.ingest import ingest

    small_trace(tmp_path / "raw.parquet")
    cli_out, api_out = tmp_path / "cli.parquet", tmp_path / "api.parquet"
    result = run("ingest", tmp_path / "raw.parquet", "-o", cli_out, "--vm-mem", vm_mem, "-q")
    if isinstance(answer, list):
        assert result.exit_code == 0, result.output
        ingest(tmp_path / "raw.parquet", api_out, vm_mem=vm_mem)
        assert open_trace(cli_out).metadata.config_pages == answer
        assert open_trace(api_out).metadata.config_pages == answer
        return
    with pytest.raises(ConfigError) as caught:
        ingest(tmp_path / "raw.parquet", api_out, vm_mem=vm_mem)
    assert str(caught.value) == f"config: vm_mem: {answer}"
    assert result.exit_code == 1
    # On the command line the value is named as the option it was given as.
    assert result.output == f"error: --vm-mem: {answer}\n"
    assert not cli_out.exists() and not api_out.exists()


def test_ingest_vm_mem_given_empty_is_no_vm_mem(tmp_path):
    """`--vm-mem ""` (a script's unset variable) records the source's memory, as before
    ingest() became the one check of --vm-mem."""
    small_trace(tmp_path / "raw.parquet")
    plain, empty = tmp_path / "plain.parquet", tmp_path / "empty.parquet"
    assert run("ingest", tmp_path / "raw.parquet", "-o", plain, "-q").exit_code == 0
    result = run("ingest", tmp_path / "raw.parquet", "-o", empty, "--vm-mem", "", "-q")
    assert result.exit_code == 0, result.output
    assert open_trace(empty).metadata.config_pages == open_trace(plain).metadata.config_pages


def test_page_size_is_the_one_the_reader_cuts_addresses_at(tmp_path):
    # Found by an audit: --page-size 8192 relabelled the footer while lackey still cut its
    # addresses into 4 KiB pages, so a replay's 64KiB was 8 pages over 16 distinct ones.
    source = TEST_DATA / "touch_pages.lackey"
    by_option, by_flag = tmp_path / "opt.parquet", tmp_path / "flag.parquet"
    assert (
        run("ingest", source, "-o", by_option, "--opt", "page_size_bytes=8192", "-q").exit_code == 0
    )
    assert run("ingest", source, "-o", by_flag, "--page-size", "8192", "-q").exit_code == 0
    option_meta, flag_meta = open_trace(by_option).metadata, open_trace(by_flag).metadata
    assert flag_meta.page_size_bytes == option_meta.page_size_bytes == 8192
    assert flag_meta.pages_per_vm == option_meta.pages_per_vm == [9]  # 16 of 4 KiB
    assert flag_meta.parameters["reader_options"]["page_size_bytes"] == 8192
    conflict = tmp_path / "conflict.parquet"
    args = ("--opt", "page_size_bytes=8192", "--page-size", "4096", "-q")
    result = run("ingest", source, "-o", conflict, *args)
    assert result.exit_code == 1
    assert "--page-size: 4096 contradicts the reader option page_size_bytes=8192" in result.output
    assert not conflict.exists()
    # Agreeing is no conflict; a source of page ids (Parquet) is only labelled.
    assert (
        run("ingest", source, "-o", conflict, *args[:2], "--page-size", "8192", "-q").exit_code == 0
    )
    small_trace(tmp_path / "raw.parquet")
    plain, labelled = tmp_path / "plain.parquet", tmp_path / "labelled.parquet"
    assert run("ingest", tmp_path / "raw.parquet", "-o", plain, "-q").exit_code == 0
    args = ("ingest", tmp_path / "raw.parquet", "-o", labelled, "--page-size", "8192", "-q")
    assert run(*args).exit_code == 0
    assert open_trace(labelled).metadata.page_size_bytes == 8192
    assert open_trace(labelled).metadata.pages_per_vm == open_trace(plain).metadata.pages_per_vm


@pytest.mark.parametrize("format_name", [None, "csv", "oracle-general", "parquet", "lackey"])
def test_a_directory_is_refused_as_the_source_of_a_file_format(tmp_path, format_name):
    # Found by an audit: oracle-general took the directory's size for a file's ("byte
    # offset 4080 ... truncated"), csv blamed its plug-in for an IsADirectoryError, and
    # sniffing warned that the parquet plug-in failed.
    source = tmp_path / "somedir"
    source.mkdir()
    out = tmp_path / "t.parquet"
    args = ["ingest", source, "-o", out, "-q"] + (["-f", format_name] if format_name else [])
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1
    expected = (
        f"expected a file, got a directory (format {format_name!r} reads one file; formats "
        "that read a directory: drmemtrace)"
        if format_name
        else "expected a trace file, or a directory in a format that reads one (drmemtrace)"
    )
    assert result.stderr.startswith(f"error: {source}: {expected}"), result.stderr
    assert len(result.stderr.splitlines()) == 1  # no warning about a plug-in's sniff
    assert not out.exists()


def test_accesses_and_frees_are_reported_apart(tmp_path):
    # Found by an audit: ingest, generate and export counted free rows as accesses (an
    # oracleGeneral file of 75,384 records was reported as 75,768 accesses).
    raw = tmp_path / "frees.parquet"
    free = np.array([False, False, True, False, True, False])
    batch = make_batch([0, 0, 0, 1, 1, 1], np.arange(6), [0, 1, 0, 0, 1, 1], free, free=free)
    write_trace([batch], raw, TraceMetadata(config_pages=[4, 4], source="test"))
    trace = tmp_path / "t.parquet"
    result = run("ingest", raw, "-o", trace)
    assert result.stderr == f"{trace}: 4 accesses and 2 frees, 2 VMs, 4 distinct pages\n"
    oracle, csv = tmp_path / "t.oracleGeneral.bin", tmp_path / "t.csv"
    result = run("export", trace, "-o", oracle)
    assert result.stderr == f"{oracle}: 4 accesses as oracle-general (2 frees left out)\n"
    result = run("export", trace, "-o", csv)
    assert result.stderr == f"{csv}: 4 accesses and 2 frees as csv\n"


def test_a_trace_of_frees_alone_is_refused_as_having_no_access(tmp_path):
    # Found by an audit: it was ingested as "2 accesses", as an empty trace is not.
    source = tmp_path / "frees.csv"
    source.write_text("t_ns,page,write,free\n1,1,0,1\n2,2,0,true\n")
    out = tmp_path / "t.parquet"
    result = run("ingest", source, "-o", out)
    assert result.exit_code == 1
    assert result.output == (
        f"error: {source}: expected at least one access; the trace holds only 2 free "
        "events (free = true), which are no accesses\n"
    )
    assert not out.exists()


def test_info_counts_the_vms_ingest_and_replay_count(tmp_path):
    # Found by an audit: a trace of VM 5 alone is 6 VMs to ingest and a replay (VMs 0-4
    # with no rows), but info said "VMs 1".
    source = tmp_path / "vm5.csv"
    source.write_text("vm,t_ns,page,write\n5,1,1,0\n5,2,2,1\n")
    trace = tmp_path / "t.parquet"
    assert run("ingest", source, "-o", trace, "-q").exit_code == 0
    assert len(open_trace(trace).metadata.pages_per_vm) == 6
    result = run("info", trace, "-q")
    assert "VMs              6 (1 with rows)\n" in result.output
    assert json.loads(run("info", trace, "--json", "-q").output)["num_vms"] == 6


@pytest.mark.parametrize(
    ("suffix", "option", "writers"),
    [
        (".oracleGeneral.bin", "split_vms=true", "page_size_bytes, batch_rows"),
        (".oracleGeneral.bin", "vm=3", "page_size_bytes, batch_rows"),
        (".csv", "page_size_bytes=8192", "none"),
    ],
)
def test_export_refuses_an_option_its_writer_does_not_take(tmp_path, suffix, option, writers):
    # Found by an audit: reader options given to export were silently ignored.
    small_trace(tmp_path / "raw.parquet")
    trace = tmp_path / "t.parquet"
    assert run("ingest", tmp_path / "raw.parquet", "-o", trace, "-q").exit_code == 0
    out = tmp_path / f"t{suffix}"
    result = run("export", trace, "-o", out, "--opt", option, "-q")
    assert result.exit_code == 1
    key = option.split("=")[0]
    assert f"option {key!r} is not one its writer takes (the writer's: {writers})" in result.output
    assert not out.exists()
