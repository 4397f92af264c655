"""A real HTTP auth_http service for the tests, in a thread.

``AuthServer(handler)``: ``handler(headers: dict[str, str]) -> list[tuple[str, str]]``
returns the response headers; ``raw=`` bytes may replace the whole response,
``delay`` makes it wait before answering.  Every request's raw bytes are kept
in ``requests`` so tests can check nginx's exact header order.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

Handler = Callable[[dict[str, str]], "list[tuple[str, str]] | bytes"]


def route_to(port: int, host: str = "127.0.0.1") -> Handler:
    def handler(headers: dict[str, str]) -> list[tuple[str, str]]:
        return [("Auth-Status", "OK"), ("Auth-Server", host), ("Auth-Port", str(port))]

    return handler


class PasswordRouter:
    """A mail provider's auth service: the password checked against ``users``, the login
    sent to the backend of its Auth-Protocol in ``ports`` (which a test may change).

    A protocol without a backend gets ``unknown`` as its Auth-Status.
    """

    def __init__(
        self,
        ports: dict[str, int],
        users: dict[str, str],
        host: str = "127.0.0.1",
        unknown: str = "Invalid login or password",
    ) -> None:
        self.ports = ports
        self.users = users
        self.host = host
        self.unknown = unknown

    def __call__(self, h: dict[str, str]) -> list[tuple[str, str]]:
        port = self.ports.get(h.get("auth-protocol", ""))
        if port is None:
            return [("Auth-Status", self.unknown)]
        if h.get("auth-pass") != self.users.get(h.get("auth-user", "")):
            return [("Auth-Status", "Invalid login or password")]
        return [("Auth-Status", "OK"), ("Auth-Server", self.host), ("Auth-Port", str(port))]


class AuthServer:
    def __init__(self, handler: Handler, delay: float = 0.0) -> None:
        self.handler = handler
        self.delay = delay
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}/auth"

    def requests_since(self, n: int, count: int = 1, timeout: float = 5) -> list[bytes]:
        """The requests after the first ``n``, once there are ``count`` of them."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < n + count:
            assert time.monotonic() < deadline, "no auth request"
            time.sleep(0.01)
        return self.requests[n:]

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.requests.append(data)
            headers: dict[str, str] = {}
            for line in data.split(b"\r\n")[1:]:
                if b":" in line:
                    k, _, v = line.partition(b":")
                    headers[k.decode("latin-1").lower()] = v.strip().decode("latin-1")
            if self.delay:
                time.sleep(self.delay)
            out = self.handler(headers)
            if isinstance(out, bytes):
                raw = out
            else:
                raw = (
                    b"HTTP/1.0 200 OK\r\n"
                    + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in out)
                    + b"\r\n"
                )
            with contextlib.suppress(OSError):
                conn.sendall(raw)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self.thread.join(2)

    def __enter__(self) -> AuthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
