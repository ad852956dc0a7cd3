"""The agent as a systemd service: ``mgpu_node join --install-service`` writes the unit and
enables it.

The unit is rendered here, from the agent's own command line, rather than copied from a file:
an installed package (or the PyInstaller bundle) has no ``packaging/`` directory to read it
from. ``packaging/mgpu-node.service`` is the same unit rendered for a system-wide install, for
packagers (a test keeps the two equal).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from mgpu_core import constants
from mgpu_core.errors import ConfigError
from mgpu_core.exitcodes import EXIT_STARTUP_FAILURE

# Where systemd keeps its runtime state only when it is the running init (sd_booted(3)).
SYSTEMD_RUNTIME_DIR = Path("/run/systemd/system")
SERVICE = constants.SYSTEMD_UNIT.removesuffix(".service")
SYSTEMCTL_TIMEOUT_S = 60.0

UNIT_TEMPLATE = """\
# The mgpu node agent, as mgpu_node join --install-service writes it.
[Unit]
Description=mgpu node agent
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart={exec_start}
Restart=on-failure
RestartSec=5
# Exit {refused}: the agent cannot start (a bad key or CA file) or the master refused it for
# good (a wrong key): starting it again cannot help.
RestartPreventExitStatus={refused}
# Stop the agent only: its jobs outlive it and the next agent re-adopts them (or the fence
# guard, which outlives it too, stops them if none comes back in time).
KillMode=process

[Install]
WantedBy=multi-user.target
"""

# Arguments systemd takes as they are: no quoting, no specifier (%) or variable ($) expansion.
_PLAIN_ARG = re.compile(r"[A-Za-z0-9_@+=:,./-]+", re.ASCII)


def render(argv: Sequence[str]) -> str:
    """The unit that runs ``argv`` (the agent's command line, its program first and absolute)."""
    return UNIT_TEMPLATE.format(
        exec_start=" ".join(_quote(a) for a in argv), refused=EXIT_STARTUP_FAILURE
    )


def _quote(arg: str) -> str:
    """``arg`` as one word of an ExecStart line (systemd.service(5), "Command lines")."""
    if _PLAIN_ARG.fullmatch(arg):
        return arg
    if not arg.isprintable():
        raise ConfigError(f"{arg!r} cannot go in a systemd unit: it holds a control character")
    text = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{text}"'


def check_writable(unit_dir: Path) -> None:
    """Fail before anything is done (a join token spent) if the unit cannot be written."""
    if not unit_dir.is_dir():
        raise ConfigError(f"no directory {unit_dir} for the systemd unit")
    if not os.access(unit_dir, os.W_OK):
        raise ConfigError(f"cannot write the systemd unit into {unit_dir}: run as root")


def install(unit_dir: Path, text: str) -> Path:
    path = unit_dir / constants.SYSTEMD_UNIT
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def systemd_running() -> bool:
    return SYSTEMD_RUNTIME_DIR.is_dir()


def enable(*, start: bool) -> None:
    """``systemctl daemon-reload`` and ``enable`` (``--now`` with ``start``); ConfigError with
    systemctl's last line if either fails."""
    enabling = ["systemctl", "enable", *(["--now"] if start else []), SERVICE]
    for argv in (["systemctl", "daemon-reload"], enabling):
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"{' '.join(argv)} failed: {exc}") from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            raise ConfigError(f"{' '.join(argv)} failed: {lines[-1]}")
