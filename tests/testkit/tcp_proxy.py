"""A TCP proxy for fault tests: put between a client and a server, it can cut every connection
and refuse new ones (the server gone), stall new ones (accepted, never answered), and restore."""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import TracebackType

_BUFFER = 65536


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`, one thread per connection.

    `cut()` closes every open connection at once and refuses new ones (closed as soon as
    accepted: the client reads EOF, as when the server process dies); `stall()` accepts new ones
    and forwards nothing (a server that hangs); `restore()` forwards again.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._mode = "forward"  # or "refuse", "stall"
        self._stopped = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._acceptor.start()
        return self

    def cut(self) -> None:
        """Close every open connection and refuse new ones until `restore`."""
        with self._lock:
            self._mode = "refuse"
            self._close_all()

    def stall(self) -> None:
        """Close every open connection; accept new ones but forward nothing until `restore`."""
        with self._lock:
            self._mode = "stall"
            self._close_all()

    def restore(self) -> None:
        """Forward new connections again (connections cut stay cut; stalled ones are closed)."""
        with self._lock:
            self._mode = "forward"
            self._close_all()

    def stop(self) -> None:
        self._stopped.set()
        with suppress(OSError):  # wakes the acceptor blocked in accept (close alone does not)
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            self._close_all()
        self._acceptor.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def connections(self) -> int:
        """Sockets open on either side (two for each forwarded connection)."""
        with self._lock:
            return len(self._open)

    def _close_all(self) -> None:
        for sock in self._open:
            with suppress(OSError):  # shutdown wakes the forwarding thread blocked in select on it
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was closed by stop()
                return
            with self._lock:
                mode = self._mode
                if mode == "refuse":
                    client.close()
                    continue
                self._open.add(client)
            if mode == "stall":
                continue  # kept open (and closed by restore, cut or stop), never answered
            threading.Thread(target=self._forward, args=(client,), name="tcp-proxy-conn", daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            self._discard(client)
            return
        with self._lock:
            if client not in self._open:  # cut while connecting
                upstream.close()
                return
            self._open.add(upstream)
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            try:
                while True:
                    for key, _ in selector.select():
                        source = key.fileobj
                        assert isinstance(source, socket.socket)
                        data = source.recv(_BUFFER)
                        if not data:
                            return
                        peers[source].sendall(data)
            except (OSError, ValueError):  # closed by cut/stop (ValueError: fd -1 in select)
                return
            finally:
                self._discard(client)
                self._discard(upstream)

    def _discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with suppress(OSError):
            sock.close()


@contextmanager
def tcp_proxy(target_host: str, target_port: int) -> Iterator[TcpProxy]:
    """A started proxy to `target`, stopped afterwards."""
    with TcpProxy(target_host, target_port) as proxy:
        yield proxy
