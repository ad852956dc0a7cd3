"""Blocking-socket adapter over the sans-I/O framing, for clients (no asyncio import:
client start-up time matters).

A Unix-socket connection uses ``_socket`` directly: the ``socket`` module wraps the same
object but imports enum, selectors and functools (~2 ms of a ~10 ms command); TCP (and TLS)
connections import it.
"""

from __future__ import annotations

import _socket

from mgpu_core.config import Address, check_transport
from mgpu_core.errors import ConnectionClosed, MasterUnreachable
from mgpu_core.protocol import (
    MAX_FRAME_BYTES,
    FrameDecoder,
    Message,
    encode_frame,
    prefer_small_codec,
)

_RECV_BYTES = 256 * 1024

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket


class BlockingConnection:
    __slots__ = ("_decoder", "_pending", "_sock", "address", "binding")

    def __init__(
        self, sock: socket.socket | _socket.socket, address: Address, max_frame_bytes: int
    ) -> None:
        prefer_small_codec()  # a blocking connection is a client's: small frames, no msgpack
        self._sock = sock
        self.address = address
        self.binding = b""  # the TLS channel binding the handshake's proofs cover
        self._decoder = FrameDecoder(max_frame_bytes)
        self._pending: list[Message] = []  # a few at a time: no deque (collections' import)

    @classmethod
    def connect(
        cls, address: Address, *, timeout_s: float, max_frame_bytes: int = MAX_FRAME_BYTES
    ) -> BlockingConnection:
        sock: socket.socket | _socket.socket
        try:
            if address.path:
                sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                try:
                    sock.settimeout(timeout_s)
                    sock.connect(address.path)
                except OSError:
                    sock.close()
                    raise
            else:
                import socket

                sock = socket.create_connection((address.host, address.port), timeout=timeout_s)
                try:
                    # Connected (nobody there: unreachable), nothing sent yet: without a CA to
                    # check the master by, or an explicit choice of plain TCP, nothing is.
                    check_transport(address)
                except BaseException:
                    sock.close()
                    raise
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if address.tls_ca:
                    sock = _wrap_tls(sock, address)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise MasterUnreachable(f"cannot reach mgpu master at {address}: {reason}") from None
        except UnicodeError:  # the resolver's IDNA encoding: an empty or undecodable label
            raise MasterUnreachable(
                f"cannot reach mgpu master at {address}: not a valid host name"
            ) from None
        sock.settimeout(None)
        conn = cls(sock, address, max_frame_bytes)
        if address.tls_ca:
            from mgpu_core.tls import peer_binding

            conn.binding = peer_binding(sock)  # type: ignore[arg-type]  # an SSLSocket
        return conn

    def send(self, msg: Message) -> None:
        try:
            self._sock.sendall(encode_frame(msg))
        except OSError as exc:
            raise ConnectionClosed(f"lost connection to master at {self.address}: {exc}") from None

    def recv(self, timeout_s: float | None = None) -> Message:
        """Next message; ``TimeoutError`` if none within timeout_s, ConnectionClosed at EOF."""
        self._sock.settimeout(timeout_s)
        while not self._pending:
            try:
                data = self._sock.recv(_RECV_BYTES)
            except TimeoutError:
                raise
            except OSError as exc:
                raise ConnectionClosed(
                    f"lost connection to master at {self.address}: {exc}"
                ) from None
            if not data:
                raise ConnectionClosed(f"master at {self.address} closed the connection")
            self._pending.extend(self._decoder.feed(data))
        return self._pending.pop(0)

    def fileno(self) -> int:
        return self._sock.fileno()

    def buffered(self) -> bool:
        """Messages decoded and not yet read, or bytes TLS has decrypted that select cannot
        see on the socket."""
        pending = getattr(self._sock, "pending", None)  # an SSLSocket's
        return bool(self._pending) or bool(pending is not None and pending())

    def close(self) -> None:
        self._sock.close()


def _wrap_tls(sock: socket.socket, address: Address) -> socket.socket:
    """TLS over ``sock``, the master's certificate checked against the cluster's CA; a
    certificate that does not verify is an OSError (ssl.SSLError) like any failed connect."""
    import ssl
    from pathlib import Path

    from mgpu_core.tls import client_context

    try:
        return client_context(Path(address.tls_ca)).wrap_socket(sock, server_hostname=address.host)
    except ssl.SSLError as exc:
        sock.close()
        # Most often a master run with --insecure-plaintext, or one whose certificate is not
        # from this CA (another cluster, or someone else on its address).
        raise OSError(
            f"TLS with the master failed ({exc.reason or exc}): is {address.tls_ca} its CA?"
        ) from None
    except BaseException:
        sock.close()
        raise
