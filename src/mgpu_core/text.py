"""Text that others chose, made safe to print on a terminal.

A job name, a node id, a reason or a command line comes from a user or a peer; printed raw, an
escape sequence in it can rewrite what the terminal shows (hide a line, fake a state, retitle
the window), and a newline can fake a table row. The client commands print such text through
:func:`escape_controls`. Cheap to import: every client command loads it.
"""

from __future__ import annotations


def escape_controls(text: str) -> str:
    """``text`` with every character a terminal could act on written as a visible escape:
    C0 and C1 controls and DEL (``\\x1b``, ``\\n``'s ``\\x0a``), and the other characters
    Python does not call printable (format characters such as the bidi overrides, line and
    paragraph separators, unassigned code points: ``\\u202e``). An undecodable byte that an
    OsStr field holds as a lone surrogate is written ``\\xNN``, as the byte it was.
    """
    if text.isprintable():  # nearly always: one C-speed pass, nothing copied
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with each byte that is not UTF-8 (a lone surrogate, as an :class:`OsStr` field
    holds it) written ``\\xNN``: a str that can be sent, stored as text and printed."""
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no undecodable byte made
        return text.encode("utf-8", "backslashreplace").decode()
    return raw.decode("utf-8", "backslashreplace")
