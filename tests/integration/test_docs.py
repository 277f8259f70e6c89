"""The operator documentation against the gateway: alert rules and the Grafana dashboard
(promtool, and only metrics the gateway exports), the metric and log-field lists of
observability.md, links between the pages, and docs/getting-started.md followed step by
step."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from harness import GATEWAY_BIN, SOURCE_DIR, Gateway

DOCS = SOURCE_DIR / "docs"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian prometheus) not installed")

# Pages a link may point to before they exist (none now: every page has landed).
PENDING_PAGES: set = set()


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 50)
    return subprocess.run([str(c) for c in cmd], **kw)


def exported_metrics() -> set[str]:
    """Every metric family the gateway can export, from its sources."""
    src = (SOURCE_DIR / "gateway" / "metrics.cc").read_text()
    names = set(re.findall(r"\{\"(gateway_[a-z_]+)\",", src))
    names |= set(re.findall(r"metric\(\"(process_[a-z_]+)\"", src))
    auth = SOURCE_DIR / "filters" / "auth" / "auth_failures.cc"
    if auth.is_file():
        names |= set(re.findall(r"(gateway_auth_failures_total)", auth.read_text()))
    assert "gateway_requests_total" in names and "process_cpu_seconds_total" in names, names
    return names


def metric_names_in(expr: str) -> set[str]:
    out = set()
    for name in re.findall(r"\b((?:gateway|process)_[a-z_]+)\b", expr):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith("_seconds" + suffix):
                name = name[: -len(suffix)]
        out.add(name)
    return out


# ---------------------------------------------------------------- alerts


@needs_promtool
def test_alert_rules_pass_promtool():
    r = run([PROMTOOL, "check", "rules", DOCS / "alerts.yaml"])
    assert r.returncode == 0, r.stdout + r.stderr


def alert_rules() -> dict[str, dict]:
    data = yaml.safe_load((DOCS / "alerts.yaml").read_text())
    return {r["alert"]: r for g in data["groups"] for r in g["rules"]}


def test_alert_rules_cover_the_operators_list_and_known_metrics():
    rules = alert_rules()
    for name in ("GatewayHighErrorRate", "GatewayHighLatencyP95", "GatewayUpstreamEndpointDown",
                 "GatewayCircuitBreakerOpen", "GatewayRateLimitSpike", "GatewayRedisErrors",
                 "GatewayTlsHandshakeErrors"):
        assert name in rules, f"docs/alerts.yaml has no {name}"
    known = exported_metrics()
    ops = (DOCS / "operations.md").read_text()
    for name, rule in rules.items():
        unknown = metric_names_in(rule["expr"]) - known
        assert not unknown, f"{name} uses metrics the gateway does not export: {unknown}"
        assert rule.get("labels", {}).get("severity"), f"{name} has no severity"
        assert f"`{name}`" in ops, f"{name} is not explained in docs/operations.md"
    assert "> 0.05" in rules["GatewayHighErrorRate"]["expr"] and rules["GatewayHighErrorRate"]["for"] == "5m"
    assert "> 0.3" in rules["GatewayHighLatencyP95"]["expr"] and rules["GatewayHighLatencyP95"]["for"] == "5m"


ALERT_TESTS = """\
rule_files: [alerts.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'gateway_requests_total{job="gateway",route="api",method="GET",code="200"}'
        values: '0+540x20'
      - series: 'gateway_requests_total{job="gateway",route="api",method="GET",code="502"}'
        values: '0+60x20'
      - series: 'gateway_request_duration_seconds_bucket{job="gateway",route="api",le="0.25"}'
        values: '0+100x20'
      - series: 'gateway_request_duration_seconds_bucket{job="gateway",route="api",le="0.5"}'
        values: '0+600x20'
      - series: 'gateway_request_duration_seconds_bucket{job="gateway",route="api",le="+Inf"}'
        values: '0+600x20'
      - series: 'gateway_upstream_endpoint_healthy{job="gateway",instance="gw1",upstream="api",endpoint="10.0.0.5:80"}'
        values: '1 1 1 0x17'
      - series: 'gateway_circuit_breaker_open{job="gateway",instance="gw1",upstream="api"}'
        values: '0 0 0 1x17'
      - series: 'gateway_config_reloads_total{job="gateway",instance="gw1",result="failure"}'
        values: '0 0 0 1x17'
    alert_rule_test:
      - eval_time: 15m
        alertname: GatewayHighErrorRate
        exp_alerts:
          - exp_labels: {severity: critical, job: gateway}
      - eval_time: 15m
        alertname: GatewayHighLatencyP95
        exp_alerts:
          - exp_labels: {severity: warning, job: gateway}
      - eval_time: 15m
        alertname: GatewayUpstreamEndpointDown
        exp_alerts:
          - exp_labels: {severity: warning, job: gateway, instance: gw1, upstream: api, endpoint: "10.0.0.5:80"}
      - eval_time: 15m
        alertname: GatewayUpstreamAllEndpointsDown
        exp_alerts:
          - exp_labels: {severity: critical, job: gateway, instance: gw1, upstream: api}
      - eval_time: 15m
        alertname: GatewayCircuitBreakerOpen
        exp_alerts:
          - exp_labels: {severity: warning, job: gateway, instance: gw1, upstream: api}
      - eval_time: 10m
        alertname: GatewayConfigReloadFailed
        exp_alerts:
          - exp_labels: {severity: warning, job: gateway, instance: gw1, result: failure}
      - eval_time: 2m
        alertname: GatewayCircuitBreakerOpen
        exp_alerts: []
"""


@needs_promtool
def test_alerts_fire_on_synthetic_series(tmp_path):
    """promtool test rules: 10% 5xx, a p95 in the 0.25-0.5 s bucket, an endpoint down, a
    breaker open and a refused reload each fire their alert (and not before their time)."""
    rules = yaml.safe_load((DOCS / "alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)  # the expressions and labels are under test here
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "alerts_test.yaml").write_text(ALERT_TESTS)
    r = run([PROMTOOL, "test", "rules", "alerts_test.yaml"], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- dashboard


def dashboard() -> dict:
    return json.loads((DOCS / "grafana-dashboard.json").read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_dashboard_is_grafana_json_with_the_panels_operators_need():
    d = dashboard()
    assert d["title"] and d["uid"] and d["schemaVersion"] >= 30
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    exprs = " ".join(e for _, e in dashboard_exprs())
    for what, needle in (("request rate", "rate(gateway_requests_total"),
                         ("error rate", 'code=~"5.."'),
                         ("p50", "histogram_quantile(0.5,"), ("p95", "histogram_quantile(0.95,"),
                         ("p99", "histogram_quantile(0.99,"),
                         ("rate-limited", "gateway_rate_limited_total"),
                         ("auth failures", "gateway_auth_failures_total"),
                         ("upstream health", "gateway_upstream_endpoint_healthy"),
                         ("connections", "gateway_connections_active")):
        assert needle in exprs, f"the dashboard has no {what} panel ({needle})"
    known = exported_metrics()
    for title, expr in dashboard_exprs():
        unknown = metric_names_in(expr) - known
        assert not unknown, f"panel '{title}' uses metrics the gateway does not export: {unknown}"


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path):
    rules = []
    for i, (_, expr) in enumerate(dashboard_exprs()):
        e = expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*")
        rules.append({"record": f"dashboard:panel_{i}", "expr": e})
    f = tmp_path / "dashboard_rules.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = run([PROMTOOL, "check", "rules", f])
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- metric and log lists


def test_observability_lists_every_metric():
    text = (DOCS / "observability.md").read_text()
    documented = set(re.findall(r"^\| `((?:gateway|process)_[a-z_]+)` \|", text, re.M))
    missing = exported_metrics() - documented
    assert not missing, f"docs/observability.md does not list {sorted(missing)}"
    extra = documented - exported_metrics()
    assert not extra, f"docs/observability.md lists metrics the gateway does not export: {sorted(extra)}"
    spec = SOURCE_DIR.parent / "shared" / "SPEC.md"
    if spec.is_file():
        section = spec.read_text().split("## 5. Metrics", 1)[1].split("## 6.", 1)[0]
        for name in re.findall(r"`(gateway_[a-z_]+)", section):
            assert name in documented, f"SPEC §5 metric {name} is not in docs/observability.md"


def test_access_log_fields_are_documented():
    text = (DOCS / "observability.md").read_text()
    src = (SOURCE_DIR / "gateway" / "access_log.cc").read_text()
    fields = set(re.findall(r"append\w*\(line, \"([a-z_]+)\"", src)) | {"timestamp"}
    assert len(fields) >= 15, fields
    for f in fields:
        assert f"`{f}`" in text, f"access-log field {f} is not documented in docs/observability.md"


# ---------------------------------------------------------------- links

PAGES = sorted(DOCS.glob("*.md")) + sorted((DOCS / "filters").glob("*.md")) + \
    [SOURCE_DIR / "README.md", SOURCE_DIR / "deploy" / "README.md"]
PAGES = [p for p in PAGES if p.is_file()]


def anchors_of(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in re.sub(r"```.*?```", "", path.read_text(), flags=re.S).splitlines():
        m = re.match(r"^#+\s+(.*)", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(SOURCE_DIR)) for p in PAGES])
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    root = SOURCE_DIR.resolve()
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto:
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page.resolve()
        rel = str(dest.relative_to(root)) if dest.is_relative_to(root) else str(dest)
        if not dest.exists():
            if rel not in PENDING_PAGES:
                problems.append(f"{target}: {rel} does not exist")
            continue
        if anchor and dest.suffix == ".md" and rel not in PENDING_PAGES and anchor not in anchors_of(dest):
            problems.append(f"{target}: no heading #{anchor} in {rel}")
    assert not problems, f"{page.relative_to(SOURCE_DIR)}:\n" + "\n".join(problems)


def test_filter_pages_exist():
    for name in ("request_id", "ip_access", "cors", "body_limit", "security_headers"):
        page = DOCS / "filters" / f"{name}.md"
        assert page.is_file(), f"no {page.relative_to(SOURCE_DIR)}"
        assert "configuration.md" in page.read_text()


# ---------------------------------------------------------------- getting started, followed


def block(marker: str) -> str:
    text = (DOCS / "getting-started.md").read_text()
    m = re.search(rf"<!-- getting-started:{re.escape(marker)} -->\s*```\w*\n(.*?)```", text, re.S)
    assert m, f"no block marked getting-started:{marker} in docs/getting-started.md"
    return m.group(1)


def http(port: int, path: str, headers: dict | None = None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_getting_started_walkthrough(tmp_path, upstream):
    """The page's commands and configuration, run as written (ports made free): no key is
    401, a wrong key 401, the key 200 with X-Consumer, the sixth request in a minute 429,
    /healthz open; and the typo example's message is the one the page shows."""
    r = run(["bash", "-e", "-c", block("keys.sh")], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    key = re.search(r"your key: ([0-9a-f]{64})", r.stdout).group(1)
    assert (tmp_path / "my-keys.txt").read_text().startswith("me ")

    conf = block("my-gateway.yaml")
    assert "0.0.0.0:8080" in conf and "127.0.0.1:3000" in conf
    conf_here = (conf.replace("0.0.0.0:8080", "127.0.0.1:@PORT@")
                 .replace("127.0.0.1:3000", upstream.address)
                 + "\nadmin:\n  address: 127.0.0.1:@ADMIN_PORT@\n")
    gw = Gateway(tmp_path, conf_here, name="my-gateway")
    check = run([GATEWAY_BIN, "--check", "-c", gw.config_path], cwd=tmp_path)
    assert check.stdout.strip() == "configuration OK", check.stdout
    gw.start()
    try:
        status, _, body = http(gw.port, "/orders")
        assert status == 401 and json.loads(body)["error_code"] == "UNAUTHORIZED"
        assert http(gw.port, "/orders", {"X-API-Key": "nope"})[0] == 401
        status, headers, _ = http(gw.port, "/orders", {"X-API-Key": key})
        assert status == 200, status
        assert headers.get("X-Request-ID") and headers.get("X-Content-Type-Options") == "nosniff"
        seen = upstream.requests[-1]
        assert any(k.lower() == "x-consumer" and v == "me" for k, v in seen.headers), seen.headers
        codes = [http(gw.port, "/orders", {"X-API-Key": key})[0] for _ in range(6)]
        assert codes == [200, 200, 200, 200, 429, 429], codes
        status, _, body = http(gw.port, "/orders", {"X-API-Key": key})
        assert status == 429 and json.loads(body)["error_code"] == "RATE_LIMITED"
        assert http(gw.port, "/healthz")[0] == 200
    finally:
        gw.stop()

    # The typo shown on the page, with the position the page gives.
    (tmp_path / "typo.yaml").write_text(conf.replace("keys_file:", "keys_fle:"))
    r = run([GATEWAY_BIN, "--check", "-c", "typo.yaml"], cwd=tmp_path)
    shown = block("typo-output").strip()
    assert r.returncode == 1 and r.stdout.strip().replace("typo.yaml:", "my-gateway.yaml:") == shown, \
        (r.stdout, shown)


# ---------------------------------------------------------------- YAML snippets of the pages

# rate_limit.md's snippets show every key type side by side, which no one route may
# combine (identity keys need their auth filter): they are illustrations, not configs.
SNIPPET_PAGES = [DOCS / "filters" / f"{n}.md" for n in
                 ("request_id", "ip_access", "cors", "body_limit", "security_headers", "jwt",
                  "api_key")] + \
    [DOCS / "migrating-from-nginx.md", DOCS / "getting-started.md", DOCS / "observability.md"]
TOP_LEVEL = {"workers", "listeners", "admin", "logging", "limits", "timeouts", "trusted_proxies",
             "upstreams", "rate_limit_store", "jwt_providers", "api_keys", "default_filters", "routes", "tracing"}
FILTERS = {"request_id", "ip_access", "cors", "body_limit", "rate_limit", "jwt", "api_key",
           "security_headers"}


def yaml_snippets():
    out = []
    for page in SNIPPET_PAGES:
        if not page.is_file():
            continue
        text = page.read_text()
        for m in re.finditer(r"```yaml\n(.*?)```", text, re.S):
            line = text.count("\n", 0, m.start()) + 2
            out.append(pytest.param(page, line, m.group(1),
                                    id=f"{page.relative_to(DOCS)}:{line}"))
    return out


def snippet_config(fragment: dict) -> dict:
    """A whole configuration around a page's fragment: a listener, the upstreams its routes
    name, a JWT provider `main` and an API-key set `partners` from conf/examples."""
    cfg = {"listeners": [{"name": "http", "address": "127.0.0.1:8080"}],
           "admin": {"address": "127.0.0.1:9901"},
           "jwt_providers": [{"name": "main", "jwks_file": "conf/examples/jwks.json"}],
           "api_keys": [{"name": "partners", "keys_file": "conf/examples/api-keys.txt"}],
           "routes": [{"name": "all", "match": {}, "upstream": "api"}]}
    keys = set(fragment)
    if keys <= TOP_LEVEL:
        cfg.update(fragment)
    elif keys == {"filters"}:
        cfg["default_filters"] = fragment["filters"]
    elif keys <= FILTERS:
        cfg["default_filters"] = fragment
    else:
        raise AssertionError(f"a snippet that is not configuration: {sorted(keys)}")
    if "upstreams" not in fragment:
        names = {r["upstream"] for r in cfg["routes"]}
        cfg["upstreams"] = [{"name": n, "endpoints": ["127.0.0.1:9000"]} for n in sorted(names)]
    return cfg


@pytest.fixture(scope="module")
def repo_like_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("snippets")
    (root / "conf").mkdir()
    (root / "conf" / "examples").symlink_to(SOURCE_DIR / "conf" / "examples")
    r = run([SOURCE_DIR / "conf" / "make-test-certs.sh", root / "conf" / "tls"])
    assert r.returncode == 0, r.stdout + r.stderr
    (root / "my-keys.txt").write_text("me " + "0" * 64 + "\n")
    return root


@pytest.mark.parametrize("page,line,snippet", yaml_snippets())
def test_yaml_snippets_are_valid_configuration(repo_like_root, page, line, snippet):
    """Every ```yaml block of these pages passes gateway --check, completed with what it
    leaves out (a listener, the upstreams it names)."""
    # BaseLoader: every scalar a string, as the gateway reads them (`off` stays `off`).
    fragment = yaml.load(snippet, Loader=yaml.BaseLoader)
    cfg = snippet_config(fragment)
    f = repo_like_root / f"snippet-{page.stem}-{line}.yaml"
    f.write_text(json.dumps(cfg, indent=1) + "\n")
    r = run([GATEWAY_BIN, "--check", "-c", f], cwd=repo_like_root)
    assert r.returncode == 0 and r.stdout.strip() == "configuration OK", \
        f"{page.relative_to(SOURCE_DIR)}:{line}: the snippet is refused:\n{r.stdout}{r.stderr}\n{snippet}"


def test_markdown_tables_are_rectangular():
    """Every row of a table has as many cells as its header (an unescaped | in a cell
    silently shifts the columns)."""
    pages = [DOCS / n for n in ("configuration.md", "operations.md", "security.md", "observability.md",
                                "migrating-from-nginx.md", "getting-started.md")]
    pages += [DOCS / "filters" / f"{n}.md" for n in ("request_id", "ip_access", "cors", "body_limit",
                                                      "security_headers")]
    pages += [SOURCE_DIR / "deploy" / "README.md"]
    problems = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        width = None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.startswith("|"):
                width = None
                continue
            cells = len(re.split(r"(?<!\\)\|", line.strip()[1:-1]))
            if width is None:
                width = cells
            elif cells != width:
                problems.append(f"{page.relative_to(SOURCE_DIR)}:{n}: {cells} cells, the header has {width}")
    assert not problems, "\n".join(problems)
