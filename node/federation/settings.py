"""Federation settings: the ``[federation]`` table of ``eap-node.toml``.

Every key is optional::

    [federation]
    listen = "0.0.0.0:7444"            # where the federation server binds (NodeConfig too)
    endpoint = "fed.example.org:7444"  # what the descriptor advertises (default: listen)
    tls_dir = "tls"                    # node.crt / node.key / ca.crt, relative to the home
    rate_per_s = 50.0                  # per-peer token bucket: refill rate (calls per second)
    burst = 100                        # ... and its capacity
    max_batches_per_pull = 64          # most batches one PullBatches call streams
    sync_interval_s = 30.0             # background sync period of `eap-node serve` (0 = off)
    call_timeout_s = 10.0              # deadline of one outbound call
    trust_cache_s = 1.0                # how long a read of the trust list is reused
    device_checks_per_hour = 600.0     # blinded meter evaluations a peer may ask per hour
    device_check_burst = 200           # ... and at once (docs/security.md "Duplicate devices")
    device_check_timeout_s = 3.0       # how long a registration waits for each peer's answer
    max_peer_device_tags = 1000000     # most meter tags kept of one peer

Message and batch size limits come from ``[limits]`` (:class:`~eap.node.config.NodeConfig`).
"""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from eap.node.config import CONFIG_NAME, NodeConfig
from eap.node.errors import ConfigError

#: Capabilities implemented by this package; ``transfer.v1`` only when the transfer engine is.
BASE_CAPABILITIES: tuple[str, ...] = ("batches.v1", "devices.v1")
TRANSFER_CAPABILITY = "transfer.v1"


def local_capabilities() -> tuple[str, ...]:
    """What this build can do, as advertised in descriptors and ``Hello``."""
    caps = list(BASE_CAPABILITIES)
    if importlib.util.find_spec("eap.node.federation.transfers") is not None:
        caps.append(TRANSFER_CAPABILITY)
    return tuple(caps)


@dataclass(frozen=True)
class FederationSettings:
    """Resolved federation settings of one node home."""

    listen: str
    endpoint: str
    tls_dir: Path
    max_message_bytes: int
    max_batch_records: int
    rate_per_s: float = 50.0
    burst: int = 100
    max_batches_per_pull: int = 64
    sync_interval_s: float = 30.0
    call_timeout_s: float = 10.0
    trust_cache_s: float = 1.0
    device_checks_per_hour: float = 600.0
    device_check_burst: int = 200
    device_check_timeout_s: float = 3.0
    max_peer_device_tags: int = 1_000_000

    @classmethod
    def load(cls, config: NodeConfig) -> FederationSettings:
        table: dict[str, Any] = {}
        path = Path(config.home) / CONFIG_NAME
        if path.exists():
            try:
                table = dict(tomllib.loads(path.read_text()).get("federation", {}))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"invalid {path}: {exc}") from exc
        listen = str(table.pop("listen", config.federation_listen))
        tls_dir = Path(table.pop("tls_dir", "tls"))
        values: dict[str, Any] = {
            "listen": config.federation_listen or listen,
            "endpoint": str(table.pop("endpoint", "") or config.federation_listen or listen),
            "tls_dir": tls_dir if tls_dir.is_absolute() else Path(config.home) / tls_dir,
            "max_message_bytes": int(config.max_message_bytes),
            "max_batch_records": int(config.max_batch_records),
        }
        known = {f.name: f.type for f in fields(cls)}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"invalid {path}: unknown setting federation.{key}")
            try:
                values[key] = float(value) if known[key] == "float" else int(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"invalid {path}: federation.{key} = {value!r}") from exc
        settings = cls(**values)
        if (
            settings.rate_per_s <= 0
            or settings.burst < 1
            or settings.max_batches_per_pull < 1
            or settings.device_checks_per_hour <= 0
            or settings.device_check_burst < 1
            or settings.device_check_timeout_s <= 0
            or settings.max_peer_device_tags < 1
        ):
            raise ConfigError(f"invalid {path}: federation limits must be positive")
        return settings


def update_settings(home: Path, **values: Any) -> None:
    """Merge ``values`` into the ``[federation]`` table of ``<home>/eap-node.toml``."""
    import tomli_w

    path = Path(home) / CONFIG_NAME
    data = tomllib.loads(path.read_text())
    data.setdefault("federation", {}).update(values)
    path.write_text(tomli_w.dumps(data))
