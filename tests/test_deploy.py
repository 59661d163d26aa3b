"""deploy/: the container image, the compose federation and the Kubernetes manifests.

No container engine runs here, so the files are parsed and checked against the code they
drive (listen ports, CLI commands and options, file names, user id, version), and the scripts
the image runs are executed on this machine against temporary homes: the entrypoint (first
start and its retry, idempotence, config-file and seed modes), the health probe against a
serving node, the compose one-shot PKI set-up (which creates homes through the entrypoint's
variables), and the Kubernetes bootstrap Job against a stand-in API server.

YAML is read with PyYAML when this interpreter has it, else through another Python of this
machine that has it (PyYAML is not a dependency); without either the YAML checks are skipped.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
DEMO_PKI = DEPLOY / "demo-pki.sh"
HEALTHCHECK = DEPLOY / "healthcheck.py"
BOOTSTRAP = DEPLOY / "k8s_bootstrap.py"
BIN = Path(sys.executable).parent  # eap-node and python3 of the environment under test
API_PORT, FED_PORT = 7443, 7444  # the image's [api] / [federation] listen ports
HEALTH_PORT = 7445  # Kubernetes: [api] health_listen, plaintext grpc.health.v1 for probes
HOME_MOUNT = "/var/lib/eap"
METRICS_PORT = 9464  # [telemetry] metrics_listen of the Kubernetes pods: Prometheus /metrics
UID = 10001

# -- reading the files ----------------------------------------------------------------------------

_YAML_TO_JSON = (
    "import json, sys, yaml\n"
    "print(json.dumps({p: list(yaml.safe_load_all(open(p))) for p in sys.argv[1:]}))"
)


def _yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


@functools.cache
def _all_yaml() -> dict[str, list]:
    files = [str(p) for p in _yaml_files()]
    try:
        import yaml
    except ImportError:
        pass
    else:
        out = {}
        for p in files:
            with open(p) as f:
                out[p] = list(yaml.safe_load_all(f))
        return out
    for python in dict.fromkeys(filter(None, [shutil.which("python3"), "/usr/bin/python3"])):
        if Path(python).resolve() == Path(sys.executable).resolve():
            continue
        proc = subprocess.run([python, "-c", _YAML_TO_JSON, *files], capture_output=True,
                              text=True, timeout=60)
        if proc.returncode == 0:
            return json.loads(proc.stdout)
        if "No module named 'yaml'" not in proc.stderr:
            raise AssertionError(f"YAML parse error:\n{proc.stderr}")
    pytest.skip("PyYAML is not installed here")


def yaml_docs(path: Path) -> list:
    return [d for d in _all_yaml()[str(path)] if d is not None]


def k8s_objects(*folders: str) -> list[dict]:
    return [d for folder in folders for p in sorted((K8S / folder).glob("*.yaml"))
            if p.name != "kustomization.yaml" for d in yaml_docs(p)]


def compose() -> dict:
    (doc,) = yaml_docs(DEPLOY / "compose.yaml")
    return doc


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip())
            for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


def workloads(folder: str) -> list[dict]:
    return [o for o in k8s_objects(folder) if o["kind"] in ("StatefulSet", "Deployment")]


def config_map_toml(folder: str) -> dict:
    (cm,) = [o for o in k8s_objects(folder) if o["kind"] == "ConfigMap"]
    return tomllib.loads(cm["data"]["eap-node.toml"])


# -- the eap-node invocations in deploy/ and docs/deploy.md ---------------------------------------

_CUT = re.compile(r"[|;&()<>`]|\s#|\$\(")


def _in_string(line: str, pos: int) -> bool:
    """Whether ``pos`` is inside a quoted string of a shell line (``$(...)`` is code again)."""
    stack = ["code"]
    i = 0
    while i < pos:
        ch, top = line[i], stack[-1]
        if line.startswith("$(", i):
            stack.append("subshell")
            i += 2
            continue
        if top == "dq":
            if ch == "\\":
                i += 1
            elif ch == '"':
                stack.pop()
        elif ch == '"':
            stack.append("dq")
        elif ch == "'":
            end = line.find("'", i + 1)
            if end < 0 or end >= pos:
                return True
            i = end
        elif ch == ")" and top == "subshell":
            stack.pop()
        i += 1
    return stack[-1] == "dq"


def _after_eap_node(line: str) -> list[list[str]]:
    """The arguments of every ``eap-node ...`` command on a (shell-like) line."""
    found = []
    for m in re.finditer(r"(?<![\w./-])eap-node(?=\s)", line):
        if _in_string(line, m.start()):
            continue  # a message that names a command, not a command
        rest = line[m.end():]
        while (inner := re.sub(r"\$\([^()]*\)", "SUBST", rest)) != rest:
            rest = inner  # an argument computed by a command substitution
        cut = _CUT.search(rest)
        segment = rest[: cut.start()] if cut else rest
        try:
            tokens = shlex.split(segment)
        except ValueError:
            tokens = segment.split()
        found.append(tokens)
    return found


def _shell_lines(text: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", text)
    return [line for line in joined.splitlines() if not line.lstrip().startswith("#")]


def eap_node_invocations() -> list[tuple[str, list[str]]]:
    calls: list[tuple[str, list[str]]] = []
    for path in (ENTRYPOINT, DEMO_PKI):
        for line in _shell_lines(path.read_text()):
            calls += [(path.name, args) for args in _after_eap_node(line)]
    for instr, args in dockerfile_instructions():
        if instr == "RUN":
            calls += [("Dockerfile", a) for a in _after_eap_node(args)]
    # k8s_bootstrap.py: eap_node("cmd", ..., "--opt", value)
    import ast

    for node in ast.walk(ast.parse(BOOTSTRAP.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "eap_node":
            args = [a.value if isinstance(a, ast.Constant) else "VALUE" for a in node.args]
            calls.append((BOOTSTRAP.name, [a for a in args if isinstance(a, str)]))
    # docs/deploy.md: fenced shell blocks
    doc = (ROOT / "docs" / "deploy.md").read_text()
    for block in re.findall(r"```(?:bash|sh|console|shell)\n(.*?)```", doc, re.S):
        for line in _shell_lines(block):
            calls += [("docs/deploy.md", args) for args in _after_eap_node(line)]
    return calls


def cli_error(args: list[str]) -> str | None:
    """Why ``eap-node ARGS`` is not a valid command line of :data:`eap.node.cli.main`, if so."""
    from eap.node.cli import main

    cmd: click.Command = main
    path = ["eap-node"]
    rest = list(args)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        if rest[0].startswith("$"):
            return None  # `exec eap-node "$@"`: whatever the container is given
        sub = cmd.commands.get(rest[0])
        if sub is None:
            return f"`{' '.join(path)}` has no command {rest[0]!r}"
        cmd, path, rest = sub, [*path, rest[0]], rest[1:]
    options = {"--help", "-h"} | {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    for token in rest:
        if token.startswith("-") and token.split("=", 1)[0] not in options:
            return f"`{' '.join(path)}` has no option {token!r}"
    if isinstance(cmd, click.Group) and cmd is not main and not {"--help", "-h"} & set(rest):
        return f"`{' '.join(path)}` needs a subcommand"
    return None


def entry_commands() -> list[tuple[str, list[str]]]:
    """Arguments the compose services and k8s containers hand to the image's entrypoint."""
    out = []
    for name, svc in compose()["services"].items():
        if svc.get("image", "").startswith("eap-node") and "entrypoint" not in svc:
            out.append((f"compose {name}", svc.get("command", ["serve"])))
    for folder in ("sqlite", "postgres"):
        for obj in workloads(folder):
            for c in containers(obj):
                if "command" not in c:
                    out.append((f"{folder} {obj['kind']}", c.get("args", ["serve"])))
    return out


def test_every_eap_node_command_and_option_exists():
    calls = eap_node_invocations()
    sources = {src for src, _ in calls}
    assert {"entrypoint.sh", "demo-pki.sh", "Dockerfile", "k8s_bootstrap.py",
            "docs/deploy.md"} <= sources, sources
    commands = {tuple(a[:2]) for _, a in calls}
    assert {("init", "--home"), ("certs", "init-ca"), ("certs", "issue"),
            ("descriptor", "--home"), ("peer", "add")} <= commands, commands
    calls += entry_commands()
    errors = [f"{src}: eap-node {' '.join(args)}: {err}"
              for src, args in calls if (err := cli_error(args))]
    assert not errors, "\n".join(errors)


def test_cli_checker_catches_mistakes():
    assert cli_error(["peer", "add", "f.json", "--fingerprint", "x", "--update"]) is None
    assert cli_error(["--version"]) is None
    assert cli_error(["peer", "ad"])
    assert cli_error(["certs"])
    assert cli_error(["init", "--node", "x"])
    assert _after_eap_node('x="$(eap-node descriptor --out f 2>&1)"') == [
        ["descriptor", "--out", "f", "2"]]
    assert _after_eap_node('log "no answer from eap-node descriptor: $said"') == []
    assert _after_eap_node("echo 'eap-node peer ad' | eap-node peer list --json") == [
        ["peer", "list", "--json"]]


def test_bootstrap_job_arguments_exist():
    helptext = subprocess.run([sys.executable, str(BOOTSTRAP), "--help"], capture_output=True,
                              text=True, timeout=30, check=True).stdout
    for folder in ("sqlite", "postgres"):
        (job,) = [o for o in k8s_objects(folder) if o["kind"] == "Job"]
        (c,) = containers(job)
        assert c["command"] == ["eap-k8s-bootstrap"]
        for arg in c["args"]:
            if arg.startswith("--"):
                assert arg in helptext, f"{folder} Job: eap-k8s-bootstrap has no {arg}"


# -- Dockerfile -----------------------------------------------------------------------------------


def test_dockerfile_references_repository_files():
    instructions = dockerfile_instructions()
    sources = []
    for instr, args in instructions:
        if instr == "COPY" and "--from" not in args:
            words = [w for w in args.split() if not w.startswith("--")]
            sources += words[:-1]
    assert sources, "no COPY found"
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"
    # the build context filter keeps every copied file (an allow-list)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for src in sources:
        assert src.rstrip("/") in allowed, f"{src} is left out of the build context"
    for entry in allowed:
        assert (ROOT / entry).exists(), f"Dockerfile.dockerignore lets in missing {entry}"
    # installed commands are the ones ENTRYPOINT / HEALTHCHECK / compose / k8s use
    installed = {args.split()[-1].rsplit("/", 1)[1] for instr, args in instructions
                 if instr == "COPY" and "/usr/local/bin/" in args}
    entry = json.loads(dict(instructions)["ENTRYPOINT"])
    assert entry == ["eap-entrypoint"] and set(entry) <= installed
    assert json.loads(dict(instructions)["CMD"]) == ["serve"]
    assert "eap-healthcheck" in dict(instructions)["HEALTHCHECK"] and "eap-healthcheck" in installed
    assert {"eap-demo-pki", "eap-k8s-bootstrap"} <= installed
    svc = compose()["services"]
    assert svc["pki"]["entrypoint"] == ["eap-demo-pki"]
    assert "eap-healthcheck" in compose()["x-node"]["healthcheck"]["test"]


def test_dockerfile_matches_the_package():
    instructions = dockerfile_instructions()
    text = (DEPLOY / "Dockerfile").read_text()
    project = pyproject()["project"]
    assert f'org.opencontainers.image.version="{project["version"]}"' in text
    # psycopg through the package's own extra
    assert "[postgres]" in text and "postgres" in project["optional-dependencies"]
    # a Python the package supports, the same in both stages
    version = re.search(r"ARG PYTHON_VERSION=(\d+)\.(\d+)", text)
    minimum = re.search(r">=(\d+)\.(\d+)", project["requires-python"])
    assert version and minimum
    assert tuple(map(int, version.groups())) >= tuple(map(int, minimum.groups()))
    froms = [args for instr, args in instructions if instr == "FROM"]
    assert len(froms) == 2 and all(f.startswith("python:${PYTHON_VERSION}-slim") for f in froms)
    assert "gcc" in text  # the builder compiles the Cython core
    # non-root user, home volume, ports, defaults the entrypoint passes to `eap-node init`
    assert dict(instructions)["USER"] == f"{UID}:{UID}"
    assert json.loads(dict(instructions)["VOLUME"]) == [HOME_MOUNT]
    assert sorted(map(int, dict(instructions)["EXPOSE"].split())) == [API_PORT, FED_PORT]
    env = dict(re.findall(r"(EAP_[A-Z_]+)=(\S+)", dict(instructions)["ENV"]))
    assert env["EAP_NODE_HOME"] == HOME_MOUNT
    assert port_of(env["EAP_API_LISTEN"]) == API_PORT
    assert port_of(env["EAP_FEDERATION_LISTEN"]) == FED_PORT
    script = ENTRYPOINT.read_text()
    assert f'api="${{api:-0.0.0.0:{API_PORT}}}"' in script
    assert f'fed="${{fed:-0.0.0.0:{FED_PORT}}}"' in script
    assert f'home="${{EAP_NODE_HOME:-{HOME_MOUNT}}}"' in script


def test_scripts_are_valid():
    for script in (ENTRYPOINT, DEMO_PKI):
        assert script.read_text().startswith("#!/usr/bin/env bash\n")
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"
    for script in (HEALTHCHECK, BOOTSTRAP):
        assert script.read_text().startswith("#!/usr/bin/env python3\n")
        compile(script.read_text(), str(script), "exec")


# -- compose --------------------------------------------------------------------------------------


def demo_nodes() -> list[list[str]]:
    text = compose()["services"]["pki"]["environment"]["EAP_DEMO_NODES"]
    return [line.split() for line in text.splitlines() if line.strip()]


def test_compose_federation_is_consistent():
    spec = compose()
    services = spec["services"]
    nodes = demo_nodes()
    names = [n[0] for n in nodes]
    assert names == ["medellin", "barcelona", "amsterdam"]
    pki = services["pki"]
    assert pki["image"] == "eap-node:local" and pki["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / pki["build"]["context"] / pki["build"]["dockerfile"]).resolve() == (
        DEPLOY / "Dockerfile").resolve()
    assert pki["environment"]["EAP_DEMO_OWNER"] == f"{UID}:{UID}"
    pki_volumes = dict(v.split(":")[:2][::-1] for v in pki["volumes"])
    host_ports: list[str] = []
    databases = []
    from eap.node.domain.rules import NODE_ID_RE, ZONE_RE

    for name, node_id, zone, endpoint, *db in nodes:
        assert NODE_ID_RE.match(node_id) and ZONE_RE.match(zone)
        svc = services[name]
        assert svc["image"] == pki["image"] and svc["command"] == ["serve"]
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        assert svc["depends_on"]["pki"]["condition"] == "service_completed_successfully"
        # peers dial the service name on the federation port the node listens on
        assert endpoint == f"{name}:{FED_PORT}"
        # the home pki creates is the volume the node serves from
        homes = [v for v in svc["volumes"] if v.endswith(f":{HOME_MOUNT}")]
        assert homes == [f"{name}-home:{HOME_MOUNT}"]
        assert pki_volumes[f"/homes/{name}"] == f"{name}-home"
        published = {}
        for mapping in svc["ports"]:
            ip, host, container = mapping.split(":")
            assert ip == "127.0.0.1"
            published[int(container)] = host
            host_ports.append(host)
        assert set(published) == {API_PORT, FED_PORT}
        if db:
            databases.append((name, db[0]))
    assert len(host_ports) == len(set(host_ports))
    assert services["medellin"]["ports"][0] == f"127.0.0.1:{API_PORT}:{API_PORT}"
    # one node on PostgreSQL: the URL names the compose database, the password comes via libpq
    ((pg_node, url),) = databases
    pg = services["postgres"]["environment"]
    assert url == f"postgresql://{pg['POSTGRES_USER']}@postgres:5432/{pg['POSTGRES_DB']}"
    for svc in (pki, services[pg_node]):
        assert svc["environment"]["PGPASSWORD"] == pg["POSTGRES_PASSWORD"]
    assert services[pg_node]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for volume in {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])
                   if not v.startswith("./")}:
        assert volume in spec["volumes"], f"undeclared volume {volume}"


def test_compose_exports_traces_to_the_collector_and_jaeger():
    from eap.node.telemetry import TelemetrySettings

    spec = compose()
    services = spec["services"]
    collector, jaeger = services["otel-collector"], services["jaeger"]
    (mount,) = collector["volumes"]
    source, target = mount.split(":")[:2]
    assert (DEPLOY / source).is_file() and collector["command"] == [f"--config={target}"]
    (config,) = yaml_docs(DEPLOY / source)
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["receivers"] == ["otlp"]
    (trace_out,) = pipelines["traces"]["exporters"]
    assert config["exporters"][trace_out]["endpoint"] == "jaeger:4317"
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "127.0.0.1:16686:16686" in jaeger["ports"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    for name, *_ in demo_nodes():
        env = services[name]["environment"]
        assert "otel-collector" in services[name]["depends_on"]
        settings = TelemetrySettings.from_config(None, env=env)
        assert (settings.traces_exporter, settings.metrics_exporter) == ("otlp", "otlp")
        assert settings.otlp_endpoint == "http://otel-collector:4317" and settings.otlp_insecure
        assert env["EAP_LOG_FORMAT"] == "json"


# -- Kubernetes -----------------------------------------------------------------------------------


def test_kustomizations_list_existing_files():
    for folder in ("base", "sqlite", "postgres"):
        (kust,) = yaml_docs(K8S / folder / "kustomization.yaml")
        assert kust["namespace"] == "eap"
        for res in kust["resources"]:
            assert (K8S / folder / res).exists(), f"{folder}: missing resource {res}"
        listed = {r for r in kust["resources"] if not r.startswith("..")}
        present = {p.name for p in (K8S / folder).glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == present, f"{folder}: files not in kustomization: {present - listed}"
        if folder != "base":
            assert kust["resources"][0] == "../base"
            (img,) = kust["images"]
            assert img["newTag"] == pyproject()["project"]["version"]


def test_kubernetes_objects_are_well_formed():
    names = set()
    for path in (K8S).rglob("*.yaml"):
        for obj in yaml_docs(path):
            if path.name == "kustomization.yaml":
                continue
            assert {"apiVersion", "kind", "metadata"} <= set(obj), path
            if obj["kind"] != "Namespace":
                assert obj["metadata"].get("namespace") == "eap", (path, obj["metadata"])
            key = (path.parent.name, obj["kind"], obj["metadata"]["name"])
            assert key not in names, f"duplicate {key}"
            names.add(key)


@pytest.mark.parametrize("folder", ["sqlite", "postgres"])
def test_kubernetes_mode_is_consistent(folder):
    from eap.node.domain.rules import NODE_ID_RE, ZONE_RE

    objects = k8s_objects("base", folder)
    by_kind: dict[str, dict[str, dict]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    toml = config_map_toml(folder)
    assert NODE_ID_RE.match(toml["node"]["id"]) and ZONE_RE.match(toml["node"]["zone"])
    api_port, fed_port = port_of(toml["api"]["listen"]), port_of(toml["federation"]["listen"])
    assert (api_port, fed_port) == (API_PORT, FED_PORT)
    assert toml["api"]["listen"].startswith("0.0.0.0:")  # Services reach the pod IP
    # not loopback, so TLS with the node's certificate (where EAP_TLS_DIR is installed); the
    # kubelet's grpc: probes cannot speak TLS: they call the plaintext health-only port
    assert (toml["api"]["tls_cert"], toml["api"]["tls_key"]) == ("tls/node.crt", "tls/node.key")
    assert "allow_plaintext_remote" not in toml["api"]
    assert port_of(toml["api"]["health_listen"]) == HEALTH_PORT
    from eap.node.api.tls import resolve
    from eap.node.config import NodeConfig

    settings = resolve(NodeConfig(home=Path(HOME_MOUNT), node_id=toml["node"]["id"],
                                  zone=toml["node"]["zone"], database=toml["database"]["url"],
                                  api_listen=toml["api"]["listen"],
                                  api_tls_cert=toml["api"]["tls_cert"],
                                  api_tls_key=toml["api"]["tls_key"],
                                  api_health_listen=toml["api"]["health_listen"]))
    assert settings.tls and settings.tls_cert == Path(HOME_MOUNT, "tls", "node.crt")
    from eap.node.federation.descriptor import check_endpoint

    check_endpoint(toml["federation"]["endpoint"])

    (work,) = workloads(folder)
    assert work["kind"] == {"sqlite": "StatefulSet", "postgres": "Deployment"}[folder]
    pod = work["spec"]["template"]["spec"]
    labels = work["spec"]["template"]["metadata"]["labels"]
    assert work["spec"]["selector"]["matchLabels"].items() <= labels.items()
    if folder == "sqlite":
        assert work["spec"]["replicas"] == 1
        assert by_kind["Service"][work["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
        (claim,) = work["spec"]["volumeClaimTemplates"]
        home_volume = claim["metadata"]["name"]
        url = toml["database"]["url"]
        assert url.startswith(f"sqlite:///{HOME_MOUNT}/"), url
    else:
        assert work["spec"]["replicas"] > 1
        assert toml["database"]["url"].startswith("postgresql://")
        assert ":" not in toml["database"]["url"].split("//")[1].split("@")[0], "password in URL"
        home_volume = "home"
        assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[home_volume]
    # pod security: non-root as the image's user, no privilege, read-only root
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] and psc["runAsUser"] == UID and psc["fsGroup"] == UID
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] in by_kind["ServiceAccount"]
    (c,) = containers(work)
    assert c["image"] == f"eap-node:{pyproject()['project']['version']}"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    env = {e["name"]: e for e in c["env"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert env["EAP_NODE_HOME"]["value"] == HOME_MOUNT and mounts[HOME_MOUNT] == home_volume
    assert "/tmp" in mounts  # the only other writable place
    # the ConfigMap is what EAP_CONFIG_FILE points at
    config_path = Path(env["EAP_CONFIG_FILE"]["value"])
    config_volume = volumes[mounts[str(config_path.parent)]]
    assert config_volume["configMap"]["name"] in by_kind["ConfigMap"]
    assert config_path.name in by_kind["ConfigMap"][config_volume["configMap"]["name"]]["data"]
    # TLS Secret mapped onto the names the node reads (crypto/certs.py)
    tls = volumes[mounts[env["EAP_TLS_DIR"]["value"]]]["secret"]
    assert {i["path"] for i in tls["items"]} == {"node.crt", "node.key", "ca.crt"}
    if folder == "postgres":
        seed = volumes[mounts[env["EAP_SEED_DIR"]["value"]]]["secret"]["secretName"]
        assert seed == "eap-node-identity"
        assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "eap-node-db"
    # ports: container, probes, Services, NetworkPolicy
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    metrics_port = port_of(toml["telemetry"]["metrics_listen"])
    assert metrics_port == METRICS_PORT and toml["telemetry"]["log_format"] == "json"
    assert ports == {"grpc-api": api_port, "federation": fed_port, "health": HEALTH_PORT,
                     "metrics": metrics_port}
    # Prometheus finds /metrics through the scrape annotations of the pods and the Service
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics_port),
              "prometheus.io/path": "/metrics"}
    assert work["spec"]["template"]["metadata"]["annotations"] == scrape
    assert by_kind["Service"]["eap-node-metrics"]["metadata"]["annotations"] == scrape
    from eap.node.telemetry import TelemetrySettings

    class _Cfg:
        extra = {"telemetry": toml["telemetry"]}

    assert TelemetrySettings.from_config(_Cfg(), env={}).metrics_listen.endswith(":9464")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == HEALTH_PORT, probe
    assert c["readinessProbe"]["grpc"]["service"] == "eap.v1.NodeApi"
    assert Path(env["EAP_TLS_DIR"]["value"]) != Path(HOME_MOUNT) / "tls"  # copied, not mounted
    for svc in by_kind["Service"].values():
        assert svc["spec"]["selector"].items() <= labels.items()
        for p in svc["spec"]["ports"]:
            assert ports[p["targetPort"]] == p["port"]
            assert p["targetPort"] != "health", "the health-only port is for the kubelet only"
            if p["targetPort"] == "grpc-api":
                assert p.get("appProtocol") != "kubernetes.io/h2c", "the API is TLS, not h2c"
    assert by_kind["Service"]["eap-node-federation"]["spec"]["ports"][0]["port"] == fed_port
    (policy,) = by_kind["NetworkPolicy"].values()
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    allowed = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert allowed == [fed_port, metrics_port]
    # secrets named consistently: pods, bootstrap Job, RBAC, the example placeholders
    (job,) = by_kind["Job"].values()
    job_args = containers(job)[0]["args"]
    role_names = set(by_kind["Role"]["eap-bootstrap"]["rules"][0]["resourceNames"])
    examples = {o["metadata"]["name"] for o in yaml_docs(K8S / "extras" / "secrets.example.yaml")}
    pod_secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    for flag in ("--identity-secret", "--tls-secret", "--demo-ca-secret"):
        if flag in job_args:
            name = job_args[job_args.index(flag) + 1]
            assert name in role_names
    assert pod_secrets <= role_names and pod_secrets <= examples
    # the certificate the Job issues names the Services in-cluster API clients dial
    hosts = {job_args[i + 1] for i, a in enumerate(job_args) if a == "--tls-host"}
    for svc in ("eap-node-api", "eap-node-headless"):
        assert by_kind["Service"][svc]
    assert {"eap-node-api.eap.svc", "eap-node-api.eap.svc.cluster.local",
            "eap-node-headless.eap.svc.cluster.local"} <= hosts
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "eap-bootstrap"


def test_kustomize_builds_when_kubectl_is_here():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    for folder in ("sqlite", "postgres"):
        proc = subprocess.run([kubectl, "kustomize", str(K8S / folder)], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "kind: Namespace" in proc.stdout and "image: eap-node:" in proc.stdout


# -- running the scripts locally ------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    from eap.node.federation.localnet import free_ports as pick

    return pick(n)


def script_env(tmp: Path, **values: str) -> dict[str, str]:
    """The image's environment, on this machine: its commands on PATH, no stray EAP_*."""
    bin_dir = tmp / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for name, target in (("eap-entrypoint", ENTRYPOINT), ("eap-demo-pki", DEMO_PKI)):
            # a wrapper, not a link: a checkout may lose the scripts' executable bit
            (bin_dir / name).write_text(f'#!/bin/sh\nexec bash "{target}" "$@"\n')
            (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EAP_", "PG"))}
    env["PATH"] = os.pathsep.join([str(bin_dir), str(BIN), env.get("PATH", "")])
    env.update(values)
    return env


def run(cmd: list, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    # bash, not the file's mode: a checkout may lose the executable bit
    if Path(cmd[0]).suffix == ".sh":
        cmd = ["bash", *cmd]
    return subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def identity_snapshot(home: Path) -> dict[str, bytes]:
    files = [home / "eap-node.toml", home / "node-secret", home / "api-token",
             *sorted((home / "keys").glob("*"))]
    return {str(f.relative_to(home)): f.read_bytes() for f in files if f.is_file()}


def write_config(path: Path, node_id: str, zone: str, database: str, api: str, fed: str,
                 **federation: object) -> Path:
    import tomli_w

    data = {"node": {"id": node_id, "zone": zone}, "database": {"url": database},
            "api": {"listen": api}, "federation": {"listen": fed, **federation}}
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.fixture(scope="module")
def served_home(tmp_path_factory) -> tuple[Path, dict[str, str], int]:
    """A home the entrypoint made from a config file (the StatefulSet's way), after one
    failed first start."""
    tmp = tmp_path_factory.mktemp("entry")
    home = tmp / "home"
    api, fed = free_ports(2)
    bad = write_config(tmp / "bad.toml", "medellin.example", "CO-ANT",
                       "postgresql://nobody@127.0.0.1:1/none", f"127.0.0.1:{api}",
                       f"127.0.0.1:{fed}")
    env = script_env(tmp, EAP_NODE_HOME=str(home), EAP_CONFIG_FILE=str(bad))
    failed = run([ENTRYPOINT, "status", "--json"], env)
    assert failed.returncode != 0
    assert not (home / "eap-node.toml").exists() and not (home / "keys").exists()
    config = write_config(tmp / "eap-node.toml", "medellin.example", "CO-ANT",
                          f"sqlite:///{home}/node.db", f"127.0.0.1:{api}", f"127.0.0.1:{fed}",
                          endpoint="federation.medellin.example:7444")
    env["EAP_CONFIG_FILE"] = str(config)
    first = run([ENTRYPOINT, "status", "--json"], env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["node_id"] == "medellin.example"
    return home, env, api


def test_entrypoint_first_start_retries_and_keeps_the_home(served_home):
    home, env, _ = served_home
    assert (home / "eap-node.toml").read_bytes() == Path(env["EAP_CONFIG_FILE"]).read_bytes()
    assert not (home / ".init").exists()
    assert (home / "keys" / "keyring.json").exists() and (home / "node.db").exists()
    assert (home / "keys").stat().st_mode & 0o777 == 0o700
    for secret in ("node-secret", "api-token"):
        assert (home / secret).stat().st_mode & 0o777 == 0o600
    before = identity_snapshot(home)
    # a second start changes nothing, whatever the init variables say
    again = run([ENTRYPOINT, "status", "--json"],
                {**env, "EAP_NODE_ID": "other.example", "EAP_ZONE": "NL"})
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["node_id"] == "medellin.example"
    assert identity_snapshot(home) == before
    # the config file is the node's: one naming another node is refused, nothing changes
    other = write_config(home.parent / "other.toml", "other.example", "NL",
                         f"sqlite:///{home}/node.db", "127.0.0.1:1", "127.0.0.1:2")
    refused = run([ENTRYPOINT, "status"], {**env, "EAP_CONFIG_FILE": str(other)})
    assert refused.returncode == 12 and "other.example" in refused.stderr
    assert identity_snapshot(home) == before
    # without a home nor a node to create, eap-node runs as is
    version = run([ENTRYPOINT, "--version"], script_env(home.parent, EAP_NODE_HOME="/nowhere"))
    assert version.returncode == 0 and "eap-node" in version.stdout


def test_entrypoint_serves_and_the_health_probe_sees_it(served_home):
    home, env, api = served_home
    log = home.parent / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", str(ENTRYPOINT)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    probe = [sys.executable, str(HEALTHCHECK)]
    try:
        deadline = time.monotonic() + 60
        while "serving eap.v1.NodeApi" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        ok = run(probe, env)
        assert ok.returncode == 0, ok.stderr
        assert f"127.0.0.1:{api} eap.v1.NodeApi: SERVING" in ok.stdout
    finally:
        proc.send_signal(signal.SIGTERM)  # exec'd: the signal reaches eap-node serve itself
        code = proc.wait(30)
    assert code == 0, log.read_text()
    down = run([*probe, "--timeout", "1"], env)
    assert down.returncode == 1 and "unhealthy" in down.stderr


def test_entrypoint_gives_a_remote_api_tls(tmp_path):
    """A home the entrypoint creates for the image's 0.0.0.0 API is configured for TLS:
    `serve` refuses to start (exit 12) until the certificate exists, then serves TLS only,
    and the health probe follows; EAP_API_ALLOW_PLAINTEXT=1 is the explicit opt-out."""
    api, fed = free_ports(2)
    home = tmp_path / "home"
    env = script_env(tmp_path, EAP_NODE_HOME=str(home), EAP_NODE_ID="medellin.example",
                     EAP_ZONE="CO-ANT", EAP_API_LISTEN=f"0.0.0.0:{api}",
                     EAP_FEDERATION_LISTEN=f"127.0.0.1:{fed}")
    refused = run([ENTRYPOINT, "serve"], env)
    assert refused.returncode == 12, refused.stdout + refused.stderr
    assert "node.crt" in refused.stderr
    config = tomllib.loads((home / "eap-node.toml").read_text())
    assert config["api"] == {"listen": f"0.0.0.0:{api}", "tls_cert": "tls/node.crt",
                             "tls_key": "tls/node.key"}
    ca = tmp_path / "ca"
    for cmd in (["certs", "init-ca", "--dir", ca], ["certs", "issue", "--ca", ca]):
        done = run([BIN / "eap-node", *cmd], env)
        assert done.returncode == 0, done.stderr
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", str(ENTRYPOINT)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while "serving eap.v1.NodeApi" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert "(TLS)" in log.read_text()
        ok = run([sys.executable, HEALTHCHECK], env)
        assert ok.returncode == 0 and "SERVING" in ok.stdout, ok.stderr
        plaintext = run([sys.executable, HEALTHCHECK, "--address", f"127.0.0.1:{api}",
                         "--timeout", "2"], env)
        assert plaintext.returncode == 1, plaintext.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    # the opt-out, for a network that encrypts by itself (a mesh)
    other = tmp_path / "plain"
    made = run([ENTRYPOINT, "status"], {**env, "EAP_NODE_HOME": str(other),
                                        "EAP_API_ALLOW_PLAINTEXT": "1"})
    assert made.returncode == 0, made.stderr
    plain = tomllib.loads((other / "eap-node.toml").read_text())["api"]
    assert plain == {"listen": f"0.0.0.0:{api}", "allow_plaintext_remote": True}


def test_health_probe_address():
    import importlib.util

    spec = importlib.util.spec_from_file_location("eap_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.probe_address("0.0.0.0:7443") == "127.0.0.1:7443"
    assert mod.probe_address("[::]:7443") == "[::1]:7443"
    assert mod.probe_address("10.1.2.3:7443") == "10.1.2.3:7443"


def test_demo_pki_sets_up_a_federation(tmp_path):
    """deploy/demo-pki.sh as the compose `pki` service runs it, on two SQLite nodes."""
    from eap.node.federation.descriptor import NodeDescriptor
    from eap.node.federation.peers import TRUSTED, TrustList
    from eap.node.store import open_store

    nodes = [("medellin", "medellin.example", "CO-ANT"), ("amsterdam", "amsterdam.example", "NL")]
    env = script_env(
        tmp_path,
        EAP_DEMO_CA=str(tmp_path / "pki" / "ca"),
        EAP_DEMO_DESCRIPTORS=str(tmp_path / "pki" / "descriptors"),
        EAP_DEMO_HOMES=str(tmp_path / "homes"),
        EAP_DEMO_OWNER=f"{os.getuid()}:{os.getgid()}",
        EAP_DEMO_NODES="".join(f"  {n} {i} {z} {n}:{FED_PORT}\n" for n, i, z in nodes),
        EAP_API_LISTEN=f"0.0.0.0:{API_PORT}",  # the image's ENV; nothing is served here
    )
    first = run(["eap-demo-pki"], env, timeout=180)
    assert first.returncode == 0, first.stdout + first.stderr
    homes = {i: tmp_path / "homes" / n for n, i, _ in nodes}
    snapshots = {i: identity_snapshot(h) for i, h in homes.items()}
    second = run(["eap-demo-pki"], env, timeout=180)
    assert second.returncode == 0, second.stdout + second.stderr
    descriptors = tmp_path / "pki" / "descriptors"
    for name, node_id, _ in nodes:
        home = homes[node_id]
        assert identity_snapshot(home) == snapshots[node_id]  # idempotent
        assert (home / "tls" / "node.key").stat().st_mode & 0o777 == 0o600
        # the API listens on all interfaces in the container: TLS with the node's certificate,
        # which names the service (and loopback, for the health probe)
        from cryptography import x509

        from eap.node.api.tls import resolve
        from eap.node.config import NodeConfig

        api = resolve(NodeConfig.load(home))
        assert api.tls and api.tls_cert == home / "tls" / "node.crt"
        api.server_credentials()  # the files pass the server's checks
        cert = x509.load_pem_x509_certificate(api.tls_cert.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {name, node_id, "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
        desc = NodeDescriptor.from_json((descriptors / f"{node_id}.json").read_bytes())
        assert desc.endpoint == f"{name}:{FED_PORT}" and desc.tls_ca_pem
        fingerprint = (descriptors / f"{node_id}.fingerprint").read_text().strip()
        assert desc.signer_fingerprint() == fingerprint
        store = open_store(f"sqlite:///{home}/node.db", migrate=False)
        try:
            peers = TrustList(store, node_id, cache_s=0).all()
        finally:
            store.dispose()
        (peer,) = peers
        other = next(n for n in nodes if n[1] != node_id)
        assert peer.node_id == other[1] and peer.endpoint == f"{other[0]}:{FED_PORT}"
        assert peer.status == TRUSTED and peer.fingerprint == (
            descriptors / f"{other[1]}.fingerprint").read_text().strip()


# -- the Kubernetes bootstrap Job, against a stand-in API server ----------------------------------


class FakeKubeApi(ThreadingHTTPServer):
    """Just enough of the Kubernetes API for deploy/k8s_bootstrap.py: get and create Secrets."""

    def __init__(self, token: str, namespace: str) -> None:
        super().__init__(("127.0.0.1", 0), _KubeHandler)
        self.token, self.namespace = token, namespace
        self.secrets: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _KubeHandler(BaseHTTPRequestHandler):
    server: FakeKubeApi

    def log_message(self, *args) -> None:
        pass

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> str | None:
        self.server.calls.append((self.command, self.path))
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self._reply(401, {"reason": "Unauthorized"})
            return None
        prefix = f"/api/v1/namespaces/{self.server.namespace}/secrets"
        if not self.path.startswith(prefix):
            self._reply(404, {"reason": "NotFound"})
            return None
        return self.path[len(prefix):].lstrip("/")

    def do_GET(self) -> None:
        name = self._route()
        if name is None:
            return
        if name in self.server.secrets:
            self._reply(200, self.server.secrets[name])
        else:
            self._reply(404, {"reason": "NotFound"})

    def do_POST(self) -> None:
        if self._route() is None:
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = body["metadata"]["name"]
        if name in self.server.secrets:
            self._reply(409, {"reason": "AlreadyExists"})
            return
        self.server.secrets[name] = body
        self._reply(201, body)


@pytest.fixture
def kube_api():
    server = FakeKubeApi("sa-token", "eap")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def mount_secret(secret: dict, folder: Path, items: dict[str, str] | None = None) -> Path:
    """A Secret volume as the kubelet lays it out: files are links into a ..data folder."""
    data = folder / "..data"
    data.mkdir(parents=True)
    for key, value in secret["data"].items():
        path = (items or {}).get(key, key)
        (data / path).write_bytes(base64.b64decode(value))
        (data / path).chmod(0o440)
        (folder / path).symlink_to(Path("..data") / path)
    return folder


def test_k8s_bootstrap_job_and_replicas(tmp_path, kube_api):
    """The PostgreSQL-mode flow: the Job makes the Secrets once, every replica assembles the same
    node from them (a SQLite file stands in for the shared PostgreSQL database)."""
    from eap.node.crypto import load_tls_material

    shared_db = tmp_path / "shared.db"
    config = write_config(tmp_path / "eap-node.toml", "barcelona.example", "ES",
                          f"sqlite:///{shared_db}", "127.0.0.1:7443", "127.0.0.1:7444",
                          endpoint="federation.barcelona.example:7444")
    (tmp_path / "token").write_text("sa-token\n")
    job = [sys.executable, BOOTSTRAP, "--identity-secret", "eap-node-identity",
           "--tls-secret", "eap-node-tls", "--demo-ca-secret", "eap-demo-ca",
           "--tls-host", "eap-node-federation.eap.svc", "--workdir", tmp_path / "work",
           "--api-url", kube_api.url, "--token-file", tmp_path / "token", "--namespace", "eap"]
    env = script_env(tmp_path, EAP_CONFIG_FILE=str(config))
    first = run(job, env)
    assert first.returncode == 0, first.stderr
    secrets = kube_api.secrets
    assert set(secrets) == {"eap-node-identity", "eap-node-tls", "eap-demo-ca"}
    identity = secrets["eap-node-identity"]["data"]
    assert {"node-secret", "api-token", "keyring.json"} <= set(identity)
    assert [k for k in identity if re.fullmatch(r"ed25519_[0-9a-f]{16}\.pem", k)]
    assert secrets["eap-node-tls"]["type"] == "kubernetes.io/tls"
    assert set(secrets["eap-node-tls"]["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert not (tmp_path / "work" / "eap-bootstrap").exists()  # no key left behind
    # again: every Secret kept, nothing created
    posts = sum(1 for method, _ in kube_api.calls if method == "POST")
    again = run(job, env)
    assert again.returncode == 0, again.stderr
    assert sum(1 for method, _ in kube_api.calls if method == "POST") == posts
    assert again.stderr.count("exists") == 2
    # two replicas from the same Secrets: the same node, key and database
    key_ids = set()
    for replica in ("a", "b"):
        pod = tmp_path / f"pod-{replica}"
        seed = mount_secret(secrets["eap-node-identity"], pod / "identity")
        tls = mount_secret(secrets["eap-node-tls"], pod / "tls",
                           {"tls.crt": "node.crt", "tls.key": "node.key"})
        home = pod / "home"
        started = run([ENTRYPOINT, "status", "--json"],
                      script_env(tmp_path, EAP_NODE_HOME=str(home), EAP_CONFIG_FILE=str(config),
                                 EAP_SEED_DIR=str(seed), EAP_TLS_DIR=str(tls)))
        assert started.returncode == 0, started.stderr
        status = json.loads(started.stdout)
        assert status["node_id"] == "barcelona.example"
        key_ids.add(status["key_id"])
        assert (home / "node-secret").read_bytes() == base64.b64decode(identity["node-secret"])
        assert (home / "tls" / "node.key").stat().st_mode & 0o777 == 0o600
        assert not (home / "tls" / "node.key").is_symlink()
        material = load_tls_material(home / "tls", expected_node_id="barcelona.example")
        assert material is not None
    assert len(key_ids) == 1


def test_postgres_replicas_share_only_the_database_and_the_secrets():
    """PostgreSQL mode scales out: several replicas, nothing on disk shared between them,
    every pod the same identity; SQLite mode stays one process (its lock refuses a second)."""
    objects = k8s_objects("base", "postgres")
    (work,) = workloads("postgres")
    spec = work["spec"]
    replicas = spec["replicas"]
    assert replicas >= 2
    # rollouts never drop below the replicas serving; disruptions keep at least one
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (pdb,) = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert 1 <= pdb["spec"]["minAvailable"] < replicas
    labels = spec["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    assert "podAntiAffinity" in pod["affinity"]  # spread over machines
    (c,) = containers(work)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in c["volumeMounts"]:
        volume = volumes[mount["name"]]
        # a pod's own disk is ephemeral; what is shared comes from the ConfigMap and Secrets
        assert "persistentVolumeClaim" not in volume
        assert "emptyDir" in volume or mount.get("readOnly"), mount
    env = {e["name"]: e.get("value") for e in c["env"]}
    # no plugin writing per-pod state it must share: the home's anchor log is per replica
    assert "anchor_log" not in env["EAP_PLUGINS"].split(",")
    # the worker's advisory locks need one PostgreSQL database for every replica
    assert config_map_toml("postgres")["database"]["url"].startswith("postgresql://")
    assert "advisory locks" in (K8S / "postgres" / "deployment.yaml").read_text()
    # SQLite: exactly one, and the manifest says why
    (single,) = workloads("sqlite")
    assert single["spec"]["replicas"] == 1
    text = (K8S / "sqlite" / "statefulset.yaml").read_text()
    assert "Never more than 1" in text and "refused" in text
