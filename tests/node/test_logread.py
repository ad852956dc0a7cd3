"""The node's reads of output files for ``mgpu_client log``: only a regular file that the
job's account owns, never through a final symlink, never blocking on a FIFO."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mgpu_node.logread import read_range

pytestmark = pytest.mark.timeout(30)
ME = os.geteuid()


def read(path: Path, uid: int = ME, **kw: object) -> dict[str, object]:
    args: dict[str, object] = {"offset": 0, "from_end": 0, "max_bytes": 1 << 20, **kw}
    return read_range(str(path), uid=uid, node="n1", **args)  # type: ignore[arg-type]


def test_ranges_from_an_offset_or_from_the_end(tmp_path: Path) -> None:
    f = tmp_path / "out"
    f.write_bytes(b"0123456789")
    assert read(f) == {"data": b"0123456789", "offset": 0, "size": 10}
    assert read(f, offset=4, max_bytes=3) == {"data": b"456", "offset": 4, "size": 10}
    assert read(f, offset=None, from_end=3) == {"data": b"789", "offset": 7, "size": 10}
    assert read(f, offset=None, from_end=99)["offset"] == 0
    assert read(f, offset=50) == {"data": b"", "offset": 10, "size": 10}  # past the end


def test_another_owners_file_a_symlink_a_fifo_and_a_directory_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "out"
    f.write_text("secret\n")
    assert "another owner" in str(read(f, uid=ME + 1)["error"])
    link = tmp_path / "link"
    link.symlink_to(f)
    assert "symbolic link" in str(read(link)["error"])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in str(read(fifo)["error"])  # and it did not block
    assert "not a regular file" in str(read(tmp_path)["error"])
    assert "does not exist" in str(read(tmp_path / "nope")["error"])
