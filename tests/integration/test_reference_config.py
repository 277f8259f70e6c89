"""The reference configuration of the product contract must be accepted as it is."""
import subprocess

from harness import GATEWAY_BIN as GATEWAY, reference_workdir, reference_yaml


def test_reference_yaml_checks_ok_with_its_files(tmp_path):
    # The files it names are relative to the working directory: lay them out there.
    reference_workdir(tmp_path)
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


def test_reference_yaml_with_spec_9_alternatives_checks_ok(tmp_path):
    # SPEC §9 has landed: the reference's commented alternatives to `address` are accepted.
    reference_workdir(tmp_path)
    text = reference_yaml().read_text()
    assert "redis: {address: 127.0.0.1:6379," in text
    for alternative in ("cluster: [10.0.0.1:6379, 10.0.0.2:6379]",
                        "sentinel: {master: gw, addresses: [10.0.0.5:26379]}"):
        variant = text.replace("type: memory ", "type: redis  ").replace(
            "address: 127.0.0.1:6379,", alternative + ",")
        path = tmp_path / "variant.yaml"
        path.write_text(variant)
        result = subprocess.run([GATEWAY, "--check", "-c", str(path)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (alternative, result.stdout + result.stderr)


def uncomment_block(text: str, first: str) -> str:
    """The reference with the commented block that starts with the line `# <first>` (and
    goes on with its indented `#   ` lines) uncommented."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("# " + first))
    lines[start] = lines[start][2:]
    i = start + 1
    while i < len(lines) and lines[i].startswith("#   "):
        lines[i] = lines[i][2:]
        i += 1
    assert i > start + 1, f"the {first} block has no body"
    return "".join(lines)


def test_reference_yaml_with_spec_10_tracing_checks_ok(tmp_path):
    # SPEC §10 has landed: the reference's commented `tracing:` block is accepted, and the
    # check really reads it (a bad value in it is refused, pointing into the block).
    reference_workdir(tmp_path)
    variant = uncomment_block(reference_yaml().read_text(), "tracing:")
    assert "\ntracing:" in variant and "sampler: {ratio: 0.01}" in variant
    path = tmp_path / "variant.yaml"
    path.write_text(variant)
    result = subprocess.run([GATEWAY, "--check", "-c", str(path)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    path.write_text(variant.replace("sampler: {ratio: 0.01}", "sampler: {ratio: 2}"))
    result = subprocess.run([GATEWAY, "--check", "-c", str(path)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    line_no = variant[:variant.index("sampler: {ratio")].count("\n") + 1
    assert f"variant.yaml:{line_no}:" in result.stdout and "sampler ratio" in result.stdout, \
        result.stdout


def test_reference_yaml_with_spec_8_protocol_checks_ok(tmp_path):
    # SPEC §8 has landed: the upstream's commented `protocol:` line is accepted with each of
    # its values, and a value outside them is refused at that line.
    reference_workdir(tmp_path)
    text = reference_yaml().read_text()
    commented = "    # protocol: http1"
    assert commented in text
    path = tmp_path / "variant.yaml"
    for value in ("http1", "h2", "auto"):
        path.write_text(text.replace(commented, "    protocol: " + value + "  "))
        result = subprocess.run([GATEWAY, "--check", "-c", str(path)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (value, result.stdout + result.stderr)
    path.write_text(text.replace(commented, "    protocol: h3   "))
    result = subprocess.run([GATEWAY, "--check", "-c", str(path)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    line_no = text[:text.index(commented)].count("\n") + 1
    assert f"variant.yaml:{line_no}:" in result.stdout and "h3" in result.stdout, result.stdout
