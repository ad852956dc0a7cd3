"""What both ends of a join agree on: the join token, the pin on the cluster's CA, the node ids
a join may take, and the messages of the exchange (docs/protocol.md, "Joining").

``mgpu_master join-token`` prints ``mgpu_node join HOST:PORT --token ID.SECRET --ca-hash
sha256:HEX``. The new host has nothing yet to verify the master's certificate by, so it opens
TLS without verification, as kubeadm's discovery does, and checks afterwards: the master's
challenge carries the CA certificate, whose SHA-256 must be the pinned hash, and the
certificate the TLS channel showed must be issued by that CA for the host it dialled
(mgpu_node.pinning). Only then does it prove the token's secret, bound to that channel (the
handshake of mgpu_core.handshake, role ``join``), and get its own node key back.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import ssl
from dataclasses import dataclass

from mgpu_core.errors import ConfigError
from mgpu_core.handshake import CHALLENGE
from mgpu_core.limits import MAX_NAME_LEN
from mgpu_core.schema import REQUIRED, Bytes, Record, Str

JOIN_ROLE = "join"
TOKEN_ID_BYTES = 4  # a name for the token in listings and the audit log, not a secret
TOKEN_SECRET_BYTES = 16  # 128 bits: the HMAC key the joining host proves
CA_HASH_PREFIX = "sha256:"
NODE_KEY_BYTES = 32
# A node id a join may take: it ends up in a systemd unit and a TOML file, and in hostnames'
# alphabet it needs no quoting in either.
NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", re.ASCII)
MAX_CA_PEM_LEN = 16 * 1024

# The master's challenge to a joining host: the handshake's, plus the CA certificate to pin.
JOIN_CHALLENGE = Record({**CHALLENGE.fields, "ca_pem": (Str(MAX_CA_PEM_LEN), REQUIRED)})
# The data of the master's ``ok`` once the token is proven: the node's own key.
JOIN_WELCOME = Record(
    {
        "node_id": (Str(MAX_NAME_LEN, min_len=1), REQUIRED),
        "key": (Bytes(64), REQUIRED),
    }
)


@dataclass(frozen=True, slots=True)
class JoinToken:
    token_id: str
    secret: bytes

    def __str__(self) -> str:
        return f"{self.token_id}.{self.secret.hex()}"


def new_join_token() -> JoinToken:
    return JoinToken(secrets.token_hex(TOKEN_ID_BYTES), secrets.token_bytes(TOKEN_SECRET_BYTES))


_TOKEN_RE = re.compile(
    rf"([0-9a-f]{{{2 * TOKEN_ID_BYTES}}})\.([0-9a-f]{{{2 * TOKEN_SECRET_BYTES}}})", re.ASCII
)


def parse_join_token(text: str) -> JoinToken:
    match = _TOKEN_RE.fullmatch(text.strip().lower())
    if match is None:
        raise ConfigError("not a join token: use ID.SECRET as mgpu_master join-token prints it")
    return JoinToken(match.group(1), bytes.fromhex(match.group(2)))


def ca_hash(ca_pem: str) -> str:
    """``sha256:HEX`` over the DER of the (first) certificate in ``ca_pem``."""
    try:
        der = ssl.PEM_cert_to_DER_cert(ca_pem)
    except ValueError:
        raise ConfigError("not a PEM certificate") from None
    return CA_HASH_PREFIX + hashlib.sha256(der).hexdigest()


def parse_ca_hash(text: str) -> str:
    value = text.strip().lower()
    digest = value.removeprefix(CA_HASH_PREFIX)
    if not value.startswith(CA_HASH_PREFIX) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ConfigError("not a CA hash: use sha256:HEX as mgpu_master join-token prints it")
    return value


def node_id_problem(node_id: str) -> str:
    """Why ``node_id`` cannot be joined, or ``""``."""
    if NODE_ID_RE.fullmatch(node_id):
        return ""
    return (
        f"node id {node_id!r} cannot join: use 1-63 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )
