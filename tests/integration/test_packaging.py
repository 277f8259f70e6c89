"""Packaging and deployment: the Dockerfile (linted, and its build steps run on the host by
scripts/build-image-steps.sh), the staged image's binary and HEALTHCHECK, deploy/
(docker-compose, Kubernetes, systemd) and the example configurations in conf/examples.

Docker cannot run on our build machines: what can be checked without it is checked here.
Needs python3-yaml (scripts/install-deps.sh test), promtool is not used here.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from harness import GATEWAY_BIN, SOURCE_DIR, Gateway, is_sanitized_build

DEPLOY = SOURCE_DIR / "deploy"
DOCKERFILE = SOURCE_DIR / "Dockerfile"
STEPS = SOURCE_DIR / "scripts" / "build-image-steps.sh"
LINT = SOURCE_DIR / "scripts" / "lint-dockerfile.py"
PYTHON = "/usr/bin/python3"


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 50)
    return subprocess.run([str(c) for c in cmd], **kw)


def duration_seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text).strip())
    assert m, f"not a duration: {text!r}"
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def is_local_literal(host: str) -> bool:
    """An IP literal or localhost: resolvable without asking DNS (the tests ask no
    resolver: no network beyond this machine)."""
    if host == "localhost":
        return True
    try:
        socket.inet_pton(socket.AF_INET, host)
        return True
    except OSError:
        return False


def local_address(value: str) -> str:
    """host:port with a DNS name (a cluster or compose service name) turned into
    127.0.0.1:port, for --check here."""
    m = re.fullmatch(r"([A-Za-z0-9.-]+):(\d+)", value)
    if m and not is_local_literal(m.group(1)):
        return f"127.0.0.1:{m.group(2)}"
    return value


def env_for_conf(text: str, given: dict[str, str] | None = None) -> dict[str, str]:
    """The environment --check needs for a conf: `given` values (made local), and local
    addresses for ${NAME:-host:port} defaults that do not resolve here."""
    env = dict(os.environ)
    for k, v in (given or {}).items():
        env[k] = local_address(str(v))
    for name, default in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}", text):
        if name not in env and local_address(default) != default:
            env[name] = local_address(default)
    return env


def gateway_check(conf: Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run([GATEWAY_BIN, "--check", "-c", conf], cwd=cwd, env=env)


def assert_ok(r: subprocess.CompletedProcess, what: str) -> None:
    assert r.returncode == 0 and r.stdout.strip() == "configuration OK", \
        f"{what}: gateway --check says:\n{r.stdout}{r.stderr}"


@pytest.fixture(scope="module")
def repo_like_root(tmp_path_factory):
    """A directory laid out like the repository root for relative paths in confs:
    conf/examples (the real one) and conf/tls (development certificates)."""
    root = tmp_path_factory.mktemp("root")
    (root / "conf").mkdir()
    (root / "conf" / "examples").symlink_to(SOURCE_DIR / "conf" / "examples")
    r = run([SOURCE_DIR / "conf" / "make-test-certs.sh", root / "conf" / "tls"])
    assert r.returncode == 0, r.stdout + r.stderr
    return root


# ------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_lint_passes():
    r = run([PYTHON, LINT, DOCKERFILE])
    assert r.returncode == 0, r.stdout + r.stderr


BAD_DOCKERFILES = {
    "DF001": "FROM debian\nUSER 1\nHEALTHCHECK CMD [\"true\"]\n",
    "DF002": "FROM debian:12\nADD https://example.com/tool /usr/bin/tool\n",
    "DF003": "FROM debian:12\nHEALTHCHECK CMD [\"true\"]\n",
    "DF004": "FROM debian:12\nUSER 1000\n",
    "DF005": "FROM debian:12\nENV API_TOKEN=abc123\nUSER 1\n",
    "DF006": "FROM debian:12\nRUN apt-get update && apt-get install -y curl\nUSER 1\n",
    "DF007": "FROM debian:12\nUSER 1\nCMD gateway -c /etc/gateway/gateway.yaml\n",
    "DF008": "FROM debian:12\nWORKDIR src\nUSER 1\n",
    "DF009": "FROM debian:12\nUSER 1\nHEALTHCHECK CMD [\"true\"]\n",
    "DF010": "FROM debian:12\nCOPY --from=builder /a /b\nUSER 1\n",
    "DF011": "FROM debian:12\nRUN curl -fsSL https://example.com/install.sh | sh\nUSER 1\n",
}


@pytest.mark.parametrize("rule", sorted(BAD_DOCKERFILES))
def test_dockerfile_lint_catches(tmp_path, rule):
    f = tmp_path / "Dockerfile"
    f.write_text(BAD_DOCKERFILES[rule])
    r = run([PYTHON, LINT, f])
    assert r.returncode == 1 and f" {rule} " in r.stdout, r.stdout + r.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            kw, _, args = line.partition(" ")
            out.append((kw.upper(), args.strip()))
    return out


def test_dockerfile_runs_the_tested_steps():
    """The image is built by the same commands this suite runs on the host."""
    ins = dockerfile_instructions()
    runs = [a for k, a in ins if k == "RUN"]
    assert any("scripts/install-deps.sh" in r for r in runs), "build stage must use install-deps.sh as make does"
    steps = " ".join(runs)
    for sub in ("build-image-steps.sh build", "build-image-steps.sh install", "build-image-steps.sh verify"):
        assert sub in steps, f"Dockerfile does not run `{sub}`"
    assert any("runtime-packages.txt" in a for k, a in ins if k in ("COPY", "RUN"))
    froms = [a for k, a in ins if k == "FROM"]
    assert len(froms) == 2 and "AS build" in froms[0] and "-slim" in froms[1], froms

    final = ins[[i for i, (k, _) in enumerate(ins) if k == "FROM"][-1]:]
    kinds = {k for k, _ in final}
    for k in ("USER", "HEALTHCHECK", "STOPSIGNAL", "EXPOSE", "VOLUME", "ENTRYPOINT", "CMD", "LABEL"):
        assert k in kinds, f"the runtime stage has no {k}"
    user = [a for k, a in final if k == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    assert [a for k, a in final if k == "STOPSIGNAL"] == ["SIGTERM"]
    assert "gateway-healthcheck" in [a for k, a in final if k == "HEALTHCHECK"][0]
    assert '"/etc/gateway/gateway.yaml"' in [a for k, a in final if k == "CMD"][0]
    exposed = " ".join(a for k, a in final if k == "EXPOSE").split()
    assert "8080" in exposed and "9901" in exposed

    # The version label defaults to the project's version.
    cmake_version = re.search(r"project\(gateway VERSION (\S+)", (SOURCE_DIR / "CMakeLists.txt").read_text()).group(1)
    assert f"ARG VERSION={cmake_version}" in DOCKERFILE.read_text()
    assert 'org.opencontainers.image.version="${VERSION}"' in DOCKERFILE.read_text()


def test_runtime_packages_are_debian_12_names():
    r = run([STEPS, "runtime-packages"])
    assert r.returncode == 0, r.stderr
    pkgs = r.stdout.split()
    for p in ("libuv1", "libssl3", "libre2-9", "libhiredis0.14", "libyaml-cpp0.7", "libspdlog1.10", "libfmt9"):
        assert p in pkgs
    q = run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n", *pkgs])
    installed = {line.split()[0] for line in q.stdout.splitlines() if line.endswith("install ok installed")}
    # Here (a build machine), each runtime library is installed as a dependency of its -dev.
    assert set(pkgs) <= installed, f"not installed here: {set(pkgs) - installed}"


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    if is_sanitized_build():
        pytest.skip("a sanitizer build links libasan/libubsan, which no runtime image ships")
    root = tmp_path_factory.mktemp("image") / "stage"
    r = run([STEPS, "all", "--no-deps", "--binary", GATEWAY_BIN, "--stage", root])
    assert r.returncode == 0, f"build-image-steps.sh failed:\n{r.stdout}{r.stderr}"
    assert "verified" in r.stderr and "configuration OK" in r.stdout
    return root


def test_build_image_steps_stage_the_image(stage):
    """ldd: every library comes from the runtime package list; --version; --check of the
    image's own configuration (all done by the script's verify step)."""
    assert (stage / "usr/local/bin/gateway").is_file()
    assert os.access(stage / "usr/local/bin/gateway-healthcheck", os.X_OK)
    assert (stage / "etc/gateway/gateway.yaml").is_file()
    assert (stage / "var/log/gateway").is_dir()
    r = run([stage / "usr/local/bin/gateway", "--version"])
    assert r.returncode == 0 and r.stdout.startswith("gateway ")


def test_build_image_steps_catch_a_missing_runtime_library(stage, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("\n".join(p for p in run([STEPS, "runtime-packages"]).stdout.split() if p != "libre2-9"))
    r = run([STEPS, "verify", stage], env={**os.environ, "GATEWAY_RUNTIME_PACKAGES": str(short)})
    assert r.returncode == 1
    assert "libre2-9" in r.stderr and "does not install" in r.stderr, r.stderr


def test_image_config_needs_its_upstream(stage):
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_UPSTREAM"}
    r = gateway_check(stage / "etc/gateway/gateway.yaml", stage / "etc/gateway", env)
    assert r.returncode == 1 and "GATEWAY_UPSTREAM" in r.stdout, r.stdout


def test_staged_image_serves_and_its_healthcheck_works(stage, upstream, tmp_path):
    """The staged binary on the staged configuration, as the container would run it:
    proxies, answers the HEALTHCHECK script, drains on SIGTERM, writes no file."""
    before = sorted(p.relative_to(stage) for p in stage.rglob("*"))
    conf_dir = stage / "etc/gateway"
    # The image's config listens on 0.0.0.0:8080; here, on a reserved port of the harness.
    conf = tmp_path / "etc-gateway-gateway.yaml"
    gw = Gateway(tmp_path, "", name="image")
    conf.write_text((conf_dir / "gateway.yaml").read_text().replace(
        "address: 0.0.0.0:8080", f"address: 127.0.0.1:{gw.port}"))
    gw.args = ["-c", str(conf)]
    gw.env = {"GATEWAY_UPSTREAM": upstream.address,
              "GATEWAY_ADMIN_ADDRESS": f"127.0.0.1:{gw.admin_port}", "GATEWAY_WORKERS": "1"}
    gw.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.port}/hello", timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["X-Request-ID"]
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        hc = stage / "usr/local/bin/gateway-healthcheck"
        ok = run([hc], env={**os.environ, "GATEWAY_HEALTHCHECK_ADDRESS": f"127.0.0.1:{gw.admin_port}"})
        assert ok.returncode == 0, ok.stderr
        missing = run([hc, f"127.0.0.1:{gw.admin_port}", "/no-such-endpoint"])
        assert missing.returncode == 1 and "404" in missing.stderr
    finally:
        assert gw.stop() == 0
    down = run([stage / "usr/local/bin/gateway-healthcheck", f"127.0.0.1:{gw.admin_port}"])
    assert down.returncode == 1
    assert sorted(p.relative_to(stage) for p in stage.rglob("*")) == before, "the gateway wrote into the image"


# ------------------------------------------------------------------------------ conf/ examples


EXAMPLES = sorted((SOURCE_DIR / "conf" / "examples").glob("*.yaml"))


def test_there_are_examples():
    names = {p.name for p in EXAMPLES}
    assert {"minimal.yaml", "api-jwt.yaml", "public-site.yaml", "multi-replica-redis.yaml"} <= names


@pytest.mark.parametrize("conf", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_check(repo_like_root, conf):
    r = gateway_check(Path("conf/examples") / conf.name, repo_like_root, env_for_conf(conf.read_text()))
    assert_ok(r, str(conf.relative_to(SOURCE_DIR)))


def test_make_run_config_passes_check():
    r = gateway_check(SOURCE_DIR / "conf" / "gateway.yaml", SOURCE_DIR, dict(os.environ))
    assert_ok(r, "conf/gateway.yaml")


def test_demo_keys_are_marked_as_demo():
    text = (SOURCE_DIR / "conf" / "examples" / "api-keys.txt").read_text()
    assert "NOT real" in text or "not-a-real-key" in text
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            assert "demo" in line.split()[0], line


# ------------------------------------------------------------------------------ docker-compose


def load_all(path: Path) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def test_compose_file():
    compose = load_all(DEPLOY / "docker-compose.yaml")[0]
    services = compose["services"]
    gateways = {n: s for n, s in services.items() if n.startswith("gateway")}
    assert len(gateways) == 2, "two gateway replicas"
    assert "redis" in services and "demo" in services
    host_ports = set()
    for name, s in gateways.items():
        assert s["read_only"] is True and s["user"].split(":")[0] not in ("0", "root")
        assert s["stop_signal"] == "SIGTERM"
        assert "ALL" in s["cap_drop"]
        host_ports.update(p.split(":")[0] for p in s["ports"])
        mounts = [v.split(":") for v in s["volumes"]]
        conf = [m for m in mounts if m[1] == "/etc/gateway/gateway.yaml"]
        assert conf, f"{name}: no configuration mounted at /etc/gateway/gateway.yaml"
        assert (DEPLOY / conf[0][0]).resolve() == (DEPLOY / "compose" / "gateway.yaml").resolve()
        assert set(s["depends_on"]) == {"demo", "redis"}
    assert len(host_ports) == 2, "the replicas must publish different host ports"

    gw_conf = yaml.safe_load((DEPLOY / "compose" / "gateway.yaml").read_text())
    drain = duration_seconds(gw_conf["timeouts"]["drain"])
    for s in gateways.values():
        assert duration_seconds(s["stop_grace_period"]) > drain
    store = gw_conf["rate_limit_store"]
    assert store["type"] == "redis" and int(store["redis"]["replicas"]) == len(gateways)

    demo = services["demo"]
    script = [v.split(":") for v in demo["volumes"]][0]
    assert (DEPLOY / script[0]).resolve() == (SOURCE_DIR / "tools" / "demo_upstream.py").resolve()
    assert script[1] in demo["command"]


def test_compose_gateway_config_passes_check():
    compose = load_all(DEPLOY / "docker-compose.yaml")[0]
    env = compose["services"]["gateway-1"]["environment"]
    given = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}
    conf = DEPLOY / "compose" / "gateway.yaml"
    r = gateway_check(conf, DEPLOY / "compose", env_for_conf(conf.read_text(), given))
    assert_ok(r, "deploy/compose/gateway.yaml")


# ------------------------------------------------------------------------------ Kubernetes


def k8s_objects() -> dict[str, dict]:
    objs = {}
    for f in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for d in load_all(f):
            assert "kind" in d and "apiVersion" in d, f"{f.name}: not a Kubernetes object"
            if d["kind"] == "Kustomization":
                objs["Kustomization"] = d
                continue
            assert d.get("metadata", {}).get("name"), f"{f.name}: {d['kind']} without a name"
            objs[f"{d['kind']}/{d['metadata']['name']}"] = d
    return objs


def test_kubernetes_manifests_parse_and_are_listed():
    files = sorted(p.name for p in (DEPLOY / "kubernetes").glob("*.yaml"))
    objs = k8s_objects()
    kinds = {k.split("/")[0] for k in objs}
    for kind in ("Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
                 "HorizontalPodAutoscaler", "Kustomization"):
        assert kind in kinds, f"no {kind} in deploy/kubernetes"
    listed = objs["Kustomization"]["resources"]
    assert sorted(listed) == sorted(f for f in files if f != "kustomization.yaml")


def gateway_deployment(objs):
    dep = objs["Deployment/gateway"]
    pod = dep["spec"]["template"]["spec"]
    container = [c for c in pod["containers"] if c["name"] == "gateway"][0]
    return dep, pod, container


def configmap_conf(objs) -> str:
    return objs["ConfigMap/gateway-config"]["data"]["gateway.yaml"]


def test_kubernetes_probes_and_shutdown():
    objs = k8s_objects()
    dep, pod, c = gateway_deployment(objs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    conf = yaml.safe_load(configmap_conf(objs))
    admin_host, admin_port = conf["admin"]["address"].rsplit(":", 1)
    # The kubelet probes the pod IP: admin cannot stay on loopback.
    assert admin_host == "0.0.0.0" and int(admin_port) == ports["admin"]
    for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready"),
                        ("startupProbe", "/health/startup")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and get["port"] in ("admin", ports["admin"]), (probe, get)
    # preStop sleep + drain + margin fit in the grace period.
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = duration_seconds(conf["timeouts"]["drain"])
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= int(pre_stop[1]) + drain + 1, (grace, pre_stop, drain)
    # The Service exposes the proxy, never the admin port.
    svc = objs["Service/gateway"]
    assert all(p["targetPort"] in ("http", ports["http"]) for p in svc["spec"]["ports"])
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_kubernetes_security_and_resources():
    objs = k8s_objects()
    dep, pod, c = gateway_deployment(objs)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    pdb = objs["PodDisruptionBudget/gateway"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = objs["HorizontalPodAutoscaler/gateway"]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2, "one replica cannot survive a disruption"


def test_kubernetes_configmap_passes_check(tmp_path):
    """The ConfigMap's gateway.yaml with the Deployment's environment (Secret values
    included) and its volumes laid out as in the pod."""
    objs = k8s_objects()
    _, pod, c = gateway_deployment(objs)
    secret = objs["Secret/gateway-credentials"]
    secret_data = dict(secret.get("stringData", {}))
    text = configmap_conf(objs)

    env = {}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret_data, f"Secret has no key {ref['key']}"
            env[e["name"]] = secret_data[ref["key"]]
    # Every ${NAME} without a default is provided by the Deployment.
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
        assert name in env, f"${{{name}}} in the ConfigMap is not set by the Deployment"

    volumes = {v["name"]: v for v in pod["volumes"]}
    conf_path = None
    for m in c["volumeMounts"]:
        v = volumes[m["name"]]
        target = tmp_path / m["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in v:
            items = v["configMap"].get("items") or [{"key": k, "path": k} for k in objs[f"ConfigMap/{v['configMap']['name']}"]["data"]]
            for it in items:
                data = objs[f"ConfigMap/{v['configMap']['name']}"]["data"][it["key"]]
                (target / it["path"]).write_text(data)
        elif "secret" in v:
            for it in v["secret"]["items"]:
                assert it["key"] in secret_data, f"Secret has no key {it['key']}"
                (target / it["path"]).write_text(secret_data[it["key"]])
    args = c["args"]
    conf_in_pod = args[args.index("-c") + 1]
    # Paths inside the pod -> the same paths under tmp_path.
    local_text = text
    for m in c["volumeMounts"]:
        local_text = local_text.replace(m["mountPath"] + "/", str(tmp_path / m["mountPath"].lstrip("/")) + "/")
    conf_path = tmp_path / conf_in_pod.lstrip("/")
    assert conf_path.is_file(), f"{conf_in_pod} is not provided by a volume"
    conf_path.write_text(local_text)
    r = gateway_check(conf_path, tmp_path, env_for_conf(text, env))
    assert_ok(r, "deploy/kubernetes/configmap.yaml")


# ------------------------------------------------------------------------------ systemd


UNIT = DEPLOY / "systemd" / "gateway.service"


def unit_directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        k, _, v = line.partition("=")
        out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_systemd_unit_settings():
    d = unit_directives()
    assert d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert d["KillSignal"] == ["SIGTERM"]
    assert "/bin/kill -HUP $MAINPID" in d["ExecReload"]
    assert any(x.startswith("/usr/local/bin/gateway ") and "-c /etc/gateway/gateway.yaml" in x for x in d["ExecStart"])
    drain = 20  # timeouts.drain default
    assert duration_seconds(d["TimeoutStopSec"][0]) >= drain + 5


def test_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed: cannot verify deploy/systemd/gateway.service")
    unit = tmp_path / "gateway.service"
    # verify insists that the binaries exist: point them at the one under test.
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/gateway", str(Path(GATEWAY_BIN).resolve())))
    r = run([tool, "verify", unit])
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Unknown" not in out and "ignoring" not in out.lower(), out
    sec = run([tool, "security", "--offline=yes", unit])
    if sec.returncode == 0:
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", sec.stdout)
        assert m and float(m.group(1)) <= 3.0, sec.stdout[-2000:]

