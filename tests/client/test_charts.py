"""The charts of `mgpu_client report` (mgpu_client.charts): the terminal bar chart scales and
aligns its bars, and the PNG chart is a valid PNG file (parsed here, chunk by chunk, without
any imaging library) whose bars are drawn in proportion to the values."""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import pytest

from mgpu_client.charts import png_bars, text_bars

pytestmark = pytest.mark.timeout(30)

BLOCKS = "█▏▎▍▌▋▊▉"
PARTIALS = "▏▎▍▌▋▊▉"
WHITE = (255, 255, 255)


# --- text_bars ---------------------------------------------------------------------------


def bar_of(line: str) -> str:
    """The block characters of one chart line."""
    return "".join(c for c in line if c in BLOCKS)


def cells(bar: str) -> float:
    """How many cells a bar fills: full blocks, plus eighths for a final partial block."""
    full = bar.count("█")
    partial = [c for c in bar if c in PARTIALS]
    assert len(partial) <= 1 and (not partial or bar.endswith(partial[0])), bar
    return full + (PARTIALS.index(partial[0]) + 1) / 8 if partial else full


def test_largest_value_fills_width() -> None:
    lines = text_bars(["a", "b"], [3.0, 12.0], width=25).splitlines()
    assert bar_of(lines[1]) == "█" * 25
    lines = text_bars(["only"], [0.4]).splitlines()
    assert bar_of(lines[0]) == "█" * 40


@pytest.mark.parametrize(("width", "fraction"), [(40, 0.5), (10, 1 / 3), (7, 0.9), (33, 0.05)])
def test_bars_are_proportional(width: int, fraction: float) -> None:
    lines = text_bars(["big", "small"], [200.0, 200.0 * fraction], width=width).splitlines()
    assert cells(bar_of(lines[0])) == width
    assert abs(cells(bar_of(lines[1])) - width * fraction) <= 1 / 16


def test_half_value_gets_half_the_cells() -> None:
    lines = text_bars(["x", "y"], [80.0, 40.0], width=40).splitlines()
    assert bar_of(lines[1]) == "█" * 20


def test_labels_and_values_are_aligned() -> None:
    labels = ["alice", "bob", "christopher", "d"]
    out = text_bars(labels, [5.0, 10.0, 0.0, 2.5], width=20, unit="GPU-h")
    lines = out.splitlines(keepends=True)
    assert len(lines) == 4 and all(line.endswith("\n") for line in lines)
    bar_column = len("christopher") + 2
    for label, line in zip(labels, lines, strict=True):
        assert line.startswith(label.ljust(len("christopher")) + "  ")
        bar = line[bar_column:]
        assert bar[:1] in (*BLOCKS, " ")
    # the values end in the same column
    assert len({len(line) for line in lines}) == 1
    assert lines[1].endswith("  10.0 GPU-h\n")
    assert lines[3].endswith("   2.5 GPU-h\n")


def test_unit_shown_or_absent() -> None:
    assert text_bars(["u"], [12.5], unit="GPU-h").endswith("12.5 GPU-h\n")
    plain = text_bars(["u"], [12.5])
    assert plain.endswith("  12.5\n")
    assert text_bars(["u"], [12.25], unit="h").endswith(" 12.2 h\n")  # 1 decimal place


def test_zero_gets_empty_bar() -> None:
    lines = text_bars(["busy", "idle"], [7.0, 0.0]).splitlines()
    assert bar_of(lines[1]) == ""
    assert lines[1].endswith("0.0")
    all_zero = text_bars(["a", "b"], [0.0, 0.0])
    assert bar_of(all_zero) == "" and all_zero.count("\n") == 2


def test_tiny_value_is_not_shown_as_zero() -> None:
    lines = text_bars(["big", "tiny"], [1e9, 1.0]).splitlines()
    assert bar_of(lines[1]) == "▏"


@pytest.mark.parametrize("bad", [-1.0, -1e-9, math.nan, math.inf])
def test_bad_values_raise(bad: float) -> None:
    with pytest.raises(ValueError):
        text_bars(["ok", "bad"], [1.0, bad])
    with pytest.raises(ValueError):
        png_bars("t", ["ok", "bad"], [1.0, bad])


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError):
        text_bars(["a", "b"], [1.0])
    with pytest.raises(ValueError):
        png_bars("t", ["a"], [1.0, 2.0])


def test_empty_input() -> None:
    assert text_bars([], []) == ""
    assert text_bars([], [], unit="GPU-h", width=5) == ""


def test_control_characters_in_labels_are_escaped() -> None:
    out = text_bars(["\x1b[31mred", "two\nlines", "tab\there", "zw\u200bsp"], [1.0, 2.0, 3.0, 4.0])
    assert "\x1b" not in out and "\t" not in out and "\u200b" not in out
    assert out.count("\n") == 4
    lines = out.splitlines()
    assert lines[0].startswith("\\x1b[31mred ")
    assert lines[1].startswith("two\\nlines ")
    assert lines[2].startswith("tab\\there ")
    assert lines[3].startswith("zw\\u200bsp ")
    # aligned on the escaped text
    bar_columns = {min(line.index(c) for c in BLOCKS if c in line) for line in lines}
    assert bar_columns == {len("\\x1b[31mred  ")}  # the longest escaped label
    unit_out = text_bars(["a"], [1.0], unit="h\x07")
    assert "\x07" not in unit_out and unit_out.endswith("1.0 h\\x07\n")


# --- png_bars ----------------------------------------------------------------------------


@dataclass
class Image:
    width: int
    height: int
    rows: list[list[tuple[int, int, int]]]

    def foreground(self, y: int) -> list[int]:
        """The x of each pixel of row `y` that is not the white background."""
        return [x for x, pixel in enumerate(self.rows[y]) if pixel != WHITE]

    def longest_run(self, y: int) -> int:
        """The longest horizontal run of non-background pixels of one color in row `y`."""
        best, run, previous = 0, 0, WHITE
        for pixel in self.rows[y]:
            run = run + 1 if pixel == previous and pixel != WHITE else int(pixel != WHITE)
            previous = pixel
            best = max(best, run)
        return best


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    found = []
    offset = 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert len(body) == length, kind
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        found.append((kind, body))
        offset += 12 + length
    assert offset == len(data)
    return found


def decode(data: bytes) -> Image:
    """Parse a PNG file of 8-bit RGB or palette pixels, filter type 0, not interlaced."""
    found = chunks(data)
    kinds = [kind for kind, _ in found]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height, depth, color_type, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", found[0][1]
    )
    assert 0 < width <= 1600 and height > 0
    assert depth == 8 and color_type in (2, 3)
    assert (compression, filtering, interlace) == (0, 0, 0)
    bytes_per_pixel = 3 if color_type == 2 else 1
    palette: list[tuple[int, int, int]] = []
    if color_type == 3:
        (plte,) = [body for kind, body in found if kind == b"PLTE"]
        assert len(plte) % 3 == 0 and 0 < len(plte) <= 3 * 256
        palette = [(plte[i], plte[i + 1], plte[i + 2]) for i in range(0, len(plte), 3)]
    raw = zlib.decompress(b"".join(body for kind, body in found if kind == b"IDAT"))
    stride = 1 + width * bytes_per_pixel
    assert len(raw) == height * stride
    rows = []
    for y in range(height):
        line = raw[y * stride : (y + 1) * stride]
        assert line[0] == 0, f"row {y} has filter type {line[0]}"
        pixels = line[1:]
        if color_type == 2:
            rows.append([(pixels[i], pixels[i + 1], pixels[i + 2]) for i in range(0, width * 3, 3)])
        else:
            rows.append([palette[index] for index in pixels])
    return Image(width, height, rows)


def bar_bands(image: Image) -> list[range]:
    """The row ranges holding bars: runs of one color longer than any glyph stroke."""
    bar_rows = [y for y in range(image.height) if image.longest_run(y) > 30]
    bands: list[range] = []
    for y in bar_rows:
        if bands and bands[-1].stop == y:
            bands[-1] = range(bands[-1].start, y + 1)
        else:
            bands.append(range(y, y + 1))
    return bands


def foreground_set(image: Image) -> set[tuple[int, int]]:
    return {(x, y) for y in range(image.height) for x in image.foreground(y)}


def test_png_structure_and_background() -> None:
    data = png_bars("GPU-hours per user", ["alice", "bob", "carol", "dave", "eve"], [5, 4, 3, 2, 1])
    image = decode(data)
    assert image.rows[0][0] == WHITE and image.rows[-1][-1] == WHITE
    assert image.width <= 1600
    assert len(bar_bands(image)) == 5


def test_png_bars_are_proportional() -> None:
    image = decode(png_bars("usage", ["a", "b", "c"], [100.0, 50.0, 25.0], unit="GPU-h"))
    bands = bar_bands(image)
    assert len(bands) == 3
    lengths = [max(image.longest_run(y) for y in band) for band in bands]
    assert lengths[0] > lengths[1] > lengths[2] > 30
    assert abs(lengths[0] - 2 * lengths[1]) <= 2
    assert abs(lengths[0] - 4 * lengths[2]) <= 4
    counts = [sum(len(image.foreground(y)) for y in band) for band in bands]
    assert counts[0] > counts[1] > counts[2]


def test_png_zero_value_draws_no_bar() -> None:
    image = decode(png_bars("usage", ["a", "b", "c"], [9.0, 0.0, 3.0]))
    assert len(bar_bands(image)) == 2
    all_zero = decode(png_bars("usage", ["a", "b"], [0.0, 0.0]))
    assert bar_bands(all_zero) == []


def test_png_title_is_drawn_at_the_top() -> None:
    labels, values = ["alice", "bob"], [3.0, 1.0]
    with_title = decode(png_bars("GPU-hours", labels, values))
    without = decode(png_bars("", labels, values))
    assert with_title.width == without.width
    top = bar_bands(with_title)[0].start
    assert bar_bands(without)[0].start == top
    title_pixels = [(x, y) for y in range(top) for x in with_title.foreground(y)]
    assert len(title_pixels) > 50
    assert all(not without.foreground(y) for y in range(top))
    # the text starts at the left and spans about 9 characters
    xs = [x for x, _ in title_pixels]
    assert min(xs) < 40 and max(xs) - min(xs) > 9 * 8


def test_png_labels_and_values_are_drawn() -> None:
    image = decode(png_bars("t", ["some-user"], [4.0], unit="GPU-h"))
    (band,) = bar_bands(image)
    row = image.rows[band.start]
    bar_color = max(set(row) - {WHITE}, key=row.count)
    bar_start = row.index(bar_color)
    bar_end = bar_start + image.longest_run(band.start)
    assert set(row[bar_start:bar_end]) == {bar_color}
    text_rows = range(band.start, band.stop + 4)
    left = [x for y in text_rows for x in image.foreground(y) if x < bar_start - 4]
    right = [x for y in text_rows for x in image.foreground(y) if x > bar_end]
    assert len(left) > 40  # label text
    assert len(right) > 40  # "4.0 GPU-h"


def test_png_glyphs_are_distinct() -> None:
    """Every printable ASCII character draws something, and no two draw the same thing."""
    blank = foreground_set(decode(png_bars(" ", [], [])))
    seen: dict[frozenset[tuple[int, int]], str] = {}
    for code in range(33, 127):
        char = chr(code)
        drawn = frozenset(foreground_set(decode(png_bars(char, [], []))) - blank)
        assert drawn, f"{char!r} draws nothing"
        assert drawn not in seen, f"{char!r} looks like {seen.get(drawn)!r}"
        seen[drawn] = char


def test_png_deterministic() -> None:
    args = ("GPU-hours per account", ["ml", "physics", "bio"], [10.5, 3.25, 7.0])
    first = png_bars(*args, unit="GPU-h")
    assert png_bars(*args, unit="GPU-h") == first
    assert png_bars(args[0], list(args[1]), tuple(args[2]), unit="GPU-h") == first
    assert png_bars(*args, unit="h") != first


def test_png_too_many_labels() -> None:
    with pytest.raises(ValueError):
        png_bars("t", [f"u{i}" for i in range(2001)], [1.0] * 2001)


def test_png_height_grows_with_bars() -> None:
    five = decode(png_bars("t", [f"u{i}" for i in range(5)], [1.0] * 5))
    ten = decode(png_bars("t", [f"u{i}" for i in range(10)], [1.0] * 10))
    assert ten.height > five.height and ten.width == five.width


def test_png_non_ascii_and_control_labels() -> None:
    image = decode(png_bars("Zürich 日本", ["日本語", "ü", "emoji 🚀"], [1.0, 2.0, 3.0]))
    assert len(bar_bands(image)) == 3
    # characters outside ASCII are drawn as '?'
    assert png_bars("t", ["ü"], [1.0]) == png_bars("t", ["?"], [1.0])
    assert png_bars("Zürich", ["a"], [1.0]) == png_bars("Z?rich", ["a"], [1.0])
    # control characters are drawn escaped
    assert png_bars("t", ["a\nb\x1b"], [1.0]) == png_bars("t", ["a\\nb\\x1b"], [1.0])


def test_png_long_labels_are_cut() -> None:
    long_label = "x" * 39 + "yz" + "w" * 100
    assert png_bars("t", [long_label], [1.0]) == png_bars("t", ["x" * 39 + "~"], [1.0])
    assert png_bars("t", ["x" * 40], [1.0]) != png_bars("t", ["x" * 39 + "~"], [1.0])


def test_png_width_is_bounded() -> None:
    data = png_bars("T" * 500, ["L" * 200] * 3, [1e30, 1.0, 0.0], unit="GPU-hours" * 10)
    image = decode(data)
    assert image.width == 1600
    assert len(bar_bands(image)) == 1  # 1.0 next to 1e30 is 1 px long


def test_png_empty_input_is_a_valid_image() -> None:
    image = decode(png_bars("nothing yet", [], []))
    assert bar_bands(image) == []
    assert foreground_set(image)
