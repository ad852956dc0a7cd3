"""User tokens for TCP clients: issued and revoked by admins, kept with the master's settings.

A token is an id (which the client names in its hello) and a 32-byte secret (which it proves
by HMAC over the master's nonce, never sends). The master keeps the secrets in its store, in
the state directory that only it can read; revoking deletes them, and the server ends every
session the revoked tokens opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mgpu_core import auth
from mgpu_core.constants import TOKENS_KEY
from mgpu_core.errors import InvalidRequest
from mgpu_server.storage.store import Store


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_id: str
    user: str
    secret: bytes
    created_s: float
    created_by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "secret": self.secret.hex(),
            "created_s": self.created_s,
            "created_by": self.created_by,
        }


class TokenRegistry:
    def __init__(self, store: Store) -> None:
        self.store = store
        stored: dict[str, dict[str, Any]] = store.get_setting(TOKENS_KEY) or {}
        self._tokens = {
            token_id: TokenRecord(
                token_id, r["user"], bytes.fromhex(r["secret"]), r["created_s"], r["created_by"]
            )
            for token_id, r in stored.items()
        }

    def lookup(self, token_id: str) -> TokenRecord | None:
        return self._tokens.get(token_id)

    def create(self, user: str, *, by: str, now_s: float) -> auth.Token:
        if not user:
            raise InvalidRequest("name the user the token is for")
        token = auth.new_token()
        self._tokens[token.token_id] = TokenRecord(token.token_id, user, token.secret, now_s, by)
        self._save()
        return token

    def listing(self, user: str = "") -> list[dict[str, Any]]:
        return [
            {
                "token_id": r.token_id,
                "user": r.user,
                "created_s": r.created_s,
                "created_by": r.created_by,
            }
            for r in sorted(self._tokens.values(), key=lambda r: (r.user, r.created_s))
            if not user or r.user == user
        ]

    def revoke(self, user: str, token_id: str = "") -> list[str]:
        """Revoke one token (``token_id``) or all of ``user``'s; the ids revoked."""
        if not user and not token_id:
            raise InvalidRequest("name the user (or the token id) to revoke")
        gone = [
            r.token_id
            for r in self._tokens.values()
            if (not user or r.user == user) and (not token_id or r.token_id == token_id)
        ]
        for tid in gone:
            del self._tokens[tid]
        if gone:
            self._save()
        return gone

    def _save(self) -> None:
        self.store.put_setting(TOKENS_KEY, {t: r.to_json() for t, r in self._tokens.items()})
