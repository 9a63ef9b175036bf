import copy
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from balloonreplay.cli import main
from balloonreplay.config_check import check_config
from balloonreplay.errors import ConfigError, TraceError
from balloonreplay.traces.formats.csv import CsvFormat, CsvOptions
from balloonreplay.traces.schema import TraceMetadata
from balloonreplay.units import page_shift, parse_size_pages

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "text,pages",
    [
        ("512MiB", 131072),
        ("2GiB", 524288),
        ("1000p", 1000),
        (64, 64),
        ("4096", 1),
        ("1.5GiB", 393216),
        ("6k", 1),  # rounded down to whole pages
        # Units ignore case; only a "b" without "i" makes them powers of 1000 (README).
        ("2g", 524288),
        ("2G", 524288),
        ("2gib", 524288),
        ("2gb", 2 * 10**9 // 4096),
        ("2GB", 2 * 10**9 // 4096),
        ("3kB", 0),
    ],
)
def test_sizes(text, pages):
    assert parse_size_pages(text) == pages


@pytest.mark.parametrize("text", ["lots", "12 parsecs", "-5MiB", "1.5p"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size_pages(text)


def test_a_page_size_that_is_no_power_of_two_is_refused_alike_wherever_it_is_given(tmp_path):
    # The check was written three times (a reader's option, `ingest --page-size`, the
    # config's ingest options) and the trace metadata's, with four wordings.
    expected = "expected a power of two (bytes: 4096, 8192, ...), got 3000"
    source = tmp_path / "t.csv"
    source.write_text("vm,t_ns,addr,write\n0,0,0,1\n")
    # Options made by hand (not parsed) reach the reader unchecked.
    with pytest.raises(TraceError) as caught:
        list(CsvFormat().read(source, CsvOptions(page_size_bytes=3000)))
    assert str(caught.value) == f"{source}: option 'page_size_bytes': {expected}"

    out = tmp_path / "t.parquet"
    result = CliRunner().invoke(
        main, ["ingest", str(source), "-o", str(out), "--page-size", "3000"]
    )
    assert result.exit_code == 2
    assert f"Invalid value for '--page-size': {expected}" in result.output

    with pytest.raises(TraceError) as caught:
        TraceMetadata(page_size_bytes=3000).check(source)
    assert f"metadata field 'page_size_bytes': {expected}" in str(caught.value)

    config = copy.deepcopy(yaml.safe_load((REPO / ".test/config/config.yaml").read_text()))
    config["workloads"]["tiny-csv"]["ingest"]["options"] = {"page_size_bytes": 3000}
    schema = REPO / "workflow/schemas/config.schema.yaml"
    with pytest.raises(ConfigError) as caught:
        check_config(config, schema, REPO)
    key = "workloads.tiny-csv.ingest.options.page_size_bytes"
    assert str(caught.value) == f"config: {key}: {expected}"

    assert page_shift(8192) == 13
    with pytest.raises(ValueError) as caught:
        page_shift(3000)
    assert str(caught.value) == expected
