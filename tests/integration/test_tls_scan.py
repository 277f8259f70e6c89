"""testssl.sh against a TLS listener (issue 4): scripts/tls-scan.sh starts the gateway on
fresh development certificates (an ECDSA and an RSA one, the default security headers)
and fails on any finding rated HIGH or CRITICAL, or when testssl.sh could not scan.

A selection of testssl.sh's checks keeps it within BUDGET seconds: protocols, cipher
categories, forward secrecy, server preferences, certificates, HTTP headers and every
vulnerability check; left out are the client simulations and the per-protocol cipher
lists, which rate nothing HIGH that the others do not (a full scan takes about twice as
long: run scripts/tls-scan.sh by hand). Skipped when testssl.sh is not installed (Debian
package `testssl.sh`, in `scripts/install-deps.sh test`).
"""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from harness import GATEWAY_BIN, PDEATHSIG_PREFIX, SOURCE_DIR

SCAN = SOURCE_DIR / "scripts" / "tls-scan.sh"
CHECKS = "-p -s -f -P -S -h -U"
BUDGET = 120  # seconds for the whole script; about 50 s on an idle 2-core machine


def _kill_group(pgid: int, sig) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


@pytest.mark.skipif(shutil.which("testssl") is None,
                    reason="testssl.sh is not installed (apt-get install testssl.sh, or "
                           "scripts/install-deps.sh test)")
def test_testssl_finds_nothing_rated_high_or_critical():
    env = dict(os.environ,
               TESTSSL_ARGS=f"{CHECKS} --connect-timeout 10 --openssl-timeout 10")
    started = time.monotonic()
    # its own session: on a timeout the script, testssl.sh's openssl children and the
    # gateway it started are stopped together, by that process group's id
    proc = subprocess.Popen([*PDEATHSIG_PREFIX, "bash", str(SCAN), os.path.abspath(GATEWAY_BIN)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=SOURCE_DIR, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=BUDGET)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGTERM)  # the script's EXIT trap stops its gateway
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"scripts/tls-scan.sh did not finish within {BUDGET}s:\n"
                    f"{out.decode(errors='replace')[-3000:]}")
    finally:
        _kill_group(proc.pid, signal.SIGKILL)  # anything left behind in the group
    text = out.decode(errors="replace")
    elapsed = time.monotonic() - started
    print(f"tls-scan.sh ({elapsed:.0f} s):\n{text}")
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{text}"
    assert re.search(r"testssl\.sh: \d+ findings, 0 rated HIGH or CRITICAL", text), text
