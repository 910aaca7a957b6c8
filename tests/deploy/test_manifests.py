#!/usr/bin/env python3
"""Static checks of the deployment files against each other and the binaries.

    python tests/deploy/test_manifests.py --bin build/bin [unittest arguments]

No network, no docker, no kubectl: YAML is parsed with PyYAML, Dockerfiles and
systemd units with the small parsers below, and every command line any of them
runs (container command/args, compose entrypoint/command, Dockerfile
ENTRYPOINT/CMD/HEALTHCHECK, probes, systemd ExecStart) is checked against the
real `--help` of the binary it starts (build/bin/<binary> --help, and the help
of each subcommand it names): unknown flags, missing values, values outside a
flag's range or choices, missing subcommands.

Conventions this test enforces (docker/README.md, docs/deployment.md):
* each docker/*.Dockerfile names its image in a `# image: diablo/<name>` line;
  manifests use `diablo/<name>:<project version of CMakeLists.txt>`;
  third-party images carry a fixed tag (not `latest`) or a digest;
* a Debian package a build stage installs that is not in
  scripts/debian-packages.txt is explained by an `# extra-package: NAME why`
  line in that Dockerfile;
* the torch pin of the Dockerfiles is the one of scripts/requirements-test.txt.

Checks that need a tool this machine may lack (apt-cache/dpkg of Debian 12 for
the scheduler image's runtime libraries, yamllint, shellcheck,
systemd-analyze) skip, saying why, when it is absent.
"""

import argparse
import fnmatch
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "build" / "bin"  # replaced by --bin
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
K8S = REPO / "deploy" / "kubernetes"
SYSTEMD = REPO / "deploy" / "systemd"
ENV_EXAMPLE = SYSTEMD / "diablo.env.example"
BINARIES = ("diablo", "diablo-scheduler", "diablo-worker", "diablo-ctl")
# Files another part of the project writes, which compose.yaml mounts.
MONITORING_HINT = ("deploy/prometheus/ and deploy/grafana/ are written by the monitoring work; "
                   "docker/compose.yaml mounts them by these paths")


# ---------------------------------------------------------------------------
# Project facts
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def project_version():
    text = (REPO / "CMakeLists.txt").read_text()
    m = re.search(r"^project\(\s*diablo\s+VERSION\s+([0-9.]+)", text, re.M)
    assert m, "CMakeLists.txt: no project(diablo VERSION x.y.z)"
    return m.group(1)


@functools.lru_cache(maxsize=None)
def torch_pin():
    for line in (REPO / "scripts" / "requirements-test.txt").read_text().splitlines():
        m = re.match(r"\s*torch\s*==\s*([^\s#;]+)", line)
        if m:
            return m.group(1)
    raise AssertionError("scripts/requirements-test.txt pins no torch==")


@functools.lru_cache(maxsize=None)
def debian_packages():
    lines = (REPO / "scripts" / "debian-packages.txt").read_text().splitlines()
    return {l.split("#")[0].strip() for l in lines if l.split("#")[0].strip()}


@functools.lru_cache(maxsize=None)
def storage_variables():
    """Environment variables docs/storage.md documents (its S3 table)."""
    text = (REPO / "docs" / "storage.md").read_text()
    return set(re.findall(r"^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|", text, re.M))


@functools.lru_cache(maxsize=None)
def cmake_targets():
    names = set()
    for path in REPO.rglob("CMakeLists.txt"):
        if "build" in path.relative_to(REPO).parts[:1]:
            continue
        names.update(re.findall(r"add_executable\(\s*([A-Za-z0-9_.+-]+)", path.read_text()))
    return names


@functools.lru_cache(maxsize=None)
def cmake_top_level_dirs():
    """Top-level source directories CMakeLists.txt adds (tests and bench are
    switched off in the images)."""
    text = (REPO / "CMakeLists.txt").read_text()
    dirs = {d.split("/")[0] for d in re.findall(r"add_subdirectory\(\s*([^\s)]+)", text)}
    return dirs - {"tests", "bench"}


# ---------------------------------------------------------------------------
# The binaries' command-line interfaces, from their --help
# ---------------------------------------------------------------------------

class Option:
    def __init__(self, names, spec):
        self.names = names
        self.spec = spec
        self.type = re.match(r"[A-Z]*", spec).group(0) if spec else ""
        # CLI11 prints no type for its config option, which takes a file.
        self.takes_value = bool(self.type) or "--config" in names
        m = re.search(r":\{([^}]*)\}", spec)
        self.choices = m.group(1).split(",") if m else None
        m = re.search(r"in \[(\S+) - (\S+)\]", spec)
        self.range = (float(m.group(1)), float(m.group(2))) if m else None
        m = re.search(r"=(\S+)", spec)
        self.default = m.group(1) if m else None
        m = re.search(r"\(Env:([A-Z0-9_]+)\)", spec)
        self.env = m.group(1) if m else None


class Cli:
    def __init__(self, binary, path, text):
        self.binary, self.path, self.text = binary, path, text
        self.options, self.subcommands, self.positionals = {}, set(), 0
        usage = re.search(r"^Usage: .*$", text, re.M)
        self.requires_subcommand = bool(usage) and re.search(r"(?<!\[)SUBCOMMAND\b", usage.group(0)) is not None
        section = None
        for line in text.splitlines():
            if re.match(r"^[A-Z][A-Za-z ]*:$", line):
                section = line[:-1]
                continue
            if section == "Options":
                m = re.match(r"^  (-\S+)(.*)$", line)
                if m:
                    names = [n for n in m.group(1).split(",") if n]
                    t = re.match(r"^ (\S.*?)(?:\s{2,}|$)", m.group(2))
                    option = Option(names, t.group(1) if t else "")
                    for n in names:
                        self.options[n] = option
            elif section == "Subcommands":
                m = re.match(r"^  (\S+)(?:\s{2,}|$)", line)
                if m:
                    self.subcommands.add(m.group(1))
            elif section == "Positionals":
                if re.match(r"^  \S", line):
                    self.positionals += 1

    def env_names(self):
        return {o.env for o in self.options.values() if o.env}


@functools.lru_cache(maxsize=None)
def cli(binary, *path):
    exe = BIN / binary
    if not os.access(exe, os.X_OK):
        raise AssertionError(f"{exe} not found: build the project first, or pass --bin DIR")
    run = subprocess.run([str(exe), *path, "--help"], capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise AssertionError(f"{binary} {' '.join(path)} --help failed ({run.returncode}): {run.stderr[-500:]}")
    return Cli(binary, path, run.stdout)


def is_unresolved(value):
    return value is None or "$" in value or "<" in value


def check_value(option, value, where):
    if is_unresolved(value):
        return []
    flag = option.names[-1]
    if option.choices is not None and value not in option.choices:
        return [f"{where}: {flag} {value!r} is not one of {option.choices}"]
    if option.type in ("INT", "UINT", "FLOAT"):
        try:
            number = int(value) if option.type != "FLOAT" else float(value)
        except ValueError:
            return [f"{where}: {flag} {value!r} is not a number ({option.spec})"]
        if option.range and not option.range[0] <= number <= option.range[1]:
            return [f"{where}: {flag} {value} is outside {option.range} ({option.spec})"]
    return []


class Invocation:
    """One parsed command line of a binary: the subcommand path and, per flag,
    the value it was given."""

    def __init__(self, argv, where):
        self.argv, self.where = argv, where
        self.binary = os.path.basename(argv[0])
        self.path, self.values, self.problems = [], {}, []
        command = cli(self.binary)
        i = 1
        while i < len(argv):
            token = argv[i]
            if re.match(r"^(--[A-Za-z0-9]|-[A-Za-z]$)", token):
                name, eq, value = token.partition("=")
                option = command.options.get(name)
                if option is None:
                    self.problems.append(f"{where}: `{' '.join([self.binary, *self.path])}` has no option {name} "
                                         f"(see {self.binary} {' '.join(self.path)} --help)")
                elif option.takes_value:
                    if not eq:
                        i += 1
                        value = argv[i] if i < len(argv) else None
                        if value is None:
                            self.problems.append(f"{where}: {name} needs a value")
                    self.problems += check_value(option, value, where)
                    self.values[option.names[-1]] = value
                else:
                    self.values[option.names[-1]] = True
            elif token in command.subcommands:
                self.path.append(token)
                command = cli(self.binary, *self.path)
            elif command.positionals > 0:
                pass
            else:
                self.problems.append(f"{where}: unexpected argument {token!r} for "
                                     f"`{' '.join([self.binary, *self.path])}`")
            i += 1
        if command.requires_subcommand:
            self.problems.append(f"{where}: `{' '.join([self.binary, *self.path])}` needs a subcommand "
                                 f"({', '.join(sorted(command.subcommands))})")
        self.cli = command

    def value(self, flag):
        """The flag's value, else its default from --help."""
        if flag in self.values:
            return self.values[flag]
        option = cli(self.binary).options.get(flag)
        return option.default if option else None


def port_of(address):
    if address is None or is_unresolved(address):
        return None
    m = re.match(r"^(?:\[[^\]]*\]|[^:]*):(\d+)$", address)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------
# Command lines inside exec forms, shell scripts, compose and systemd
# ---------------------------------------------------------------------------

SHELL_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "exec", "{", "}"}
CONTROL = {";", "&&", "||", "|", "&", "(", ")", ";;", "\n"}


def commands_from_script(script):
    script = re.sub(r"\\\n", " ", script)
    commands = []
    for line in script.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        segment = []
        for token in list(lexer) + [";"]:
            if token in CONTROL:
                if segment:
                    commands.append(segment)
                segment = []
            else:
                segment.append(token)
    result = []
    for segment in commands:
        words, skip = [], False
        for token in segment:
            if skip:
                skip = False
            elif re.fullmatch(r"[<>]+&?", token):
                skip = True  # a redirection and its target
            else:
                words.append(token)
        while words and (words[0] in SHELL_KEYWORDS or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0])):
            words = words[1:]
        if words:
            result.append(words)
    return result


def commands_from_argv(argv):
    """Command lines an exec-form argv runs: through tini and `sh -c`."""
    argv = [str(a) for a in argv]
    while argv:
        base = os.path.basename(argv[0])
        if base == "tini":
            argv = argv[1:]
            while argv and argv[0].startswith("-"):
                stop = argv[0] == "--"
                argv = argv[1:]
                if stop:
                    break
            continue
        if base in ("sh", "bash", "dash") and len(argv) >= 3 and re.fullmatch(r"-[a-z]*c[a-z]*", argv[1]):
            return commands_from_script(argv[2])
        if base == "env":
            argv = argv[1:]
            while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
                argv = argv[1:]
            continue
        break
    return [argv] if argv else []


def invocations(argv_or_script, where):
    """Invocations of the project's binaries among the commands, flags checked."""
    if isinstance(argv_or_script, str):
        commands = commands_from_script(argv_or_script)
    else:
        commands = commands_from_argv(argv_or_script)
    return [Invocation(c, where) for c in commands if os.path.basename(c[0]) in BINARIES]


def compose_interpolate(value, problems=None, where=""):
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR:?err} with the
    defaults (the environment of this test is not the operator's); $$ is a
    literal $."""
    if not isinstance(value, str):
        return value
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("${", i):
            end = value.index("}", i)
            expr = value[i + 2:end]
            m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?", expr)
            if not m:
                if problems is not None:
                    problems.append(f"{where}: bad interpolation ${{{expr}}}")
                out.append("")
            elif m.group(2) in (":-", "-"):
                out.append(m.group(3))
            else:
                if m.group(2) is None and problems is not None:
                    problems.append(f"{where}: ${{{m.group(1)}}} has no default; give one (${{{m.group(1)}:-...}})")
                out.append(f"<{m.group(1)}>")
            i = end + 1
        elif value.startswith("$", i) and i + 1 < len(value) and re.match(r"[A-Za-z_]", value[i + 1]):
            m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)", value[i:])
            if problems is not None:
                problems.append(f"{where}: ${m.group(1)} is interpolated by compose (write $${m.group(1)} "
                                "for the container's shell, or ${VAR:-default})")
            out.append(f"<{m.group(1)}>")
            i += len(m.group(0))
        elif value.startswith("$", i) and i + 1 < len(value) and value[i + 1] == "(":
            if problems is not None:
                problems.append(f"{where}: $( is not valid in compose (write $$( for the shell)")
            out.append("$")
            i += 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def interpolate_tree(node, problems, where):
    if isinstance(node, dict):
        return {k: interpolate_tree(v, problems, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, problems, f"{where}[{i}]") for i, v in enumerate(node)]
    return compose_interpolate(node, problems, where)


# ---------------------------------------------------------------------------
# Dockerfiles
# ---------------------------------------------------------------------------

class Stage:
    def __init__(self, index, base, name):
        self.index, self.base, self.name = index, base, name
        self.instructions = []  # (keyword, text, line)
        self.args = {}

    def all(self, keyword):
        return [(text, line) for k, text, line in self.instructions if k == keyword]

    def last(self, keyword):
        found = self.all(keyword)
        return found[-1] if found else (None, None)


def substitute_args(text, args):
    def repl(m):
        name = m.group(1) or m.group(3)
        default = m.group(2)
        value = args.get(name)
        if value in (None, "") and default is not None:
            return default
        return value if value is not None else m.group(0)
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, text)


def parse_exec_or_shell(text):
    text = text.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
            if isinstance(value, list):
                return value
        except json.JSONDecodeError:
            pass
    return ["/bin/sh", "-c", text]


class Dockerfile:
    def __init__(self, path):
        self.path = path
        self.rel = path.relative_to(REPO)
        raw = path.read_text()
        m = re.search(r"^#\s*image:\s*(\S+)\s*$", raw, re.M)
        self.image = m.group(1) if m else None
        self.extra_packages = set(re.findall(r"^#\s*extra-package:\s*(\S+)", raw, re.M))
        self.global_args, self.stages = {}, []
        logical, buffer, start = [], "", 0
        for number, line in enumerate(raw.splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("#") or (not stripped and not buffer):
                continue
            if not buffer:
                start = number
            if line.rstrip().endswith("\\"):
                buffer += line.rstrip() + "\n"  # kept: RUN text goes to shellcheck as written
                continue
            buffer += line
            logical.append((start, buffer.strip()))
            buffer = ""
        for number, text in logical:
            keyword, _, rest = re.sub(r"\\\n", " ", text).partition(" ")
            keyword = keyword.upper()
            rest = rest.strip()
            if keyword == "RUN":
                rest = text.split(None, 1)[1].strip()
            if keyword == "FROM":
                words = [w for w in rest.split() if not w.startswith("--")]
                base = substitute_args(words[0], self.global_args)
                name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
                self.stages.append(Stage(len(self.stages), base, name))
                continue
            if keyword == "ARG":
                name, eq, default = rest.partition("=")
                default = default.strip().strip('"').strip("'") if eq else None
                if not self.stages:
                    self.global_args[name.strip()] = default
                else:
                    stage = self.stages[-1]
                    stage.args[name.strip()] = default if eq else self.global_args.get(name.strip())
                continue
            if not self.stages:
                continue
            self.stages[-1].instructions.append((keyword, rest, number))

    @property
    def final(self):
        return self.stages[-1]

    def stage(self, ref):
        for s in self.stages:
            if s.name == ref or str(s.index) == ref:
                return s
        return None

    def expanded(self, stage, text):
        return substitute_args(text, {**self.global_args, **stage.args})

    def copies(self, stage):
        """(from_stage or None, [sources], dest, line) of each COPY/ADD."""
        result = []
        for keyword in ("COPY", "ADD"):
            for text, line in stage.all(keyword):
                words = shlex.split(text) if not text.startswith("[") else json.loads(text)
                source_stage = None
                while words and words[0].startswith("--"):
                    flag = words.pop(0)
                    if flag.startswith("--from="):
                        source_stage = flag.split("=", 1)[1]
                result.append((source_stage, words[:-1], words[-1], line))
        return result

    def entry_argv(self):
        entry, _ = self.final.last("ENTRYPOINT")
        cmd, _ = self.final.last("CMD")
        argv = parse_exec_or_shell(entry) if entry else []
        return argv + (parse_exec_or_shell(cmd) if cmd else [])

    def healthcheck_argv(self):
        text, _ = self.final.last("HEALTHCHECK")
        if text is None or text.strip().upper() == "NONE":
            return None
        words = text.split()
        while words and words[0].startswith("--"):
            words.pop(0)
        assert words and words[0].upper() == "CMD", f"{self.rel}: HEALTHCHECK without CMD"
        return parse_exec_or_shell(text[text.upper().index("CMD") + 3:])

    def apt_packages(self, stage):
        packages = []
        for text, _ in stage.all("RUN"):
            text = self.expanded(stage, text)
            for m in re.finditer(r"apt-get\s+install\b(.*?)(?:&&|;|\|\||$)", text, re.S):
                packages += [w for w in m.group(1).split() if not w.startswith("-") and w != "\\"]
        return packages

    def exposed_ports(self):
        ports = set()
        for text, _ in self.final.all("EXPOSE"):
            ports.update(int(p.split("/")[0]) for p in text.split())
        return ports


@functools.lru_cache(maxsize=None)
def dockerfiles():
    files = sorted(DOCKER.glob("*.Dockerfile"))
    assert files, "docker/ has no *.Dockerfile"
    return tuple(Dockerfile(p) for p in files)


@functools.lru_cache(maxsize=None)
def built_images():
    """image name -> Dockerfile, from the `# image:` lines."""
    return {d.image: d for d in dockerfiles() if d.image}


def image_problems(image, where):
    """An image reference is one docker/ builds, tagged with the project
    version, or a pinned third-party image."""
    if image is None:
        return [f"{where}: no image"]
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    if "@sha256:" in image:
        return []
    if name in built_images():
        if tag != project_version():
            return [f"{where}: {image}: images built from docker/ are tagged with the project version "
                    f"{project_version()} (CMakeLists.txt)"]
        return []
    if name.startswith("diablo/") or name.startswith("diablo-"):
        return [f"{where}: {image}: no docker/*.Dockerfile declares `# image: {name}`"]
    if not tag or tag == "latest":
        return [f"{where}: {image}: third-party images need a fixed tag or digest"]
    return []


def dockerignore_for(dockerfile):
    """Patterns BuildKit applies: <Dockerfile>.dockerignore, else the context's."""
    for candidate in (Path(str(dockerfile.path) + ".dockerignore"), REPO / ".dockerignore"):
        if candidate.exists():
            lines = [l.strip() for l in candidate.read_text().splitlines()]
            return candidate, [l for l in lines if l and not l.startswith("#")]
    return None, []


def docker_ignored(relpath, patterns):
    """Docker's rule: the last pattern that matches the path or one of its
    parent directories decides; `!` lets it back in."""
    parts = Path(relpath).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern[1:] if negate else pattern
        pattern = os.path.normpath(pattern.lstrip("/"))
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*")
        regex = regex.replace("[^/]*[^/]*/", "(?:.*/)?").replace("[^/]*[^/]*", ".*")
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


# ---------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------

def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


@functools.lru_cache(maxsize=None)
def k8s_objects():
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_all(path):
            objects.append((path.name, doc))
    return tuple(objects)


def k8s_kind(kind):
    return [(f, o) for f, o in k8s_objects() if o.get("kind") == kind]


def k8s_named(kind):
    return {o["metadata"]["name"]: o for _, o in k8s_kind(kind)}


def pod_specs():
    """(file, workload, pod spec) of every workload."""
    result = []
    for f, o in k8s_objects():
        if o.get("kind") in ("Deployment", "DaemonSet", "StatefulSet", "Job", "ReplicaSet"):
            result.append((f, o, o["spec"]["template"]["spec"]))
        elif o.get("kind") == "CronJob":
            result.append((f, o, o["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif o.get("kind") == "Pod":
            result.append((f, o, o["spec"]))
    return result


def configmap_data(name):
    cm = k8s_named("ConfigMap").get(name)
    return None if cm is None else {**(cm.get("data") or {}), **(cm.get("binaryData") or {})}


def secret_keys(name):
    secret = k8s_named("Secret").get(name)
    return None if secret is None else set(secret.get("data") or {}) | set(secret.get("stringData") or {})


def container_env(container):
    """name -> resolved value ('<secret>' / '<field>' for what a manifest cannot know)."""
    env = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            for k, v in (configmap_data(source["configMapRef"]["name"]) or {}).items():
                env[prefix + k] = str(v)
        if "secretRef" in source:
            for k in secret_keys(source["secretRef"]["name"]) or ():
                env[prefix + k] = "<secret>"
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "valueFrom" in item:
            ref = item["valueFrom"]
            if "configMapKeyRef" in ref:
                data = configmap_data(ref["configMapKeyRef"]["name"]) or {}
                env[item["name"]] = str(data.get(ref["configMapKeyRef"]["key"], "<missing>"))
            elif "secretKeyRef" in ref:
                env[item["name"]] = "<secret>"
            else:
                env[item["name"]] = "<field>"
    return env


def k8s_expand(text, env):
    """Kubernetes' $(VAR) in command and args; $$ is a literal $."""
    def repl(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", repl, str(text))


def container_argv(container):
    """The argv a container runs: command (or the image's ENTRYPOINT) + args
    (or the image's CMD when neither is given)."""
    image = container.get("image", "")
    dockerfile = built_images().get(image.rpartition(":")[0])
    command, args = container.get("command"), container.get("args")
    if command is None:
        entry, _ = (dockerfile.final.last("ENTRYPOINT") if dockerfile else (None, None))
        command = parse_exec_or_shell(entry) if entry else []
        if args is None and dockerfile:
            cmd, _ = dockerfile.final.last("CMD")
            args = parse_exec_or_shell(cmd) if cmd else []
    return list(command or []) + list(args or [])


def selector_matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------

def parse_unit(path):
    sections, current = {}, None
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def unit_environment(unit):
    env = {}
    for value in unit_values(unit, "Service", "Environment"):
        for word in shlex.split(value):
            k, _, v = word.partition("=")
            env[k] = v
    return env


def env_file(path):
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            env[k.strip()] = v.strip()
    return env


def systemd_argv(exec_start, env, where, problems):
    """ExecStart words with ${VAR} replaced by its value and $VAR (a list of
    words) dropped, as systemd does with an empty or word-list variable."""
    exec_start = exec_start.lstrip("@-:+!")
    argv = []
    for word in shlex.split(exec_start):
        if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", word):
            if word[1:] not in env:
                problems.append(f"{where}: {word} is set nowhere (Environment= or {ENV_EXAMPLE.name})")
            continue

        def repl(m):
            if m.group(1) not in env:
                problems.append(f"{where}: ${{{m.group(1)}}} is set nowhere (Environment= or {ENV_EXAMPLE.name})")
                return "<unset>"
            return env[m.group(1)] or "<empty>"
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", repl, word))
    return argv


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

class YamlFilesTest(unittest.TestCase):
    def test_every_yaml_file_parses(self):
        files = sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml")) + [COMPOSE]
        self.assertTrue(K8S.is_dir(), f"{K8S} is missing")
        for path in files:
            with self.subTest(path=str(path.relative_to(REPO))):
                docs = load_all(path)
                self.assertTrue(docs, f"{path}: empty")
                for doc in docs:
                    self.assertIsInstance(doc, dict, f"{path}: a document is not a mapping")

    def test_kustomization_lists_exactly_the_manifests(self):
        kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
        listed = kustomization.get("resources") or []
        for name in listed:
            self.assertTrue((K8S / name).is_file(), f"kustomization.yaml lists {name}, which does not exist")
        self.assertEqual(len(listed), len(set(listed)), "kustomization.yaml lists a file twice")
        present = {p.name for p in K8S.iterdir() if p.suffix in (".yaml", ".yml")} - {"kustomization.yaml"}
        self.assertEqual(set(listed), present,
                         "kustomization.yaml resources must be exactly the manifests of deploy/kubernetes")

    def test_yamllint(self):
        if shutil.which("yamllint") is None:
            self.skipTest("yamllint is not installed")
        config = "{extends: default, rules: {line-length: {max: 160}, document-start: disable}}"
        files = [str(p) for p in sorted(K8S.glob("*.yaml"))] + [str(COMPOSE)]
        run = subprocess.run(["yamllint", "-f", "parsable", "-d", config, *files], capture_output=True, text=True)
        errors = [l for l in run.stdout.splitlines() if "[error]" in l]
        self.assertFalse(errors, "\n".join(errors))


class KubernetesTest(unittest.TestCase):
    def test_objects_are_namespaced_consistently(self):
        kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
        namespaces = set(k8s_named("Namespace"))
        self.assertEqual(len(namespaces), 1, "one Namespace in deploy/kubernetes")
        (namespace,) = namespaces
        self.assertEqual(kustomization.get("namespace"), namespace)
        for f, o in k8s_objects():
            if o["kind"] == "Namespace":
                continue
            with self.subTest(object=f"{f}: {o['kind']}/{o['metadata']['name']}"):
                self.assertEqual(o["metadata"].get("namespace"), namespace)

    def test_images_are_built_here_or_pinned(self):
        problems = []
        for f, workload, spec in pod_specs():
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                problems += image_problems(c.get("image"), f"{f}: {workload['metadata']['name']}/{c['name']}")
        self.assertFalse(problems, "\n".join(problems))

    def test_configmaps_secrets_and_claims_referenced_exist(self):
        problems = []
        claims = set(k8s_named("PersistentVolumeClaim"))
        for f, workload, spec in pod_specs():
            where = f"{f}: {workload['metadata']['name']}"
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                for source in c.get("envFrom") or []:
                    if "configMapRef" in source and configmap_data(source["configMapRef"]["name"]) is None:
                        problems.append(f"{where}: envFrom ConfigMap {source['configMapRef']['name']} is not defined")
                    if "secretRef" in source and secret_keys(source["secretRef"]["name"]) is None:
                        problems.append(f"{where}: envFrom Secret {source['secretRef']['name']} is not defined")
                for item in c.get("env") or []:
                    ref = item.get("valueFrom") or {}
                    if "configMapKeyRef" in ref:
                        name, key = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
                        data = configmap_data(name)
                        if data is None:
                            problems.append(f"{where}: env {item['name']}: ConfigMap {name} is not defined")
                        elif key not in data and not ref["configMapKeyRef"].get("optional"):
                            problems.append(f"{where}: env {item['name']}: ConfigMap {name} has no key {key}")
                    if "secretKeyRef" in ref:
                        name, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
                        keys = secret_keys(name)
                        if keys is None:
                            problems.append(f"{where}: env {item['name']}: Secret {name} is not defined")
                        elif key not in keys and not ref["secretKeyRef"].get("optional"):
                            problems.append(f"{where}: env {item['name']}: Secret {name} has no key {key}")
                mounts = {m["name"] for m in c.get("volumeMounts") or []}
                volumes = {v["name"] for v in spec.get("volumes") or []}
                for m in sorted(mounts - volumes):
                    problems.append(f"{where}/{c['name']}: volumeMount {m} names no volume")
            for v in spec.get("volumes") or []:
                if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in claims:
                    problems.append(f"{where}: PVC {v['persistentVolumeClaim']['claimName']} is not defined")
                if "configMap" in v:
                    data = configmap_data(v["configMap"]["name"])
                    if data is None:
                        problems.append(f"{where}: volume ConfigMap {v['configMap']['name']} is not defined")
                    else:
                        problems += [f"{where}: ConfigMap {v['configMap']['name']} has no key {i['key']}"
                                     for i in v["configMap"].get("items") or [] if i["key"] not in data]
                if "secret" in v:
                    keys = secret_keys(v["secret"]["secretName"])
                    if keys is None:
                        problems.append(f"{where}: volume Secret {v['secret']['secretName']} is not defined")
                    else:
                        problems += [f"{where}: Secret {v['secret']['secretName']} has no key {i['key']}"
                                     for i in v["secret"].get("items") or [] if i["key"] not in keys]
        self.assertFalse(problems, "\n".join(problems))

    def test_ports_services_probes_and_servicemonitor_agree(self):
        problems = []
        workloads = []
        for f, workload, spec in pod_specs():
            labels = workload["spec"]["template"]["metadata"].get("labels") or {}
            for c in spec.get("containers", []):
                names = {p["name"]: p["containerPort"] for p in c.get("ports") or [] if "name" in p}
                numbers = {p["containerPort"] for p in c.get("ports") or []}
                workloads.append((labels, names, numbers))
                where = f"{f}: {workload['metadata']['name']}/{c['name']}"
                for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
                    probe = c.get(probe_name) or {}
                    for kind in ("httpGet", "tcpSocket", "grpc"):
                        if kind in probe:
                            port = probe[kind]["port"]
                            if (isinstance(port, str) and port not in names) or \
                               (isinstance(port, int) and port not in numbers):
                                problems.append(f"{where}: {probe_name} port {port} is not a containerPort")
        services = k8s_named("Service")
        for name, service in services.items():
            selector = service["spec"].get("selector") or {}
            targets = [w for w in workloads if selector_matches(selector, w[0])]
            if not targets:
                problems.append(f"Service {name}: its selector {selector} matches no pod template")
                continue
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                ok = any((target in w[1]) if isinstance(target, str) else (target in w[2]) for w in targets)
                if not ok:
                    problems.append(f"Service {name}: targetPort {target} is no containerPort of its pods")
        for _, monitor in k8s_kind("ServiceMonitor"):
            name = monitor["metadata"]["name"]
            self.assertEqual(monitor["apiVersion"], "monitoring.coreos.com/v1")
            namespaces = ((monitor["spec"].get("namespaceSelector") or {}).get("matchNames")
                          or [monitor["metadata"]["namespace"]])
            selected = [s for s in services.values()
                        if selector_matches(monitor["spec"]["selector"].get("matchLabels") or {},
                                            s["metadata"].get("labels") or {})
                        and s["metadata"]["namespace"] in namespaces]
            if not selected:
                problems.append(f"ServiceMonitor {name}: selects no Service")
            for endpoint in monitor["spec"]["endpoints"]:
                for s in selected:
                    if endpoint.get("port") not in {p.get("name") for p in s["spec"]["ports"]}:
                        problems.append(f"ServiceMonitor {name}: Service {s['metadata']['name']} has no port "
                                        f"named {endpoint.get('port')}")
        self.assertFalse(problems, "\n".join(problems))

    def _k8s_invocations(self):
        """(where, container, env, [Invocation]) for every command a container
        or its probes run."""
        result = []
        for f, workload, spec in pod_specs():
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                where = f"{f}: {workload['metadata']['name']}/{c['name']}"
                env = container_env(c)
                argv = [k8s_expand(a, env) for a in container_argv(c)]
                for raw in container_argv(c):
                    for var in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(raw)):
                        self.assertIn(var, env, f"{where}: $({var}) is not in the container's env; "
                                                "Kubernetes would pass it literally")
                main = invocations(argv, where)
                probes = []
                for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
                    command = ((c.get(probe_name) or {}).get("exec") or {}).get("command")
                    if command:
                        probes += invocations([k8s_expand(a, env) for a in command], f"{where} {probe_name}")
                result.append((where, workload, c, env, main, probes))
        return result

    def test_commands_and_probes_use_flags_that_exist(self):
        problems = []
        for where, workload, c, env, main, probes in self._k8s_invocations():
            if not main:
                problems.append(f"{where}: runs none of {BINARIES}")
            for inv in main + probes:
                problems += inv.problems
        self.assertFalse(problems, "\n".join(problems))

    def test_listen_ports_probes_and_env_agree_with_the_binaries(self):
        problems = []
        services = k8s_named("Service")
        for where, workload, c, env, main, probes in self._k8s_invocations():
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            for inv in main:
                read = inv.cli.env_names() | storage_variables()
                used = set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(map(str, container_argv(c)))))
                for name in env:
                    if name.startswith("DIABLO_") and name not in read and name not in used:
                        problems.append(f"{where}: env {name} is read neither by {inv.binary} "
                                        f"nor by docs/storage.md's S3 settings, nor used in the args")
                if inv.binary == "diablo-scheduler":
                    listen = port_of(inv.value("--listen"))
                    metrics = port_of(inv.value("--metrics-listen"))
                    if ports.get("grpc") != listen:
                        problems.append(f"{where}: containerPort grpc {ports.get('grpc')} != --listen port {listen}")
                    if ports.get("metrics") != metrics:
                        problems.append(f"{where}: containerPort metrics {ports.get('metrics')} "
                                        f"!= --metrics-listen port {metrics}")
                    for probe in probes:
                        if probe.binary == "diablo-ctl" and port_of(probe.value("--server")) != listen:
                            problems.append(f"{probe.where}: --server {probe.value('--server')} is not the "
                                            f"--listen port {listen}")
                    if workload["kind"] != "Deployment" or workload["spec"].get("replicas", 1) != 1 or \
                       workload["spec"].get("strategy", {}).get("type") != "Recreate":
                        problems.append(f"{where}: the scheduler (SQLite) must be a Deployment with replicas: 1 "
                                        "and strategy Recreate")
                if inv.binary == "diablo-worker":
                    server = inv.value("--server")
                    if "--server" not in inv.values:
                        server = env.get("DIABLO_SERVER", server)
                    host, port = server.rsplit(":", 1)
                    service = services.get(host.split(".")[0])
                    if service is None:
                        problems.append(f"{where}: scheduler address {server} names no Service")
                    elif int(port) not in {p["port"] for p in service["spec"]["ports"]}:
                        problems.append(f"{where}: Service {host} has no port {port}")
                    devices = inv.value("--devices")
                    gpus = ((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu")
                    if str(devices) != str(gpus):
                        problems.append(f"{where}: --devices {devices} != nvidia.com/gpu limit {gpus}")
                    if "DIABLO_TOKEN" not in env and "--token" not in inv.values:
                        problems.append(f"{where}: the worker gets no token (DIABLO_TOKEN)")
                security = {**(workload["spec"]["template"]["spec"].get("securityContext") or {}),
                            **(c.get("securityContext") or {})}
                if not security.get("runAsNonRoot") or security.get("runAsUser", 1) == 0:
                    problems.append(f"{where}: must run as non-root (runAsNonRoot, runAsUser != 0)")
        self.assertFalse(problems, "\n".join(problems))


class DockerfileTest(unittest.TestCase):
    def test_each_dockerfile_names_its_image(self):
        for d in dockerfiles():
            with self.subTest(dockerfile=str(d.rel)):
                self.assertIsNotNone(d.image, f"{d.rel}: add a `# image: diablo/<name>` line")
                self.assertRegex(d.image, r"^diablo/[a-z0-9-]+$")

    def test_copy_sources_exist_and_are_in_the_build_context(self):
        problems = []
        binaries = {p.name for p in BIN.iterdir()} if BIN.is_dir() else set()
        for d in dockerfiles():
            ignore_file, patterns = dockerignore_for(d)
            for stage in d.stages:
                built = set()
                for text, _ in stage.all("RUN"):
                    for m in re.finditer(r"--target\s+((?:[A-Za-z0-9_.+-]+\s*)+)", text):
                        built.update(m.group(1).split())
                for source_stage, sources, dest, line in d.copies(stage):
                    where = f"{d.rel}:{line}"
                    if source_stage is None:
                        for source in sources:
                            path = REPO / source
                            if not path.exists():
                                problems.append(f"{where}: COPY source {source} does not exist in the repository")
                            elif ignore_file and docker_ignored(source.rstrip("/"), patterns):
                                problems.append(f"{where}: COPY source {source} is excluded by "
                                                f"{ignore_file.relative_to(REPO)}")
                        continue
                    origin = d.stage(source_stage)
                    if origin is None or origin.index >= stage.index:
                        problems.append(f"{where}: --from={source_stage} is no earlier stage")
                        continue
                    origin_built = {t for text, _ in origin.all("RUN")
                                    for m in re.finditer(r"--target\s+((?:[A-Za-z0-9_.+-]+\s*)+)", text)
                                    for t in m.group(1).split()}
                    runs = " ".join(t for t, _ in origin.all("RUN"))
                    for source in sources:
                        m = re.search(r"/build/bin/([^/]+)$", source)
                        if m:
                            if m.group(1) not in binaries:
                                problems.append(f"{where}: {m.group(1)} is not a binary the build produces "
                                                f"({BIN})")
                            if m.group(1) not in origin_built:
                                problems.append(f"{where}: stage {source_stage} does not build {m.group(1)}")
                        elif "/" + source.strip("/").split("/")[0] not in runs:
                            problems.append(f"{where}: nothing in stage {source_stage} creates {source}")
                for target in built:
                    if target not in cmake_targets():
                        problems.append(f"{d.rel}: --target {target} is no add_executable of the project")
        self.assertFalse(problems, "\n".join(problems))

    def test_build_stages_copy_what_cmake_configures(self):
        problems = []
        for d in dockerfiles():
            for stage in d.stages:
                runs = " ".join(t for t, _ in stage.all("RUN"))
                if not re.search(r"\bcmake\s+-S", runs):
                    continue
                copied = {s.strip("/").split("/")[0] for f, srcs, _, _ in d.copies(stage) if f is None for s in srcs}
                for needed in sorted(cmake_top_level_dirs() | {"CMakeLists.txt", "cmake"}):
                    if needed not in copied:
                        problems.append(f"{d.rel}: stage {stage.name or stage.index} configures CMake but does "
                                        f"not COPY {needed}/ (CMakeLists.txt adds it)")
                if "-DDIABLO_BUILD_TESTS=OFF" not in runs or "-DDIABLO_BUILD_BENCH=OFF" not in runs:
                    problems.append(f"{d.rel}: tests/ and bench/ are not copied; configure with "
                                    "-DDIABLO_BUILD_TESTS=OFF -DDIABLO_BUILD_BENCH=OFF")
                cmake = (REPO / "CMakeLists.txt").read_text()
                if re.search(r"^find_package\(Torch REQUIRED\)", cmake, re.M) and \
                   not re.search(r"torch==", d.expanded(stage, runs)):
                    problems.append(f"{d.rel}: CMakeLists.txt needs LibTorch at configure time, but stage "
                                    f"{stage.name or stage.index} installs no torch wheel")
        self.assertFalse(problems, "\n".join(problems))

    def test_entrypoint_cmd_and_healthcheck_use_flags_that_exist(self):
        problems = []
        for d in dockerfiles():
            where = str(d.rel)
            entry = invocations(d.entry_argv(), f"{where} ENTRYPOINT+CMD")
            if not entry:
                problems.append(f"{where}: ENTRYPOINT runs none of {BINARIES}")
            health_argv = d.healthcheck_argv()
            if health_argv is None:
                problems.append(f"{where}: no HEALTHCHECK")
                health = []
            else:
                health = invocations(health_argv, f"{where} HEALTHCHECK")
                if not health:
                    problems.append(f"{where}: HEALTHCHECK runs none of {BINARIES}")
            for inv in entry + health:
                problems += inv.problems
            for inv in entry:
                if inv.binary == "diablo-scheduler":
                    listen = port_of(inv.value("--listen"))
                    metrics = port_of(inv.value("--metrics-listen"))
                    for port, flag in ((listen, "--listen"), (metrics, "--metrics-listen")):
                        if port not in d.exposed_ports():
                            problems.append(f"{where}: EXPOSE lacks the {flag} port {port}")
                    for h in health:
                        if h.binary == "diablo-ctl" and port_of(h.value("--server")) != listen:
                            problems.append(f"{where}: HEALTHCHECK asks {h.value('--server')}, the scheduler "
                                            f"listens on port {listen}")
        self.assertFalse(problems, "\n".join(problems))

    def test_runtime_stage_runs_as_non_root(self):
        for d in dockerfiles():
            with self.subTest(dockerfile=str(d.rel)):
                user, _ = d.final.last("USER")
                self.assertIsNotNone(user, f"{d.rel}: the runtime stage sets no USER")
                self.assertNotIn(user.split(":")[0], ("root", "0"), f"{d.rel}: USER {user} is root")

    def test_build_stage_packages_come_from_debian_packages_txt(self):
        problems = []
        for d in dockerfiles():
            for stage in d.stages[:-1]:
                for package in d.apt_packages(stage):
                    if package not in debian_packages() and package not in d.extra_packages:
                        problems.append(f"{d.rel}: stage {stage.name or stage.index} installs {package}, which "
                                        "is not in scripts/debian-packages.txt (add it there or explain it with "
                                        "`# extra-package: NAME why`)")
        self.assertFalse(problems, "\n".join(problems))

    def test_torch_pin_is_the_test_venv_s(self):
        found = False
        for d in dockerfiles():
            for stage in d.stages:
                for text, line in stage.all("RUN"):
                    for m in re.finditer(r"torch==([^\s\"'\\]+)", d.expanded(stage, text)):
                        found = True
                        self.assertEqual(m.group(1), torch_pin(),
                                         f"{d.rel}:{line}: torch=={m.group(1)}, scripts/requirements-test.txt "
                                         f"pins {torch_pin()}")
        self.assertTrue(found, "no Dockerfile installs torch")

    def test_cuda_images_agree_with_each_other_and_the_torch_build(self):
        for d in dockerfiles():
            cuda = [s for s in d.stages if s.base.startswith("nvidia/cuda:")]
            if not cuda:
                continue
            with self.subTest(dockerfile=str(d.rel)):
                tags = [re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:cudnn-)?(?:base|runtime|devel)-(\S+)",
                                     s.base) for s in cuda]
                self.assertTrue(all(tags), f"{d.rel}: unexpected nvidia/cuda tags {[s.base for s in cuda]}")
                self.assertEqual(len({(t.group(1), t.group(2), t.group(3)) for t in tags}), 1,
                                 f"{d.rel}: build and runtime stages use different CUDA versions or OS releases: "
                                 f"{[s.base for s in cuda]}")
                self.assertEqual(d.final.base, cuda[-1].base, f"{d.rel}: the runtime stage is not a CUDA image")
                wanted = d.global_args.get("TORCH_CUDA")
                self.assertIsNotNone(wanted, f"{d.rel}: declare ARG TORCH_CUDA=cuXYZ (the torch wheel's CUDA)")
                m = re.fullmatch(r"cu(\d+)(\d)", wanted)
                self.assertEqual((m.group(1), m.group(2)), (tags[0].group(1), tags[0].group(2)),
                                 f"{d.rel}: torch {wanted} but base images CUDA {tags[0].group(1)}.{tags[0].group(2)}")

    def test_scheduler_runtime_packages_provide_the_binaries_libraries(self):
        d = built_images().get("diablo/scheduler")
        self.assertIsNotNone(d, "no Dockerfile builds diablo/scheduler")
        if not d.final.base.startswith("debian:12"):
            self.skipTest(f"runtime base is {d.final.base}, this check knows Debian 12")
        os_release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
        if "VERSION_CODENAME=bookworm" not in os_release:
            self.skipTest("this machine is not Debian 12: cannot map libraries to Debian 12 packages")
        if not (shutil.which("dpkg") and shutil.which("apt-cache") and shutil.which("readelf")):
            self.skipTest("dpkg, apt-cache or readelf is missing")
        installed = d.apt_packages(d.final)
        closure_run = subprocess.run(
            ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
             "--no-breaks", "--no-replaces", "--no-enhances", *installed], capture_output=True, text=True)
        if closure_run.returncode != 0:
            self.skipTest(f"apt-cache knows no package lists here: {closure_run.stderr.strip()[:200]}")
        closure = {l.strip() for l in closure_run.stdout.splitlines() if l and not l.startswith(" ")}
        missing = [p for p in installed if p not in closure]
        self.assertFalse(missing, f"{d.rel}: unknown Debian 12 packages {missing}")
        copied = [Path(s).name for f, srcs, _, _ in d.copies(d.final) if f for s in srcs if "/build/bin/" in s]
        problems = []
        for binary in copied:
            dynamic = subprocess.run(["readelf", "-d", str(BIN / binary)], capture_output=True, text=True).stdout
            for soname in re.findall(r"\(NEEDED\).*\[(.+)\]", dynamic):
                owners = subprocess.run(["dpkg", "-S", f"*/{soname}"], capture_output=True, text=True).stdout
                packages = {line.split(":")[0] for line in owners.splitlines()
                            if re.search(r"/(usr/)?lib/x86_64-linux-gnu/", line)}
                if not packages:
                    continue  # not from a Debian package here (cannot judge)
                if not packages & closure:
                    problems.append(f"{d.rel}: {binary} needs {soname} ({', '.join(sorted(packages))}), which the "
                                    "runtime stage does not install")
        self.assertFalse(problems, "\n".join(problems))

    def test_shell_in_run_and_healthcheck_passes_shellcheck(self):
        if shutil.which("shellcheck") is None:
            self.skipTest("shellcheck is not installed")
        problems = []
        for d in dockerfiles():
            for stage in d.stages:
                shell = "bash" if any("bash" in t for t, _ in stage.all("SHELL")) else "sh"
                for text, line in stage.all("RUN"):
                    run = subprocess.run(["shellcheck", "-s", shell, "-S", "warning", "-e", "SC2046,SC2086", "-"],
                                         input=text, capture_output=True, text=True)
                    if run.returncode != 0:
                        problems.append(f"{d.rel}:{line}:\n{run.stdout}")
        self.assertFalse(problems, "\n".join(problems))


class ComposeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.raw = yaml.safe_load(COMPOSE.read_text())
        cls.interpolation_problems = []
        cls.compose = interpolate_tree(cls.raw, cls.interpolation_problems, "compose")
        cls.services = cls.compose["services"]

    def aliases(self):
        names = {}
        for name, s in self.services.items():
            names[name] = name
            networks = s.get("networks") or {}
            if isinstance(networks, dict):
                for network in networks.values():
                    for alias in (network or {}).get("aliases") or []:
                        names[alias] = name
        return names

    def argv(self, service):
        """The argv the service's container runs, as compose composes it."""
        image = service.get("image", "")
        dockerfile = built_images().get(image.rpartition(":")[0])

        def as_list(v):
            return v if isinstance(v, list) else ["/bin/sh", "-c", v] if isinstance(v, str) else []
        entry = service.get("entrypoint")
        command = service.get("command")
        if entry is None and dockerfile is not None:
            text, _ = dockerfile.final.last("ENTRYPOINT")
            entry = parse_exec_or_shell(text) if text else []
            if command is None:
                text, _ = dockerfile.final.last("CMD")
                command = parse_exec_or_shell(text) if text else []
        if isinstance(command, str):
            command = shlex.split(command)
        return as_list(entry) + list(command or [])

    def service_invocations(self, name):
        return invocations(self.argv(self.services[name]), f"compose.yaml: {name}")

    def test_interpolation_is_well_formed(self):
        self.assertFalse(self.interpolation_problems, "\n".join(self.interpolation_problems))

    def test_images_are_built_here_or_pinned(self):
        problems = []
        for name, s in self.services.items():
            image = s.get("image")
            problems += image_problems(image, f"compose.yaml: {name}")
            dockerfile = built_images().get((image or "").rpartition(":")[0])
            if dockerfile is not None:
                build = s.get("build")
                if build is None:
                    problems.append(f"compose.yaml: {name}: {image} is built here; give the service a build:")
                    continue
                context = (COMPOSE.parent / build.get("context", ".")).resolve()
                if context != REPO:
                    problems.append(f"compose.yaml: {name}: build context {context} is not the repository root")
                if (context / build.get("dockerfile", "Dockerfile")).resolve() != dockerfile.path.resolve():
                    problems.append(f"compose.yaml: {name}: {image} is built by {dockerfile.rel}, "
                                    f"not {build.get('dockerfile')}")
        self.assertFalse(problems, "\n".join(problems))

    def test_mounted_files_exist(self):
        problems = []
        declared = set(self.compose.get("volumes") or {})
        for name, s in self.services.items():
            for volume in s.get("volumes") or []:
                if isinstance(volume, dict):
                    source, kind = volume.get("source"), volume.get("type")
                else:
                    source = volume.split(":")[0]
                    kind = "bind" if source.startswith((".", "/", "~")) else "volume"
                if kind == "bind":
                    path = (COMPOSE.parent / source).resolve()
                    if not path.exists():
                        hint = f" ({MONITORING_HINT})" if "deploy/prometheus" in str(path) or \
                            "deploy/grafana" in str(path) else ""
                        problems.append(f"compose.yaml: {name} mounts {path.relative_to(REPO)}, which does not "
                                        f"exist{hint}")
                elif source and source not in declared:
                    problems.append(f"compose.yaml: {name}: volume {source} is not declared under volumes:")
        self.assertFalse(problems, "\n".join(problems))

    def test_depends_on_and_one_shot_services(self):
        problems = []
        for name, s in self.services.items():
            depends = s.get("depends_on") or {}
            if isinstance(depends, list):
                depends = {d: {"condition": "service_started"} for d in depends}
            for other, spec in depends.items():
                if other not in self.services:
                    problems.append(f"compose.yaml: {name} depends on {other}, which is no service")
                    continue
                condition = (spec or {}).get("condition")
                target = self.services[other]
                if condition == "service_completed_successfully" and target.get("restart", "no") != "no":
                    problems.append(f"compose.yaml: {other} is waited for to complete but has restart: "
                                    f"{target.get('restart')}")
                if condition == "service_healthy":
                    dockerfile = built_images().get(target.get("image", "").rpartition(":")[0])
                    has = (target.get("healthcheck") and not target["healthcheck"].get("disable")) or \
                        (dockerfile is not None and dockerfile.healthcheck_argv() is not None)
                    if not has:
                        problems.append(f"compose.yaml: {name} waits for {other} to be healthy; it has no "
                                        "healthcheck")
        self.assertFalse(problems, "\n".join(problems))

    def test_commands_use_flags_that_exist(self):
        problems = []
        for name, s in self.services.items():
            if built_images().get(s.get("image", "").rpartition(":")[0]) is None:
                continue
            found = self.service_invocations(name)
            if not found:
                problems.append(f"compose.yaml: {name} runs none of {BINARIES}")
            for inv in found:
                problems += inv.problems
            test = (s.get("healthcheck") or {}).get("test")
            if isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"):
                argv = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
                for inv in invocations(argv, f"compose.yaml: {name} healthcheck"):
                    problems += inv.problems
        self.assertFalse(problems, "\n".join(problems))

    def test_ports_storage_tokens_and_gpus_are_consistent(self):
        problems = []
        aliases = self.aliases()
        scheduler_name, metrics_port, listen_port = None, None, None
        for name, s in self.services.items():
            env = s.get("environment") or {}
            if isinstance(env, list):
                env = dict(e.split("=", 1) for e in env)
            container_ports = {int(str(p).split(":")[-1].split("/")[0]) for p in s.get("ports") or []}
            container_ports |= {int(str(p).split("/")[0]) for p in s.get("expose") or []}
            for inv in self.service_invocations(name) if s.get("image", "").startswith("diablo/") else []:
                used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", " ".join(map(str, self.argv(s)))))
                for var in env:
                    if var.startswith("DIABLO_") and var not in inv.cli.env_names() | storage_variables() | used:
                        problems.append(f"compose.yaml: {name}: {var} is read neither by {inv.binary} nor by "
                                        "docs/storage.md's S3 settings, nor used in its command")
                if inv.binary == "diablo-scheduler" and not inv.path:
                    scheduler_name = name
                    listen_port = port_of(inv.value("--listen"))
                    metrics_port = port_of(inv.value("--metrics-listen"))
                    for port, flag in ((listen_port, "--listen"), (metrics_port, "--metrics-listen")):
                        if port not in container_ports:
                            problems.append(f"compose.yaml: {name}: the {flag} port {port} is not in ports/expose")
                    storage = inv.value("--storage") or env.get("DIABLO_STORAGE")
                    if not (storage or "").startswith("s3://"):
                        problems.append(f"compose.yaml: {name}: workers in other containers need a shared store; "
                                        f"storage is {storage}")
                if inv.binary == "diablo-worker":
                    server = inv.value("--server") if "--server" in inv.values else env.get("DIABLO_SERVER")
                    host, _, port = (server or "").rpartition(":")
                    target = aliases.get(host)
                    if target is None:
                        problems.append(f"compose.yaml: {name}: scheduler address {server} is no service")
                    else:
                        for t in invocations(self.argv(self.services[target]), target):
                            if t.binary == "diablo-scheduler" and not t.path and \
                               port_of(t.value("--listen")) != int(port):
                                problems.append(f"compose.yaml: {name}: {server} is not the port {target} "
                                                "listens on")
                    devices = inv.value("--devices")
                    reserved = sum(int(dev.get("count", 0)) for dev in
                                   (((s.get("deploy") or {}).get("resources") or {}).get("reservations") or {})
                                   .get("devices") or [] if dev.get("driver") == "nvidia")
                    if str(devices) != str(reserved):
                        problems.append(f"compose.yaml: {name}: --devices {devices} but {reserved} GPUs reserved")
                    if "DIABLO_TOKEN" not in " ".join(map(str, self.argv(s))) and "DIABLO_TOKEN" not in env:
                        problems.append(f"compose.yaml: {name}: the worker gets no DIABLO_TOKEN")
                    mounts = " ".join(map(str, s.get("volumes") or []))
                    for path in re.findall(r"cat\s+(\S+)", " ".join(map(str, self.argv(s)))):
                        if not any(path.startswith(m.split(":")[1]) for m in s.get("volumes") or []
                                   if isinstance(m, str) and ":" in m):
                            problems.append(f"compose.yaml: {name} reads {path}, which no volume provides "
                                            f"({mounts})")
                if inv.path == ["token", "create"]:
                    data_dir = inv.value("--data-dir")
                    if not any(str(v).split(":")[1] == data_dir for v in s.get("volumes") or []):
                        problems.append(f"compose.yaml: {name} creates tokens in {data_dir}, which is no volume")
            s3_users = [n for n, s in self.services.items()
                        if "AWS_ACCESS_KEY_ID" in (s.get("environment") or {})]
            if name == "minio":
                root = (env.get("MINIO_ROOT_USER"), env.get("MINIO_ROOT_PASSWORD"))
                for user in s3_users:
                    e = self.services[user]["environment"]
                    if (e["AWS_ACCESS_KEY_ID"], e["AWS_SECRET_ACCESS_KEY"]) != root:
                        problems.append(f"compose.yaml: {user}'s S3 credentials are not MinIO's")
                    endpoint = e.get("DIABLO_S3_ENDPOINT", "")
                    m = re.fullmatch(r"https?://([^:/]+):(\d+)", endpoint)
                    if not m or aliases.get(m.group(1)) != "minio" or \
                       f":{m.group(2)}" not in " ".join(map(str, s.get("command") or [])):
                        problems.append(f"compose.yaml: {user}: DIABLO_S3_ENDPOINT {endpoint} is not MinIO's "
                                        "API address")
        self.assertIsNotNone(scheduler_name, "compose.yaml runs no diablo-scheduler")
        storage = self.services[scheduler_name]["environment"].get("DIABLO_STORAGE", "")
        bucket = storage[len("s3://"):].split("/")[0]
        if not any(f"/{bucket}" in " ".join(map(str, s.get("command") or [])) and "mb" in (s.get("command") or [])
                   for s in self.services.values()):
            problems.append(f"compose.yaml: nothing creates the bucket {bucket} (the store does not)")
        self.assertFalse(problems, "\n".join(problems))

    def test_prometheus_scrapes_the_scheduler_and_loads_its_rules(self):
        config_path = REPO / "deploy" / "prometheus" / "prometheus.yml"
        self.assertTrue(config_path.exists(), f"{config_path.relative_to(REPO)} is missing ({MONITORING_HINT})")
        config = yaml.safe_load(config_path.read_text())
        aliases = self.aliases()
        prometheus = [n for n, s in self.services.items() if str(s.get("image", "")).startswith("prom/prometheus")]
        self.assertEqual(len(prometheus), 1, "one prometheus service")
        service = self.services[prometheus[0]]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes") or [] if isinstance(v, str)}
        metrics_ports = set()
        for name, s in self.services.items():
            if not str(s.get("image", "")).startswith("diablo/"):
                continue
            for inv in self.service_invocations(name):
                if inv.binary == "diablo-scheduler" and not inv.path:
                    metrics_ports.add((name, port_of(inv.value("--metrics-listen"))))
        targets = []
        for job in config.get("scrape_configs") or []:
            for static in job.get("static_configs") or []:
                targets += static.get("targets") or []
        hits = [t for t in targets if (aliases.get(t.rpartition(":")[0]), int(t.rpartition(":")[2])) in metrics_ports]
        self.assertTrue(hits, f"deploy/prometheus/prometheus.yml scrapes {targets}; none is the compose "
                              f"scheduler's metrics endpoint {sorted(metrics_ports)} (service names/aliases: "
                              f"{sorted(aliases)})")
        config_dir = "/etc/prometheus"
        for flag in service.get("command") or []:
            if str(flag).startswith("--config.file="):
                config_dir = os.path.dirname(str(flag).split("=", 1)[1])
        for rule in config.get("rule_files") or []:
            in_container = rule if rule.startswith("/") else f"{config_dir}/{rule}"
            self.assertTrue(any(fnmatch.fnmatch(in_container, m) or in_container.startswith(m.rstrip("/") + "/")
                                for m in mounts),
                            f"prometheus.yml loads rules {in_container}; compose.yaml mounts only {sorted(mounts)}")
            for m, source in mounts.items():
                if fnmatch.fnmatch(in_container, m):
                    self.assertTrue((COMPOSE.parent / source).exists(), f"{source} is missing ({MONITORING_HINT})")

    def test_grafana_provisioning_matches_the_mounts(self):
        provisioning = REPO / "deploy" / "grafana" / "provisioning"
        self.assertTrue(provisioning.is_dir(), f"{provisioning.relative_to(REPO)} is missing ({MONITORING_HINT})")
        self.assertTrue((REPO / "deploy" / "grafana" / "dashboards").is_dir(),
                        f"deploy/grafana/dashboards is missing ({MONITORING_HINT})")
        grafana = [n for n, s in self.services.items() if str(s.get("image", "")).startswith("grafana/")]
        self.assertEqual(len(grafana), 1, "one grafana service")
        mounts = {v.split(":")[1]: (COMPOSE.parent / v.split(":")[0]).resolve()
                  for v in self.services[grafana[0]].get("volumes") or [] if isinstance(v, str)
                  and v.split(":")[0].startswith(".")}
        aliases = self.aliases()
        problems = []

        def in_container(path):
            for target, source in mounts.items():
                if path == source:
                    return target
                if source in path.parents:
                    return f"{target.rstrip('/')}/{path.relative_to(source)}"
            return None
        for path in sorted(provisioning.rglob("*.y*ml")):
            doc = yaml.safe_load(path.read_text()) or {}
            for kind in ("providers", "datasources"):
                if kind not in doc:
                    continue
                folder = "dashboards" if kind == "providers" else "datasources"
                target = in_container(path.resolve())
                if target is None or os.path.dirname(target) != f"/etc/grafana/provisioning/{folder}":
                    problems.append(f"{path.relative_to(REPO)} ({kind}) must appear in "
                                    f"/etc/grafana/provisioning/{folder}/ for Grafana to read it; compose.yaml "
                                    f"puts it at {target}")
            for provider in doc.get("providers") or []:
                folder = (provider.get("options") or {}).get("path")
                if folder and not any(folder == m or folder.startswith(m.rstrip("/") + "/") for m in mounts):
                    problems.append(f"{path.relative_to(REPO)}: dashboards from {folder}, which compose.yaml "
                                    f"does not mount (mounts: {sorted(mounts)})")
            for source in doc.get("datasources") or []:
                m = re.match(r"https?://([^:/]+):(\d+)", str(source.get("url", "")))
                if m and source.get("type") == "prometheus" and m.group(1) not in ("localhost", "127.0.0.1"):
                    if aliases.get(m.group(1)) is None:
                        problems.append(f"{path.relative_to(REPO)}: datasource {source.get('url')} names no "
                                        "compose service")
        self.assertFalse(problems, "\n".join(problems))

    def test_scripts_pass_shellcheck(self):
        if shutil.which("shellcheck") is None:
            self.skipTest("shellcheck is not installed")
        problems = []
        for name, s in self.services.items():
            argv = [str(a) for a in self.argv(s)]
            for i, a in enumerate(argv[:-1]):
                if os.path.basename(a) in ("sh", "bash") and re.fullmatch(r"-[a-z]*c[a-z]*", argv[i + 1]) \
                        and i + 2 < len(argv):
                    run = subprocess.run(["shellcheck", "-s", "sh", "-S", "warning", "-"], input=argv[i + 2],
                                         capture_output=True, text=True)
                    if run.returncode != 0:
                        problems.append(f"compose.yaml: {name}:\n{run.stdout}")
        self.assertFalse(problems, "\n".join(problems))


class SystemdTest(unittest.TestCase):
    UNITS = {"diablo-scheduler.service": "diablo-scheduler", "diablo-worker.service": "diablo-worker"}

    def test_units_exist_and_run_their_binary_with_flags_that_exist(self):
        example = env_file(ENV_EXAMPLE)
        problems, used = [], set()
        for unit_name, binary in self.UNITS.items():
            path = SYSTEMD / unit_name
            self.assertTrue(path.exists(), f"{path.relative_to(REPO)} is missing")
            unit = parse_unit(path)
            env = {**unit_environment(unit), **example}
            starts = unit_values(unit, "Service", "ExecStart")
            self.assertEqual(len(starts), 1, f"{unit_name}: one ExecStart")
            used.update(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", starts[0]))
            argv = systemd_argv(starts[0], env, unit_name, problems)
            self.assertEqual(os.path.basename(argv[0]), binary, f"{unit_name}: ExecStart runs {argv[0]}")
            found = invocations(argv, unit_name)
            self.assertTrue(found, f"{unit_name}: ExecStart runs none of {BINARIES}")
            for inv in found:
                problems += inv.problems
        # Every DIABLO_* setting of the example reaches something: a unit's
        # ExecStart, a binary's environment binding, or the S3 settings.
        read = used | storage_variables()
        for binary in self.UNITS.values():
            read |= cli(binary).env_names()
        for var in example:
            if var.startswith("DIABLO_") and var not in read:
                problems.append(f"{ENV_EXAMPLE.name}: {var} is read by no unit and no binary")
        self.assertFalse(problems, "\n".join(problems))

    def test_units_are_restarted_stopped_and_confined_sanely(self):
        for unit_name in self.UNITS:
            with self.subTest(unit=unit_name):
                unit = parse_unit(SYSTEMD / unit_name)
                service = dict(unit["Service"])
                self.assertNotIn(service.get("User", "root"), ("root", "0"), f"{unit_name}: dedicated User=")
                self.assertEqual(service.get("Restart"), "on-failure")
                self.assertEqual(service.get("KillSignal", "SIGTERM"), "SIGTERM")
                self.assertEqual(service.get("NoNewPrivileges"), "yes")
                self.assertIn(service.get("ProtectSystem"), ("strict", "full", "yes"))
                self.assertIn("WantedBy", dict(unit.get("Install", [])))
                files = unit_values(unit, "Service", "EnvironmentFile")
                self.assertTrue(files, f"{unit_name}: no EnvironmentFile=")
        worker = dict(parse_unit(SYSTEMD / "diablo-worker.service")["Service"])
        for key in ("PrivateDevices", "ProtectClock", "ProtectKernelLogs"):
            self.assertNotEqual(worker.get(key), "yes", f"diablo-worker.service: {key}=yes shuts out /dev/nvidia*")
        for key in ("DevicePolicy", "DeviceAllow", "MemoryDenyWriteExecute"):
            self.assertNotIn(key, worker, f"diablo-worker.service: {key}= breaks CUDA")
        self.assertEqual(worker.get("KillMode"), "mixed",
                         "diablo-worker.service: the agent stops its trainers itself (KillMode=mixed)")

    def test_systemd_analyze_verify(self):
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze is not installed")
        problems = []
        with tempfile.TemporaryDirectory() as tmp:
            for unit_name, binary in self.UNITS.items():
                text = (SYSTEMD / unit_name).read_text().replace(f"/usr/local/bin/{binary}", str(BIN / binary))
                (Path(tmp) / unit_name).write_text(text)
                run = subprocess.run(["systemd-analyze", "verify", str(Path(tmp) / unit_name)],
                                     capture_output=True, text=True)
                for line in (run.stdout + run.stderr).splitlines():
                    if re.search(r"Unknown (key|section)|Failed to parse|Invalid|Ignoring|not executable|"
                                 r"bad-setting|Missing '='", line):
                        problems.append(f"{unit_name}: {line}")
        self.assertFalse(problems, "\n".join(problems))


class DocsTest(unittest.TestCase):
    DOCS = (REPO / "docs" / "deployment.md", DOCKER / "README.md")

    def test_commands_in_the_deployment_docs_use_flags_that_exist(self):
        """Shell blocks of the deployment docs: each command that starts one of
        the binaries (first word, after sudo -u U, after `--` or `exec SERVICE`)."""
        problems, checked = [], 0
        for doc in self.DOCS:
            self.assertTrue(doc.exists(), f"{doc.relative_to(REPO)} is missing")
            for block in re.findall(r"^```(?:sh|bash|console)?\n(.*?)^```", doc.read_text(), re.M | re.S):
                for words in commands_from_script(block):
                    where = f"{doc.relative_to(REPO)}: {' '.join(words)}"
                    if words[:2] == ["docker", "run"]:
                        # docker run [options] IMAGE args: the image's entrypoint gets the args
                        for i, word in enumerate(words):
                            dockerfile = built_images().get(word.rpartition(":")[0])
                            if dockerfile is not None:
                                problems += image_problems(word, where)
                                entry, _ = dockerfile.final.last("ENTRYPOINT")
                                for found in invocations(parse_exec_or_shell(entry) + words[i + 1:], where):
                                    problems += found.problems
                                    checked += 1
                                break
                        continue
                    start = 0
                    if words and words[0] == "sudo":
                        start = 1
                        while start < len(words) and words[start].startswith("-"):
                            start += 2 if words[start] in ("-u", "-g") else 1
                    for i in range(start, len(words)):
                        if os.path.basename(words[i]) in BINARIES and \
                           (i == start or words[i - 1] == "--" or (i >= 2 and words[i - 2] == "exec")):
                            argv = [os.path.basename(words[i])] + words[i + 1:]
                            found = Invocation(argv, where)
                            problems += found.problems
                            checked += 1
                            break
        self.assertGreaterEqual(checked, 5, "found almost no commands in the deployment docs")
        self.assertFalse(problems, "\n".join(problems))


def main():
    global BIN
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--bin", default=str(BIN), help="directory of the built binaries")
    args, rest = parser.parse_known_args()
    BIN = Path(args.bin).resolve()
    unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    main()
