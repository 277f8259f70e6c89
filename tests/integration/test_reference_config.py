"""The reference configuration of the product contract must be accepted as it is."""
import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(os.environ.get("SOURCE_DIR", Path(__file__).resolve().parents[2]))
GATEWAY = os.environ.get("GATEWAY_BIN", str(SOURCE / "build" / "gateway"))


def reference_yaml() -> Path:
    shared = SOURCE.parent / "shared" / "reference.yaml"
    return shared if shared.exists() else SOURCE / "tests" / "data" / "reference.yaml"


def test_reference_yaml_checks_ok_with_its_files(tmp_path):
    # The files it names are relative to the working directory: lay them out there.
    conf = tmp_path / "conf"
    conf.mkdir()
    shutil.copy(SOURCE / "conf" / "jwks.json", conf / "jwks.json")
    shutil.copy(SOURCE / "conf" / "api-keys.txt", conf / "api-keys.txt")
    subprocess.run([str(SOURCE / "conf" / "make-test-certs.sh"), str(conf / "tls")], check=True,
                   capture_output=True, timeout=120)
    result = subprocess.run([GATEWAY, "--check", "-c", str(reference_yaml())], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "configuration OK"


def test_reference_yaml_without_its_files_names_each_missing_file(tmp_path):
    result = subprocess.run([GATEWAY, "--check", "-c", str(reference_yaml())], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    for missing in ("conf/tls/server.crt", "conf/jwks.json", "conf/api-keys.txt"):
        assert any(missing in line for line in lines), (missing, lines)
    for line in lines:
        # FILE:LINE:COL: message
        file, line_no, col, message = line.split(":", 3)
        assert file.endswith("reference.yaml") and int(line_no) > 0 and int(col) > 0 and message
