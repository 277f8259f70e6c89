"""Running a test module's requests over HTTP/1.1 and HTTP/2 alike (SPEC §7: each stream is
one request through the same router, filters and errors). A module parametrises its
gateway fixture with `PROTOCOLS`, gives it `listener()` (h2c on, so one port speaks both)
and opens its connections with `connect(port, protocol)`: an HTTP/1.1 `Client`, or an
adapter over `H2Client` with the same `request()` and the same response accessors."""

from __future__ import annotations

from client import Client
from h2client import H2Client

PROTOCOLS = ["HTTP/1.1", "HTTP/2"]


def listener(name: str = "http") -> dict:
    return {"name": name, "address": "127.0.0.1:@PORT@", "h2c": True}


class H2Connection:
    """`Client.request()` over one HTTP/2 connection, a stream per request."""

    def __init__(self, port: int):
        self.c = H2Client(port)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.c.close()

    def request(self, method: str = "GET", target: str = "/", headers=None, body: bytes = b"",
                host: str | None = "example.test", **_):
        items = headers.items() if isinstance(headers, dict) else (headers or [])
        r = self.c.request(method, target, headers=[(n.lower(), v) for n, v in items], body=body,
                           authority=host)
        assert r.reset_code is None, r
        return r


def connect(port: int, protocol: str):
    return H2Connection(port) if protocol == "HTTP/2" else Client(port)
