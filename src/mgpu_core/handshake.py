"""The mutual challenge-response of mgpu_core.auth, sans-I/O: messages in, messages out.

Every authenticated TCP link opens with the same four messages::

    initiator (node or TCP client)            responder (the master)
    hello {..., nonce: N_i}            ->
                                       <-     challenge {id, nonce: N_r, proof: P_master}
    auth {proof: P_peer}               ->
                                       <-     ok (or error), sent by the caller

    P_master = auth.proof(key, "master", name, N_i, N_r, B)
    P_peer   = auth.proof(key, role,     name, N_r, N_i, B)

``name`` is the node id or the token id, ``role`` is ``"node"``, ``"client"`` or ``"join"``
(a host joining with a join token, mgpu_core.joining), ``key`` the node's key (its own, or the
legacy cluster key), the user token's or the join token's secret, ``B`` the channel binding:
over TLS the SHA-256 of the master's certificate as each side sees it (RFC 5929's
``tls-server-end-point``; Python's ssl module offers no TLS 1.3 exporter), so a handshake
relayed into another TLS channel fails.
Each side proves the key over the other's fresh nonce, so a recorded exchange is worthless to
replay; the role and the nonce order make a proof for one direction useless for the other
(nobody can reflect the master's own proof back at it).

:class:`Initiator` and :class:`Responder` hold that logic once, for the master, the node agent,
the client, the benchmark's simulated nodes and the test fake master alike. Like h11 they own
no socket, no event loop and no clock: the caller moves the messages and keeps its timeouts
and logging. Each object serves one exchange, and each step may run once (a second call
raises), so that an object can never be driven into signing more than one challenge.

Failures, and how a caller should read them:

* :class:`AuthenticationFailed`: the peer does not hold the key, or would not prove it (a
  nonce missing or too short, a master that answers ``ok`` without a challenge). Retrying with
  the same key cannot help.
* :class:`ProtocolError` (``BadMessage`` for a malformed challenge or auth, checked against
  :data:`CHALLENGE` and :data:`AUTH`): the peer sent garbage; the caller drops the link.
"""

from __future__ import annotations

from mgpu_core import auth
from mgpu_core.errors import AuthenticationFailed, ProtocolError, error_from_wire
from mgpu_core.limits import ID
from mgpu_core.schema import REQUIRED, Bytes, Record

# Types only, and not typing's TYPE_CHECKING: the TCP client imports this module on every
# command, and typing alone costs it ~5 ms (see mgpu_client/client.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

# The exchange's own messages (mgpu_core.messages puts CHALLENGE in the master->node table).
# Declared here, not there, so that a TCP client's handshake does not load every record.
CHALLENGE = Record({"id": (ID, 0), "nonce": (Bytes(64), REQUIRED), "proof": (Bytes(64), REQUIRED)})
AUTH = Record({"proof": (Bytes(64), REQUIRED)})

MASTER_ROLE = "master"
# A nonce shorter than this leaves too few fresh bits to stop a replay of the master's proof.
MIN_NONCE_BYTES = 16
# The secret each initiating role proves, as error messages name it: a node's is its own key
# (mgpu_node join) or the legacy shared cluster key; a joining host's, its join token's secret.
SECRET_NAMES = {
    "node": "cluster key or node key",
    "client": "token secret",
    "join": "join token secret",
}


def _secret_name(role: str) -> str:
    try:
        return SECRET_NAMES[role]
    except KeyError:
        raise ValueError(f"no handshake for role {role!r}; one of {sorted(SECRET_NAMES)}") from None


class Initiator:
    """The side that opens the link (node agent, TCP client): sends its nonce in the hello,
    checks the master's proof, then proves its own key.

    ``peer`` only words the errors (``"the master at host:port"``).
    """

    __slots__ = ("_answered", "_binding", "_key", "_nonce", "name", "peer", "role")

    def __init__(
        self, key: bytes, role: str, name: str, *, peer: str = "the master", binding: bytes = b""
    ) -> None:
        self._key = key
        self._binding = binding
        self.role = role
        self.name = name
        self.peer = peer
        self._nonce = auth.new_nonce()
        self._answered = False
        _secret_name(role)  # fail at construction, not halfway through the exchange

    def hello_fields(self) -> dict[str, Any]:
        """The fields to merge into the hello: our challenge to the master."""
        return {"nonce": self._nonce}

    def on_challenge(self, reply: Mapping[str, Any]) -> dict[str, Any]:
        """The ``auth`` message that answers the master's reply to our hello.

        Only a ``challenge`` with the right proof is answered. An ``ok`` without one is refused
        (AuthenticationFailed): anyone listening on the master's address could otherwise send
        us launch orders. An ``error`` is raised as its typed exception; any other message, or
        a malformed challenge, is a ProtocolError.
        """
        if self._answered:
            raise ProtocolError("a second challenge: this handshake is already answered")
        self._answered = True
        kind = reply.get("t")
        if kind == "error":
            raise error_from_wire(reply.get("code"), reply.get("message"))
        if kind == "ok":
            raise AuthenticationFailed(
                f"{self.peer} did not prove that it holds our {_secret_name(self.role)} "
                "(no challenge): check the master's address and version"
            )
        if kind != "challenge":
            raise ProtocolError(f"expected a challenge, got {kind!r}")
        challenge = CHALLENGE.check(reply)
        theirs: bytes = challenge["nonce"]
        expected = auth.proof(self._key, MASTER_ROLE, self.name, self._nonce, theirs, self._binding)
        if not auth.verify(expected, challenge["proof"]):
            raise AuthenticationFailed(self._wrong_master())
        return {
            "t": "auth",
            "proof": auth.proof(
                self._key, self.role, self.name, theirs, self._nonce, self._binding
            ),
        }

    def _wrong_master(self) -> str:
        if self.role == "client":
            return (
                f"{self.peer} does not know token {self.name}: it is not the master that issued it"
            )
        if self.role == "join":
            return (
                f"{self.peer} does not know join token {self.name}: it is not the master that "
                "issued it"
            )
        return f"{self.peer} does not hold our {_secret_name(self.role)}: check --key-file"


class Responder:
    """The master's side: answers a hello's nonce with a challenge, then checks the ``auth``.

    ``name`` is the node id or token id the hello claims, ``peer_role`` its role; the caller
    has looked up ``key`` for that name (the cluster key, or the token's secret).
    """

    __slots__ = ("_binding", "_checked", "_key", "_nonce", "_peer_nonce", "name", "peer_role")

    def __init__(self, key: bytes, name: str, peer_role: str, *, binding: bytes = b"") -> None:
        self._key = key
        self._binding = binding
        self.name = name
        self.peer_role = peer_role
        self._nonce = b""  # ours, once on_hello has run
        self._peer_nonce = b""
        self._checked = False
        _secret_name(peer_role)

    def on_hello(self, hello: Mapping[str, Any]) -> dict[str, Any]:
        """The ``challenge`` to send for ``hello`` (schema-checked by the caller, or raw:
        only its ``id`` and ``nonce`` are read, and the nonce is checked here)."""
        if self._nonce:
            raise ProtocolError("a second hello: this handshake has already challenged")
        peer_nonce = hello.get("nonce")
        if not isinstance(peer_nonce, bytes) or len(peer_nonce) < MIN_NONCE_BYTES:
            raise AuthenticationFailed(
                f"{self.peer_role} {self.name!r} sent no challenge: upgrade it"
            )
        self._peer_nonce = peer_nonce
        self._nonce = auth.new_nonce()
        master_proof = auth.proof(
            self._key, MASTER_ROLE, self.name, peer_nonce, self._nonce, self._binding
        )
        return {
            "t": "challenge",
            "id": hello.get("id", 0),
            "nonce": self._nonce,
            "proof": master_proof,
        }

    def on_auth(self, msg: Mapping[str, Any]) -> None:
        """Check the peer's answer to our challenge; returns only if it proves the key."""
        if not self._nonce:
            raise ProtocolError("an auth before the hello: nothing was challenged")
        if self._checked:
            raise ProtocolError("a second auth: this handshake is already checked")
        self._checked = True
        if msg.get("t") != "auth":
            raise ProtocolError(f"expected auth, got {msg.get('t')!r}")
        given = AUTH.check(msg)["proof"]
        expected = auth.proof(
            self._key, self.peer_role, self.name, self._nonce, self._peer_nonce, self._binding
        )
        if not auth.verify(expected, given):
            secret = _secret_name(self.peer_role)
            raise AuthenticationFailed(
                f"{self.peer_role} {self.name!r} failed authentication: wrong {secret}"
            )
