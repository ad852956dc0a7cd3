"""A TCP proxy on 127.0.0.1 that can blackhole traffic: a network partition without signals.

While blackholed, the proxy keeps every connection open but forwards nothing in either
direction (what it reads is dropped, as a partitioned network drops packets), so neither side
sees a close or an error: only silence, as with a cable pulled between two switches. New
connections are accepted and left silent too. ``heal()`` resumes forwarding for the
connections made after it (those made before stay dead: their byte streams have holes, and
real TCP would have timed them out).
"""

from __future__ import annotations

import selectors
import socket
import threading
from types import TracebackType


class BlackholeProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._blackholed = False
        self._epoch = 0  # connections of an earlier epoch stay silent after a heal
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blackhole-proxy", daemon=True)

    def __enter__(self) -> BlackholeProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def blackhole(self) -> None:
        with self._lock:
            self._blackholed = True
            self._epoch += 1

    def heal(self) -> None:
        with self._lock:
            self._blackholed = False

    def _forwarding(self, epoch: int) -> bool:
        with self._lock:
            return not self._blackholed and epoch == self._epoch

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        self._listener.setblocking(False)
        sel.register(self._listener, selectors.EVENT_READ, None)
        pairs: dict[socket.socket, tuple[socket.socket, int]] = {}
        try:
            while not self._closing.is_set():
                for key, _ in sel.select(timeout=0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept(sel, pairs)
                    else:
                        self._pump(sel, pairs, sock)
        finally:
            for sock in pairs:
                sock.close()
            sel.close()

    def _accept(
        self, sel: selectors.BaseSelector, pairs: dict[socket.socket, tuple[socket.socket, int]]
    ) -> None:
        client, _ = self._listener.accept()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            epoch = self._epoch
        for a, b in ((client, upstream), (upstream, client)):
            a.setblocking(False)
            pairs[a] = (b, epoch)
            sel.register(a, selectors.EVENT_READ, None)

    def _pump(
        self,
        sel: selectors.BaseSelector,
        pairs: dict[socket.socket, tuple[socket.socket, int]],
        sock: socket.socket,
    ) -> None:
        if sock not in pairs:
            return  # closed with its peer earlier in this same batch of events
        peer, epoch = pairs[sock]
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            for s in (sock, peer):
                if s in pairs:
                    sel.unregister(s)
                    del pairs[s]
                    s.close()
            return
        if self._forwarding(epoch):
            try:
                peer.setblocking(True)
                peer.sendall(data)
                peer.setblocking(False)
            except OSError:
                pass  # the other side went away: its own read ends the pair
