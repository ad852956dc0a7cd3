"""Shared-secret authentication: the cluster key and HMAC challenge-response.

Both sides send a fresh random nonce and prove they hold the secret by an HMAC-SHA256 over
both nonces, the peer's name and the direction, so the secret never crosses the wire, a
recorded exchange cannot be replayed (the other side's nonce is new each time), and a proof
for one direction or one node is useless for another. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from mgpu_core.errors import ConfigError

KEY_BYTES = 32
NONCE_BYTES = 32
KEY_FILE = "cluster.key"


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def proof(key: bytes, role: str, name: str, first_nonce: bytes, second_nonce: bytes) -> bytes:
    """HMAC-SHA256 of the role (who proves), the peer's name and the nonces, in order."""
    message = b"\0".join([b"mgpu-v1", role.encode(), name.encode(), first_nonce, second_nonce])
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


def load_key(path: Path) -> bytes:
    """Read a key file; ConfigError naming the file if it is missing, malformed or readable
    by others (as ssh refuses a private key with loose permissions)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read cluster key {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"cluster key {path} is accessible by others: chmod 600 {path}")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"cluster key {path} is not hex") from None
    if len(key) < KEY_BYTES:
        raise ConfigError(f"cluster key {path} is shorter than {KEY_BYTES} bytes")
    return key


def load_or_create_key(path: Path) -> bytes:
    return load_key(path) if path.exists() else create_key(path)
