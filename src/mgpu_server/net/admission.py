"""Who may hold a connection to the master, decided the moment it is accepted: before a TLS
handshake (the costliest thing a stranger can make us do) and before a byte is read.

Connections are counted per network, not per address: an IPv4 /24 or an IPv6 /64, since one
host holds a whole /64 and hopping addresses in it costs an attacker nothing. Loopback
addresses are counted one by one (they are processes on the master's own host, which no one
outside can pose as), and the Unix socket per user (the kernel names them).

A peer that has not proven who it is yet (a TCP peer before its key or token) is
*unauthenticated*, and those may hold only a share of the connections
(``max_connections // PREAUTH_SHARE``, at most MAX_PREAUTH_CONNECTIONS), at most
``max_unauthenticated_per_network`` from one network: the rest is kept for nodes and
authenticated users, so a flood of strangers cannot take the places that nodes reconnecting
after a blip need, and what strangers cost is bounded (each TLS connection costs asyncio
~300 KB of buffers before a byte of ours is read, and each may hold one frame unread).

When the unauthenticated share is full, a newcomer from a network with fewer such connections
than the network holding the most takes the place of that network's oldest one: a flood from a
few networks cannot keep out a user or a node from another (they would need as many networks
as there are places).
"""

from __future__ import annotations

import ipaddress
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass

from mgpu_core.aio import ReadBudget
from mgpu_core.errors import TooManyConnections
from mgpu_core.protocol import PREAUTH_MAX_FRAME_BYTES

log = logging.getLogger(__name__)

# Unauthenticated connections may take at most this fraction (1/N) of --max-connections, and
# no more than MAX_PREAUTH_CONNECTIONS (handshakes take milliseconds: a thousand nodes coming
# back at once wait a moment, they are not refused for good; see the agent's backoff).
PREAUTH_SHARE = 4
MAX_PREAUTH_CONNECTIONS = 256
# Unread bytes all unauthenticated connections may hold together (each may hold one frame of
# PREAUTH_MAX_FRAME_BYTES); past it the ones holding more than a hello's worth are cut.
PREAUTH_BUFFER_BYTES = 32 * 1024 * 1024
PREAUTH_SMALL_BYTES = 16 * 1024
# Files the master needs besides its connections: the database and its WAL, logs, the
# listening sockets, and what Python and SQLite open along the way.
FD_RESERVE = 64


def network_of(address: str) -> str:
    """The network a TCP peer's address is counted in: its /24 (IPv4), its /64 (IPv6), or
    itself for a loopback address. An address that does not parse counts on its own."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the scope goes
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # an IPv4 peer on a dual-stack socket
    if ip.is_loopback:
        return str(ip)
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def fit_to_fd_limit(max_connections: int) -> int:
    """``max_connections``, or less where the process may not open that many files: the soft
    RLIMIT_NOFILE is raised towards the hard one first (as far as needed); past what is left
    after FD_RESERVE, accept() would fail with EMFILE for everyone, nodes included."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < want:
        raised = want if hard == resource.RLIM_INFINITY else min(hard, want)
        if raised > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                soft = raised
            except (ValueError, OSError) as exc:
                log.warning("cannot raise the open files limit to %d: %s", raised, exc)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return max_connections
    usable = max(1, soft - FD_RESERVE)
    log.warning(
        "max connections lowered from %d to %d: the master may open %d files (ulimit -n), "
        "%d of them kept for its own",
        max_connections,
        usable,
        soft,
        FD_RESERVE,
    )
    return usable


@dataclass(slots=True, eq=False)
class Ticket:
    """One admitted connection: where it is counted, and how to end it to make room."""

    group: str
    preauth: bool
    evict: Callable[[], None]
    counted: bool = True


class Admission:
    def __init__(
        self,
        *,
        max_connections: int,
        max_per_network: int,
        max_unauthenticated_per_network: int,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_network = max_per_network
        self.max_preauth_per_network = max_unauthenticated_per_network
        self.max_preauth = max(1, min(max_connections // PREAUTH_SHARE, MAX_PREAUTH_CONNECTIONS))
        # What every unauthenticated connection's unread bytes count against (mgpu_core.aio).
        self.budget = ReadBudget(PREAUTH_BUFFER_BYTES, small_bytes=PREAUTH_SMALL_BYTES)
        self.frame_bytes = PREAUTH_MAX_FRAME_BYTES
        self.total = 0
        self._by_group: dict[str, int] = {}
        # Unauthenticated connections per group, oldest first (dicts keep insertion order).
        self._preauth: dict[str, dict[Ticket, None]] = {}
        self.preauth_total = 0

    def admit(self, group: str, *, authenticated: bool, evict: Callable[[], None]) -> Ticket:
        """Count a new connection from ``group``, or raise TooManyConnections saying which
        limit it met. ``authenticated``: the peer is known already (the Unix socket).
        ``evict`` ends the connection if a newcomer from another network needs its place."""
        if self._by_group.get(group, 0) >= self.max_per_network:
            raise TooManyConnections(f"too many connections from {group}")
        mine = len(self._preauth.get(group, ()))
        if not authenticated:
            if mine >= self.max_preauth_per_network:
                raise TooManyConnections(f"too many unauthenticated connections from {group}")
            if self.preauth_total >= self.max_preauth and not self._evict_for(mine):
                raise TooManyConnections("too many unauthenticated connections in total")
        # A known peer outranks any stranger; a stranger only one from a larger network.
        if self.total >= self.max_connections and not self._evict_for(
            -2 if authenticated else mine
        ):
            raise TooManyConnections("too many connections in total")
        ticket = Ticket(group, not authenticated, evict)
        self.total += 1
        self._by_group[group] = self._by_group.get(group, 0) + 1
        if ticket.preauth:
            self._preauth.setdefault(group, {})[ticket] = None
            self.preauth_total += 1
        return ticket

    def authenticated(self, ticket: Ticket) -> None:
        """The peer proved who it is: its place leaves the unauthenticated share."""
        if ticket.counted and ticket.preauth:
            self._leave_preauth(ticket)

    def release(self, ticket: Ticket) -> None:
        """The connection ended (a no-op for one evicted, which was released then)."""
        if not ticket.counted:
            return
        ticket.counted = False
        if ticket.preauth:
            self._leave_preauth(ticket)
        self.total -= 1
        left = self._by_group[ticket.group] - 1
        if left:
            self._by_group[ticket.group] = left
        else:
            del self._by_group[ticket.group]

    def _leave_preauth(self, ticket: Ticket) -> None:
        ticket.preauth = False
        tickets = self._preauth[ticket.group]
        del tickets[ticket]
        if not tickets:
            del self._preauth[ticket.group]
        self.preauth_total -= 1

    def _evict_for(self, mine: int) -> bool:
        """Make room for a newcomer whose network holds ``mine`` unauthenticated connections:
        end the oldest of the network holding the most, if that is at least two more (so the
        newcomer's network does not become the largest in turn). Whether it did."""
        if not self._preauth:
            return False
        tickets = max(self._preauth.values(), key=len)
        if len(tickets) < mine + 2:
            return False
        victim = next(iter(tickets))
        self.release(victim)
        victim.evict()
        return True
