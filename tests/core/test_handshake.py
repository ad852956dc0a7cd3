"""Tests for mgpu_core.handshake: the initiator and the responder driven against each other,
and against an eavesdropper, a replayer, a reflector and a master without the key."""

from __future__ import annotations

from typing import Any

import pytest

from mgpu_core import auth
from mgpu_core.errors import (
    AuthenticationFailed,
    BadMessage,
    NodeConflict,
    ProtocolError,
)
from mgpu_core.handshake import MIN_NONCE_BYTES, Initiator, Responder

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NAME = "n1"
ROLES = ["node", "client", "join"]


def hello(initiator: Initiator) -> dict[str, Any]:
    return {"t": "hello", "id": 7, "version": 1, "role": initiator.role, **initiator.hello_fields()}


def open_link(
    role: str = "node", *, initiator_key: bytes = KEY, responder_key: bytes = KEY
) -> tuple[Initiator, Responder, dict[str, Any], dict[str, Any]]:
    """An initiator and a responder after the hello: returns both, the hello and the challenge."""
    initiator = Initiator(initiator_key, role, NAME)
    responder = Responder(responder_key, NAME, role)
    sent = hello(initiator)
    return initiator, responder, sent, responder.on_hello(sent)


# ---- success --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_both_sides_prove_the_key(role: str) -> None:
    initiator, responder, _, challenge = open_link(role)
    answer = initiator.on_challenge(challenge)
    assert answer["t"] == "auth"
    responder.on_auth(answer)  # returns only if the proof is right


@pytest.mark.parametrize("role", ROLES)
def test_the_wire_is_the_one_docs_protocol_md_describes(role: str) -> None:
    """Old and new peers interoperate: same message types, fields and proof inputs."""
    initiator, _, sent, challenge = open_link(role)
    mine = sent["nonce"]
    assert isinstance(mine, bytes) and len(mine) == auth.NONCE_BYTES
    theirs = challenge["nonce"]
    assert set(challenge) == {"t", "id", "nonce", "proof"}
    assert challenge["t"] == "challenge" and challenge["id"] == 7
    assert challenge["proof"] == auth.proof(KEY, "master", NAME, mine, theirs)
    answer = initiator.on_challenge(challenge)
    assert answer == {"t": "auth", "proof": auth.proof(KEY, role, NAME, theirs, mine)}


def test_each_exchange_draws_fresh_nonces() -> None:
    first_hello, second_hello = (
        hello(Initiator(KEY, "node", NAME)),
        hello(Initiator(KEY, "node", NAME)),
    )
    assert first_hello["nonce"] != second_hello["nonce"]
    first = Responder(KEY, NAME, "node").on_hello(first_hello)
    second = Responder(KEY, NAME, "node").on_hello(first_hello)
    assert first["nonce"] != second["nonce"] and first["proof"] != second["proof"]


# ---- the wrong key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "words"),
    [
        ("node", "does not hold our cluster key"),
        ("client", "does not know token n1"),
        ("join", "does not know join token n1"),
    ],
)
def test_the_initiator_refuses_a_master_with_another_key(role: str, words: str) -> None:
    initiator, _, _, challenge = open_link(role, responder_key=OTHER_KEY)
    with pytest.raises(AuthenticationFailed, match=words):
        initiator.on_challenge(challenge)


@pytest.mark.parametrize(
    ("role", "words"),
    [("node", "wrong cluster key"), ("client", "wrong token secret"), ("join", "wrong join token")],
)
def test_the_responder_refuses_a_peer_with_another_key(role: str, words: str) -> None:
    # The initiator would refuse our challenge first; a hostile one answers regardless.
    _, responder, sent, challenge = open_link(role)
    forged = auth.proof(OTHER_KEY, role, NAME, challenge["nonce"], sent["nonce"])
    with pytest.raises(AuthenticationFailed, match=f"{role} 'n1' failed authentication: {words}"):
        responder.on_auth({"t": "auth", "proof": forged})


# ---- replay and reflection -------------------------------------------------------------------


def test_a_recorded_auth_is_refused_in_a_later_exchange() -> None:
    initiator, responder, sent, challenge = open_link()
    recorded = initiator.on_challenge(challenge)
    responder.on_auth(recorded)
    # The eavesdropper replays the whole hello, then the auth: the master's nonce is new.
    later = Responder(KEY, NAME, "node")
    assert later.on_hello(sent)["nonce"] != challenge["nonce"]
    with pytest.raises(AuthenticationFailed):
        later.on_auth(recorded)


def test_a_recorded_challenge_is_refused_by_a_later_initiator() -> None:
    _, _, _, recorded = open_link()
    with pytest.raises(AuthenticationFailed):
        Initiator(KEY, "node", NAME).on_challenge(recorded)


def test_the_masters_own_proof_reflected_back_is_refused() -> None:
    _, responder, _, challenge = open_link()
    with pytest.raises(AuthenticationFailed):
        responder.on_auth({"t": "auth", "proof": challenge["proof"]})


def test_a_challenge_proving_the_other_direction_is_refused() -> None:
    initiator = Initiator(KEY, "node", NAME)
    theirs = auth.new_nonce()
    node_side = auth.proof(KEY, "node", NAME, theirs, initiator.hello_fields()["nonce"])
    with pytest.raises(AuthenticationFailed):
        initiator.on_challenge({"t": "challenge", "id": 1, "nonce": theirs, "proof": node_side})


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("forged", ["name", "role"])
def test_a_proof_for_another_name_or_role_is_refused(role: str, forged: str) -> None:
    _, responder, sent, challenge = open_link(role)
    other_role = "client" if role == "node" else "node"
    proving_role, name = (role, "n2") if forged == "name" else (other_role, NAME)
    proof = auth.proof(KEY, proving_role, name, challenge["nonce"], sent["nonce"])
    with pytest.raises(AuthenticationFailed):
        responder.on_auth({"t": "auth", "proof": proof})


def test_a_master_proof_for_another_name_is_refused() -> None:
    initiator = Initiator(KEY, "node", NAME)
    theirs = auth.new_nonce()
    for_n2 = auth.proof(KEY, "master", "n2", initiator.hello_fields()["nonce"], theirs)
    with pytest.raises(AuthenticationFailed):
        initiator.on_challenge({"t": "challenge", "id": 1, "nonce": theirs, "proof": for_n2})


# ---- what the hello must carry ---------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{}, {"nonce": None}, {"nonce": b"n" * (MIN_NONCE_BYTES - 1)}, {"nonce": "n" * 32}],
    ids=["missing", "null", "short", "not bytes"],
)
def test_a_hello_without_a_usable_nonce_is_refused(fields: dict[str, Any]) -> None:
    responder = Responder(KEY, NAME, "node")
    with pytest.raises(AuthenticationFailed, match="node 'n1' sent no challenge"):
        responder.on_hello({"t": "hello", "id": 1, **fields})


def test_a_nonce_of_the_minimum_length_is_enough() -> None:
    responder = Responder(KEY, NAME, "client")
    challenge = responder.on_hello({"t": "hello", "id": 1, "nonce": b"n" * MIN_NONCE_BYTES})
    assert challenge["t"] == "challenge"


# ---- what the answers must be ----------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_an_ok_without_a_challenge_is_refused(role: str) -> None:
    """Anyone on the master's address could otherwise send launch orders."""
    initiator = Initiator(KEY, role, NAME, peer="the master at 10.0.0.1:6800")
    with pytest.raises(AuthenticationFailed, match=r"10\.0\.0\.1:6800 did not prove"):
        initiator.on_challenge({"t": "ok", "id": 7, "data": {}})


def test_any_other_reply_to_the_hello_is_a_protocol_error() -> None:
    initiator = Initiator(KEY, "node", NAME)
    with pytest.raises(ProtocolError, match="expected a challenge, got 'launch'"):
        initiator.on_challenge({"t": "launch", "launch": {}})


def test_an_error_reply_is_raised_as_its_typed_exception() -> None:
    initiator = Initiator(KEY, "node", NAME)
    with pytest.raises(NodeConflict, match="n1 is taken"):
        initiator.on_challenge(
            {"t": "error", "id": 7, "code": "node_conflict", "message": "n1 is taken"}
        )


def test_anything_but_auth_after_the_challenge_is_a_protocol_error() -> None:
    _, responder, _, _ = open_link()
    with pytest.raises(ProtocolError, match="expected auth, got 'heartbeat'") as caught:
        responder.on_auth({"t": "heartbeat", "gpus": []})
    assert not isinstance(caught.value, AuthenticationFailed)


@pytest.mark.parametrize("proof", [None, 5, "p" * 32, [b"p"]])
def test_a_proof_that_is_not_bytes_is_a_bad_message(proof: object) -> None:
    initiator, responder, _, challenge = open_link()
    with pytest.raises(BadMessage, match="proof"):
        responder.on_auth({"t": "auth", "proof": proof})
    with pytest.raises(BadMessage, match="proof"):
        initiator.on_challenge({**challenge, "proof": proof})


def test_a_challenge_without_a_nonce_or_proof_is_a_bad_message() -> None:
    for missing in ("nonce", "proof"):
        _, _, _, challenge = open_link()
        del challenge[missing]
        with pytest.raises(BadMessage, match=missing):
            Initiator(KEY, "node", NAME).on_challenge(challenge)


def test_a_short_wrong_proof_is_refused_not_crashed() -> None:
    initiator, responder, _, challenge = open_link()
    with pytest.raises(AuthenticationFailed):
        responder.on_auth({"t": "auth", "proof": b"p"})
    with pytest.raises(AuthenticationFailed):
        initiator.on_challenge({**challenge, "proof": b""})


# ---- one exchange per object -----------------------------------------------------------------


def test_an_initiator_answers_one_challenge_only() -> None:
    initiator, _, _, challenge = open_link()
    initiator.on_challenge(challenge)
    with pytest.raises(ProtocolError, match="second challenge"):
        initiator.on_challenge(challenge)


def test_a_failed_initiator_stays_failed() -> None:
    initiator, _, _, challenge = open_link(responder_key=OTHER_KEY)
    with pytest.raises(AuthenticationFailed):
        initiator.on_challenge(challenge)
    with pytest.raises(ProtocolError, match="second challenge"):
        initiator.on_challenge(challenge)


def test_a_responder_checks_one_auth_after_one_hello() -> None:
    unchallenged = Responder(KEY, NAME, "node")
    with pytest.raises(ProtocolError, match="before the hello"):
        unchallenged.on_auth({"t": "auth", "proof": b"p" * 32})
    initiator, responder, sent, challenge = open_link()
    with pytest.raises(ProtocolError, match="second hello"):
        responder.on_hello(sent)
    with pytest.raises(AuthenticationFailed):
        responder.on_auth({"t": "auth", "proof": b"p" * 32})
    # A right proof after a wrong one is too late: the failure is final.
    with pytest.raises(ProtocolError, match="second auth"):
        responder.on_auth(initiator.on_challenge(challenge))


@pytest.mark.parametrize("role", ["master", "admin", ""])
def test_only_nodes_and_clients_hold_a_handshake(role: str) -> None:
    with pytest.raises(ValueError, match="no handshake for role"):
        Initiator(KEY, role, NAME)
    with pytest.raises(ValueError, match="no handshake for role"):
        Responder(KEY, NAME, role)
