"""Who may hold a connection (mgpu_server.net.admission): networks, the share kept from
unauthenticated peers, the newcomer from a smaller network taking a flooder's place, and the
open-files limit."""

from __future__ import annotations

import resource

import pytest

from mgpu_core.errors import TooManyConnections
from mgpu_server.net import admission
from mgpu_server.net.admission import Admission, Ticket, fit_to_fd_limit, network_of


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("192.0.2.17", "192.0.2.0/24"),
        ("192.0.2.250", "192.0.2.0/24"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.9", "192.0.2.0/24"),  # IPv4 on a dual-stack socket
        ("fe80::1%eth0", "fe80::/64"),
        # This host's own processes: one address each, no one else can use them.
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.7", "127.0.0.7"),
        ("::1", "::1"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_network_of(address: str, network: str) -> None:
    assert network_of(address) == network


class Peers:
    """An Admission and the connections it let in, with who was evicted."""

    def __init__(self, **limits: int) -> None:
        self.admission = Admission(
            max_connections=limits.get("total", 40),
            max_per_network=limits.get("per_network", 100),
            max_unauthenticated_per_network=limits.get("preauth_per_network", 100),
        )
        self.evicted: list[str] = []
        self.open: list[Ticket] = []

    def connect(self, group: str, *, authenticated: bool = False) -> Ticket:
        name = f"{group}#{len(self.open)}"
        ticket = self.admission.admit(
            group, authenticated=authenticated, evict=lambda: self.evicted.append(name)
        )
        self.open.append(ticket)
        return ticket

    def refused(self, group: str, *, authenticated: bool = False) -> str:
        with pytest.raises(TooManyConnections) as info:
            self.connect(group, authenticated=authenticated)
        return info.value.message


def test_per_network_limits_authenticated_or_not() -> None:
    peers = Peers(per_network=3, preauth_per_network=2)
    peers.connect("a")
    peers.connect("a")
    assert "unauthenticated connections from a" in peers.refused("a")
    peers.admission.authenticated(peers.open[0])
    peers.connect("a")  # a place left the unauthenticated count
    assert peers.refused("a") == "too many connections from a"
    peers.connect("b")  # other networks are counted apart


def test_unauthenticated_peers_get_a_share_and_the_rest_is_kept() -> None:
    peers = Peers(total=8)  # a share of 2
    first, _ = peers.connect("a"), peers.connect("b")
    assert peers.refused("c") == "too many unauthenticated connections in total"
    for ticket in peers.open:
        peers.admission.authenticated(ticket)
    for _ in range(2):
        peers.connect("c")
    # Authenticated (a Unix socket user): any place but the total.
    for _ in range(4):
        peers.connect("unix:uid=1", authenticated=True)
    assert peers.admission.total == 8 and peers.evicted == []
    peers.admission.release(first)
    peers.connect("unix:uid=1", authenticated=True)


def test_a_newcomer_takes_the_place_of_the_largest_network_oldest_first() -> None:
    peers = Peers(total=24)  # a share of 6
    for group in "aaaabb":
        peers.connect(group)
    victim = peers.open[0]
    peers.connect("c")  # "a" holds 4 >= 0 + 2: its oldest goes
    assert peers.evicted == ["a#0"] and not victim.counted
    peers.admission.release(victim)  # its handler ends later: counted once
    assert peers.admission.preauth_total == 6 and peers.admission.total == 6
    peers.connect("c")  # "a" 3 >= 1 + 2
    assert peers.evicted == ["a#0", "a#1"]
    # Now a 2, b 2, c 2: nobody holds two more than "c" would; a new network still gets in.
    assert peers.refused("c") == "too many unauthenticated connections in total"
    peers.connect("d")
    assert peers.evicted == ["a#0", "a#1", "a#2"]
    assert peers.refused("d") == "too many unauthenticated connections in total"


def test_a_known_peer_takes_a_strangers_place_when_all_are_taken() -> None:
    peers = Peers(total=4)  # a share of 1
    peers.connect("a")
    for _ in range(3):
        peers.connect("unix:uid=1", authenticated=True)
    peers.connect("unix:uid=2", authenticated=True)
    assert peers.evicted == ["a#0"]
    assert peers.refused("unix:uid=2", authenticated=True) == "too many connections in total"


def test_a_released_connection_frees_its_places() -> None:
    peers = Peers(total=4, per_network=1)
    ticket = peers.connect("a")
    peers.admission.release(ticket)
    peers.admission.release(ticket)  # twice (an evicted one's handler): counted once
    assert peers.admission.total == 0 and peers.admission.preauth_total == 0
    peers.connect("a")


def test_max_connections_fits_the_open_files_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {"soft": 1024, "hard": 4096}
    raised: list[int] = []

    def getrlimit(which: int) -> tuple[int, int]:
        return limits["soft"], limits["hard"]

    def setrlimit(which: int, value: tuple[int, int]) -> None:
        raised.append(value[0])
        limits["soft"] = value[0]

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert fit_to_fd_limit(2000) == 2000  # raised as far as needed
    assert raised == [2000 + admission.FD_RESERVE]
    assert fit_to_fd_limit(10_000) == 4096 - admission.FD_RESERVE  # the hard limit binds
    assert fit_to_fd_limit(100) == 100

    def refuse(which: int, value: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    limits["soft"] = 256
    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert fit_to_fd_limit(4096) == 256 - admission.FD_RESERVE
