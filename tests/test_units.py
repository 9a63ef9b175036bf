import pytest

from balloonreplay.units import parse_size_pages


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
