"""docs/configuration.md against the configuration loader, both ways.

(a) Every key documented in the reference's tables is accepted by the loader: a minimal
    valid configuration plus that key set to its documented example passes
    `gateway --check` (so there is no "unknown key", and the example itself is valid).
(b) Every key the loader knows is documented: the key lists of every
    `ctx.expectMap(node, "what", {...})` in gateway/config/*.cc, gateway/*/*_config.cc
    (the tracing section) and filters/*/*_config.cc,
    and every filter of filters/registry.cc, have a row.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from harness import GATEWAY_BIN, SOURCE_DIR

DOC = SOURCE_DIR / "docs" / "configuration.md"

# expectMap's `what` (its second argument) -> the documented path of that map, or the
# paths of every place one parser serves. A new section in the loader fails
# test_every_loader_key_is_documented until it is added here and documented.
WHAT_TO_PATH = {
    "the configuration": "",
    "listener": "listeners[]",
    "listener tls": "listeners[].tls",
    "http2_settings": "listeners[].http2_settings",
    "certificate": "listeners[].tls.certificates[]",
    "admin": "admin",
    "logging": "logging",
    "limits": "limits",
    "timeouts": "timeouts",
    "upstream": "upstreams[]",
    "keepalive": "upstreams[].keepalive",
    "health_check": "upstreams[].health_check",
    "circuit_breaker": "upstreams[].circuit_breaker",
    "retries": "upstreams[].retries",
    "upstream tls": ["upstreams[].tls", "rate_limit_store.redis.tls"],
    "rate_limit_store": "rate_limit_store",
    "redis": "rate_limit_store.redis",
    "redis sentinel": "rate_limit_store.redis.sentinel",
    "jwt provider": "jwt_providers[]",
    "api key set": "api_keys[]",
    "route": "routes[]",
    "match": "routes[].match",
    "request_id": "filters.request_id",
    "ip_access": "filters.ip_access",
    "cors": "filters.cors",
    "body_limit": "filters.body_limit",
    "rate_limit": "filters.rate_limit",
    "rate limit": "filters.rate_limit.limits[]",
    "jwt": "filters.jwt",
    "api_key": "filters.api_key",
    "security_headers": "filters.security_headers",
    "tracing": "tracing",
    "sampler": "tracing.sampler",
    "otlp": "tracing.otlp",
    "otlp batch": "tracing.otlp.batch",
}

# ---------------------------------------------------------------- the documentation


def split_cells(row: str) -> list[str]:
    """Cells of a markdown table row; `\\|` is a literal pipe."""
    cells, cur, i = [], "", 0
    body = row.strip()[1:-1] if row.strip().endswith("|") else row.strip()[1:]
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body) and body[i + 1] == "|":
            cur += "|"
            i += 2
            continue
        if body[i] == "|":
            cells.append(cur.strip())
            cur = ""
        else:
            cur += body[i]
        i += 1
    cells.append(cur.strip())
    return cells


def documented_rows() -> list[dict]:
    rows = []
    for n, line in enumerate(DOC.read_text().splitlines(), 1):
        if not line.startswith("| `"):
            continue
        cells = split_cells(line)
        if len(cells) != 5:
            continue
        key = re.fullmatch(r"`([^`]+)`", cells[0])
        example = re.match(r"`([^`]+)`", cells[3])
        if not key:
            continue
        rows.append({"path": key.group(1), "type": cells[1], "default": cells[2],
                     "example": example.group(1) if example else None, "line": n})
    return rows


ROWS = documented_rows()

# ---------------------------------------------------------------- the loader


def loader_keys() -> tuple[set[str], list[str]]:
    """Documentable paths from the loader's sources, and the `what`s not in WHAT_TO_PATH."""
    sources = sorted((SOURCE_DIR / "gateway" / "config").glob("*.cc"))
    sources += sorted((SOURCE_DIR / "gateway").glob("*/*_config.cc"))
    sources += sorted((SOURCE_DIR / "filters").glob("*/*_config.cc"))
    call = re.compile(r"expectMap\(\s*[^,]+?,\s*\"([^\"]+)\"\s*,\s*\{([^}]*)\}", re.S)
    paths, unknown = set(), []
    for src in sources:
        text = src.read_text()
        for m in call.finditer(text):
            what, keys = m.group(1), re.findall(r"\"([^\"]+)\"", m.group(2))
            if what not in WHAT_TO_PATH:
                unknown.append(f"{src.relative_to(SOURCE_DIR)}: expectMap(..., \"{what}\", ...)")
                continue
            prefixes = WHAT_TO_PATH[what]
            for prefix in [prefixes] if isinstance(prefixes, str) else prefixes:
                for k in keys:
                    paths.add(f"{prefix}.{k}" if prefix else k)
    registry = (SOURCE_DIR / "filters" / "registry.cc").read_text()
    for name in re.findall(r"\{\"(\w+)\",\s*\w+::parse", registry):
        paths.add(f"filters.{name}")
    return paths, unknown


def test_loader_scan_finds_the_schema():
    paths, _ = loader_keys()
    # A scan that silently matched nothing would make the next test pass for nothing.
    for p in ("workers", "listeners[].address", "upstreams[].retries.backoff",
              "filters.cors.allow_origins", "filters.rate_limit.limits[].dry_run", "filters.jwt"):
        assert p in paths, f"the expectMap scan missed {p}: has the loader's code changed shape?"
    assert len(paths) > 100


def test_every_loader_key_is_documented():
    paths, unknown = loader_keys()
    assert not unknown, ("configuration maps this test does not know (add them to WHAT_TO_PATH "
                         "and document their keys in docs/configuration.md):\n" + "\n".join(unknown))
    documented = {r["path"] for r in ROWS}
    missing = sorted(paths - documented)
    assert not missing, "keys the loader accepts but docs/configuration.md does not document:\n" + \
        "\n".join(missing)


def test_every_documented_key_is_a_loader_key():
    paths, _ = loader_keys()
    extra = sorted({r["path"] for r in ROWS} - paths)
    assert not extra, "docs/configuration.md documents keys the loader does not know:\n" + "\n".join(extra)


def test_each_row_is_complete():
    seen = set()
    for r in ROWS:
        assert r["path"] not in seen, f"docs/configuration.md:{r['line']}: {r['path']} documented twice"
        seen.add(r["path"])
        assert r["type"], f"docs/configuration.md:{r['line']}: {r['path']} has no type"
        assert r["default"], f"docs/configuration.md:{r['line']}: {r['path']} has no default"
        assert r["example"], f"docs/configuration.md:{r['line']}: {r['path']} has no `example`"


# ---------------------------------------------------------------- (a): each key, checked

# Configurations are written as block YAML by `emit`, with the documented example inserted
# as it is written in the doc (Raw), so YAML details such as `off` reach the loader intact.


class Raw(str):
    pass


def scalar(v) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(v)


def emit(value, indent: int = 0) -> str:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        out = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{k}:\n{emit(v, indent + 2)}")
            else:
                out.append(f"{pad}{k}: {emit(v) if isinstance(v, (dict, list)) else scalar(v)}")
        return "\n".join(out)
    if isinstance(value, list):
        if not value:
            return "[]"
        out = []
        for item in value:
            if isinstance(item, dict) and item:
                body = emit(item, indent + 2)
                out.append(f"{pad}- {body[indent + 2:]}")
            else:
                out.append(f"{pad}- {emit(item) if isinstance(item, (dict, list)) else scalar(item)}")
        return "\n".join(out)
    return scalar(value)


CERT = {"cert": "conf/tls/server.crt", "key": "conf/tls/server.key"}


def base_config() -> dict:
    return {
        "listeners": [{"name": "http", "address": "127.0.0.1:8080"}],
        "admin": {"address": "127.0.0.1:9901"},
        "upstreams": [{"name": "api", "endpoints": ["127.0.0.1:9000"]}],
        "jwt_providers": [{"name": "main", "jwks_file": "conf/examples/jwks.json"}],
        "api_keys": [{"name": "partners", "keys_file": "conf/examples/api-keys.txt"}],
        "routes": [{"name": "all", "match": {}, "upstream": "api"}],
    }


# What a map must hold before one of its optional keys is added (its required keys).
PARENT_CONTEXT = {
    "listeners[].tls": {"certificates": [dict(CERT)]},
    "listeners[].tls.certificates[]": dict(CERT),
    "filters.cors": {"allow_origins": ["https://app.example.com"]},
    "filters.rate_limit": {"limits": [{"key": "client_ip", "requests": 10, "per": "1s"}]},
    "filters.rate_limit.limits[]": {"key": "client_ip", "requests": 10, "per": "1s"},
    "filters.jwt": {"provider": "main"},
    "filters.api_key": {"set": "partners"},
    "filters.body_limit": {"max_bytes": "1MiB"},
}
# Keys that need a sibling, or exclude one.
COMPANIONS = {
    "upstreams[].tls.cert": {"key": "conf/tls/client.key"},
    "upstreams[].tls.key": {"cert": "conf/tls/client.crt"},
    "rate_limit_store.redis.tls.cert": {"key": "conf/tls/client.key"},
    "rate_limit_store.redis.tls.key": {"cert": "conf/tls/client.crt"},
    "rate_limit_store.redis.sentinel.master": {"addresses": ["127.0.0.1:26379"]},
    "rate_limit_store.redis.sentinel.addresses": {"master": "gw"},
    "upstreams[].health_check.service": {"type": "grpc"},
}
EXCLUDES = {"jwt_providers[].jwks_uri": ["jwks_file"]}


def extra_context(path: str, cfg: dict) -> None:
    if path == "listeners[].redirect_https":
        cfg["listeners"].append({"name": "https", "address": "127.0.0.1:8443",
                                 "tls": {"certificates": [dict(CERT)]}})


def config_with(path: str, example: str) -> dict:
    """base_config() with `path` (a documented key) set to `example`; `filters.X` goes
    into default_filters."""
    cfg = base_config()
    extra_context(path, cfg)
    parts = path.split(".")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        prefix = ".".join(parts[: i + 1])
        if i == 0 and part == "filters":
            node = node.setdefault("default_filters", {})
            continue
        context = PARENT_CONTEXT.get(prefix, {})
        if part.endswith("[]"):
            lst = node.setdefault(part[:-2], [])
            if not lst:
                lst.append(json.loads(json.dumps(context)))
            node = lst[0]
        else:
            if not isinstance(node.get(part), dict):
                node[part] = json.loads(json.dumps(context))
            node = node[part]
    for k, v in COMPANIONS.get(path, {}).items():
        node[k] = v
    for k in EXCLUDES.get(path, []):
        node.pop(k, None)
    node[parts[-1]] = Raw(example)
    return cfg


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory like the repository root: conf/examples, and development
    certificates in conf/tls (made by conf/make-test-certs.sh)."""
    root = tmp_path_factory.mktemp("confref")
    (root / "conf").mkdir()
    (root / "conf" / "examples").symlink_to(SOURCE_DIR / "conf" / "examples")
    r = subprocess.run([str(SOURCE_DIR / "conf" / "make-test-certs.sh"), str(root / "conf" / "tls")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return root


def check(workdir: Path, cfg: dict, name: str) -> subprocess.CompletedProcess:
    path = workdir / f"{name}.yaml"
    path.write_text(emit(cfg) + "\n")
    env = {k: v for k, v in os.environ.items()}
    env["REDIS_PASSWORD"] = "x"
    return subprocess.run([GATEWAY_BIN, "--check", "-c", str(path)], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=30)


def test_base_config_is_valid(workdir):
    r = check(workdir, base_config(), "base")
    assert r.returncode == 0 and r.stdout.strip() == "configuration OK", r.stdout + r.stderr


@pytest.mark.parametrize("row", ROWS, ids=[r["path"] for r in ROWS])
def test_documented_key_is_accepted_with_its_example(workdir, row):
    cfg = config_with(row["path"], row["example"])
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", row["path"])
    r = check(workdir, cfg, safe)
    out = r.stdout + r.stderr
    where = f"docs/configuration.md:{row['line']}: {row['path']} = {row['example']}"
    assert "unknown key" not in out and "unknown filter" not in out, f"{where}\n{out}"
    assert r.returncode == 0 and out.strip() == "configuration OK", \
        f"{where}: the example is refused\n{out}\n--- config ---\n{emit(cfg)}"


def test_route_level_filters_are_accepted(workdir):
    """filters.* rows stand for routes[].filters.* too."""
    cfg = base_config()
    cfg["routes"][0]["filters"] = {
        "request_id": {"header": "X-Correlation-ID"},
        "cors": Raw("off"),
        "body_limit": {"max_bytes": "100MiB"},
        "api_key": {"set": "partners"},
        "rate_limit": {"limits": [{"key": "api_key", "requests": 10, "per": "1s"}]},
        "security_headers": {"mode": "set"},
        "ip_access": {"deny": ["203.0.113.0/24"]},
    }
    r = check(workdir, cfg, "route-filters")
    assert r.returncode == 0, r.stdout + r.stderr


def test_defaults_in_the_doc_match_the_reference_file():
    """reference.yaml writes the defaults out; where it and the doc both give a plain
    value, they agree."""
    ref = SOURCE_DIR.parent / "shared" / "reference.yaml"
    if not ref.is_file():
        pytest.skip("../shared/reference.yaml not present")
    text = ref.read_text()
    pairs = {
        "limits.max_request_header_bytes": "16KiB", "limits.max_uri_bytes": "8KiB",
        "limits.max_body_bytes": "10MiB", "limits.max_connections": "100000",
        "timeouts.header_read": "10s", "timeouts.idle": "60s", "timeouts.upstream_connect": "2s",
        "timeouts.upstream_response": "30s", "timeouts.drain": "20s",
        "admin.address": "127.0.0.1:9901", "logging.level": "info", "logging.access_log": "stdout",
        "listeners[].tls.min_version": "TLSv1.2", "listeners[].redirect_https": "false",
        "limits.max_connections_per_ip": "0",
        "upstreams[].load_balancing": "round_robin", "upstreams[].max_connections": "1024",
        "upstreams[].max_pending": "1024", "upstreams[].keepalive.max_idle": "64",
        "upstreams[].keepalive.idle_timeout": "30s", "upstreams[].health_check.path": "/healthz",
        "upstreams[].health_check.interval": "5s", "upstreams[].health_check.timeout": "1s",
        "upstreams[].health_check.unhealthy_threshold": "3",
        "upstreams[].health_check.healthy_threshold": "2",
        "upstreams[].circuit_breaker.consecutive_failures": "5",
        "upstreams[].circuit_breaker.open_for": "30s", "upstreams[].retries.backoff": "25ms",
        "upstreams[].retries.attempts": "2", "upstreams[].retries.on": "[connect_failure, 502, 503]",
        "rate_limit_store.type": "memory", "rate_limit_store.redis.address": "127.0.0.1:6379",
        "rate_limit_store.redis.timeout": "50ms", "rate_limit_store.redis.on_error": "allow",
        "rate_limit_store.redis.replicas": "1", "jwt_providers[].leeway": "30s",
        "jwt_providers[].jwks_refresh": "5m", "api_keys[].header": "X-API-Key",
    }
    by_path = {r["path"]: r for r in ROWS}
    for path, value in pairs.items():
        key = path.split(".")[-1].removesuffix("[]")
        assert re.search(rf"\b{key}: \"?{re.escape(value)}(?![\w.])", text), \
            f"reference.yaml does not write {key}: {value}"
        assert by_path[path]["default"] == f"`{value}`", \
            f"docs/configuration.md: {path} default {by_path[path]['default']}, reference.yaml {value}"
