"""Checks docker-compose.yml and the Dockerfiles without a Docker engine.

Run through docker/validate.sh, which provides the pinned tools (jsonschema,
PyYAML, hadolint) in a venv. What is checked, in this order:

compose file
  * YAML as Compose reads it (YAML 1.2 scalars: `on`, `no`, `80:80` stay
    strings; duplicate keys are errors), then `${VAR...}` interpolation with
    the values of the env file (.env.example), as `docker compose` does
    before it validates;
  * the official compose-spec JSON schema (docker/schema/compose-spec.json);
  * the project's rules: pinned images, a healthcheck on every long-running
    service, depends_on with conditions that can be met, CPU and memory
    limits on every service adding up to the budget, published ports on
    127.0.0.1 only, named volumes for data and read-only bind mounts of
    files that exist, no credentials written into the file, containers
    listening on 0.0.0.0, nginx upstreams that match the services;
Dockerfiles (the ones compose builds, and any other in the repository)
  * hadolint;
  * multi-stage, and every image a service runs from a stage with a
    non-root USER and a HEALTHCHECK (or a compose healthcheck), no ADD.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

# The challenge's resources for the whole stack.
BUDGET_CPUS = 1.5
BUDGET_MEMORY_BYTES = 3_000_000_000  # 3 GB; also below 3 GiB

# docker/schema/compose-spec.json: where it comes from, and its hash, so that
# a changed file is noticed (update both with `docker/validate.sh --refresh-schema`).
SCHEMA_SOURCE = (
    "compose-spec/compose-spec schema/compose-spec.json, "
    "as vendored in check-jsonschema 0.39.0 (PyPI)"
)
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"

SECRET_KEY = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIAL)", re.I)
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
LOCAL_HOST_IPS = {"127.0.0.1", "::1", "[::1]"}


class Report:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def ok(self, what: str) -> None:
        print(f"  ok    {what}")

    def fail(self, what: str) -> None:
        self.problems.append(what)
        print(f"  FAIL  {what}")

    def info(self, what: str) -> None:
        print(f"        {what}")

    def check(self, what: str, problems: list[str]) -> None:
        """One named check: ok, or FAIL with each problem."""
        if problems:
            for p in problems:
                self.fail(f"{what}: {p}")
        else:
            self.ok(what)


# ---------------------------------------------------------------------------
# YAML as Compose reads it
# ---------------------------------------------------------------------------
class ComposeLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars and duplicate keys as errors.

    Compose (compose-go, yaml.v3) reads `no`, `on`, `80:80` and dates as
    strings; PyYAML's YAML 1.1 would make them booleans, a base-60 integer
    and a date.
    """


_YAML11_ONLY = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:timestamp")
ComposeLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in _YAML11_ONLY]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ComposeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
ComposeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    value = loader.construct_scalar(node)
    if value.startswith("0o"):
        return int(value[2:], 8)
    return int(value, 0) if value.startswith("0x") else int(value, 10)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    # Keys written twice in one mapping are errors; a key that overrides one
    # merged in with `<<: *anchor` is not (checked before the merge).
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


ComposeLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
ComposeLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


# ---------------------------------------------------------------------------
# Interpolation, as the compose spec defines it
# ---------------------------------------------------------------------------
class InterpolationError(Exception):
    pass


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Interpolator:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.used: dict[str, str] = {}  # variable -> how it was used ("default", "required", "plain")

    def expand(self, s: str) -> str:
        out, i = [], 0
        while i < len(s):
            c = s[i]
            if c != "$":
                out.append(c)
                i += 1
                continue
            nxt = s[i + 1] if i + 1 < len(s) else ""
            if nxt == "$":
                out.append("$")
                i += 2
            elif nxt == "{":
                end = self._closing_brace(s, i + 2)
                out.append(self._braced(s[i + 2 : end]))
                i = end + 1
            else:
                m = NAME.match(s, i + 1)
                if not m:
                    raise InterpolationError(f"invalid interpolation format in {s!r}: a lone '$' (write '$$')")
                out.append(self._lookup(m.group(0), "plain"))
                i = m.end()
        return "".join(out)

    @staticmethod
    def _closing_brace(s: str, start: int) -> int:
        depth, i = 1, start
        while i < len(s):
            if s.startswith("${", i):
                depth, i = depth + 1, i + 2
                continue
            if s[i] == "}":
                depth -= 1
                if depth == 0:
                    return i
            i += 1
        raise InterpolationError(f"invalid interpolation format in {s!r}: unclosed '${{'")

    def _lookup(self, name: str, how: str) -> str:
        self.used.setdefault(name, how)
        return self.env.get(name, "")

    def _braced(self, body: str) -> str:
        m = NAME.match(body)
        if not m:
            raise InterpolationError(f"invalid interpolation format: '${{{body}}}'")
        name, rest = m.group(0), body[m.end() :]
        is_set = name in self.env
        non_empty = bool(self.env.get(name))
        if rest == "":
            return self._lookup(name, "plain")
        for op in (":-", "-", ":?", "?", ":+", "+"):
            if rest.startswith(op):
                arg = rest[len(op) :]
                break
        else:
            raise InterpolationError(f"invalid interpolation format: '${{{body}}}'")
        if op in (":-", "-"):
            self.used.setdefault(name, "default")
            present = non_empty if op == ":-" else is_set
            return self.env[name] if present else self.expand(arg)
        if op in (":?", "?"):
            self.used[name] = "required"
            present = non_empty if op == ":?" else is_set
            if not present:
                raise InterpolationError(f"required variable {name} is missing a value: {self.expand(arg)}")
            return self.env[name]
        self.used.setdefault(name, "default")
        present = non_empty if op == ":+" else is_set
        return self.expand(arg) if present else ""

    def walk(self, value, path: str = ""):
        if isinstance(value, dict):
            return {k: self.walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str):
            try:
                return self.expand(value)
            except InterpolationError as e:
                raise InterpolationError(f"{path}: {e}") from None
        return value


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        if not sep or not NAME.fullmatch(key.strip()):
            raise ValueError(f"{path}:{n}: not KEY=VALUE: {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


# ---------------------------------------------------------------------------
# Helpers for compose values
# ---------------------------------------------------------------------------
def memory_bytes(v) -> int:
    """docker's RAMInBytes: binary units, `b` optional, case-insensitive."""
    if isinstance(v, int):
        return v
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?\s*", str(v), re.I)
    if not m:
        raise ValueError(f"not a memory size: {v!r}")
    return int(float(m.group(1)) * 1024 ** " kmgtp".index(m.group(2).lower() or " "))


def environment_map(env) -> dict[str, str]:
    if isinstance(env, dict):
        return {str(k): "" if v is None else str(v) for k, v in env.items()}
    out = {}
    for item in env or []:
        k, _, v = str(item).partition("=")
        out[k] = v
    return out


def url_passwords(value: str) -> list[str]:
    """The password part of every `scheme://user:password@host` in value,
    reading `${...}` as a unit (its default may hold ':' or '@')."""
    out = []
    for m in re.finditer("://", value):
        rest, depth, colon, i = value[m.end() :], 0, None, 0
        while i < len(rest):
            if rest.startswith("${", i):
                depth, i = depth + 1, i + 2
                continue
            c = rest[i]
            if c == "}" and depth:
                depth -= 1
            elif depth == 0:
                if c == ":" and colon is None:
                    colon = i
                elif c == "@":
                    if colon is not None:
                        out.append(rest[colon + 1 : i])
                    break
                elif c in "/?#":
                    break
            i += 1
    return out


def parse_port(p) -> tuple[str | None, str | None, str]:
    """(host_ip, published, target) of a ports entry, short or long syntax."""
    if isinstance(p, dict):
        return p.get("host_ip"), None if p.get("published") is None else str(p["published"]), str(p.get("target"))
    s = str(p).split("/")[0]
    host_ip = None
    m = re.match(r"^(\[[^\]]+\]|[^:]*\.[^:]*):(.*)$", s)  # "[::1]:..." or "127.0.0.1:..."
    if m:
        host_ip, s = m.group(1), m.group(2)
    parts = s.split(":")
    if len(parts) == 1:
        return host_ip, None, parts[0]
    return host_ip, parts[-2], parts[-1]


def parse_volume(v) -> tuple[str, str | None, str, bool]:
    """(type, source, target, read_only) of a volumes entry."""
    if isinstance(v, dict):
        return v.get("type", "volume"), v.get("source"), v.get("target", ""), bool(v.get("read_only"))
    parts = str(v).split(":")
    if len(parts) == 1:
        return "volume", None, parts[0], False
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) > 2 else ""
    kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    return kind, source, target, "ro" in mode.split(",")


def healthcheck_enabled(svc: dict) -> bool:
    hc = svc.get("healthcheck")
    if not hc or str(hc.get("disable", "false")).lower() == "true":
        return False
    test = hc.get("test")
    return bool(test) and not (isinstance(test, list) and test[0] == "NONE")


def depends_on(svc: dict) -> dict:
    d = svc.get("depends_on") or {}
    return {name: None for name in d} if isinstance(d, list) else d


def image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} uses the tag 'latest'"
    return None


# ---------------------------------------------------------------------------
# Dockerfiles
# ---------------------------------------------------------------------------
def dockerfile_instructions(path: Path) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_stages(path: Path) -> list[dict]:
    stages: list[dict] = []
    for line, instr, args in dockerfile_instructions(path):
        if instr == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append({"line": line, "base": words[0], "name": name, "user": None, "healthcheck": None, "add": []})
        elif stages and instr == "USER":
            stages[-1]["user"] = args.split()[0]
        elif stages and instr == "HEALTHCHECK":
            stages[-1]["healthcheck"] = not args.upper().startswith("NONE")
        elif stages and instr == "ADD":
            stages[-1]["add"].append(line)
    return stages


def effective(stages: list[dict], index: int, key: str):
    """A setting of a stage, inherited through `FROM <earlier stage>`."""
    stage = stages[index]
    if stage[key] is not None:
        return stage[key]
    names = [s["name"] for s in stages[:index]]
    if stage["base"] in names:
        return effective(stages, names.index(stage["base"]), key)
    return None


def is_root(user: str | None) -> bool:
    return user is None or user.split(":")[0] in ("root", "0")


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------
def check_compose(args, report: Report) -> tuple[dict[Path, set[str | None]], dict]:
    """Returns the Dockerfiles compose builds (with the targets it uses) and
    the interpolated compose file."""
    compose_path: Path = args.compose
    project: Path = args.project_dir
    print(f"compose file: {compose_path} (project directory {project}, env file {args.env_file})")

    try:
        raw = yaml.load(compose_path.read_text(), Loader=ComposeLoader)  # noqa: S506 (SafeLoader subclass)
    except yaml.YAMLError as e:
        report.fail(f"YAML: {e}")
        return {}, {}
    if not isinstance(raw, dict):
        report.fail("YAML: the file is not a mapping")
        return {}, {}
    report.ok("YAML parses (YAML 1.2 scalars, no duplicate keys)")

    env = read_env_file(args.env_file)
    interp = Interpolator(env)
    try:
        doc = interp.walk(raw)
    except InterpolationError as e:
        report.fail(f"interpolation: {e}")
        return {}, {}
    report.ok(f"interpolation with {args.env_file.name}: {len(interp.used)} variables")
    missing = [n for n, how in sorted(interp.used.items()) if how == "plain" and n not in env]
    report.check(f"every variable without a default is set in {args.env_file.name}", [
        f"${{{n}}} is used without a default and not set in {args.env_file.name}" for n in missing
    ])

    # -- schema -------------------------------------------------------------
    schema_file = args.schema
    digest = hashlib.sha256(schema_file.read_bytes()).hexdigest()
    schema = json.loads(schema_file.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    print(f"        schema: {schema_file} ({SCHEMA_SOURCE}; {schema.get('$schema')})")
    if digest != SCHEMA_SHA256:
        report.fail(f"schema: sha256 {digest} is not the recorded {SCHEMA_SHA256} (update SCHEMA_* in validate.py)")
    schema_problems = []
    for e in errors:
        best = jsonschema.exceptions.best_match(e.context) if e.context else e
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        schema_problems.append(f"{where}: {best.message}")
    report.check(f"compose-spec schema (jsonschema {importlib.metadata.version('jsonschema')}, "
                 f"{validator_cls.__name__})", schema_problems)
    if schema_problems:
        return {}, doc

    services: dict[str, dict] = doc.get("services") or {}
    raw_services: dict[str, dict] = raw.get("services") or {}
    declared_volumes = set((doc.get("volumes") or {}).keys())

    # One-shots: restart "no", and something waits for them to complete.
    completed_targets = {
        dep for svc in services.values() for dep, c in depends_on(svc).items()
        if (c or {}).get("condition") == "service_completed_successfully"
    }
    one_shots = {n for n in completed_targets if str(services.get(n, {}).get("restart", "no")) == "no"}
    long_running = [n for n in services if n not in one_shots]
    report.info(f"{len(services)} services; long-running: {', '.join(long_running)}; "
                f"one-shot: {', '.join(sorted(one_shots)) or 'none'}")

    # -- images ---------------------------------------------------------------
    problems, images = [], []
    dockerfiles: dict[Path, set[str | None]] = {}
    for name, svc in services.items():
        if "image" in svc and "build" not in svc:
            images.append(svc["image"])
            if (p := image_problem(svc["image"])):
                problems.append(f"{name}: {p}")
        elif "build" in svc:
            build = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
            context = (project / build.get("context", ".")).resolve()
            dockerfile = (context / build.get("dockerfile", "Dockerfile")).resolve()
            if not context.is_dir():
                problems.append(f"{name}: build context {context} is missing")
            elif not dockerfile.is_file():
                problems.append(f"{name}: {dockerfile} is missing")
            else:
                dockerfiles.setdefault(dockerfile, set()).add(build.get("target"))
                declared = {a.split("=")[0] for line, instr, a in dockerfile_instructions(dockerfile) if instr == "ARG"}
                build_args = build.get("args") or {}
                names = build_args if isinstance(build_args, dict) else [str(a).split("=")[0] for a in build_args]
                problems += [f"{name}: build arg {a} is not an ARG of {dockerfile.name}"
                             for a in names if a not in declared]
        else:
            problems.append(f"{name}: neither image nor build")
    report.check(f"images pinned, no 'latest' ({', '.join(sorted(set(images)))}); builds exist", problems)

    # -- healthchecks ---------------------------------------------------------
    problems = []
    for name in long_running:
        svc = services[name]
        if not healthcheck_enabled(svc):
            problems.append(f"{name}: no healthcheck")
            continue
        for key in ("interval", "timeout", "start_period", "start_interval"):
            v = svc["healthcheck"].get(key)
            if v is not None and not GO_DURATION.match(str(v)):
                problems.append(f"{name}: healthcheck {key} {v!r} is not a duration")
    for name, svc in services.items():
        v = svc.get("stop_grace_period")
        if v is not None and not GO_DURATION.match(str(v)):
            problems.append(f"{name}: stop_grace_period {v!r} is not a duration")
    report.check("healthcheck on every long-running service", problems)

    # -- depends_on -----------------------------------------------------------
    problems = []
    for name, svc in services.items():
        if isinstance(svc.get("depends_on"), list):
            problems.append(f"{name}: depends_on without conditions (use the long form)")
        for dep, cond in depends_on(svc).items():
            condition = (cond or {}).get("condition")
            if dep not in services:
                problems.append(f"{name}: depends on unknown service {dep!r}")
            elif condition == "service_healthy" and not healthcheck_enabled(services[dep]):
                problems.append(f"{name}: waits for {dep} to be healthy, which has no healthcheck")
            elif condition == "service_completed_successfully" and dep not in one_shots:
                problems.append(f"{name}: waits for {dep} to complete, which is not a one-shot (restart: \"no\")")
            elif condition not in ("service_healthy", "service_completed_successfully"):
                problems.append(f"{name}: depends on {dep} with condition {condition!r} "
                                "(service_healthy or service_completed_successfully)")
    # cycles
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        if state.get(n) == 1:
            problems.append("dependency cycle: " + " -> ".join(trail + [n]))
            return
        if state.get(n) == 2 or n not in services:
            return
        state[n] = 1
        for d in depends_on(services[n]):
            visit(d, trail + [n])
        state[n] = 2

    for n in services:
        visit(n, [])
    report.check("depends_on: conditions on every dependency, and they can be met", problems)

    # -- resources ------------------------------------------------------------
    problems, rows, cpus_total, mem_total = [], [], 0.0, 0
    for name, svc in services.items():
        limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        try:
            cpus = float(limits["cpus"]) if "cpus" in limits else None
            mem = memory_bytes(limits["memory"]) if "memory" in limits else None
        except ValueError as e:
            problems.append(f"{name}: {e}")
            continue
        if cpus is None or mem is None:
            problems.append(f"{name}: deploy.resources.limits needs cpus and memory")
            continue
        cpus_total += cpus
        mem_total += mem
        rows.append((name, cpus, mem))
    if cpus_total > BUDGET_CPUS + 1e-9:
        problems.append(f"CPU limits add up to {cpus_total:.2f}, over {BUDGET_CPUS}")
    if mem_total > BUDGET_MEMORY_BYTES:
        problems.append(f"memory limits add up to {mem_total / 2**20:.0f} MiB "
                        f"({mem_total / 1e9:.2f} GB), over {BUDGET_MEMORY_BYTES / 1e9:.0f} GB")
    report.check(f"resource limits on every service, total within {BUDGET_CPUS} CPU and "
                 f"{BUDGET_MEMORY_BYTES / 1e9:.0f} GB", problems)
    for name, cpus, mem in rows:
        report.info(f"{name:<18} {cpus:5.2f} cpu  {mem / 2**20:6.0f} MiB")
    report.info(f"{'total':<18} {cpus_total:5.2f} cpu  {mem_total / 2**20:6.0f} MiB ({mem_total / 1e9:.2f} GB)")

    # -- ports, network ---------------------------------------------------------
    problems, published = [], []
    for name, svc in services.items():
        if svc.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host bypasses the port bindings")
        if svc.get("privileged"):
            problems.append(f"{name}: privileged")
        for p in svc.get("ports") or []:
            host_ip, pub, target = parse_port(p)
            if host_ip not in LOCAL_HOST_IPS:
                problems.append(f"{name}: port {p!r} is published on {host_ip or 'every interface'}, not 127.0.0.1")
            published.append(f"{name} {host_ip or '*'}:{pub or '(random)'}->{target}")
    report.check(f"published ports bound to 127.0.0.1 ({'; '.join(published) or 'none'})", problems)

    # -- volumes ----------------------------------------------------------------
    problems, seen_named = [], []
    for name, svc in services.items():
        for v in svc.get("volumes") or []:
            kind, source, target, read_only = parse_volume(v)
            if kind == "volume":
                if not source:
                    problems.append(f"{name}: anonymous volume at {target} (name it under volumes:)")
                elif source not in declared_volumes:
                    problems.append(f"{name}: volume {source!r} is not declared under the top-level volumes:")
                else:
                    seen_named.append(f"{source}->{name}:{target}")
            elif kind == "bind":
                path = (project / os.path.expanduser(source)).resolve()
                if not read_only:
                    problems.append(f"{name}: bind mount {source} is not read-only (:ro)")
                if not path.exists():
                    problems.append(f"{name}: bind mount source {path} does not exist")
    unused = declared_volumes - {s.split("->")[0] for s in seen_named}
    problems += [f"volume {v!r} is declared but not used" for v in sorted(unused)]
    report.check(f"named volumes for data ({', '.join(seen_named)}), read-only bind mounts that exist", problems)

    # -- credentials ------------------------------------------------------------
    problems = []
    for name, svc in raw_services.items():
        for key, value in environment_map(svc.get("environment")).items():
            secrets = []
            if SECRET_KEY.search(key):
                secrets.append(value)
            secrets += url_passwords(value)
            for secret in secrets:
                m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?\?[^}]*)?\}", secret)
                if not m:
                    problems.append(f"{name}: {key} holds a credential that is not ${{VAR}} or ${{VAR:?message}} "
                                    f"(written into the file, or with a default): {value!r}")
    if (project / ".git").exists() and shutil.which("git"):
        env_file = (project / ".env")
        ignored = subprocess.run(["git", "-C", str(project), "check-ignore", "-q", str(env_file)]).returncode == 0
        if not ignored:
            problems.append(".env (where the real passwords go) is not git-ignored")
    report.check("credentials only from the environment (no literal passwords, no defaults)", problems)

    # -- listen addresses, nginx upstreams ----------------------------------------
    problems, listen_ports = [], {}
    for name, svc in services.items():
        addr = environment_map(svc.get("environment")).get("LISTEN_ADDR")
        if addr is None:
            continue
        m = re.fullmatch(r"(0\.0\.0\.0|\[::\]):(\d+)", addr)
        if not m:
            problems.append(f"{name}: LISTEN_ADDR={addr} is not reachable from other containers (use 0.0.0.0:PORT)")
        else:
            listen_ports[name] = m.group(2)
    for name, svc in services.items():
        for v in svc.get("volumes") or []:
            kind, source, target, _ = parse_volume(v)
            path = (project / (source or "")).resolve()
            if kind != "bind" or not path.is_file() or not path.name.endswith(".conf"):
                continue
            text = re.sub(r"#.*", "", path.read_text())
            if "upstream" not in text:
                continue
            for up, body in re.findall(r"upstream\s+(\S+)\s*\{([^}]*)\}", text):
                for host, port in re.findall(r"\bserver\s+([A-Za-z0-9_.-]+):(\d+)", body):
                    if host not in services:
                        problems.append(f"{path.name}: upstream {up}: server {host}:{port} is not a compose service")
                    elif listen_ports.get(host) and listen_ports[host] != port:
                        problems.append(f"{path.name}: upstream {up}: {host}:{port}, but {host} listens on "
                                        f"{listen_ports[host]}")
            targets = {parse_port(p)[2] for p in svc.get("ports") or []}
            for port in re.findall(r"^\s*listen\s+(?:[^\s;]*:)?(\d+)", text, re.M):
                if targets and port not in targets:
                    problems.append(f"{path.name}: listens on {port}, but {name} publishes {sorted(targets)}")
    report.check("services listen on 0.0.0.0; nginx upstreams and listen port match the services", problems)
    return dockerfiles, doc


def check_dockerfiles(args, compose_dockerfiles: dict[Path, set[str | None]], compose: dict,
                      report: Report) -> None:
    root: Path = args.project_dir
    found = set(compose_dockerfiles)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in {"target", ".state", ".git", "node_modules"}]
        for f in filenames:
            if f == "Dockerfile" or f.startswith("Dockerfile.") or f.lower().endswith(".dockerfile"):
                found.add((Path(dirpath) / f).resolve())
    def shown(p: Path) -> str:
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    print(f"Dockerfiles: {', '.join(shown(p) for p in sorted(found)) or 'none'}")
    if not found:
        report.fail("no Dockerfile found")
        return

    hadolint = shutil.which("hadolint")
    version = subprocess.run([hadolint, "--version"], capture_output=True, text=True).stdout.strip() if hadolint else ""
    for path in sorted(found):
        rel = shown(path)
        if not hadolint:
            report.fail("hadolint is not installed (docker/validate.sh installs it)")
            break
        # Every finding fails the check, down to "style"; exceptions are inline
        # `# hadolint ignore=DLxxxx` comments with their reason.
        run = subprocess.run([hadolint, "--no-color", "--failure-threshold", "style", str(path)],
                             capture_output=True, text=True)
        findings = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
        if run.returncode != 0 and not findings:
            findings = [f"hadolint exited {run.returncode}"]
        report.check(f"{rel}: {version}", findings)

        stages = dockerfile_stages(path)
        problems = []
        if len(stages) < 2:
            problems.append("not a multi-stage build (builder and runtime in one image)")
        # The stages something runs: compose targets, else the last one.
        targets = compose_dockerfiles.get(path) or {None}
        names = [s["name"] for s in stages]
        healthchecked = {
            (svc.get("build") or {}).get("target") for svc in (compose.get("services") or {}).values()
            if isinstance(svc.get("build"), dict) and healthcheck_enabled(svc)
        }
        for target in sorted(targets, key=str):
            if target is not None and target not in names:
                problems.append(f"target {target!r} is not a stage")
                continue
            i = names.index(target) if target is not None else len(stages) - 1
            label = stages[i]["name"] or f"stage {i + 1}"
            user = effective(stages, i, "user")
            if is_root(user):
                problems.append(f"{label}: runs as root ({'USER ' + user if user else 'no USER'}); use a non-root USER")
            if not effective(stages, i, "healthcheck") and target not in healthchecked:
                problems.append(f"{label}: no HEALTHCHECK and no compose healthcheck")
            report.info(f"{rel} [{label}]: USER {user}, FROM {stages[i]['base']}, "
                        f"HEALTHCHECK {'yes' if effective(stages, i, 'healthcheck') else 'no'}")
        for s in stages:
            for line in s["add"]:
                problems.append(f"line {line}: ADD (use COPY; fetch URLs in a RUN step you can verify)")
        report.check(f"{rel}: multi-stage, non-root USER and HEALTHCHECK in the runtime stages, no ADD", problems)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compose", type=Path, required=True)
    ap.add_argument("--env-file", type=Path, required=True)
    ap.add_argument("--project-dir", type=Path, required=True)
    ap.add_argument("--schema", type=Path, required=True)
    args = ap.parse_args()
    args.project_dir = args.project_dir.resolve()

    report = Report()
    dockerfiles, compose = check_compose(args, report)
    print()
    check_dockerfiles(args, dockerfiles, compose, report)
    print()
    if report.problems:
        print(f"validate: {len(report.problems)} problem(s)")
        return 1
    print("validate: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
