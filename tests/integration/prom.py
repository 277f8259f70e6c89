"""Reads the gateway's /metrics for the integration tests: a strict parser of the
Prometheus text format 0.0.4 (label values unescaped), and lookups by name and labels.

    samples = scrape(gw)
    value(samples, "gateway_requests_total", route="a", code="200")   # None when absent
"""

from __future__ import annotations

import re
import time
import urllib.request

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class Sample(tuple):
    """(name, labels: dict, value: float)"""

    @property
    def name(self):
        return self[0]

    @property
    def labels(self):
        return self[1]

    @property
    def value(self):
        return self[2]


def scrape_text(gw, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}/metrics", timeout=timeout) as r:
        assert r.status == 200
        ctype = r.headers.get("Content-Type", "")
        assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
        return r.read().decode("utf-8")


def _unescape_label_value(s: str, i: int) -> tuple[str, int]:
    """Parses a quoted label value starting after the opening quote at s[i]; returns the
    value and the index after the closing quote."""
    out = []
    while True:
        if i >= len(s):
            raise ValueError(f"unterminated label value in {s!r}")
        c = s[i]
        if c == "\\":
            n = s[i + 1] if i + 1 < len(s) else ""
            if n == "\\":
                out.append("\\")
            elif n == '"':
                out.append('"')
            elif n == "n":
                out.append("\n")
            else:
                raise ValueError(f"bad escape \\{n} in {s!r}")
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        elif c == "\n":
            raise ValueError(f"raw newline in label value: {s!r}")
        else:
            out.append(c)
            i += 1


def parse(text: str) -> list[Sample]:
    samples = []
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        m = _NAME.match(line)
        if not m:
            raise ValueError(f"bad metric line {line!r}")
        name = m.group(0)
        i = m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            i += 1
            while line[i] != "}":
                lm = _LABEL.match(line, i)
                if not lm or line[lm.end():lm.end() + 2] != '="':
                    raise ValueError(f"bad label in {line!r}")
                v, i = _unescape_label_value(line, lm.end() + 2)
                if lm.group(0) in labels:
                    raise ValueError(f"duplicate label in {line!r}")
                labels[lm.group(0)] = v
                if line[i] == ",":
                    i += 1
                elif line[i] != "}":
                    raise ValueError(f"bad label separator in {line!r}")
            i += 1
        rest = line[i:]
        if not rest.startswith(" "):
            raise ValueError(f"no value in {line!r}")
        parts = rest.split()
        if len(parts) not in (1, 2):
            raise ValueError(f"bad value in {line!r}")
        samples.append(Sample((name, labels, float(parts[0]))))
    return samples


def scrape(gw) -> list[Sample]:
    return parse(scrape_text(gw))


def find(samples, name: str, **labels) -> list[Sample]:
    """Samples of `name` whose labels include `labels` (a subset match)."""
    return [s for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def value(samples, name: str, **labels):
    """The value of the one sample of `name` with exactly these labels; None when absent."""
    hits = [s for s in samples if s.name == name and s.labels == labels]
    assert len(hits) <= 1, hits
    return hits[0].value if hits else None


def total(samples, name: str, **labels) -> float:
    """The sum over the samples of `name` whose labels include `labels`."""
    return sum(s.value for s in find(samples, name, **labels))


def wait_value(gw, name: str, expected, timeout: float = 10.0, **labels):
    """Polls /metrics until value(name, labels) == expected (None: absent); returns the
    last samples."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(gw)
        got = value(samples, name, **labels)
        if got == expected:
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} = {got} after {timeout}s, expected {expected}")
        time.sleep(0.05)


def endpoint_healthy(gw, endpoint: str, upstream: str = "up"):
    """gateway_upstream_endpoint_healthy of one endpoint (None when absent)."""
    return value(scrape(gw), "gateway_upstream_endpoint_healthy", upstream=upstream, endpoint=endpoint)


def wait_endpoint_healthy(gw, endpoint: str, expected, timeout: float = 5.0, upstream: str = "up"):
    """Polls until the endpoint's health gauge is `expected`."""
    return wait_value(gw, "gateway_upstream_endpoint_healthy", expected, timeout=timeout,
                      upstream=upstream, endpoint=endpoint)
