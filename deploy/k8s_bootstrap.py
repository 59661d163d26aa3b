#!/usr/bin/env python3
"""Bootstrap Job of eap-node on Kubernetes: creates the node's Secrets when they are missing.

Installed in the image as ``/usr/local/bin/eap-k8s-bootstrap``; run by the Job in
``deploy/k8s/*/bootstrap-job.yaml`` with the node's ConfigMap as ``EAP_CONFIG_FILE``.

``--identity-secret NAME`` (PostgreSQL mode)
    ``eap-node init`` with the config's node id, zone and database: makes the signing key
    ring, node secret and operator token, and claims (and migrates) the database for the node.
    The identity goes into Secret NAME as ``node-secret``, ``api-token``, ``keyring.json`` and
    ``ed25519_<hex>.pem``, which the node pods install with ``EAP_SEED_DIR`` (every replica is
    the same node).
``--tls-secret NAME``
    The node's TLS certificate as a ``kubernetes.io/tls`` Secret (``tls.crt``, ``tls.key``,
    ``ca.crt``: the layout cert-manager writes too), for the federation and for the local API
    (``[api] tls_cert``): ``--tls-host`` adds the names clients dial (the API Services).
    Issued here only with ``--demo-ca-secret CA``, from the demo CA kept in Secret CA (created
    on first use by ``eap-node certs init-ca``); without it a missing Secret is an error: the
    operator brings the certificate of the federation's own CA.

A Secret that exists is never changed (only the demo CA's is read), so the Job may run any
number of times.  Only the standard library talks to the API server, with the
pod's service account (``get`` and ``create`` on Secrets, see ``bootstrap-rbac.yaml``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
LABELS = {"app.kubernetes.io/name": "eap-node", "app.kubernetes.io/managed-by": "eap-k8s-bootstrap"}


def log(message: str) -> None:
    print(f"eap-k8s-bootstrap: {message}", file=sys.stderr, flush=True)


class KubeApi:
    """The few calls on Secrets this Job needs, over the Kubernetes REST API."""

    def __init__(self, url: str, token: str, namespace: str, ca_file: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.namespace = namespace
        https = url.startswith("https:")
        self.context = ssl.create_default_context(cafile=ca_file) if https else None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> KubeApi:
        url = args.api_url
        if url is None:
            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            if not host:
                raise SystemExit("no KUBERNETES_SERVICE_HOST (not in a pod?): pass --api-url")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        namespace = args.namespace or (SA_DIR / "namespace").read_text().strip()
        token = Path(args.token_file).read_text().strip()
        return cls(url, token, namespace, args.ca_file)

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/api/v1/namespaces/{self.namespace}/{path}",
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as reply:
                return reply.status, json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 409):
                return exc.code, {}
            detail = exc.read().decode(errors="replace")[:500]
            raise SystemExit(f"{method} {path}: HTTP {exc.code}: {detail}") from exc

    def get_secret(self, name: str) -> dict[str, bytes] | None:
        """The Secret's data, or None when it does not exist."""
        code, body = self._call("GET", f"secrets/{name}")
        if code == 404:
            return None
        return {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}

    def create_secret(self, name: str, data: dict[str, bytes], kind: str = "Opaque") -> bool:
        """Create the Secret; False when it exists already (made meanwhile by someone else)."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": LABELS},
            "type": kind,
            "data": {k: base64.b64encode(v).decode("ascii") for k, v in data.items()},
        }
        code, _ = self._call("POST", "secrets", body)
        return code != 409


def eap_node(*args: str | Path) -> None:
    cmd = ["eap-node", *(str(a) for a in args)]
    if subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")


def fresh_dir(path: Path) -> Path:
    """An empty 0700 folder (a retried Job container finds its previous attempt's files)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)
    path.chmod(0o700)
    return path


def ensure_identity(api: KubeApi, name: str, config: dict, work: Path) -> None:
    if api.get_secret(name) is not None:
        log(f"Secret {name} exists: identity kept")
        return
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    node = config["node"]
    eap_node("init", "--home", home, "--node-id", node["id"], "--zone", node["zone"],
             "--db", config["database"]["url"])
    data = {
        "node-secret": (home / "node-secret").read_bytes(),
        "api-token": (home / "api-token").read_bytes(),
        "keyring.json": (home / "keys" / "keyring.json").read_bytes(),
    }
    for pem in sorted((home / "keys").glob("ed25519_*.pem")):
        data[pem.name] = pem.read_bytes()
    if api.create_secret(name, data):
        log(f"created Secret {name}: identity of {config['node']['id']}")
    else:
        log(f"Secret {name} was created meanwhile: that identity is kept, this one dropped")


def demo_ca(api: KubeApi, name: str, work: Path) -> Path:
    """The demo CA folder (ca.crt, ca.key), from Secret ``name`` or new (and stored there)."""
    ca = fresh_dir(work / "ca")
    stored = api.get_secret(name)
    if stored is None:
        eap_node("certs", "init-ca", "--dir", ca, "--name", "EAP demo federation CA")
        files = {f: (ca / f).read_bytes() for f in ("ca.crt", "ca.key")}
        if api.create_secret(name, files):
            log(f"created Secret {name}: a demo CA (a real federation brings its own)")
            return ca
        stored = api.get_secret(name) or {}
        ca = fresh_dir(ca)
    for f, mode in (("ca.crt", 0o644), ("ca.key", 0o600)):
        if f not in stored:
            raise SystemExit(f"Secret {name} holds no {f}")
        (ca / f).write_bytes(stored[f])
        (ca / f).chmod(mode)
    return ca


def ensure_tls(
    api: KubeApi, name: str, ca_secret: str | None, hosts: list[str], config: dict, work: Path
) -> None:
    if api.get_secret(name) is not None:
        log(f"Secret {name} exists: TLS certificate kept")
        return
    if not ca_secret:
        raise SystemExit(
            f"Secret {name} is missing: create it from the federation CA's certificate for "
            f"{config['node']['id']} (docs/deploy.md), or pass --demo-ca-secret"
        )
    ca = demo_ca(api, ca_secret, work)
    endpoint = str(config.get("federation", {}).get("endpoint", ""))
    if endpoint:
        hosts = [*hosts, endpoint.rsplit(":", 1)[0].strip("[]")]
    tls = work / "tls"
    shutil.rmtree(tls, ignore_errors=True)
    host_args = [a for h in dict.fromkeys(hosts) for a in ("--host", h)]
    eap_node("certs", "issue", "--ca", ca, "--node-id", config["node"]["id"], "--out", tls,
             *host_args)
    files = {
        "tls.crt": (tls / "node.crt").read_bytes(),
        "tls.key": (tls / "node.key").read_bytes(),
        "ca.crt": (tls / "ca.crt").read_bytes(),
    }
    if api.create_secret(name, files, kind="kubernetes.io/tls"):
        log(f"created Secret {name}: TLS certificate of {config['node']['id']} from {ca_secret}")
    else:
        log(f"Secret {name} was created meanwhile: kept")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eap-k8s-bootstrap", description="Create the eap-node Secrets that are missing."
    )
    parser.add_argument("--config", default=os.environ.get("EAP_CONFIG_FILE"),
                        help="the node's eap-node.toml (default: $EAP_CONFIG_FILE)")
    parser.add_argument("--identity-secret", help="Secret for the node identity (PostgreSQL mode)")
    parser.add_argument("--tls-secret", help="kubernetes.io/tls Secret for the federation TLS")
    parser.add_argument("--demo-ca-secret", help="issue a missing TLS Secret from this demo CA")
    parser.add_argument("--tls-host", action="append", default=[],
                        help="further DNS name of the node in its certificate (repeatable)")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")),
                        help="scratch folder (an emptyDir)")
    parser.add_argument("--api-url", help="API server (default: the in-cluster address)")
    parser.add_argument("--token-file", default=str(SA_DIR / "token"))
    parser.add_argument("--ca-file", default=str(SA_DIR / "ca.crt"))
    parser.add_argument("--namespace", help="default: the pod's namespace")
    args = parser.parse_args(argv)
    if not args.config:
        parser.error("--config or EAP_CONFIG_FILE is required")
    with open(args.config, "rb") as f:
        config = tomllib.load(f)
    api = KubeApi.from_args(args)
    work = fresh_dir(args.workdir / "eap-bootstrap")
    try:
        if args.identity_secret:
            ensure_identity(api, args.identity_secret, config, work)
        if args.tls_secret:
            ensure_tls(api, args.tls_secret, args.demo_ca_secret, args.tls_host, config, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
