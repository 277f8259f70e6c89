"""The jwt filter (SPEC §2 Authentication) with a jwks_file: tokens of every algorithm made
by python3-jwt, each failure reason, claims and scopes, forward_claims, the access log's
user, reloads. Every test that sends requests runs over HTTP/1.1 and HTTP/2 (protocols.py)."""

import base64
import hashlib
import hmac
import json
import signal
import time

import pytest

from harness import admin_get, gateway_config, wait_until
from jwt_support import ALGORITHMS, AUDIENCE, ISSUER, Keys, default_claims, provider, sign
from protocols import PROTOCOLS, connect, listener

CHALLENGE = 'Bearer realm="gateway"'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def keys():
    return Keys("main")


def jwt_config(tmp_path, upstream, keys, **provider_fields):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(keys.jwks()))
    p = provider(jwks_file=str(jwks),
                 forward_claims={"sub": "X-User-Id", "tenant": "X-Tenant"}, **provider_fields)

    def route(name, prefix, jwt=None):
        r = {"name": name, "match": {"path_prefix": prefix}, "upstream": "up"}
        if jwt is not None:
            r["filters"] = {"jwt": jwt}
        return r

    return gateway_config(
        upstreams={"up": [upstream]},
        routes=[
            route("api", "/api", {"provider": "main"}),
            route("admin", "/admin", {"provider": "main", "require_claims": {"role": ["admin"]}}),
            route("scoped", "/scoped", {"provider": "main", "scopes": ["read", "write"]}),
            route("open", "/"),
        ],
        jwt_providers=[p], listeners=[listener()])


@pytest.fixture(params=PROTOCOLS)
def protocol(request):
    return request.param


@pytest.fixture
def gw(gateway_factory, upstream, keys, tmp_path, protocol):
    g = gateway_factory(jwt_config(tmp_path, upstream, keys))
    g.protocol = protocol
    return g


def get(gw, path="/api/x", token=None, headers=None):
    h = list(headers or [])
    if token is not None:
        h.append(("Authorization", f"Bearer {token}"))
    with connect(gw.port, gw.protocol) as c:
        return c.request("GET", path, headers=h)


def assert_refused(resp, status, description=None):
    assert resp.status == status, resp
    body = resp.json()
    assert body["error_code"] == {401: "UNAUTHORIZED", 403: "FORBIDDEN", 503: "SERVICE_UNAVAILABLE"}[status]
    assert resp.header("Content-Type") == "application/json"
    if description is not None:
        assert body["message"] == description
        challenge = resp.header("WWW-Authenticate")
        error = "insufficient_scope" if status == 403 else "invalid_token"
        assert challenge.startswith(f'{CHALLENGE}, error="{error}", error_description="{description}"'), challenge


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_every_algorithm_is_accepted(gw, upstream, keys, alg):
    resp = get(gw, token=keys.token(alg))
    assert resp.status == 200, resp
    assert upstream.last().header("X-User-Id") == "alice"


def test_missing_token_is_a_challenge_without_error(gw, upstream):
    for headers in ([], [("Authorization", "Basic YWxpY2U6c2VjcmV0")]):
        resp = get(gw, headers=headers)
        assert_refused(resp, 401)
        assert resp.header("WWW-Authenticate") == CHALLENGE
    assert upstream.snapshot() == []


def failure_cases(keys):
    other = Keys("main")  # same kids, other keys: signatures do not verify
    good = keys.token("RS256")
    head, payload, sig = good.split(".")
    forged_payload = b64(json.dumps(default_claims(sub="admin")).encode())
    rsa_pem = keys.pair("RS256").private.public_key().public_bytes(
        encoding=__import__("cryptography.hazmat.primitives.serialization",
                            fromlist=["Encoding"]).Encoding.PEM,
        format=__import__("cryptography.hazmat.primitives.serialization",
                          fromlist=["PublicFormat"]).PublicFormat.SubjectPublicKeyInfo)
    confused_input = (b64(json.dumps({"alg": "HS256", "kid": keys.pair("RS256").kid}).encode())
                      + "." + b64(json.dumps(default_claims()).encode()))
    confused = confused_input + "." + b64(hmac.new(rsa_pem, confused_input.encode(),
                                                   hashlib.sha256).digest())
    none_token = (b64(b'{"alg":"none","typ":"JWT"}') + "." +
                  b64(json.dumps(default_claims()).encode()) + ".")
    unknown = sign(Keys("stranger").pair("ES256"), "ES256")
    return [
        ("malformed", "not-a-jwt", "The token is malformed"),
        ("malformed-b64", head + "." + payload + "." + sig + "==", "The token is malformed"),
        ("oversized", "a" * 9000, "The token is malformed"),
        ("bad_signature", f"{head}.{forged_payload}.{sig}", "The token signature is invalid"),
        ("other_key", other.token("ES256"), "The token signature is invalid"),
        ("expired", keys.token("ES256", exp=int(time.time()) - 60), "The token has expired"),
        ("not_yet_valid", keys.token("ES256", nbf=int(time.time()) + 120),
         "The token is not valid yet"),
        ("wrong_issuer", keys.token("ES256", iss="https://evil.test/"),
         "The token issuer is not accepted"),
        ("wrong_audience", keys.token("ES256", aud=["other"]),
         "The token audience is not accepted"),
        ("unknown_kid", unknown, "The token signing key is unknown"),
        ("alg_none", none_token, "The token is malformed"),
        ("alg_none_signed", none_token + "AAAA", "The token algorithm is not accepted"),
        ("hs256_with_rsa_key", confused, "The token algorithm is not accepted"),
    ]


def test_each_failure_reason_is_a_401(gw, upstream, keys):
    for name, token, description in failure_cases(keys):
        resp = get(gw, token=token)
        assert resp.status == 401, (name, resp)
        assert_refused(resp, 401, description)
    assert upstream.snapshot() == []


def test_algorithms_outside_the_provider_list_are_refused(gateway_factory, upstream, keys,
                                                          tmp_path, protocol):
    gw = gateway_factory(jwt_config(tmp_path, upstream, keys, algorithms=["ES256"]))
    gw.protocol = protocol
    assert get(gw, token=keys.token("ES256")).status == 200
    for alg in ("RS256", "PS256", "EdDSA", "HS256", "ES384"):
        assert_refused(get(gw, token=keys.token(alg)), 401, "The token algorithm is not accepted")


def test_leeway_applies_to_exp_and_nbf(gw, keys):
    now = int(time.time())
    assert get(gw, token=keys.token("ES256", exp=now - 2)).status == 200  # leeway 5s
    assert get(gw, token=keys.token("ES256", nbf=now + 2)).status == 200
    assert get(gw, token=keys.token("ES256", exp=now - 20)).status == 401


def test_audience_array_and_missing_claims(gw, keys):
    assert get(gw, token=keys.token("ES256", aud=["x", AUDIENCE])).status == 200
    assert_refused(get(gw, token=keys.token("ES256", aud=None)), 401,
                   "The token audience is not accepted")
    assert_refused(get(gw, token=keys.token("ES256", iss=None)), 401,
                   "The token issuer is not accepted")
    assert get(gw, token=keys.token("ES256", exp=None)).status == 200  # exp is optional


def test_require_claims_and_scopes(gw, keys):
    assert_refused(get(gw, "/admin/x", keys.token("ES256")), 403,
                   "The token does not grant access to this resource")
    assert get(gw, "/admin/x", keys.token("ES256", role="admin")).status == 200
    assert get(gw, "/admin/x", keys.token("ES256", role=["viewer", "admin"])).status == 200
    assert get(gw, "/admin/x", keys.token("ES256", role=["viewer"])).status == 403

    resp = get(gw, "/scoped/x", keys.token("ES256", scope="read"))
    assert_refused(resp, 403)
    assert 'error="insufficient_scope"' in resp.header("WWW-Authenticate")
    assert 'scope="read write"' in resp.header("WWW-Authenticate")
    assert get(gw, "/scoped/x", keys.token("ES256", scope="write read admin")).status == 200
    assert get(gw, "/scoped/x", keys.token("ES256", scp=["read", "write"])).status == 200


def test_forward_claims_replace_incoming_headers(gw, upstream, keys):
    token = keys.token("EdDSA", tenant="acme")
    resp = get(gw, token=token, headers=[("X-User-Id", "mallory"), ("x-tenant", "evil"),
                                         ("X-USER-ID", "mallory2")])
    assert resp.status == 200
    req = upstream.last()
    assert req.header_all("X-User-Id") == ["alice"]
    assert req.header_all("X-Tenant") == ["acme"]
    # A claim the token lacks: the incoming header is still removed.
    get(gw, token=keys.token("EdDSA"), headers=[("X-Tenant", "evil")])
    assert not upstream.last().has_header("X-Tenant")
    # Routes without the filter forward what the client sent.
    get(gw, "/open", headers=[("X-Tenant", "client")])
    assert upstream.last().header("X-Tenant") == "client"


def test_user_in_access_log_and_no_token_anywhere(gw, keys):
    token = keys.token("ES256", sub="bob@example.test")
    bad = keys.token("ES256", exp=int(time.time()) - 600)
    assert get(gw, token=token).status == 200
    assert get(gw, token=bad).status == 401
    ok = gw.find_access(lambda e: e["status"] == 200 and e["route"] == "api")
    assert ok["user"] == "bob@example.test"
    refused = gw.find_access(lambda e: e["status"] == 401)
    assert refused["user"] == ""
    assert refused["error_code"] == "UNAUTHORIZED"
    gw.signal(signal.SIGHUP)  # something for the app log to say
    wait_until(lambda: "configuration reloaded" in gw.app_log_text(), what="reload logged")
    logs = gw.stdout_path.read_text() + gw.app_log_text()
    for t in (token, bad):
        for part in t.split("."):
            assert part not in logs


def test_a_non_ascii_subject_is_logged_as_its_characters(gw, keys):
    # python3-jwt writes the payload with \u escapes (a surrogate pair for the emoji): the
    # gateway holds the subject as UTF-8, and the log must give back those characters, not
    # each of their bytes read as Latin-1.
    sub = "Jos\u00e9 \u65e5\u672c \U0001f600"  # "José 日本 😀"
    assert get(gw, token=keys.token("ES256", sub=sub)).status == 200
    e = gw.find_access(lambda e: e["route"] == "api" and e["status"] == 200)
    assert e["user"] == sub
    line = next(line for line in gw.stdout_path.read_bytes().splitlines()
                if b'"request_id":"%s"' % e["request_id"].encode() in line)
    assert b'"user":"' + sub.encode() + b'"' in line  # written through as UTF-8


def test_sighup_reloads_the_jwks_file(gw, keys, tmp_path):
    newcomer = Keys("rotated")
    token = newcomer.token("ES256")
    assert_refused(get(gw, token=token), 401, "The token signing key is unknown")
    document = keys.jwks()
    document["keys"].append(newcomer.pair("ES256").jwk)
    (tmp_path / "jwks.json").write_text(json.dumps(document))
    gw.signal(signal.SIGHUP)
    wait_until(lambda: get(gw, token=token).status == 200, timeout=10, what="new key accepted")
    assert get(gw, token=keys.token("ES256")).status == 200


def test_a_cached_token_is_refused_once_its_key_is_removed(gw, keys, tmp_path):
    token = keys.token("EdDSA")
    assert get(gw, token=token).status == 200
    assert get(gw, token=token).status == 200  # now cached
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks("rsa", "P-256")))
    gw.signal(signal.SIGHUP)
    wait_until(lambda: get(gw, token=token).status == 401, timeout=10, what="removed key refused")


def test_check_reports_an_unusable_jwks_file(tmp_path, upstream, keys):
    from harness import Gateway, run_gateway_cli
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks("P-256")))
    cfg = jwt_config(tmp_path, upstream, keys)
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}))
    gw = Gateway(tmp_path, cfg)
    try:
        r = run_gateway_cli(["--check", "-c", str(gw.config_path)])
    finally:
        gw.kill()
    assert r.returncode == 1, r.stdout
    assert "JWKS file" in r.stdout and "RSA modulus of 17 bits" in r.stdout, r.stdout


def test_failures_are_counted_and_the_provider_is_healthy(gw, keys):
    get(gw)
    get(gw)
    get(gw, token=keys.token("ES256", exp=int(time.time()) - 600))
    get(gw, "/admin/x", keys.token("ES256"))
    status, body = admin_get(gw, "/metrics")
    assert status == 200
    text = body.decode()
    assert 'gateway_auth_failures_total{route="api",reason="missing"} 2' in text
    assert 'gateway_auth_failures_total{route="api",reason="expired"} 1' in text
    assert 'gateway_auth_failures_total{route="admin",reason="insufficient_scope"} 1' in text
    status, body = admin_get(gw, "/health")
    check = json.loads(body)["checks"]["jwks:main"]
    assert check["status"] == "healthy"
    assert check["state"] == "ok"
    assert check["keys"] == 6
