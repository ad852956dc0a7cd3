"""A joined node's configuration directory: what ``mgpu_node join`` stores, and what the agent
takes its defaults from.

``DIR`` is ``/etc/mgpu`` for root, else ``~/.config/mgpu`` (``--config-dir``). It holds:

* ``ca.pem`` (0644): the cluster's CA, pinned by the join's ``--ca-hash``; clients on the host
  find it there too.
* ``node.key`` (0600): the node's own key, which registers this node id and no other.
* ``node.toml`` (0644): ``master = "HOST:PORT"`` and ``node_id = "NAME"``, so that a plain
  ``mgpu_node`` registers as the node that joined.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click

from mgpu_core import auth, constants
from mgpu_core.config import MASTER_ENV, Address, parse_address, user_config_dir, with_tls
from mgpu_core.errors import ConfigError

# The agent's and the join's option: one directory, one meaning.
config_dir_option = click.option(
    "--config-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="This node's config directory: mgpu_node join stores the node's key, the CA and "
    "node.toml (master, node id) there, and the agent takes its defaults from them "
    "[default: /etc/mgpu as root, else ~/.config/mgpu].",
)


def default_config_dir() -> Path:
    if os.geteuid() == 0:
        return Path(constants.SYSTEM_CONFIG_DIR)
    return user_config_dir()


@dataclass(frozen=True, slots=True)
class JoinedNode:
    """What a join left in ``directory``."""

    directory: Path
    master: str  # HOST:PORT
    node_id: str

    @property
    def key_file(self) -> Path:
        return self.directory / constants.NODE_KEY_FILE

    @property
    def ca_file(self) -> Path:
        return self.directory / constants.CA_CERT_FILE


def load(directory: Path) -> JoinedNode | None:
    """The node that joined into ``directory``, or None if none did."""
    path = directory / constants.NODE_CONFIG_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not TOML: {exc}") from None
    master, node_id = table.get("master"), table.get("node_id")
    if not isinstance(master, str) or not isinstance(node_id, str):
        raise ConfigError(f"{path} must hold master and node_id, as mgpu_node join writes it")
    return JoinedNode(directory, master, node_id)


def joined_master(joined: JoinedNode | None) -> Address | None:
    """The master the node joined, over TLS with the CA pinned then; None if it did not join,
    or if $MGPU_MASTER names a master (the environment outranks a file)."""
    if joined is None or os.environ.get(MASTER_ENV):
        return None
    return with_tls(parse_address(joined.master), str(joined.ca_file))


def key_file(directory: Path) -> Path:
    """The agent's key: the node's own if it joined into ``directory``, else the legacy
    shared cluster key."""
    own = directory / constants.NODE_KEY_FILE
    return own if own.exists() else Path(constants.SYSTEM_KEY_FILE)


def save(joined: JoinedNode, *, ca_pem: str, key: bytes) -> None:
    """Store a join's results, each file replaced atomically: the key first and readable by
    its owner only, the config last (its presence says the join is complete)."""
    directory = joined.directory
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    auth.write_private(joined.key_file, key.hex() + "\n")
    _write_public(joined.ca_file, ca_pem)
    # A JSON string is a TOML basic string: quotes, backslashes and controls escaped alike.
    config = f"master = {json.dumps(joined.master)}\nnode_id = {json.dumps(joined.node_id)}\n"
    _write_public(directory / constants.NODE_CONFIG_FILE, config)


def _write_public(path: Path, text: str) -> None:
    auth.write_private(path, text)
    path.chmod(0o644)
