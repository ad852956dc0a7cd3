"""Join tokens and node keys (mgpu_server.api.joins) and the join_token verb: who may make
tokens, how their uses and expiry run out, and that a node id's own key is the only one it has."""

from __future__ import annotations

import pytest

from mgpu_core.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NodeConflict,
    PermissionDenied,
)
from mgpu_core.joining import ca_hash, parse_join_token
from mgpu_server.api.joins import JoinInfo, JoinRegistry
from mgpu_server.api.permissions import Transport
from mgpu_server.storage.store import MemoryStore
from tests.helpers.nodes import node_info
from tests.helpers.state import ctx, make_service, make_state, request

# Any certificate will do for the hash the reply carries.
CA_PEM = """-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgIUB2QmFpkZ0eZ2zOxqmPJ9D7wf9MAwCgYIKoZIzj0EAwIw
ETEPMA0GA1UEAwwGdGVzdGNhMB4XDTI0MDEwMTAwMDAwMFoXDTM0MDEwMTAwMDAw
MFowETEPMA0GA1UEAwwGdGVzdGNhMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
-----END CERTIFICATE-----
"""
READY = JoinInfo(6860, CA_PEM, ("master.lab", "127.0.0.1"), why_not="")


def registry(store: MemoryStore | None = None) -> JoinRegistry:
    joins = JoinRegistry(store or MemoryStore())
    joins.info = READY
    return joins


def test_a_token_joins_as_many_hosts_as_it_has_uses() -> None:
    joins = registry()
    token = joins.create(ttl_s=60, uses=2, by="root", now_s=0.0)
    assert joins.admit(token.token_id, "n1", 1.0) == token.secret
    key1 = joins.join(token.token_id, "n1", peer="10.0.0.1:1", now_s=1.0)
    assert [r["uses_left"] for r in joins.listing(1.0)] == [1]
    key2 = joins.join(token.token_id, "n2", peer="10.0.0.2:1", now_s=2.0)
    assert len(key1) == len(key2) == 32 and key1 != key2
    assert joins.node_key("n1") == key1 and joins.node_key("n2") == key2
    assert joins.listing(2.0) == []  # used up: gone
    with pytest.raises(AuthenticationFailed, match="unknown: used up, revoked"):
        joins.admit(token.token_id, "n3", 3.0)


def test_an_expired_token_is_refused_and_then_forgotten() -> None:
    joins = registry()
    token = joins.create(ttl_s=60, uses=1, by="root", now_s=0.0)
    joins.admit(token.token_id, "n1", 59.0)
    with pytest.raises(AuthenticationFailed, match="expired 0:01 ago"):
        joins.admit(token.token_id, "n1", 61.0)
    assert joins.listing(61.0) == []
    with pytest.raises(AuthenticationFailed, match="unknown"):
        joins.admit(token.token_id, "n1", 62.0)


def test_a_node_id_with_its_own_key_cannot_be_joined_again_until_forgotten() -> None:
    joins = registry()
    token = joins.create(ttl_s=60, uses=3, by="root", now_s=0.0)
    joins.join(token.token_id, "n1", peer="p", now_s=1.0)
    with pytest.raises(NodeConflict, match="node n1 has joined already"):
        joins.admit(token.token_id, "n1", 2.0)
    assert joins.forget_node("n1") and joins.node_key("n1") is None
    joins.join(token.token_id, "n1", peer="p", now_s=3.0)
    with pytest.raises(InvalidRequest, match="cannot join"):
        joins.admit(token.token_id, "bad id", 4.0)


def test_tokens_and_keys_outlive_a_restart_and_a_failed_join_leaves_nothing() -> None:
    store = MemoryStore()
    joins = registry(store)
    token = joins.create(ttl_s=60, uses=2, by="root", now_s=0.0)
    key = joins.join(token.token_id, "n1", peer="p", now_s=1.0)
    before = joins.snapshot()
    joins.join(token.token_id, "n2", peer="p", now_s=2.0)
    joins.restore(before)  # as after a failed commit
    store.commit()
    again = registry(store)
    assert again.node_key("n1") == key and again.node_key("n2") is None
    assert [r["uses_left"] for r in again.listing(3.0)] == [1]
    assert "secret" not in again.listing(3.0)[0]
    assert [n["node_id"] for n in again.nodes()] == ["n1"]
    assert "key" not in again.nodes()[0]


def test_no_tokens_from_a_master_hosts_cannot_pin() -> None:
    joins = JoinRegistry(MemoryStore())
    joins.info = JoinInfo(6860, why_not="the master runs with --insecure-plaintext")
    with pytest.raises(InvalidRequest, match="no join tokens: the master runs with --insecure"):
        joins.create(ttl_s=60, uses=1, by="root", now_s=0.0)


def test_the_join_token_verb_is_for_admins_and_its_secret_for_private_transports() -> None:
    service, _ = make_service(make_state())
    service.joins.info = READY
    alice, admin = ctx("alice"), ctx("root", admin=True)
    tcp_admin = ctx("root", admin=True, transport=Transport.TCP)
    for action in ("create", "list", "revoke"):
        with pytest.raises(PermissionDenied, match="only an admin can manage join tokens"):
            request(service, alice, "join_token", action=action)
    with pytest.raises(PermissionDenied, match="must not cross the network in the clear"):
        request(service, tcp_admin, "join_token", action="create")
    made = request(service, admin, "join_token", action="create", ttl_s=120, uses=2)
    assert parse_join_token(made["token"]).token_id == made["token_id"]
    assert made["ca_hash"] == ca_hash(CA_PEM) and made["port"] == 6860
    assert made["tls_names"] == ["master.lab", "127.0.0.1"] and made["uses"] == 2
    listed = request(service, tcp_admin, "join_token", action="list")["tokens"]
    assert [t["token_id"] for t in listed] == [made["token_id"]]
    revoked = request(service, admin, "join_token", action="revoke", token_id=made["token_id"])
    assert revoked["revoked"] == [made["token_id"]]
    assert request(service, admin, "join_token", action="list")["tokens"] == []


def test_removing_a_node_forgets_its_key() -> None:
    state = make_state()
    service, _ = make_service(state)
    service.joins.info = READY
    token = service.joins.create(ttl_s=60, uses=1, by="root", now_s=0.0)
    service.joins.join(token.token_id, "n1", peer="p", now_s=1.0)
    state.node_join(node_info("n1", 2), now=1.0)
    state.node_leave("n1", 2.0)
    request(service, ctx("root", admin=True), "node_update", node_id="n1", action="drain")
    assert service.joins.node_key("n1") is not None
    request(service, ctx("root", admin=True), "node_update", node_id="n1", action="remove")
    assert service.joins.node_key("n1") is None
