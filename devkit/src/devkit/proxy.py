"""A loopback TCP proxy whose link can be cut, stalled and restored: a network outage on demand.

With `reply_delay` every answer of the server waits that long before it is passed on: the round
trip of a distant or distributed server (a CockroachDB commit), on loopback.
"""

from __future__ import annotations

import socket
import threading
import time

from .net import free_port


class Proxy:
    def __init__(self, target_port: int, port: int | None = None, reply_delay: float = 0.0):
        self.target_port = target_port
        self.reply_delay = reply_delay
        self.port = port or free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        self.bytes_forwarded = 0

    def start(self) -> "Proxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for s in (client, upstream):  # Nagle's wait for an ACK would add its own delay to every answer
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns += [client, upstream]
            for a, b, delay in ((client, upstream, 0.0), (upstream, client, self.reply_delay)):
                threading.Thread(target=self._pipe, args=(a, b, delay), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, delay: float = 0.0) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()  # stalled: connections stay open, nothing moves
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
                self.bytes_forwarded += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Stop listening and reset every open connection."""
        if self._listener:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        self.start()

    def stall(self) -> None:
        """Keep every connection open but forward nothing (a hung store, not a refused one)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"
