"""Join tokens and the node keys they buy, kept with the master's settings.

An admin makes a join token (``mgpu_master join-token``): an id, a 16-byte secret, an expiry
and a number of uses. A new host proves the secret (net/joindesk.py) and names the node id it
wants; the master then makes that node id a key of its own (32 random bytes) and hands it over.
From then on that key is the only one that registers the id: the legacy shared cluster key no
longer does, and the node's key registers no other id, so a node cannot pass for another. Ids
without a key of their own still register with the cluster key (the legacy path).

A token is gone once its last use is spent or it is revoked; an expired one is kept until the
next listing or creation, so that a late host is told it expired rather than that it never
existed. Removing a node (``mgpu_client node remove``) forgets its key: the host must join
again.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, replace
from typing import Any

from mgpu_core.constants import JOIN_TOKENS_KEY, NODE_KEYS_KEY
from mgpu_core.errors import AuthenticationFailed, InvalidRequest, NodeConflict
from mgpu_core.joining import NODE_KEY_BYTES, JoinToken, new_join_token, node_id_problem
from mgpu_core.units import format_duration
from mgpu_server.storage.store import Store

NEW_TOKEN = "mgpu_master join-token makes a new one"


@dataclass(frozen=True, slots=True)
class JoinTokenRecord:
    token_id: str
    secret: bytes
    expires_s: float
    uses_left: int
    created_s: float
    created_by: str

    def to_json(self) -> dict[str, Any]:
        stored = {k: v for k, v in asdict(self).items() if k != "token_id"}
        return {**stored, "secret": self.secret.hex()}

    @classmethod
    def from_json(cls, token_id: str, stored: dict[str, Any]) -> JoinTokenRecord:
        fields = {**stored, "token_id": token_id, "secret": bytes.fromhex(stored["secret"])}
        return cls(**fields)

    def row(self) -> dict[str, Any]:
        """What a listing shows: never the secret."""
        return {k: v for k, v in asdict(self).items() if k != "secret"}


@dataclass(frozen=True, slots=True)
class JoinInfo:
    """What a join command needs to say besides the token: the master's port, its CA (whose
    hash pins it) and the names its certificate is for. Set by the network side."""

    port: int = 0
    ca_pem: str = ""  # "" while the master has no CA a host could pin (plain TCP, own cert)
    tls_names: tuple[str, ...] = ()
    why_not: str = "the master is not listening yet"


class JoinRegistry:
    def __init__(self, store: Store) -> None:
        self.store = store
        stored: dict[str, dict[str, Any]] = store.get_setting(JOIN_TOKENS_KEY) or {}
        self._tokens = {t: JoinTokenRecord.from_json(t, r) for t, r in stored.items()}
        keys: dict[str, dict[str, Any]] = store.get_setting(NODE_KEYS_KEY) or {}
        self._keys = dict(keys)
        self.info = JoinInfo()  # set by the network side once it listens

    # ---- the admins' verbs -----------------------------------------------------------------

    def create(self, *, ttl_s: float, uses: int, by: str, now_s: float) -> JoinToken:
        if not self.info.ca_pem:
            raise InvalidRequest(f"no join tokens: {self.info.why_not}")
        self._prune(now_s)
        token = new_join_token()
        while token.token_id in self._tokens:
            token = new_join_token()
        self._tokens[token.token_id] = JoinTokenRecord(
            token.token_id, token.secret, now_s + ttl_s, uses, now_s, by
        )
        self._save_tokens()
        return token

    def listing(self, now_s: float) -> list[dict[str, Any]]:
        self._prune(now_s)
        return [r.row() for r in sorted(self._tokens.values(), key=lambda r: r.created_s)]

    def revoke(self, token_id: str) -> list[str]:
        if not token_id:
            raise InvalidRequest("name the join token to revoke")
        if self._tokens.pop(token_id, None) is None:
            return []
        self._save_tokens()
        return [token_id]

    def nodes(self) -> list[dict[str, Any]]:
        """The nodes that joined with a key of their own (never the keys)."""
        return [
            {"node_id": node_id, **{k: v for k, v in info.items() if k != "key"}}
            for node_id, info in sorted(self._keys.items())
        ]

    # ---- joining ---------------------------------------------------------------------------

    def admit(self, token_id: str, node_id: str, now_s: float) -> bytes:
        """The secret a host asking to join as ``node_id`` with this token must prove; raises
        (AuthenticationFailed, NodeConflict, InvalidRequest) if it may not join at all."""
        problem = node_id_problem(node_id)
        if problem:
            raise InvalidRequest(problem)
        record = self._tokens.get(token_id)
        if record is None:
            raise AuthenticationFailed(
                f"join token {token_id} is unknown: used up, revoked or never made by this "
                f"master ({NEW_TOKEN})"
            )
        if record.expires_s <= now_s:
            ago = format_duration(now_s - record.expires_s)
            raise AuthenticationFailed(f"join token {token_id} expired {ago} ago ({NEW_TOKEN})")
        if node_id in self._keys:
            raise NodeConflict(
                f"node {node_id} has joined already and has its own key: choose another "
                f"--node-id, or forget it first (mgpu_client node remove {node_id})"
            )
        return record.secret

    def join(self, token_id: str, node_id: str, *, peer: str, now_s: float) -> bytes:
        """Spend one use of the (proven) token and give ``node_id`` a new key of its own."""
        self.admit(token_id, node_id, now_s)  # again: the token may be gone since the proof
        record = self._tokens[token_id]
        if record.uses_left > 1:
            self._tokens[token_id] = replace(record, uses_left=record.uses_left - 1)
        else:
            del self._tokens[token_id]
        key = secrets.token_bytes(NODE_KEY_BYTES)
        self._keys[node_id] = {
            "key": key.hex(),
            "joined_s": now_s,
            "token_id": token_id,
            "peer": peer,
        }
        self._save_tokens()
        self._save_keys()
        return key

    def snapshot(self) -> tuple[dict[str, JoinTokenRecord], dict[str, dict[str, Any]]]:
        return dict(self._tokens), dict(self._keys)

    def restore(
        self, snapshot: tuple[dict[str, JoinTokenRecord], dict[str, dict[str, Any]]]
    ) -> None:
        """Back to ``snapshot`` (a join whose commit failed): its writes are replaced too."""
        self._tokens, self._keys = dict(snapshot[0]), dict(snapshot[1])
        self._save_tokens()
        self._save_keys()

    # ---- node keys -------------------------------------------------------------------------

    def node_key(self, node_id: str) -> bytes | None:
        """The node's own key, or None: it registers with the cluster key (legacy)."""
        info = self._keys.get(node_id)
        return None if info is None else bytes.fromhex(info["key"])

    def forget_node(self, node_id: str) -> bool:
        if self._keys.pop(node_id, None) is None:
            return False
        self._save_keys()
        return True

    def _prune(self, now_s: float) -> None:
        expired = [t for t, r in self._tokens.items() if r.expires_s <= now_s]
        for token_id in expired:
            del self._tokens[token_id]
        if expired:
            self._save_tokens()

    def _save_tokens(self) -> None:
        self.store.put_setting(JOIN_TOKENS_KEY, {t: r.to_json() for t, r in self._tokens.items()})

    def _save_keys(self) -> None:
        self.store.put_setting(NODE_KEYS_KEY, dict(self._keys))
