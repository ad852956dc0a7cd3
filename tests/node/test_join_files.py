"""What mgpu_node join leaves on a host: the node's config directory (nodeconf.py) and the
agent's systemd unit (service.py), checked by systemd's own verifier where it is installed."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mgpu_core import constants
from mgpu_core.errors import ConfigError
from mgpu_node import nodeconf, service

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def test_a_join_is_stored_and_read_back(tmp_path: Path) -> None:
    directory = tmp_path / "etc" / "mgpu"
    joined = nodeconf.JoinedNode(directory, "[::1]:6860", "gpu07")
    nodeconf.save(joined, ca_pem="PEM\n", key=b"\x01" * 32)
    assert nodeconf.load(directory) == joined
    assert stat.S_IMODE(joined.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(joined.ca_file.stat().st_mode) == 0o644
    assert joined.key_file.read_text() == "01" * 32 + "\n"
    assert nodeconf.key_file(directory) == joined.key_file
    master = nodeconf.joined_master(joined)
    assert master is not None and (master.host, master.port) == ("::1", 6860)
    assert master.tls_ca == str(joined.ca_file)


def test_without_a_join_the_agent_keeps_its_legacy_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert nodeconf.load(tmp_path) is None
    assert nodeconf.joined_master(None) is None
    assert nodeconf.key_file(tmp_path) == Path(constants.SYSTEM_KEY_FILE)
    # The environment outranks the file: $MGPU_MASTER names the master, not node.toml.
    joined = nodeconf.JoinedNode(tmp_path, "m:1", "n")
    monkeypatch.setenv("MGPU_MASTER", "other:2")
    assert nodeconf.joined_master(joined) is None


def test_a_broken_node_config_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / constants.NODE_CONFIG_FILE).write_text("master = [")
    with pytest.raises(ConfigError, match="is not TOML"):
        nodeconf.load(tmp_path)
    (tmp_path / constants.NODE_CONFIG_FILE).write_text('master = "m:1"\n')
    with pytest.raises(ConfigError, match="must hold master and node_id"):
        nodeconf.load(tmp_path)


def test_arguments_are_quoted_for_systemd() -> None:
    unit = service.render(["/usr/bin/mgpu_node", "--state-dir", '/a b/"c"\\%d$e', "--x=1"])
    (line,) = [x for x in unit.splitlines() if x.startswith("ExecStart=")]
    assert line == r'ExecStart=/usr/bin/mgpu_node --state-dir "/a b/\"c\"\\%%d$$e" --x=1'
    with pytest.raises(ConfigError, match="control character"):
        service.render(["/usr/bin/mgpu_node", "--state-dir", "a\nb"])


def test_the_shipped_unit_is_the_one_the_join_renders() -> None:
    shipped = (ROOT / "packaging" / constants.SYSTEMD_UNIT).read_text()
    assert shipped == service.render(["/usr/local/bin/mgpu_node", "--config-dir", "/etc/mgpu"])


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_rendered_unit(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "mgpu_node", "--state-dir", "/var/lib/mgpu node %1", "--x=$y"]
    path = service.install(tmp_path, service.render(argv))
    assert path.name == constants.SYSTEMD_UNIT
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert SYSTEMD_ANALYZE is not None
    checked = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    # The verifier does look: a unit whose program is missing fails it.
    path.write_text(service.render(["/nonexistent/mgpu_node"]))
    missing = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode != 0 and "/nonexistent/mgpu_node" in missing.stderr


def test_no_unit_is_written_where_it_cannot_be(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no directory"):
        service.check_writable(tmp_path / "missing")
