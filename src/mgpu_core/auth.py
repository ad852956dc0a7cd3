"""Shared-secret authentication: the cluster key, user tokens, HMAC challenge-response.

Nodes prove they hold the cluster key; TCP clients prove they hold a user token (an id the
master looks up, and a secret). Both sides send a fresh random nonce and prove they hold the
secret by an HMAC-SHA256 over both nonces, the peer's name and the direction, so the secret
never crosses the wire, a recorded exchange cannot be replayed (the other side's nonce is new
each time), and a proof for one direction or one node is useless for
another. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from mgpu_core.config import user_config_dir
from mgpu_core.errors import ConfigError

KEY_BYTES = 32
NONCE_BYTES = 32
KEY_FILE = "cluster.key"
TOKEN_FILE_ENV = "MGPU_TOKEN_FILE"
TOKEN_PREFIX = "mgpu1"
TOKEN_ID_BYTES = 8


@dataclass(frozen=True, slots=True)
class Token:
    """A user's credential: the id names it to the master, the secret never leaves the host."""

    token_id: str
    secret: bytes = b""

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}.{self.token_id}.{self.secret.hex()}"


def new_token() -> Token:
    return Token(secrets.token_hex(TOKEN_ID_BYTES), secrets.token_bytes(KEY_BYTES))


def parse_token(text: str, source: str) -> Token:
    prefix, _, rest = text.strip().partition(".")
    token_id, _, secret_hex = rest.partition(".")
    try:
        secret = bytes.fromhex(secret_hex)
    except ValueError:
        secret = b""
    if prefix != TOKEN_PREFIX or not token_id or len(secret) < KEY_BYTES:
        raise ConfigError(f"{source} does not hold an mgpu token ({TOKEN_PREFIX}.ID.SECRET)")
    return Token(token_id, secret)


def default_token_file() -> Path:
    return Path(os.environ.get(TOKEN_FILE_ENV) or user_config_dir() / "token")


def load_token(path: Path) -> Token:
    return parse_token(_read_private(path, "token file"), f"token file {path}")


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing any old one atomically."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def proof(
    key: bytes,
    role: str,
    name: str,
    first_nonce: bytes,
    second_nonce: bytes,
    binding: bytes = b"",
) -> bytes:
    """HMAC-SHA256 of the role (who proves), the peer's name, the nonces in order, and the
    channel ``binding`` (over TLS, the hash of the master's certificate, mgpu_core.tls: a
    proof made through one TLS channel is worthless through another, so a relay that
    terminates TLS with any other certificate gets nothing it can use; empty without TLS)."""
    message = b"\0".join(
        [b"mgpu-v2", role.encode(), name.encode(), first_nonce, second_nonce, binding]
    )
    return hmac.new(key, message, hashlib.sha256).digest()


def verify(expected: bytes, given: object) -> bool:
    return isinstance(given, bytes) and hmac.compare_digest(expected, given)


def create_key(path: Path) -> bytes:
    """Make a new random cluster key file, readable by its owner only; fails if it exists."""
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


def _read_private(path: Path, what: str) -> str:
    """A secret file's text; ConfigError naming the file if it is missing or readable by
    others (as ssh refuses a private key with loose permissions)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{what} {path} is accessible by others: chmod 600 {path}")
    return text


def load_key(path: Path) -> bytes:
    """Read a cluster key file; ConfigError naming the file if it is missing, malformed or
    readable by others."""
    text = _read_private(path, "cluster key")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"cluster key {path} is not hex") from None
    if len(key) < KEY_BYTES:
        raise ConfigError(f"cluster key {path} is shorter than {KEY_BYTES} bytes")
    return key


def load_or_create_key(path: Path) -> bytes:
    return load_key(path) if path.exists() else create_key(path)
