"""What both ends of a join agree on (mgpu_core.joining): the token's form, the CA pin's form,
the node ids a join may take; and the durations a token's --ttl is written in."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mgpu_core.errors import ConfigError
from mgpu_core.joining import (
    ca_hash,
    new_join_token,
    node_id_problem,
    parse_ca_hash,
    parse_join_token,
)
from mgpu_core.tls import cert_der
from mgpu_core.units import parse_duration_s
from mgpu_server.tlsinit import make_cluster_certs


def test_a_join_token_prints_and_parses_back() -> None:
    token = new_join_token()
    assert parse_join_token(str(token)) == token
    assert parse_join_token(f"  {str(token).upper()}\n") == token
    for bad in ("", "abc", str(token) + "0", str(token).replace(".", ":"), "mgpu1.a.b"):
        with pytest.raises(ConfigError, match="not a join token"):
            parse_join_token(bad)


def test_the_ca_hash_is_sha256_over_the_der(tmp_path: Path) -> None:
    make_cluster_certs(tmp_path, ["master.lab"], days=1, force=False)
    digest = ca_hash((tmp_path / "ca.pem").read_text())
    assert digest == "sha256:" + hashlib.sha256(cert_der(tmp_path / "ca.pem")).hexdigest()
    assert digest == parse_ca_hash(digest.upper())
    for bad in ("sha256:abc", "md5:" + "0" * 64, "0" * 64, "sha256:" + "g" * 64):
        with pytest.raises(ConfigError, match="not a CA hash"):
            parse_ca_hash(bad)
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        ca_hash("garbage")


@pytest.mark.parametrize("node_id", ["gpu07", "a", "node-1.lab_x", "9" * 63])
def test_node_ids_a_join_may_take(node_id: str) -> None:
    assert node_id_problem(node_id) == ""


@pytest.mark.parametrize("node_id", ["", "-x", ".x", "a b", 'a"b', "a\nb", "é", "9" * 64])
def test_node_ids_a_join_may_not_take(node_id: str) -> None:
    assert "cannot join" in node_id_problem(node_id)


def test_durations() -> None:
    assert [parse_duration_s(t) for t in ("90", "90s", "30m", "1h", "1h30m", "7d", " 2H ")] == [
        90,
        90,
        1800,
        3600,
        5400,
        7 * 86400,
        7200,
    ]
    for bad in ("", "h", "1x", "-1h", "1.5h", "1 h"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration_s(bad)
