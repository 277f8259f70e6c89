"""TLS (issue 4, docs/tls.md) with real handshakes: Python's ssl module as the client (and
as a TLS upstream), `openssl s_client` where it says something Python cannot.

Certificates are made once per session in a temporary directory by
conf/make-test-certs.sh, plus a few made here with openssl and the same dev CA: an exact
and a wildcard name for SNI, fresh leaves for the reload test.

Covered: an HTTPS request proxied with the gateway's headers (HSTS over TLS only), SNI
(exact, wildcard, default), ECDSA and RSA for the same names, TLS 1.0/1.1 refused,
`min_version: TLSv1.3`, ALPN, mTLS (refused without or with an untrusted certificate;
the verified subject forwarded, a client's own X-Client-Cert-Subject replaced or
removed), session resumption (tickets, session ids, TLS 1.3), `redirect_https`, SIGHUP
certificate reload (and a bad file keeping the old certificate), TLS to upstreams (CA,
wrong CA, `verify: false`, `sni`, client certificate), the handshake metrics, garbage
on the TLS port and stalled handshakes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import types
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest

from client import Client
from harness import SOURCE_DIR, admin_get, reserve_port, simple_config, gateway_config, wait_until
from upstream import Upstream

MAKE_CERTS = SOURCE_DIR / "conf" / "make-test-certs.sh"
HSTS = "max-age=31536000; includeSubDomains"
DEV_CLIENT_SUBJECT = "CN=dev-client,O=Gateway Dev"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


# ---------------------------------------------------------------- certificates


def openssl(*args, input: bytes | None = None) -> bytes:
    r = subprocess.run(["openssl", *map(str, args)], input=input, capture_output=True,
                       timeout=30)
    assert r.returncode == 0, f"openssl {' '.join(map(str, args))}: {r.stderr.decode()}"
    return r.stdout


def cert_serial(path: Path) -> int:
    out = openssl("x509", "-in", path, "-noout", "-serial").decode()
    return int(out.strip().split("=", 1)[1], 16)


def make_leaf(d: Path, name: str, cn: str, sans: str, ca: str = "ca",
              usage: str = "serverAuth") -> int:
    """An ECDSA P-256 leaf NAME.crt / NAME.key in d signed by d/CA.crt; returns its serial."""
    key, crt, ext = d / f"{name}.key", d / f"{name}.crt", d / f"{name}.ext"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   f"extendedKeyUsage={usage}\nsubjectAltName={sans}\n")
    csr = openssl("req", "-new", "-key", key, "-subj", f"/O=Gateway Test/CN={cn}")
    serial = secrets.randbits(120) | (1 << 119)
    openssl("x509", "-req", "-CA", d / f"{ca}.crt", "-CAkey", d / f"{ca}.key",
            "-set_serial", serial, "-days", "30", "-sha256", "-extfile", ext, "-out", crt,
            input=csr)
    ext.unlink()
    return serial


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    r = subprocess.run([str(MAKE_CERTS), str(d)], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    c = types.SimpleNamespace(dir=d)
    for name in ("ca", "server", "server-rsa", "upstream", "upstream-ca", "clients-ca", "client"):
        setattr(c, name.replace("-", "_"), d / f"{name}.crt")
    c.server_pair = (d / "server.crt", d / "server.key")
    c.rsa_pair = (d / "server-rsa.crt", d / "server-rsa.key")
    c.upstream_pair = (d / "upstream.crt", d / "upstream.key")
    c.client_pair = (d / "client.crt", d / "client.key")
    c.server_serial = cert_serial(c.server)
    c.rsa_serial = cert_serial(c.server_rsa)
    # for SNI: an exact name and a wildcard, both from the dev CA
    c.api_serial = make_leaf(d, "api", "api.example.test", "DNS:api.example.test")
    c.api_pair = (d / "api.crt", d / "api.key")
    c.wild_serial = make_leaf(d, "wild", "*.wild.example.test", "DNS:*.wild.example.test")
    c.wild_pair = (d / "wild.crt", d / "wild.key")
    return c


# ---------------------------------------------------------------- configs


def tls_listener(name: str, pairs, port="@PORT@", **tls) -> dict:
    return {"name": name, "address": f"127.0.0.1:{port}",
            "tls": {"certificates": [{"cert": str(c), "key": str(k)} for c, k in pairs], **tls}}


def plain_listener(name: str, port, **kw) -> dict:
    return {"name": name, "address": f"127.0.0.1:{port}", **kw}


def as_template(cfg: dict) -> str:
    """The harness replaces @PORT@ / @ADMIN_PORT@ in a string config (JSON is YAML)."""
    cfg.setdefault("admin", {"address": "127.0.0.1:@ADMIN_PORT@"})
    return json.dumps(cfg, indent=2) + "\n"


def tls_config(upstream, listeners, headers=True, **top) -> str:
    cfg = simple_config(upstream, listeners=listeners, **top)
    if headers:
        cfg["default_filters"] = {"security_headers": {}}
    return as_template(cfg)


@contextmanager
def extra_ports(n: int):
    """Ports for listeners beyond the harness's own; reserved until the gateway binds them."""
    socks = [reserve_port() for _ in range(n)]
    try:
        yield [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------- clients


def client_ctx(certs, *, minv=None, maxv=None, alpn=None, cert=None, ciphers=None,
               tickets=True) -> ssl.SSLContext:
    """Verifies the server against the dev CA; the name is not checked (SNI tests ask for
    names the default certificate does not have), the certificate is looked at instead."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(certs.ca)
    if minv:
        ctx.minimum_version = minv
    if maxv:
        ctx.maximum_version = maxv
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert:
        ctx.load_cert_chain(*cert)
    if ciphers:
        ctx.set_ciphers(ciphers)
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
    return ctx


def legacy_ctx() -> ssl.SSLContext:
    """A client that really sends a TLS 1.0/1.1 ClientHello (security level 0 allows it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


def handshake(port: int, ctx: ssl.SSLContext, sni: str | None = "localhost",
              session=None, timeout: float = 5.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni, session=session)
    except BaseException:
        raw.close()
        raise


def https_client(port: int, ctx: ssl.SSLContext, sni: str | None = "localhost",
                 session=None) -> Client:
    """The harness's strict HTTP client over a TLS socket."""
    c = Client(port)
    try:
        c.sock = ctx.wrap_socket(c.sock, server_hostname=sni, session=session)
    except BaseException:
        c.close()
        raise
    return c


def served_serial(port: int, ctx: ssl.SSLContext, sni: str | None = "localhost") -> int:
    with handshake(port, ctx, sni) as s:
        return int(s.getpeercert()["serialNumber"], 16)


def refused(port: int, ctx: ssl.SSLContext, sni: str | None = "localhost") -> str:
    """Handshakes and sends a request; returns how the connection failed. Fails the test if
    an HTTP response comes back. (A TLS 1.3 server verifies the client's certificate after
    the client thinks the handshake is done, so the alert may come with the first read.)"""
    try:
        with handshake(port, ctx, sni) as s:
            s.sendall(b"GET /refused HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = s.recv(4096)
    except (ssl.SSLError, ConnectionError) as e:
        return repr(e)
    assert data == b"", f"an answer came through: {data[:200]!r}"
    return "closed"


def s_client(port: int, *args, stdin: bytes = b"", timeout: float = 15.0):
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
                          input=stdin, capture_output=True, timeout=timeout)


# ---------------------------------------------------------------- metrics

_SAMPLE = re.compile(r'^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$')


def metric(gw, name: str, **labels) -> float:
    status, body = admin_get(gw, "/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def wait_metric(gw, name: str, value: float, timeout: float = 5.0, **labels) -> None:
    last = []

    def reached():
        last[:] = [metric(gw, name, **labels)]
        return last[0] == value

    try:
        wait_until(reached, timeout=timeout, what=f"{name}{labels} == {value}")
    except AssertionError:
        raise AssertionError(f"{name}{labels} is {last[0] if last else '?'}, expected {value}")


# ---------------------------------------------------------------- a TLS upstream


class TlsUpstream(Upstream):
    """The harness's Upstream behind Python's TLS: each accepted connection is wrapped
    (in its own thread) before the usual HTTP serving. Records the SNI of each ClientHello
    and every failed handshake."""

    def __init__(self, name: str, pair, client_ca: Path | None = None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*pair)
        if client_ca:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        self.sni_seen: list = []
        self.handshake_errors: list[str] = []
        self.client_subjects: list = []
        ctx.sni_callback = lambda sslobj, server_name, c: self.sni_seen.append(server_name)
        self.ctx = ctx
        super().__init__(name)

    def _serve(self, conn) -> None:
        try:
            conn.sock = self.ctx.wrap_socket(conn.sock, server_side=True)
            peer = conn.sock.getpeercert()
            if peer:
                self.client_subjects.append(peer.get("subject"))
        except (ssl.SSLError, OSError) as e:
            self.handshake_errors.append(repr(e))
            with self._lock:
                self._open.pop(conn.id, None)
            conn.close()
            return
        super()._serve(conn)


@pytest.fixture
def tls_upstream_factory():
    made = []

    def make(name, pair, client_ca=None):
        u = TlsUpstream(name, pair, client_ca)
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


# ================================================================ tests


def test_https_request_is_proxied_with_the_gateways_headers(gateway_factory, upstream, certs):
    with extra_ports(1) as (plain,):
        gw = gateway_factory(tls_config(upstream, [
            tls_listener("https", [certs.server_pair]), plain_listener("http", plain)]))
    ctx = client_ctx(certs)
    with https_client(gw.port, ctx) as c:
        r = c.request("GET", "/api/over-tls?q=1", host="localhost")
        assert r.status == 200, r
        assert r.header_all("Strict-Transport-Security") == [HSTS]
        assert r.header("X-Content-Type-Options") == "nosniff"
        assert r.header("X-Frame-Options") == "DENY"
        assert r.json()["target"] == "/over-tls?q=1"  # strip_prefix, query kept
        # keep-alive over the same TLS connection
        r = c.request("POST", "/second", body=b"x" * 100_000, host="localhost")
        assert r.status == 200 and r.json()["body_len"] == 100_000
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
    req = upstream.wait_requests(2)[0]
    assert req.header_all("X-Forwarded-Proto") == ["https"]
    assert req.header_all("Host") == ["localhost"]

    with Client(plain) as c:
        r = c.request("GET", "/plain-http")
        assert r.status == 200, r
        assert not r.has_header("Strict-Transport-Security"), r.headers
        assert r.header("X-Content-Type-Options") == "nosniff"
    assert upstream.last().header_all("X-Forwarded-Proto") == ["http"]

    assert gw.find_access(lambda e: e["path"] == "/api/over-tls")["tls"] is True
    assert gw.find_access(lambda e: e["path"] == "/plain-http")["tls"] is False
    wait_metric(gw, "gateway_tls_handshakes_total", 1, listener="https")
    assert metric(gw, "gateway_tls_handshakes_total", listener="http") == 0


def test_https_request_queued_by_the_bulkhead_keeps_its_body(gateway_factory, upstream, certs):
    # The body waits as TLS records the gateway has not decrypted yet, or as plaintext it
    # has: both must reach the upstream once a connection frees.
    cfg = simple_config(upstream, listeners=[tls_listener("https", [certs.server_pair])],
                        workers=1, timeouts={"upstream_connect": "5s"})
    cfg["upstreams"][0].update(max_connections=1, max_pending=4)
    gw = gateway_factory(as_template(cfg))
    ctx = client_ctx(certs)
    body = bytes(range(256)) * 800  # 200 KiB: many records
    with https_client(gw.port, ctx) as busy, https_client(gw.port, ctx) as queued:
        busy.send(b"GET /slow?delay=500 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        upstream.wait_requests(1, timeout=5)
        r = queued.request("POST", "/queued", body=body, host="localhost")
        assert r.status == 200, r
        assert busy.read_response().status == 200
    posted = [q for q in upstream.traffic() if q.path == "/queued"]
    assert len(posted) == 1 and posted[0].body == body


def test_gateway_errors_over_tls_carry_hsts_and_tls_in_the_log(gateway_factory, upstream,
                                                                certs):
    """Every response on a TLS connection is a response to a TLS connection: HSTS and
    `"tls": true` in the access log, also when the gateway refuses the request head."""
    gw = gateway_factory(tls_config(upstream, [tls_listener("https", [certs.server_pair])]))
    ctx = client_ctx(certs)
    with https_client(gw.port, ctx) as c:
        r = c.request("GET", "/x?status=503", host="localhost")  # the upstream's 503
        assert r.status == 503 and r.header_all("Strict-Transport-Security") == [HSTS]
    with https_client(gw.port, ctx) as c:
        r = c.request("GET", "/no-host", host=None)  # 400 after the head was parsed
        assert r.status == 400 and r.header_all("Strict-Transport-Security") == [HSTS], r
    refused_heads = {
        "bad target": b"GET /bad path HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "HTTP/2.0 line": b"GET /v2 HTTP/2.0\r\nHost: localhost\r\n\r\n",
        "431": b"GET /big HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
    }
    got = {}
    for what, head in refused_heads.items():
        with https_client(gw.port, ctx) as c:
            c.send(head)
            r = c.read_response()
            got[what] = (r.status, r.header("Strict-Transport-Security"))
    assert got == {"bad target": (400, HSTS), "HTTP/2.0 line": (400, HSTS), "431": (431, HSTS)}
    entries = gw.wait_access_log(5)
    assert [e["tls"] for e in entries] == [True] * 5, [(e["status"], e["tls"]) for e in entries]


def test_sni_selects_the_certificate(gateway_factory, upstream, certs):
    gw = gateway_factory(tls_config(upstream, [tls_listener(
        "https", [certs.server_pair, certs.api_pair, certs.wild_pair])]))
    ctx = client_ctx(certs)
    cases = {
        "api.example.test": certs.api_serial,           # exact
        "x.wild.example.test": certs.wild_serial,       # wildcard
        "a.b.wild.example.test": certs.server_serial,   # a wildcard covers one label
        "wild.example.test": certs.server_serial,       # ... and not the bare domain
        "unknown.test": certs.server_serial,            # no match: the first certificate
        "localhost": certs.server_serial,
        None: certs.server_serial,                      # no SNI: the first certificate
    }
    got = {sni: served_serial(gw.port, ctx, sni) for sni in cases}
    assert got == cases
    # case and a trailing dot do not matter (Python's ssl lower-cases names; s_client not)
    subjects = {}
    for sni in ("API.Example.TEST", "api.example.test.", "Other.WILD.example.test."):
        r = s_client(gw.port, "-servername", sni, "-CAfile", certs.ca)
        m = re.search(r"^subject=.*CN ?= ?(\S+)$", r.stdout.decode(), re.M)
        subjects[sni] = m and m.group(1)
    assert subjects == {"API.Example.TEST": "api.example.test",
                        "api.example.test.": "api.example.test",
                        "Other.WILD.example.test.": "*.wild.example.test"}, subjects
    # the chosen certificate also serves HTTP on that connection
    with https_client(gw.port, client_ctx(certs), sni="x.wild.example.test") as c:
        assert c.request("GET", "/sni", host="x.wild.example.test").status == 200


def test_ecdsa_and_rsa_certificates_for_the_same_names(gateway_factory, upstream, certs):
    gw = gateway_factory(tls_config(upstream, [tls_listener(
        "https", [certs.server_pair, certs.rsa_pair])]))
    assert served_serial(gw.port, client_ctx(certs)) == certs.server_serial  # ECDSA preferred
    rsa_only = client_ctx(certs, maxv=ssl.TLSVersion.TLSv1_2,
                          ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    assert served_serial(gw.port, rsa_only) == certs.rsa_serial
    # TLS 1.3: a client that signs with RSA-PSS only
    r = s_client(gw.port, "-tls1_3", "-servername", "localhost", "-CAfile", certs.ca,
                 "-sigalgs", "rsa_pss_rsae_sha256")
    out = r.stdout.decode()
    assert "Server public key is 2048 bit" in out and "Verify return code: 0 (ok)" in out, out


def test_protocol_versions_and_ciphers(gateway_factory, upstream, certs):
    gw = gateway_factory(tls_config(upstream, [tls_listener("https", [certs.server_pair])]))
    with handshake(gw.port, client_ctx(certs, maxv=ssl.TLSVersion.TLSv1_2)) as s:
        assert s.version() == "TLSv1.2"
        assert s.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"  # the server's choice
    with handshake(gw.port, client_ctx(certs)) as s:
        assert s.version() == "TLSv1.3"
    # TLS 1.0/1.1 refused with a protocol_version alert
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|protocol version"):
        handshake(gw.port, legacy_ctx())
    r = s_client(gw.port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    err = r.stdout.decode() + r.stderr.decode()
    assert r.returncode != 0 and "alert protocol version" in err, err
    assert "no peer certificate available" in err, err
    # CBC suites with SHA-1 MACs are not in the intermediate profile
    assert "HANDSHAKE_FAILURE" in refused(gw.port, client_ctx(
        certs, maxv=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-SHA:AES128-SHA"))
    wait_metric(gw, "gateway_tls_handshake_errors_total", 3, listener="https")
    wait_metric(gw, "gateway_tls_handshakes_total", 2, listener="https")


def test_min_version_tls13_refuses_tls12(gateway_factory, upstream, certs):
    gw = gateway_factory(tls_config(upstream, [tls_listener(
        "strict", [certs.server_pair], min_version="TLSv1.3")]))
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|protocol version"):
        handshake(gw.port, client_ctx(certs, maxv=ssl.TLSVersion.TLSv1_2))
    r = s_client(gw.port, "-tls1_2", "-CAfile", certs.ca)
    assert r.returncode != 0, r.stdout.decode()
    with https_client(gw.port, client_ctx(certs)) as c:
        assert c.sock.version() == "TLSv1.3"
        assert c.request("GET", "/ok13", host="localhost").status == 200
    wait_metric(gw, "gateway_tls_handshake_errors_total", 2, listener="strict")


def test_alpn_with_http2_off_offers_only_http11(gateway_factory, upstream, certs):
    # SPEC §7: `http2: false` keeps a TLS listener on http/1.1 (test_http2.py has the h2 side)
    listener = {**tls_listener("https", [certs.server_pair]), "http2": False}
    gw = gateway_factory(tls_config(upstream, [listener]))
    for offered, agreed in ((["h2", "http/1.1"], "http/1.1"), (["http/1.1"], "http/1.1"),
                            (["h2"], None), (None, None)):
        with https_client(gw.port, client_ctx(certs, alpn=offered)) as c:
            assert c.sock.selected_alpn_protocol() == agreed, offered
            assert c.request("GET", "/alpn", host="localhost").status == 200
    r = s_client(gw.port, "-alpn", "h2,http/1.1", "-CAfile", certs.ca)
    assert "ALPN protocol: http/1.1" in r.stdout.decode(), r.stdout.decode()


@pytest.fixture
def mtls_gw(gateway_factory, upstream, certs):
    with extra_ports(2) as (plain, tls_only):
        gw = gateway_factory(tls_config(upstream, [
            tls_listener("mtls", [certs.server_pair], client_ca=str(certs.clients_ca)),
            tls_listener("https", [certs.server_pair], port=tls_only),
            plain_listener("http", plain)]))
    gw.plain_port, gw.tls_port = plain, tls_only
    return gw


def test_mtls_refuses_clients_without_a_trusted_certificate(mtls_gw, upstream, certs):
    gw = mtls_gw
    failures = [
        refused(gw.port, client_ctx(certs, maxv=ssl.TLSVersion.TLSv1_2)),  # no certificate
        refused(gw.port, client_ctx(certs)),                               # same, TLS 1.3
        # a certificate from another CA (the dev CA signs servers, not clients)
        refused(gw.port, client_ctx(certs, cert=certs.upstream_pair)),
        refused(gw.port, client_ctx(certs, cert=certs.upstream_pair,
                                    maxv=ssl.TLSVersion.TLSv1_2)),
    ]
    assert all("ALERT" in f or "alert" in f for f in failures), failures
    assert upstream.snapshot() == []
    wait_metric(gw, "gateway_tls_handshake_errors_total", 4, listener="mtls")
    assert metric(gw, "gateway_tls_handshakes_total", listener="mtls") == 0
    assert metric(gw, "gateway_tls_handshake_errors_total", listener="https") == 0


def test_mtls_subject_is_forwarded_and_replaces_the_clients_header(mtls_gw, upstream, certs):
    gw = mtls_gw
    for maxv in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        with https_client(gw.port, client_ctx(certs, cert=certs.client_pair, maxv=maxv)) as c:
            r = c.request("GET", "/whoami", host="localhost", headers=[
                ("X-Client-Cert-Subject", "CN=admin,O=Evil"),
                ("x-client-cert-subject", "CN=root")])
            assert r.status == 200, r
            assert c.request("GET", "/again", host="localhost").status == 200
        reqs = upstream.snapshot()[-2:]
        for req in reqs:
            assert req.header_all("X-Client-Cert-Subject") == [DEV_CLIENT_SUBJECT], req.headers
    wait_metric(gw, "gateway_tls_handshakes_total", 2, listener="mtls")


def test_client_sent_subject_header_is_removed_without_a_client_certificate(mtls_gw, upstream,
                                                                             certs):
    gw = mtls_gw
    spoof = [("X-Client-Cert-Subject", DEV_CLIENT_SUBJECT)]
    with Client(gw.plain_port) as c:
        assert c.request("GET", "/plain", headers=spoof).status == 200
    assert not upstream.last().has_header("X-Client-Cert-Subject"), upstream.last().headers
    # TLS without client_ca: no verified subject either
    with https_client(gw.tls_port, client_ctx(certs, cert=certs.client_pair)) as c:
        assert c.request("GET", "/tls", host="localhost", headers=spoof).status == 200
    assert not upstream.last().has_header("X-Client-Cert-Subject"), upstream.last().headers


def test_session_resumption(gateway_factory, upstream, certs):
    gw = gateway_factory(tls_config(upstream, [tls_listener("https", [certs.server_pair])]))
    kinds = {
        "TLS 1.2 ticket": client_ctx(certs, maxv=ssl.TLSVersion.TLSv1_2),
        "TLS 1.2 session id": client_ctx(certs, maxv=ssl.TLSVersion.TLSv1_2, tickets=False),
        "TLS 1.3 ticket": client_ctx(certs, minv=ssl.TLSVersion.TLSv1_3),
    }
    reused = {}
    for kind, ctx in kinds.items():
        with https_client(gw.port, ctx) as c:
            # a response first: a TLS 1.3 ticket arrives after the handshake
            assert c.request("GET", "/first", host="localhost").status == 200
            session = c.sock.session
            assert not c.sock.session_reused
        for _ in range(2):
            with https_client(gw.port, ctx, session=session) as c:
                reused.setdefault(kind, []).append(c.sock.session_reused)
                assert c.request("GET", "/resumed", host="localhost").status == 200
                session = c.sock.session  # TLS 1.3 tickets are used once
    assert reused == {k: [True, True] for k in kinds}

    sess = gw.workdir / "s_client.sess"
    base = ["-servername", "localhost", "-CAfile", certs.ca]
    r = s_client(gw.port, *base, "-sess_out", sess, "-ign_eof",
                 stdin=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert b"\nNew, TLSv1.3" in r.stdout and sess.exists(), r.stdout.decode()
    r = s_client(gw.port, *base, "-sess_in", sess)
    assert b"\nReused, TLSv1.3" in r.stdout, r.stdout.decode()


def test_redirect_https(gateway_factory, upstream, certs):
    with extra_ports(1) as (tls_port,):
        gw = gateway_factory(tls_config(upstream, [
            plain_listener("http", "@PORT@", redirect_https=True),
            tls_listener("https", [certs.server_pair], port=tls_port)]))
    cases = [
        ("GET", "/p/a?x=1&y=two", "example.test", f"https://example.test:{tls_port}/p/a?x=1&y=two"),
        ("GET", "/", "example.test:8080", f"https://example.test:{tls_port}/"),
        ("POST", "/form?a=b", "shop.example.test:80", f"https://shop.example.test:{tls_port}/form?a=b"),
        ("HEAD", "/h", "[::1]:8080", f"https://[::1]:{tls_port}/h"),
        ("GET", "/q?", "127.0.0.1", f"https://127.0.0.1:{tls_port}/q?"),
    ]
    for method, target, host, location in cases:
        with Client(gw.port) as c:  # a POST's unread body closes the connection
            r = c.request(method, target, host=host, body=b"k=v" if method == "POST" else b"")
            assert r.status == 308, (target, r)
            assert r.header_all("Location") == [location], (host, target, r.headers)
            assert not r.has_header("Strict-Transport-Security")
            if method != "POST":
                assert c.request("GET", "/next", host=host).status == 308  # keep-alive
    assert upstream.snapshot() == []
    # and the target answers there, over TLS
    with https_client(tls_port, client_ctx(certs)) as c:
        r = c.request("GET", "/p/a?x=1&y=two", host="localhost")
        assert r.status == 200 and r.header_all("Strict-Transport-Security") == [HSTS]


def test_no_redirect_when_a_trusted_proxy_already_terminated_tls(gateway_factory, upstream, certs):
    # Behind a load balancer that terminates TLS, the plain listener sees every request:
    # redirecting those the proxy marks https would loop.
    with extra_ports(1) as (tls_port,):
        gw = gateway_factory(tls_config(upstream, [
            plain_listener("http", "@PORT@", redirect_https=True),
            tls_listener("https", [certs.server_pair], port=tls_port)],
            trusted_proxies=["127.0.0.1/32"]))
    with Client(gw.port) as c:
        assert c.request("GET", "/behind-lb", headers={"X-Forwarded-Proto": "https"}).status == 200
        assert c.request("GET", "/plain", headers={"X-Forwarded-Proto": "http"}).status == 308
        assert c.request("GET", "/unmarked").status == 308
    assert [q.path for q in upstream.snapshot()] == ["/behind-lb"]


def test_sighup_reloads_certificates_and_keeps_them_on_a_bad_file(gateway_factory, upstream,
                                                                   certs, tmp_path):
    d = tmp_path / "live"
    d.mkdir()
    for f in ("ca.crt", "ca.key"):
        shutil.copy(certs.dir / f, d / f)
    first = make_leaf(d, "site", "localhost", "DNS:localhost,IP:127.0.0.1")
    gw = gateway_factory(tls_config(upstream, [tls_listener(
        "https", [(d / "site.crt", d / "site.key")])]))
    ctx = client_ctx(certs)
    assert served_serial(gw.port, ctx) == first
    kept = https_client(gw.port, ctx)  # a connection open across the reloads
    try:
        assert kept.request("GET", "/before", host="localhost").status == 200

        # a new key and certificate under the same file names
        second = make_leaf(d, "next", "localhost", "DNS:localhost,IP:127.0.0.1")
        os.replace(d / "next.key", d / "site.key")
        os.replace(d / "next.crt", d / "site.crt")
        gw.signal(signal.SIGHUP)
        wait_metric(gw, "gateway_config_reloads_total", 1, result="success")
        assert served_serial(gw.port, ctx) == second

        # a damaged certificate file: refused, the second certificate stays
        good = (d / "site.crt").read_bytes()
        (d / "site.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                                     b"-----END CERTIFICATE-----\n")
        gw.signal(signal.SIGHUP)
        wait_metric(gw, "gateway_config_reloads_total", 1, result="failure")
        assert served_serial(gw.port, ctx) == second

        # a valid certificate with a key that is not its own: refused as well
        (d / "site.crt").write_bytes((certs.dir / "server.crt").read_bytes())
        gw.signal(signal.SIGHUP)
        wait_metric(gw, "gateway_config_reloads_total", 2, result="failure")
        assert served_serial(gw.port, ctx) == second
        assert metric(gw, "gateway_config_reloads_total", result="success") == 1

        assert kept.request("GET", "/after", host="localhost").status == 200
        (d / "site.crt").write_bytes(good)
    finally:
        kept.close()
    log = gw.app_log_text()
    assert "configuration reload refused" in log, log


def test_upstream_tls(gateway_factory, tls_upstream_factory, certs):
    up = tls_upstream_factory("tls-up", certs.upstream_pair)
    mup = tls_upstream_factory("mtls-up", certs.upstream_pair, client_ca=certs.clients_ca)
    ca = str(certs.upstream_ca)
    upstreams = {
        "good": {"endpoints": [up], "tls": {"ca": ca}},
        "named": {"endpoints": [up], "tls": {"ca": ca, "sni": "localhost"}},
        "wrong_ca": {"endpoints": [up], "tls": {"ca": str(certs.clients_ca)}},
        "wrong_name": {"endpoints": [up], "tls": {"ca": ca, "sni": "other.example.test"}},
        "system_store": {"endpoints": [up], "tls": {}},
        "no_verify": {"endpoints": [up], "tls": {"verify": False}},
        "client_cert": {"endpoints": [mup], "tls": {"ca": ca, "cert": str(certs.client),
                                                     "key": str(certs.client_pair[1])}},
        "no_client_cert": {"endpoints": [mup], "tls": {"ca": ca}},
    }
    routes = [{"name": n, "match": {"path_prefix": f"/{n}/"}, "upstream": n} for n in upstreams]
    gw = gateway_factory(gateway_config(upstreams=upstreams, routes=routes))
    expect = {"good": 200, "named": 200, "wrong_ca": 502, "wrong_name": 502,
              "system_store": 502, "no_verify": 200, "client_cert": 200,
              "no_client_cert": 502}
    got = {}
    with Client(gw.port) as c:
        for n in upstreams:
            r = c.request("GET", f"/{n}/x", host="localhost")
            got[n] = r.status
            if r.status == 502:
                assert r.json()["error_code"] == "BAD_GATEWAY", r
            else:
                assert r.json()["path"] == f"/{n}/x", r
    assert got == expect
    # an IP endpoint sends no SNI; `sni` is sent (and verified)
    assert None in up.sni_seen and "localhost" in up.sni_seen, up.sni_seen
    # the gateway hung up on the upstreams it could not verify (wrong CA, name, store) ...
    wait_until(lambda: len(up.handshake_errors) >= 3, timeout=5,
               what=f"3 refused handshakes on the upstream: {up.handshake_errors}")
    # ... and presented the dev client certificate where asked, or was refused without one
    assert any(mup.client_subjects), mup.client_subjects
    wait_until(lambda: len(mup.handshake_errors) >= 1, timeout=5, what="no_client_cert refused")
    # a second request on the verified upstream reuses or resumes: still 200
    with Client(gw.port) as c:
        assert c.request("GET", "/good/again", host="localhost").status == 200


def test_upstream_protocol_follows_alpn(gateway_factory, tls_upstream_factory, certs):
    # SPEC §8: `auto` speaks what the endpoint's ALPN answer says (this upstream answers
    # none: HTTP/1.1, bodies and keep-alive included); `h2` needs h2 and says so.
    up = tls_upstream_factory("tls-up", certs.upstream_pair)
    ca = str(certs.upstream_ca)
    upstreams = {"auto": {"endpoints": [up], "tls": {"ca": ca}, "protocol": "auto"},
                 "h2": {"endpoints": [up], "tls": {"ca": ca}, "protocol": "h2"}}
    routes = [{"name": n, "match": {"path_prefix": f"/{n}/"}, "upstream": n} for n in upstreams]
    gw = gateway_factory(gateway_config(upstreams=upstreams, routes=routes))
    with Client(gw.port) as c:
        for i in range(3):
            r = c.request("POST", f"/auto/{i}", host="localhost", body=b"b" * 70_000)
            assert r.status == 200 and r.json()["body_len"] == 70_000, r
        r = c.request("GET", "/h2/x", host="localhost")
        assert r.status == 502 and "HTTP/2" in r.json()["message"], r
    assert [q.version for q in up.wait_requests(3)] == ["HTTP/1.1"] * 3


def _read_until_closed(sock: socket.socket, timeout: float, what: str = ""):
    """Reads until EOF or reset; returns what came and when the close was seen."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError(f"{what}: still open after {timeout}s; got {data[:200]!r}")
    return data, time.monotonic()


def _client_hello(certs) -> bytes:
    out, inp = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(certs).wrap_bio(inp, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_garbage_on_the_tls_port(gateway_factory, upstream, certs):
    gw = gateway_factory(tls_config(upstream, [tls_listener("https", [certs.server_pair])]))
    hello = _client_hello(certs)
    assert hello[0] == 0x16 and hello[5] == 1  # a handshake record, a ClientHello
    cs = 44 + hello[43]  # after the random and the session id: the cipher suites' length
    garbage = {
        "plain HTTP": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "binary": bytes(range(256)) * 256,
        "oversized record": b"\x16\x03\x01\xff\xff" + b"\x00" * 70000,
        "data before handshake": b"\x17\x03\x03\x00\x20" + b"\x41" * 32,
        # SSLv2-format hello: type 1, version 2, 6 bytes of cipher specs, 16 of challenge
        "SSLv2 hello": bytes.fromhex("801f" "01" "0002" "0006" "0000" "0010"
                                     "0700c0" "010080") + b"\x11" * 16,
        "mangled ClientHello": hello[:cs] + b"\x00\x03" + hello[cs + 2:],  # odd suite list
        "ClientHello then junk": hello + b"\x15\x03\x03\x00\x02\xff\xff" + b"junk" * 100,
    }
    for what, payload in garbage.items():
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        try:
            try:
                s.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass
            data, _ = _read_until_closed(s, 5, what)
        finally:
            s.close()
        assert b"HTTP/" not in data, (what, data[:200])
        assert gw.running, f"gateway died after {what}:\n{gw.app_log_text()}"
    # a burst of them at once, some cut off mid-way
    def one(i):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            try:
                s.sendall(hello[: 10 + i * 7] if i % 2 else os.urandom(4096))
            except OSError:
                pass
    threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert gw.running
    with https_client(gw.port, client_ctx(certs)) as c:
        assert c.request("GET", "/still-serving", host="localhost").status == 200
    errors = metric(gw, "gateway_tls_handshake_errors_total", listener="https")
    assert errors >= len(garbage), errors
    wait_metric(gw, "gateway_connections_active", 0, listener="https")


def test_stalled_handshake_is_closed_after_header_read(gateway_factory, upstream, certs):
    gw = gateway_factory(tls_config(upstream, [tls_listener("https", [certs.server_pair])],
                                    timeouts={"header_read": "1s"}))
    hello = _client_hello(certs)
    socks = {}
    started = time.monotonic()
    # nothing at all; half a ClientHello; a whole one and then silence (no Finished)
    for what, payload in (("silent", b""), ("half hello", hello[: len(hello) // 2]),
                          ("no finished", hello)):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        if payload:
            s.sendall(payload)
        socks[what] = s
    try:
        closed = {}
        for what, s in socks.items():
            data, at = _read_until_closed(s, 8, what)
            closed[what] = at - started
            if what == "no finished":
                assert data[:1] == b"\x16", data[:20]  # the server's flight came, then a close
        assert all(0.8 <= t <= 5.0 for t in closed.values()), closed
    finally:
        for s in socks.values():
            s.close()
    # a normal client is not affected
    with https_client(gw.port, client_ctx(certs)) as c:
        assert c.request("GET", "/after-stall", host="localhost").status == 200
    wait_metric(gw, "gateway_connections_active", 0, listener="https", timeout=5)


def test_handshake_timeouts_are_counted(gateway_factory, upstream, certs):
    """Issue 4: "Handshake failures, TLS errors and timeouts are counted per listener".
    A client that stops mid-handshake and is closed by the deadline is a failed handshake;
    one that never sent a byte (a TCP health check) need not be."""
    gw = gateway_factory(tls_config(upstream, [tls_listener("https", [certs.server_pair])],
                                    timeouts={"header_read": "1s"}))
    hello = _client_hello(certs)
    socks = []
    try:
        for payload in (hello[: len(hello) // 2], hello):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            s.sendall(payload)
            socks.append(s)
        for s in socks:
            _read_until_closed(s, 6, "stalled handshake")
    finally:
        for s in socks:
            s.close()
    wait_metric(gw, "gateway_tls_handshake_errors_total", 2, listener="https")


def test_a_tls_body_that_must_wait_fills_the_block_without_recursing(gateway_factory, upstream,
                                                                     certs):
    """Over TLS, a body that cannot be parsed yet (its request queued in the bulkhead) fills
    the input block while ciphertext is left over: reading stops until the request can take
    it, and the body then reaches the upstream whole. (onTlsRead called itself again for
    the leftover ciphertext for as long as the block stayed full: a stack overflow.)"""
    cfg = gateway_config(
        upstreams={"up": {"endpoints": [upstream.address], "max_connections": 1, "max_pending": 4}},
        routes=[{"name": "r", "match": {"path_prefix": "/"}, "upstream": "up"}], workers=1,
        timeouts={"upstream_connect": "5s"},
        listeners=[tls_listener("https", [(certs.server, certs.dir / "server.key")])])
    gw = gateway_factory(as_template(cfg))
    body = bytes(range(256)) * 1024  # 256 KiB: many times the block
    with https_client(gw.port, client_ctx(certs)) as busy, \
            https_client(gw.port, client_ctx(certs)) as c:
        busy.sock.settimeout(15)
        c.sock.settimeout(15)
        busy.send(b"GET /slow?delay=800 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        upstream.wait_requests(1, timeout=5)
        c.send(f"PUT /queued?sink=1 HTTP/1.1\r\nHost: localhost\r\n"
               f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert busy.read_response().status == 200
        r = c.read_response()
        assert r.status == 200, r
        assert (r.json()["body_len"], r.json()["body_crc"]) == (len(body), zlib.crc32(body))


def test_pipelined_requests_beyond_the_input_block_over_tls(gateway_factory, upstream, certs):
    """Over TLS, pipelined requests that do not fit in the input block wait as ciphertext
    in the session: each is decrypted as the parser gets to it. (onTlsRead recursed for as
    long as the block stayed full: a stack overflow; then the head cut at the block's end
    was never completed from that ciphertext: 408 after header_read.)"""
    gw = gateway_factory(tls_config(upstream, [tls_listener("https", [certs.server_pair])],
                                    timeouts={"header_read": "2s"}))
    data = b"".join(f"GET /many/{i}?status=204 HTTP/1.1\r\nHost: localhost\r\n"
                    f"X-Pad: {'p' * 1000}\r\n\r\n".encode() for i in range(60))
    with https_client(gw.port, client_ctx(certs)) as c:
        c.sock.settimeout(10)
        c.send(data)
        rs = [c.read_response() for _ in range(60)]
        assert [r.status for r in rs] == [204] * 60
    assert [q.path for q in upstream.snapshot()] == [f"/many/{i}" for i in range(60)]


def test_a_pipelined_head_completed_by_a_full_block_is_no_431(gateway_factory, upstream, certs):
    """A pipelined head begun in one read and completed by the next, which also brings more
    than the input block holds: the head is whole in the full block, only not parsed yet.
    (The full block was answered 431 before the parser looked at it.)"""
    gw = gateway_factory(tls_config(upstream, [tls_listener("https", [certs.server_pair])]))
    first = b"GET /first?status=204 HTTP/1.1\r\nHost: localhost\r\n\r\n"
    data = first + b"".join(f"GET /many/{i}?status=204 HTTP/1.1\r\nHost: localhost\r\n"
                            f"X-Pad: {'p' * 1000}\r\n\r\n".encode() for i in range(60))
    cut = len(first) + 20  # into the second head
    with https_client(gw.port, client_ctx(certs)) as c:
        c.sock.settimeout(10)
        c.send(data[:cut])
        assert c.read_response().status == 204
        gw.signal(signal.SIGSTOP)  # so that all of the rest is there for one read
        try:
            c.send(data[cut:])
        finally:
            gw.signal(signal.SIGCONT)
        rs = [c.read_response() for _ in range(60)]
        assert [r.status for r in rs] == [204] * 60
