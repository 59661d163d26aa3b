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
from eap.node.crypto.tokens import bearer_token
from eap.node.domain.rules import NODE_ID_RE, ZONE_RE, Checker
from eap.node.errors import AlreadyExists, ConfigError

CONFIG_NAME = "eap-node.toml"
PROTOCOL_VERSION = "eap.v1"


@dataclass(frozen=True)
class PrivacySettings:
    """``[privacy]`` of the config.

    * ``h3_resolution`` (0..7, default 7): resolution of the public H3 cell of new devices.
      Finer than 7 is refused: the cell leaves the node in every bundle.
    * ``k_anonymity`` (2..1000, default 5): aggregates suppress a cell with fewer distinct
      devices (issued) or holders (transferred, claimed).
    """

    h3_resolution: int = 7
    k_anonymity: int = 5

    @classmethod
    def parse(cls, table: object, path: Path) -> PrivacySettings:
        if not isinstance(table, dict):
            raise ConfigError(f"invalid {path}: [privacy] must be a table")
        unknown = set(table) - {"h3_resolution", "k_anonymity"}
        if unknown:
            raise ConfigError(f"invalid {path}: unknown [privacy] setting(s) {sorted(unknown)}")
        res = table.get("h3_resolution", cls.h3_resolution)
        if isinstance(res, bool) or not isinstance(res, int) or not 0 <= res <= 7:
            raise ConfigError(
                f"invalid {path}: privacy.h3_resolution must be an integer 0..7, not {res!r} "
                "(resolutions finer than 7 would publish a device's location too precisely)"
            )
        k = table.get("k_anonymity", cls.k_anonymity)
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 1000:
            raise ConfigError(
                f"invalid {path}: privacy.k_anonymity must be an integer 2..1000, not {k!r}"
            )
        return cls(h3_resolution=res, k_anonymity=k)


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
    #: ``[api] tls_cert`` / ``tls_key``: PEM certificate (chain) and private key (0600) of the
    #: local API; relative paths are relative to the home.  Empty: the API is plaintext, which
    #: ``serve`` allows on loopback only (``eap.node.api.tls``).
    api_tls_cert: str = ""
    api_tls_key: str = ""
    #: ``[api] client_ca``: CA certificate(s) that sign client certificates the API accepts.
    api_client_ca: str = ""
    #: ``[api] require_client_cert``: refuse TLS clients without a certificate from client_ca.
    api_require_client_cert: bool = False
    #: ``[api] allow_plaintext_remote``: the operator's explicit opt-out of TLS on a
    #: non-loopback API address (bearer tokens then cross the network in clear).
    api_allow_plaintext_remote: bool = False
    #: ``[api] health_listen``: optional plaintext port serving ``grpc.health.v1`` only (no
    #: NodeApi, no tokens), for probes that cannot speak TLS (Kubernetes ``grpc:`` probes).
    api_health_listen: str = ""
    #: Largest request/response message accepted, bytes.
    max_message_bytes: int = 32 * 1024 * 1024
    #: Upper bound of records in one issued or imported batch.
    max_batch_records: int = 100_000
    extra: dict = field(default_factory=dict)

    @property
    def privacy(self) -> PrivacySettings:
        """``[privacy]``: public cell resolution and the aggregates' suppression threshold."""
        return PrivacySettings.parse(self.extra.get("privacy", {}), self.home / CONFIG_NAME)

    @property
    def regulator_token_path(self) -> Path:
        return self.home / "regulator-token"

    def regulator_token(self) -> str | None:
        """The regulator's bearer token (``eap-node regulator-token``), None until created."""
        if not self.regulator_token_path.exists():
            return None
        return _read_private(self.regulator_token_path)

    def create_regulator_token(self) -> str:
        """Write a fresh regulator token (0600), replacing an earlier one; returns it."""
        token = bearer_token()
        tmp = self.regulator_token_path.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        _write_private(tmp, token)
        os.replace(tmp, self.regulator_token_path)
        return token

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

    def home_path(self, value: str) -> Path | None:
        """``value`` (a setting naming a file) as a path, relative ones under the home."""
        if not value:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.home / path

    def _api_table(self) -> dict:
        table: dict = {"listen": self.api_listen}
        for key, value in (
            ("tls_cert", self.api_tls_cert),
            ("tls_key", self.api_tls_key),
            ("client_ca", self.api_client_ca),
            ("require_client_cert", self.api_require_client_cert),
            ("allow_plaintext_remote", self.api_allow_plaintext_remote),
            ("health_listen", self.api_health_listen),
        ):
            if value:
                table[key] = value
        return table

    @classmethod
    def load(cls, home: Path) -> NodeConfig:
        path = Path(home) / CONFIG_NAME
        if not path.exists():
            raise ConfigError(f"no node at {home} (missing {CONFIG_NAME}); run `eap-node init`")
        try:
            data = tomllib.loads(path.read_text())
            node = data["node"]
            api = data.get("api", {})
            cfg = cls(
                home=Path(home),
                node_id=node["id"],
                zone=node["zone"],
                database=data["database"]["url"],
                api_listen=api.get("listen", cls.api_listen),
                api_tls_cert=_text(api, "tls_cert", path),
                api_tls_key=_text(api, "tls_key", path),
                api_client_ca=_text(api, "client_ca", path),
                api_require_client_cert=_flag(api, "require_client_cert", path),
                api_allow_plaintext_remote=_flag(api, "allow_plaintext_remote", path),
                api_health_listen=_text(api, "health_listen", path),
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
        return cfg.check()

    def check(self) -> NodeConfig:
        """Validate the settings read lazily from ``extra`` (``[privacy]``); ConfigError."""
        _ = self.privacy
        return self

    def save(self) -> None:
        data = {
            "node": {"id": self.node_id, "zone": self.zone},
            "database": {"url": self.database},
            "api": self._api_table(),
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
    *,
    operator_signed: bool = False,
) -> NodeConfig:
    """Validate and write a new node home (config, secret, token); keys and DB come later.

    ``operator_signed`` enables the demo attestation scheme (``[attestation]
    operator_signed = true``); without it devices need a real attestation.
    """
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
    if operator_signed:
        cfg.extra["attestation"] = {"operator_signed": True}
    _write_private(cfg.secret_path, secrets.token_hex(32))
    _write_private(cfg.token_path, bearer_token())
    cfg.save()
    return cfg


def _text(table: dict, key: str, path: Path) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"invalid {path}: api.{key} must be a string, not {value!r}")
    return value


def _flag(table: dict, key: str, path: Path) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"invalid {path}: api.{key} must be true or false, not {value!r}")
    return value


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
