"""Node home and configuration (TOML).

A node home holds ``eap-node.toml``, the signing key ring ``keys/``, the node secret used to
derive device pseudonyms, the operator API token and, by default, the SQLite database.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from eap.node.crypto._files import read_private_file
from eap.node.domain.rules import NODE_ID_RE, ZONE_RE, Checker
from eap.node.errors import AlreadyExists, ConfigError

CONFIG_NAME = "eap-node.toml"
PROTOCOL_VERSION = "eap.v1"


def default_home() -> Path:
    """``$EAP_NODE_HOME``, else ``~/.eap-node``."""
    return Path(os.environ.get("EAP_NODE_HOME") or Path.home() / ".eap-node")


@dataclass
class NodeConfig:
    """Settings of one node, as stored in ``<home>/eap-node.toml``."""

    home: Path
    node_id: str
    zone: str
    database: str
    api_listen: str = "127.0.0.1:7443"
    federation_listen: str = "127.0.0.1:7444"
    #: Largest request/response message accepted, bytes.
    max_message_bytes: int = 32 * 1024 * 1024
    #: Upper bound of records in one issued or imported batch.
    max_batch_records: int = 100_000
    extra: dict = field(default_factory=dict)

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def secret_path(self) -> Path:
        return self.home / "node-secret"

    @property
    def token_path(self) -> Path:
        return self.home / "api-token"

    def node_secret(self) -> bytes:
        try:
            return bytes.fromhex(_read_private(self.secret_path))
        except ValueError as exc:
            raise ConfigError(f"{self.secret_path} must hold 64 hex characters") from exc

    def api_token(self) -> str:
        return _read_private(self.token_path)

    @classmethod
    def load(cls, home: Path) -> NodeConfig:
        path = Path(home) / CONFIG_NAME
        if not path.exists():
            raise ConfigError(f"no node at {home} (missing {CONFIG_NAME}); run `eap-node init`")
        try:
            data = tomllib.loads(path.read_text())
            node = data["node"]
            return cls(
                home=Path(home),
                node_id=node["id"],
                zone=node["zone"],
                database=data["database"]["url"],
                api_listen=data.get("api", {}).get("listen", cls.api_listen),
                federation_listen=data.get("federation", {}).get("listen", cls.federation_listen),
                max_message_bytes=data.get("limits", {}).get(
                    "max_message_bytes", cls.max_message_bytes
                ),
                max_batch_records=data.get("limits", {}).get(
                    "max_batch_records", cls.max_batch_records
                ),
                extra={
                    k: v
                    for k, v in data.items()
                    if k not in ("node", "database", "api", "federation", "limits")
                },
            )
        except (KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"invalid {path}: {exc}") from exc

    def save(self) -> None:
        data = {
            "node": {"id": self.node_id, "zone": self.zone},
            "database": {"url": self.database},
            "api": {"listen": self.api_listen},
            "federation": {"listen": self.federation_listen},
            "limits": {
                "max_message_bytes": self.max_message_bytes,
                "max_batch_records": self.max_batch_records,
            },
            **self.extra,
        }
        (self.home / CONFIG_NAME).write_text(tomli_w.dumps(data))


def create_home(
    home: Path,
    node_id: str,
    zone: str,
    database: str | None = None,
    api_listen: str | None = None,
    federation_listen: str | None = None,
) -> NodeConfig:
    """Validate and write a new node home (config, secret, token); keys and DB come later."""
    check = Checker("invalid node settings")
    check.text(
        node_id,
        "node_id",
        max_len=128,
        pattern=NODE_ID_RE,
        hint="a lowercase DNS-like name such as medellin.example",
    )
    check.text(zone, "zone", max_len=32, pattern=ZONE_RE, hint="like CO-ANT, ES or NL")
    check.done()
    home = Path(home)
    if (home / CONFIG_NAME).exists():
        raise AlreadyExists(f"a node already lives at {home}")
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    cfg = NodeConfig(
        home=home,
        node_id=node_id,
        zone=zone,
        database=database or f"sqlite:///{(home / 'node.db').resolve()}",
    )
    if api_listen:
        cfg.api_listen = api_listen
    if federation_listen:
        cfg.federation_listen = federation_listen
    _write_private(cfg.secret_path, secrets.token_hex(32))
    _write_private(cfg.token_path, secrets.token_urlsafe(32))
    cfg.save()
    return cfg


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _read_private(path: Path) -> str:
    """A secret of the home (node secret, API token), refused like a private key when group or
    others may read it, when it is a symbolic link or when another user owns it."""
    data = read_private_file(path)
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not a text secret written by `eap-node init`") from exc
