#!/usr/bin/env python3
"""A small Dockerfile linter for the rules that matter to this project.

Debian 12 packages no Dockerfile linter (hadolint is not in the archive; `apt-cache search
dockerfile lint` finds only an editor mode), so this checks, with the standard library:

  DF001 every FROM names a pinned image: a tag or digest, never `latest` or none
        (ARG defaults are substituted first; `FROM <stage>` of an earlier stage is fine)
  DF002 no ADD of a URL (unverified download), and no ADD where COPY does
  DF003 the final stage sets USER, and not root / 0
  DF004 the final stage has a HEALTHCHECK (not NONE)
  DF005 no secrets: no ENV/ARG whose name says password/secret/token/key with a value,
        no private key material, no COPY/ADD of key or .env files
  DF006 apt-get install uses --no-install-recommends and -y, and the same RUN removes
        /var/lib/apt/lists; no apt-get upgrade / dist-upgrade
  DF007 ENTRYPOINT and CMD in exec (JSON) form, so signals reach the process
  DF008 WORKDIR is absolute; no `cd` in RUN (use WORKDIR)
  DF009 the final stage has STOPSIGNAL, EXPOSE and an org.opencontainers.image.version LABEL
  DF010 COPY --from names an earlier stage (or a pinned image)
  DF011 no sudo; no curl|sh or wget|sh

Usage: scripts/lint-dockerfile.py [Dockerfile ...]   (default: Dockerfile)
Prints `FILE:LINE: DFnnn message` for each problem; exits 1 if there is one.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

SECRET_NAME = re.compile(r"(PASS(WORD|WD)?|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL|ACCESS_?KEY)",
                         re.IGNORECASE)
PRIVATE_KEY = re.compile(r"-----BEGIN ([A-Z ]+ )?PRIVATE KEY-----")
SECRET_FILE = re.compile(r"(^|/)(id_rsa|id_ed25519|id_ecdsa|\.env|\.netrc|\.npmrc|\.pypirc)$|\.(key|pem|p12|pfx)$")
URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    line: int
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> tuple[list[Instruction], list[Instruction]]:
    """(global ARGs before the first FROM, every instruction), continuation lines joined."""
    instructions: list[Instruction] = []
    escape = "\\"
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i]
        start = i + 1
        m = re.match(r"#\s*escape\s*=\s*(\S)", raw)
        if m and not instructions:
            escape = m.group(1)
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        parts = []
        while True:
            cur = lines[i].rstrip()
            if cur.endswith(escape):
                parts.append(cur[:-1])
                i += 1
                # comment lines inside a continuation are dropped, as Docker does
                while i < len(lines) and lines[i].strip().startswith("#"):
                    i += 1
                if i >= len(lines):
                    break
                continue
            parts.append(cur)
            i += 1
            break
        joined = " ".join(p.strip() for p in parts)
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
    global_args = []
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            global_args.append(ins)
    return global_args, instructions


def arg_defaults(args: list[Instruction]) -> dict[str, str]:
    out = {}
    for a in args:
        name, eq, value = a.args.partition("=")
        if eq:
            out[name.strip()] = value.strip().strip('"')
    return out


def substitute(text: str, values: dict[str, str]) -> str:
    def rep(m):
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", rep, text)


def image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    if "$" in image:
        return False  # an ARG without a default: anything could come in
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return bool(tag) and tag != "latest"


def split_flags(args: str) -> tuple[dict[str, str], str]:
    flags = {}
    rest = args
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        name, _, value = token[2:].partition("=")
        flags[name] = value
        rest = rest.strip()
    return flags, rest


def shell_commands(run: str) -> list[list[str]]:
    """RUN's shell text split into simple commands (on && || ; |)."""
    if run.startswith("["):
        try:
            return [json.loads(run)]
        except ValueError:
            return []
    try:
        lexer = shlex.shlex(run, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        tokens = run.split()
    commands, cur = [], []
    for t in tokens:
        if t in ("&&", "||", ";", "|", "&", ";;"):
            if cur:
                commands.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        commands.append(cur)
    return commands


def lint(path: Path) -> list[str]:
    text = path.read_text()
    problems: list[str] = []

    def report(line: int, code: str, message: str) -> None:
        problems.append(f"{path}:{line}: {code} {message}")

    global_args, instructions = parse(text)
    defaults = arg_defaults(global_args)

    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            flags, rest = split_flags(ins.args)
            words = rest.split()
            image = words[0] if words else ""
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(ins.line, image, name))
        elif stages:
            stages[-1].instructions.append(ins)
    if not stages:
        report(1, "DF001", "no FROM instruction")
        return problems

    names: list[str] = []
    for stage in stages:
        image = substitute(stage.image, defaults)
        if image.lower() not in names and image != "scratch" and not image_pinned(image):
            report(stage.line, "DF001", f"base image '{stage.image}' is not pinned to a tag or digest")
        if stage.name:
            names.append(stage.name.lower())

    for stage in stages:
        for ins in stage.instructions:
            kw, args = ins.keyword, ins.args
            if kw == "ADD":
                flags, rest = split_flags(args)
                sources = rest.split()[:-1]
                if any(URL.match(s) for s in sources):
                    report(ins.line, "DF002", "ADD of a URL: download in a RUN with a checksum, or COPY")
                elif not any(re.search(r"\.(tar|tgz|tar\.gz|tar\.xz|tar\.bz2)$", s) for s in sources):
                    report(ins.line, "DF002", "ADD where COPY does (ADD unpacks archives and fetches URLs)")
            if kw in ("COPY", "ADD"):
                flags, rest = split_flags(args)
                for s in rest.split()[:-1]:
                    if SECRET_FILE.search(s):
                        report(ins.line, "DF005", f"copies what looks like a secret: {s}")
                src = flags.get("from")
                if kw == "COPY" and src is not None:
                    src_sub = substitute(src, defaults)
                    if src_sub.lower() not in names and not src_sub.isdigit() and not image_pinned(src_sub):
                        report(ins.line, "DF010", f"COPY --from={src}: no earlier stage of that name")
            if kw in ("ENV", "ARG"):
                first = args.split(None, 1)
                if kw == "ENV" and first and "=" not in first[0]:
                    pairs = [(first[0], first[1] if len(first) > 1 else "")]  # legacy ENV NAME value
                else:
                    try:
                        pairs = [tuple(p.split("=", 1)) if "=" in p else (p, "") for p in shlex.split(args)]
                    except ValueError:
                        pairs = []
                for name, value in pairs:
                    if SECRET_NAME.search(name) and value:
                        report(ins.line, "DF005",
                               f"{kw} {name} carries a value: secrets end up in the image's history")
            if PRIVATE_KEY.search(args):
                report(ins.line, "DF005", "private key material in the Dockerfile")
            if kw == "WORKDIR" and not substitute(args, defaults).startswith("/"):
                report(ins.line, "DF008", f"WORKDIR '{args}' is not absolute")
            if kw == "RUN":
                commands = shell_commands(args)
                apt_install = False
                for cmd in commands:
                    words = [w for w in cmd if not re.match(r"^[A-Z_]+=", w)]
                    if not words:
                        continue
                    if words[0] == "sudo":
                        report(ins.line, "DF011", "sudo in RUN: the build runs as root already")
                    if words[0] == "cd":
                        report(ins.line, "DF008", "cd in RUN: use WORKDIR")
                    if "apt-get" in words:
                        at = words.index("apt-get")
                        sub = words[at + 1:]
                        if any(w in ("upgrade", "dist-upgrade") for w in sub):
                            report(ins.line, "DF006", "apt-get upgrade: pin the base image instead")
                        if "install" in sub:
                            apt_install = True
                            if "--no-install-recommends" not in sub:
                                report(ins.line, "DF006", "apt-get install without --no-install-recommends")
                            if not any(w in ("-y", "--yes", "-qy", "-yq", "--assume-yes") for w in sub):
                                report(ins.line, "DF006", "apt-get install without -y")
                if apt_install and "/var/lib/apt/lists" not in args:
                    report(ins.line, "DF006", "apt-get install without rm -rf /var/lib/apt/lists/* in the same RUN")
                if re.search(r"(curl|wget)[^|;&]*\|\s*(ba|da)?sh\b", args):
                    report(ins.line, "DF011", "piping a download into a shell")
            if kw in ("ENTRYPOINT", "CMD"):
                try:
                    ok = isinstance(json.loads(args), list)
                except ValueError:
                    ok = False
                if not ok:
                    report(ins.line, "DF007", f"{kw} in shell form: signals go to /bin/sh, not the process")

    final = stages[-1]
    keywords = {ins.keyword for ins in final.instructions}
    users = [ins for ins in final.instructions if ins.keyword == "USER"]
    if not users:
        report(final.line, "DF003", "the final stage runs as root: add USER")
    else:
        user = substitute(users[-1].args, defaults).split(":")[0].strip()
        if user in ("root", "0", ""):
            report(users[-1].line, "DF003", f"USER {users[-1].args} is root")
    checks = [ins for ins in final.instructions if ins.keyword == "HEALTHCHECK"]
    if not checks or checks[-1].args.strip().upper() == "NONE":
        report(final.line, "DF004", "the final stage has no HEALTHCHECK")
    if "STOPSIGNAL" not in keywords:
        report(final.line, "DF009", "the final stage has no STOPSIGNAL")
    if "EXPOSE" not in keywords:
        report(final.line, "DF009", "the final stage has no EXPOSE")
    labels = " ".join(ins.args for ins in final.instructions if ins.keyword == "LABEL")
    if "org.opencontainers.image.version" not in labels:
        report(final.line, "DF009", "no org.opencontainers.image.version LABEL")
    return problems


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv[1:]] or [Path("Dockerfile")]
    problems = []
    for f in files:
        problems += lint(f)
    for p in problems:
        print(p)
    if not problems:
        print(f"{', '.join(map(str, files))}: no problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
