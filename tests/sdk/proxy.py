"""A small TCP proxy in front of Envoy that can misbehave on purpose: drop a
response after the request went through, cut every open connection, or refuse
new ones for a while. It also records the Idempotency-Key of every request."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from types import TracebackType

_KEY = re.compile(rb"(?im)^idempotency-key:\s*(\S+)\r$")


class ChaosProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.drop_responses = 0
        self.refusing = False
        self.idempotency_keys: list[str] = []
        self.connections = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_all(self) -> None:
        """Closes every open connection, both sides, at once."""
        with self._lock:
            sockets = list(self._open)
            self._open.clear()
        for sock in sockets:
            _close(sock)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                refuse = self.refusing
                drop = self.drop_responses > 0
                if drop:
                    self.drop_responses -= 1
            if refuse:
                _close(client)
                continue
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(
                target=self._responses, args=(upstream, client, drop), daemon=True
            ).start()

    def _requests(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                with self._lock:
                    self.idempotency_keys.extend(k.decode() for k in _KEY.findall(chunk))
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(target)

    def _responses(self, source: socket.socket, target: socket.socket, drop: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if drop:
                    # The server answered, so the request took effect; the
                    # client never hears of it.
                    break
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(target)
            _close(source)

    def close(self) -> None:
        self._stopped = True
        _close(self.listener)
        self.cut_all()

    def __enter__(self) -> ChaosProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
