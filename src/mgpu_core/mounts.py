"""A container job's image name and mounts, as ``--container-image`` and ``--container-mounts``
spell them (pyxis's syntax): checked by the client when the job is submitted and by the node
before it builds the runtime's command line, with one parser for both.

A mount is ``SRC:DST[:ro|rw]``: an absolute host path, the absolute path it has inside the
container, and read-only or read-write (the default). Paths may not hold ``:`` (the separator)
or ``,`` (Apptainer's ``--bind`` takes a comma list, so a comma would split one mount in two).
"""

from __future__ import annotations

MOUNT_MODES = ("ro", "rw")


class Mount:
    """One bind. A plain class: the job commands import this module, and dataclasses (or
    typing) would cost each of them their import at start (tests/core/test_records.py)."""

    __slots__ = ("destination", "read_only", "source")

    def __init__(self, source: str, destination: str, read_only: bool = False) -> None:
        self.source, self.destination, self.read_only = source, destination, read_only

    def spec(self) -> str:
        """As the runtimes spell it: ``SRC:DST`` or ``SRC:DST:ro``."""
        return f"{self.source}:{self.destination}{':ro' if self.read_only else ''}"


def parse_mount(text: str) -> Mount:
    """One ``SRC:DST[:ro|rw]``; ValueError with a one-line reason if it is not one."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"invalid container mount '{text}': SRC:DST[:ro|rw] expected")
    source, destination = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in MOUNT_MODES:
        raise ValueError(f"invalid container mount '{text}': mode '{mode}' is not ro or rw")
    for path in (source, destination):
        if not path.startswith("/"):
            raise ValueError(f"invalid container mount '{text}': '{path}' is not absolute")
        if "," in path or any(ord(c) < 32 for c in path):
            raise ValueError(
                f"invalid container mount '{text}': '{path}' holds a comma or a control character"
            )
    return Mount(source, destination, read_only=mode == "ro")


def check_image(image: str) -> str:
    """The image name, or ValueError: a name a runtime would read as an option, or one with
    blanks or control characters, is no image."""
    if not image or image.startswith("-") or any(c.isspace() or ord(c) < 32 for c in image):
        raise ValueError(f"invalid container image '{image}'")
    return image


def check_workdir(path: str) -> str:
    """The container's working directory, or ValueError if it is not absolute."""
    if not path.startswith("/"):
        raise ValueError(f"invalid container workdir '{path}': not an absolute path")
    return path
