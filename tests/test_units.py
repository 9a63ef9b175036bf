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
    ],
)
def test_sizes(text, pages):
    assert parse_size_pages(text) == pages


@pytest.mark.parametrize("text", ["lots", "12 parsecs", "-5MiB", "1.5p"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size_pages(text)
