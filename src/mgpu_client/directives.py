"""A batch script's directives: the ``#SBATCH`` (and ``#MGPU``) lines at its top, read as Slurm
reads them, and the script itself."""

from __future__ import annotations

import sys

from mgpu_core.errors import UsageError
from mgpu_core.limits import MAX_ARG_LEN
from mgpu_core.text import printable

DIRECTIVE_PREFIXES = ("#SBATCH", "#MGPU")
# No option value is longer than an argument may be; and a script's options are a few dozen
# words, not thousands.
MAX_DIRECTIVE_LEN = MAX_ARG_LEN
MAX_DIRECTIVE_WORDS = 1024

# One piece of a directive line, in shlex.split(text, comments=True)'s POSIX rules: blanks end
# a word; "#" ends the line; '...' is literal; "..." is literal but for \" and \\; \c is c.
# shlex itself is quadratic in a word's length (it grows the word one += at a time: 23 s for
# a 1 MiB line); a regex scan is linear (tests/client/test_sbatch_directives.py compares them).
_PIECE = r"""(?P<blank>[ \t\r\n]+)
    |(?P<comment>\#.*)
    |'(?P<single>[^']*)'
    |"(?P<double>(?:[^"\\]|\\.)*)"
    |\\(?P<escaped>.)
    |(?P<plain>[^ \t\r\n'"\\\#]+)
    |(?P<unmatched>.)"""
_IN_DOUBLE_QUOTES = r'\\([\\"])'
# A line without quotes, backslashes or comments is split on blanks, as shlex would split it,
# without importing re (with enum and functools, ~3 ms of sbatch's start-up).
_SPECIAL = frozenset("'\"\\#")


def split_words(text: str) -> list[str]:
    """``shlex.split(text, comments=True)`` for one line, in linear time; ValueError as
    shlex raises it for an open quote or a trailing backslash."""
    if _SPECIAL.isdisjoint(text):
        # shlex's blanks only (str.split() would also split on \f, \v and Unicode spaces).
        plain = text.replace("\t", " ").replace("\r", " ").replace("\n", " ")
        return [word for word in plain.split(" ") if word]
    import re

    words: list[str] = []
    word: list[str] | None = None  # None between words ('' is a word: "")
    for piece in re.finditer(_PIECE, text, re.VERBOSE | re.DOTALL):
        kind = piece.lastgroup
        if kind == "blank" or kind == "comment":
            if word is not None:
                words.append("".join(word))
                word = None
            if kind == "comment":
                break
            continue
        if kind == "unmatched":
            quote = piece.group() in "'\""
            raise ValueError("No closing quotation" if quote else "No escaped character")
        if word is None:
            word = []
        if kind == "double":
            word.append(re.sub(_IN_DOUBLE_QUOTES, r"\1", piece.group(kind)))
        else:
            word.append(piece.group(kind or ""))
    if word is not None:
        words.append("".join(word))
    return words


def parse_directives(script: str) -> list[str]:
    """Option tokens from the directive lines before the first command, in order.

    As in Slurm, parsing stops at the first line that is neither blank nor a comment; the
    ``#!`` line is skipped; anything after a ``#`` inside a directive is a comment. Linear in
    the script's length: a line longer than :data:`MAX_DIRECTIVE_LEN` or more than
    :data:`MAX_DIRECTIVE_WORDS` words in all are refused.
    """
    tokens: list[str] = []
    for number, line in enumerate(script.splitlines(), 1):
        text = line.strip()
        if number == 1 and text.startswith("#!"):
            continue
        if not text:
            continue
        if not text.startswith("#"):
            break
        for prefix in DIRECTIVE_PREFIXES:
            if text.startswith(prefix) and (
                len(text) == len(prefix) or text[len(prefix)].isspace()
            ):
                tokens.extend(_directive_words(number, text, len(prefix)))
        if len(tokens) > MAX_DIRECTIVE_WORDS:
            raise UsageError(
                f"script line {number}: more than {MAX_DIRECTIVE_WORDS} words of directives"
            )
    return tokens


def _directive_words(number: int, text: str, start: int) -> list[str]:
    if len(text) > MAX_DIRECTIVE_LEN:
        raise UsageError(
            f"script line {number}: a directive of {len(text)} characters "
            f"(at most {MAX_DIRECTIVE_LEN}): {printable(text[:60])}..."
        )
    try:
        return split_words(text[start:])
    except ValueError as exc:
        raise UsageError(f"script line {number}: {exc}: {printable(text)}") from None


def read_script(path: str | None) -> str:
    """The script's text; bytes that are not UTF-8 are kept (surrogate-escaped, as an OsStr)
    and reach the job as they are."""
    try:
        if path is None or path == "-":
            return sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"cannot read batch script {path}: {reason}") from None
