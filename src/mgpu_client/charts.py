"""Bar charts for `mgpu_client report` (GPU-hours per user, account or partition).

Two renderings of one horizontal bar chart: `text_bars` for a terminal (Unicode block
characters) and `png_bars` for a PNG file. The PNG is encoded here with zlib and struct and the
text drawn with a bitmap font embedded below, without PIL, matplotlib or numpy, so that the
client and its PyInstaller bundle stay small.

Labels are others' text (user, account and partition names): control characters are shown
escaped, never written raw, in both renderings.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib

TYPE_CHECKING = False  # not typing's: the client keeps its imports cheap
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

MAX_PNG_BARS = 2000
MAX_PNG_WIDTH_PX = 1600
PNG_LABEL_MAX_CHARS = 40
PNG_VALUE_MAX_CHARS = 24

_FULL_BLOCK = "█"
_PARTIAL_BLOCKS = "▏▎▍▌▋▊▉"  # 1/8 .. 7/8 of a cell

# The bitmap font: printable ASCII 32..126 in order, one glyph per 8-character word, words 9
# characters apart. A glyph is 5 pixels wide and 8 rows high, one base-32 digit per row (top
# row first; 16 is the leftmost pixel); rows 0-6 stand on the baseline, row 7 holds descenders
# (g j p q y , _). Lowercase letters are drawn as real lowercase, not as capitals.
_FONT = (
    "00000000 44444040 aaa00000 aavavaa0 4fke5u40 op248j30 cik8lid0 44800000 24888420 84222480 "
    "04lel400 044v4400 00000c48 000v0000 00000cc0 01248g00 ehjlphe0 4c4444e0 eh1248v0 v2421he0 "
    "26aiv220 vgu11he0 68guhhe0 v1248880 ehhehhe0 ehhf12c0 0cc0cc00 0cc0c480 248g8420 00v0v000 "
    "84212480 eh124040 eh1dlle0 ehhvhhh0 uhhuhhu0 ehggghe0 sihhhis0 vgguggv0 vgguggg0 ehgnhhf0 "
    "hhhvhhh0 e44444e0 72222ic0 hikokih0 ggggggv0 hrllhhh0 hhpljhh0 ehhhhhe0 uhhuggg0 ehhhlid0 "
    "uhhukih0 fgge11u0 v4444440 hhhhhhe0 hhhhha40 hhhllla0 hha4ahh0 hha44440 v1248gv0 e88888e0 "
    "0g842100 e22222e0 4ah00000 0000000v 84200000 00e1fhf0 ggmphhu0 00egghe0 11djhhf0 00ehvge0 "
    "698s8880 00fhhf1e ggmphhh0 40c444e0 206222ic ggikoki0 c44444e0 00qllhh0 00mphhh0 00ehhhe0 "
    "00uhhugg 00fhhf11 00mpggg0 00fge1u0 88s88960 00hhhjd0 00hhha40 00hhlla0 00ha4ah0 00hhhf1e "
    "00v248v0 24484420 44444440 84424480 008l2000"
)
_GLYPH_COLUMNS = 5
_GLYPH_ROWS = 8
_ADVANCE_COLUMNS = 6  # one blank column between characters

# PNG layout, in image pixels.
_SCALE_PX = 2  # image pixels per font pixel
_CHAR_W_PX = _ADVANCE_COLUMNS * _SCALE_PX
_TEXT_H_PX = _GLYPH_ROWS * _SCALE_PX
_MARGIN_PX = 16
_TITLE_GAP_PX = 12
_ROW_PX = 24  # one bar's band: text height plus spacing
_BAR_H_PX = 7 * _SCALE_PX  # the bars stand as tall as capital letters
_LABEL_GAP_PX = 12
_VALUE_GAP_PX = 8
_BAR_MAX_PX = 600

# Palette indices (PNG color type 3) and their colors.
_BG, _TEXT, _BAR, _AXIS = 0, 1, 2, 3
_PALETTE = bytes((255, 255, 255, 34, 34, 34, 59, 117, 175, 153, 153, 153))


def _escape(text: str) -> str:
    """`text` with each non-printable character written as its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _checked(labels: Sequence[str], values: Sequence[float]) -> list[float]:
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels but {len(values)} values")
    checked = [float(v) for v in values]
    for label, value in zip(labels, checked, strict=True):
        if math.isnan(value) or value < 0 or math.isinf(value):
            raise ValueError(f"value for {_escape(label)!r} is {value}: need a finite value >= 0")
    return checked


def _format_value(value: float, unit: str) -> str:
    return f"{value:.1f} {_escape(unit)}" if unit else f"{value:.1f}"


def text_bars(
    labels: Sequence[str], values: Sequence[float], *, width: int = 40, unit: str = ""
) -> str:
    """A horizontal bar chart for a terminal, one line per label.

    Each line: the label left-aligned to the longest label, two spaces, a bar of '█' with a
    final partial block ('▏'..'▉', eighths of a cell) scaled so that the largest value fills
    `width` cells, padded to `width` cells so that the values line up, two spaces, and the
    value with 1 decimal place and `unit` ('12.5 GPU-h'), right-aligned. A value of 0 gets an
    empty bar; any other value at least '▏', so that it never looks like 0. Negative, NaN or
    infinite values raise ValueError; no labels give ''. Control characters in labels and unit
    are shown escaped ('\\n')."""
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width}")
    checked = _checked(labels, values)
    if not checked:
        return ""
    shown = [_escape(label) for label in labels]
    texts = [_format_value(value, unit) for value in checked]
    label_w = max(map(len, shown))
    value_w = max(map(len, texts))
    largest = max(checked)
    lines = []
    for label, value, text in zip(shown, checked, texts, strict=True):
        eighths = round(value / largest * width * 8) if largest > 0 else 0
        if value > 0:
            eighths = max(1, eighths)
        full, rest = divmod(eighths, 8)
        bar = _FULL_BLOCK * full + (_PARTIAL_BLOCKS[rest - 1] if rest else "")
        lines.append(f"{label:<{label_w}}  {bar:<{width}}  {text:>{value_w}}\n")
    return "".join(lines)


@functools.cache
def _glyph_row(char: str, row: int) -> bytes:
    """One font row of `char` as image pixels (palette indices), blank spacing included."""
    bits = int(_FONT[(ord(char) - 32) * (_GLYPH_ROWS + 1) + row], 32)
    pixels = bytearray()
    for column in range(_ADVANCE_COLUMNS):
        on = column < _GLYPH_COLUMNS and bits >> (_GLYPH_COLUMNS - 1 - column) & 1
        pixels += bytes((_TEXT if on else _BG,)) * _SCALE_PX
    return bytes(pixels)


def _text_rows(text: str) -> list[bytes]:
    """`text` (printable ASCII only) as _GLYPH_ROWS rows of image pixels, one per font row."""
    return [b"".join(_glyph_row(c, row) for c in text) for row in range(_GLYPH_ROWS)]


def _drawable(text: str) -> str:
    """`text` as the font draws it: escaped, and '?' for each character outside 32..126."""
    return "".join(c if " " <= c <= "~" else "?" for c in _escape(text))


def _cut(text: str, max_chars: int) -> str:
    """`text`, or its first `max_chars` - 1 characters and '~' when it is longer."""
    return text if len(text) <= max_chars else text[: max_chars - 1] + "~"


def _text_band(width_px: int, x_px: int, text: str) -> Iterator[bytes]:
    """_TEXT_H_PX rows of `width_px` pixels with `text` at `x_px`."""
    for pixels in _text_rows(text):
        row = bytearray(width_px)
        row[x_px : x_px + len(pixels)] = pixels
        yield from (bytes(row),) * _SCALE_PX


def _bar_band(
    width_px: int, label_text: str, bar_x_px: int, bar_px: int, value_text: str
) -> Iterator[bytes]:
    """_ROW_PX rows of `width_px` pixels: the label, the axis, the bar and its value."""
    label_rows = _text_rows(label_text)
    value_rows = _text_rows(value_text)
    value_x_px = bar_x_px + bar_px + _VALUE_GAP_PX
    for y_px in range(_ROW_PX):
        row = bytearray(width_px)
        if y_px < _TEXT_H_PX:
            label_pixels = label_rows[y_px // _SCALE_PX]
            row[_MARGIN_PX : _MARGIN_PX + len(label_pixels)] = label_pixels
            value_pixels = value_rows[y_px // _SCALE_PX]
            row[value_x_px : value_x_px + len(value_pixels)] = value_pixels
        if y_px < _BAR_H_PX:
            row[bar_x_px : bar_x_px + bar_px] = bytes((_BAR,)) * bar_px
        row[bar_x_px - 2] = _AXIS
        yield bytes(row)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _encode_png(width_px: int, height_px: int, rows: Iterator[bytes]) -> bytes:
    """A PNG file of palette rows (8 bits a pixel), each filtered with filter type 0."""
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(b"\x00" + row) for row in rows]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width_px, height_px, 8, 3, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"PLTE", _PALETTE),
            _chunk(b"IDAT", b"".join(parts)),
            _chunk(b"IEND", b""),
        )
    )


def png_bars(
    title: str, labels: Sequence[str], values: Sequence[float], *, unit: str = ""
) -> bytes:
    """The chart of `text_bars` as the bytes of a PNG file (8-bit palette, color type 3).

    White background, `title` at the top, then one band per label: the label on the left, a
    bar scaled so that the largest value is _BAR_MAX_PX long (any value above 0 gets at least
    1 px), and the value and unit at the bar's end. Text uses the embedded 5x8 font at 2x;
    characters outside ASCII 32..126 are drawn as '?', control characters escaped first.
    Labels longer than 40 characters are cut with '~', the title to fit the image, which is
    at most 1600 px wide and grows in height with the number of bars. More than 2000 labels,
    and the values text_bars refuses, raise ValueError. The same input gives the same bytes."""
    if len(labels) > MAX_PNG_BARS:
        raise ValueError(f"{len(labels)} bars: a PNG chart holds at most {MAX_PNG_BARS}")
    checked = _checked(labels, values)
    label_texts = [_cut(_drawable(label), PNG_LABEL_MAX_CHARS) for label in labels]
    value_texts = [_cut(_drawable(_format_value(v, unit)), PNG_VALUE_MAX_CHARS) for v in checked]
    label_w_px = max(map(len, label_texts), default=0) * _CHAR_W_PX
    value_w_px = max(map(len, value_texts), default=0) * _CHAR_W_PX
    bar_x_px = _MARGIN_PX + label_w_px + _LABEL_GAP_PX
    chart_w_px = bar_x_px + _BAR_MAX_PX + _VALUE_GAP_PX + value_w_px + _MARGIN_PX
    title_text = _drawable(title)
    title_w_px = 2 * _MARGIN_PX + len(title_text) * _CHAR_W_PX
    width_px = min(MAX_PNG_WIDTH_PX, max(chart_w_px, title_w_px))
    title_text = _cut(title_text, (width_px - 2 * _MARGIN_PX) // _CHAR_W_PX)
    band_count = max(1, len(checked))  # no bars: one band says so
    height_px = 2 * _MARGIN_PX + _TEXT_H_PX + _TITLE_GAP_PX + band_count * _ROW_PX
    largest = max(checked, default=0.0)

    def rows() -> Iterator[bytes]:
        blank = bytes(width_px)
        yield from (blank,) * _MARGIN_PX
        yield from _text_band(width_px, _MARGIN_PX, title_text)
        yield from (blank,) * _TITLE_GAP_PX
        if not checked:
            yield from _text_band(width_px, _MARGIN_PX, "(no data)")
            yield from (blank,) * (_ROW_PX - _TEXT_H_PX)
        for label_text, value, value_text in zip(label_texts, checked, value_texts, strict=True):
            bar_px = round(value / largest * _BAR_MAX_PX) if largest > 0 else 0
            if value > 0:
                bar_px = max(1, bar_px)
            yield from _bar_band(width_px, label_text, bar_x_px, bar_px, value_text)
        yield from (blank,) * _MARGIN_PX

    return _encode_png(width_px, height_px, rows())
