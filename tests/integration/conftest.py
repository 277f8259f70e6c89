"""Fixtures: every gateway and upstream a test starts is stopped at teardown, by PID,
whatever the outcome of the test."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import GATEWAY_BIN, Gateway  # noqa: E402
from upstream import Upstream  # noqa: E402


def pytest_configure(config):
    if not Path(GATEWAY_BIN).is_file():
        raise pytest.UsageError(f"gateway binary not found at {GATEWAY_BIN} (set GATEWAY_BIN)")


@pytest.fixture
def upstream_factory():
    made = []

    def make(name=None, **kw):
        u = Upstream(name or f"up{len(made)}", **kw)
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


@pytest.fixture
def upstream(upstream_factory):
    return upstream_factory("up")


@pytest.fixture
def gateway_factory(tmp_path, request):
    """start(config, **kw) -> a running Gateway. At teardown each one still running gets
    SIGTERM and must exit 0 (a crash or a hang is reported as an error of the test); it is
    killed by PID in any case."""
    made = []

    def start(config, name=None, **kw):
        gw = Gateway(tmp_path, config, name=name or f"gw{len(made)}", **kw)
        made.append(gw)
        return gw.start()

    yield start
    problems = []
    for gw in made:
        try:
            if gw.running:
                rc = gw.stop(expect=None)
                if rc != 0:
                    problems.append(f"{gw.name}: exit code {rc} after SIGTERM:\n{gw.app_log_text()}")
        except AssertionError as e:
            problems.append(f"{gw.name}: {e}")
        finally:
            gw.kill()
        text = gw.app_log_text()
        if "AddressSanitizer" in text or "runtime error:" in text:
            problems.append(f"{gw.name}: sanitizer report:\n{text}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
