"""Green Button Connect My Data: meter data pulled from a utility's NAESB ESPI REST API.

One pull of a subscription walks the ESPI resources of the data custodian::

    GET {base}/Subscription/{sid}/UsagePoint                                    (paged feed)
    GET {base}/LocalTimeParameters/{id}                       (each usage point's time zone)
    GET {base}/Subscription/{sid}/UsagePoint/{up}/MeterReading                  (paged feed)
    GET {base}/ReadingType/{id}                                 (each reading's ReadingType)
    GET {base}/Subscription/{sid}/UsagePoint/{up}/MeterReading/{mr}/IntervalBlock
        ?published-min=...&published-max=...&max-results=N                     (paged feed)

with an OAuth 2.0 bearer token obtained and refreshed by Authlib (client credentials, or a
refresh token from an authorization-code grant made out of band).  Pages are followed through
the feed's Atom ``rel="next"`` link (same origin only: the token never leaves the custodian).
Transport errors, ``429`` and ``5xx`` are retried with exponential backoff; a ``401`` forces a
new token once.

The collected entries are read by the node's own Green Button reader
(:class:`eap.node.meters.GreenButtonSource`), so ``uom``, ``powerOfTenMultiplier``,
``flowDirection``, interval lengths and the meter ids (the UsagePoint ``self`` hrefs) follow
exactly the rules of ``eap-node meter import`` (``docs/meter-data.md``).  Usage points of
another service (gas, water, ...) are not pulled; a subscription with no electricity usage
point is refused.

Incremental pulls: each subscription has a cursor, the ``published-max`` of its last pull whose
readings the node committed, kept in ``<home>/greenbutton_connect/cursors.json`` (0600,
replaced atomically).  The next pull asks for ``published-min = cursor - overlap_s``.  The
cursor moves only after the import committed, so a crash in between repeats the window, and the
node stores identical readings once (they count as ``unchanged``).
"""

from __future__ import annotations

import json
import random
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from eap.node.crypto._files import ensure_private_dir, read_private_file, replace_file
from eap.node.errors import BackendError, ConfigError, FieldViolation, InvalidArgument
from eap.node.meters import GreenButtonSource, MeterReadings, ReadOptions
from eap.node.meters.greenbutton import ATOM_NS, ESPI_NS, SERVICE_KINDS
from eap.plugins import hookimpl

NAME = "greenbutton_connect"
_A = f"{{{ATOM_NS}}}"
_E = f"{{{ESPI_NS}}}"
MAX_RESPONSE_BYTES = 64 << 20
_GRANTS = ("client_credentials", "refresh_token")
_LAST = re.compile(r"/([^/]+)/?$")


# -- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectConfig:
    """``[meters.greenbutton_connect]`` of ``eap-node.toml`` (relative paths: under the home)."""

    base_url: str
    token_url: str
    client_id: str
    client_secret_file: Path
    subscriptions: tuple[str, ...]
    state_dir: Path
    ca_file: Path | None = None
    #: ``client_credentials``, or ``refresh_token``: an authorization-code grant made once out
    #: of band, whose refresh token is in ``refresh_token_file`` (0600).
    grant: str = "client_credentials"
    refresh_token_file: Path | None = None
    scope: str = ""
    max_results: int = 500
    overlap_s: int = 0
    timeout_s: float = 30.0
    max_attempts: int = 5
    backoff_s: float = 0.5

    @classmethod
    def from_table(cls, table: dict[str, Any], home: Path) -> ConnectConfig:
        where = f"[meters.{NAME}]"

        def path(key: str, required: bool) -> Path | None:
            value = table.get(key, "")
            if not isinstance(value, str) or (required and not value):
                raise ConfigError(f"{where} {key} must name a file")
            if not value:
                return None
            p = Path(value).expanduser()
            return p if p.is_absolute() else home / p

        for key in ("base_url", "token_url", "client_id"):
            if not isinstance(table.get(key), str) or not table[key]:
                raise ConfigError(f"{where} {key} is required (a string)")
        for key in ("base_url", "token_url"):
            if urlsplit(table[key]).scheme != "https":
                raise ConfigError(f"{where} {key} must be an https:// URL")
        subs = table.get("subscriptions", [])
        if not isinstance(subs, list) or not subs or not all(isinstance(s, str) for s in subs):
            raise ConfigError(f"{where} subscriptions must be a non-empty list of ids")
        grant = table.get("grant", "client_credentials")
        if grant not in _GRANTS:
            raise ConfigError(f"{where} grant must be one of {', '.join(_GRANTS)}")
        refresh = path("refresh_token_file", grant == "refresh_token")
        numbers = {}
        for key, kind, low in (
            ("max_results", int, 1),
            ("overlap_s", int, 0),
            ("timeout_s", (int, float), 0.001),
            ("max_attempts", int, 1),
            ("backoff_s", (int, float), 0),
        ):
            if key in table:
                value = table[key]
                if isinstance(value, bool) or not isinstance(value, kind) or value < low:
                    raise ConfigError(f"{where} {key} must be a number >= {low}")
                numbers[key] = value
        return cls(
            base_url=table["base_url"].rstrip("/"),
            token_url=table["token_url"],
            client_id=table["client_id"],
            client_secret_file=path("client_secret_file", True),  # type: ignore[arg-type]
            subscriptions=tuple(subs),
            state_dir=home / NAME,
            ca_file=path("ca_file", False),
            grant=grant,
            refresh_token_file=refresh,
            scope=str(table.get("scope", "")),
            **numbers,
        )

    @classmethod
    def from_node(cls, config) -> ConnectConfig:
        """From a :class:`eap.node.config.NodeConfig` (its ``[meters]`` table)."""
        table = config.extra.get("meters", {}).get(NAME)
        if not isinstance(table, dict):
            raise ConfigError(
                f"no [meters.{NAME}] section in {config.home / 'eap-node.toml'}: "
                "see docs/plugins.md"
            )
        return cls.from_table(table, config.home)


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsagePointInfo:
    meter_id: str
    service_kind: int | None
    #: LocalTimeParameters ``tzOffset`` (seconds east of UTC, standard time), when given.
    tz_offset_s: int | None = None
    dst_offset_s: int | None = None

    @property
    def electricity(self) -> bool:
        return self.service_kind == 0


@dataclass(frozen=True)
class Pull:
    """What one pull of one subscription fetched; ``cursor`` is committed after the import."""

    subscription: str
    published_min: int | None
    published_max: int
    readings: MeterReadings
    usage_points: tuple[UsagePointInfo, ...]
    interval_blocks: int
    pages: int
    skipped: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "subscription": self.subscription,
            "published_min": _iso(self.published_min) if self.published_min is not None else None,
            "published_max": _iso(self.published_max),
            "usage_points": [
                {"meter_id": u.meter_id, "service": SERVICE_KINDS.get(u.service_kind or -1, "?"),
                 "tz_offset_s": u.tz_offset_s, "dst_offset_s": u.dst_offset_s}
                for u in self.usage_points
            ],
            "interval_blocks": self.interval_blocks,
            "pages": self.pages,
            "readings": len(self.readings),
            "wh": self.readings.total_wh(),
            "skipped": list(self.skipped),
            "notes": [str(n) for n in self.readings.notes],
        }  # fmt: skip


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the client ----------------------------------------------------------------------------------


class GreenButtonConnect:
    """Pulls a utility's Green Button Connect subscriptions.  ``clock`` gives unix seconds
    (the custodian's publication clock; tests set it), ``sleep`` waits between retries."""

    name = NAME

    def __init__(
        self,
        config: ConnectConfig,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self._session: Any = None

    def __repr__(self) -> str:
        return f"GreenButtonConnect({self.config.base_url!r})"

    # -- state: token and cursors ------------------------------------------------------------

    @property
    def _token_path(self) -> Path:
        return self.config.state_dir / "token.json"

    @property
    def _cursor_path(self) -> Path:
        return self.config.state_dir / "cursors.json"

    def _load_json(self, path: Path) -> dict[str, Any]:
        if not path.exists():
            return {}
        try:
            data = json.loads(read_private_file(path))
        except ValueError as exc:
            raise ConfigError(f"{path} is not JSON written by {NAME}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} is not JSON written by {NAME}")
        return data

    def _save_json(self, path: Path, data: dict[str, Any]) -> None:
        ensure_private_dir(path.parent)
        replace_file(path, json.dumps(data, sort_keys=True).encode())

    def cursors(self) -> dict[str, int]:
        """``{subscription: published-max of its last committed pull}``."""
        return {k: int(v) for k, v in self._load_json(self._cursor_path).items()}

    def commit(self, pull: Pull) -> None:
        """Record that ``pull``'s readings are in the node: its window is not asked again."""
        cursors = self.cursors()
        cursors[pull.subscription] = max(pull.published_max, cursors.get(pull.subscription, 0))
        self._save_json(self._cursor_path, cursors)

    def _save_token(self, token: dict[str, Any], refresh_token=None, access_token=None) -> None:
        self._save_json(self._token_path, dict(token))

    def session(self):
        """An Authlib ``OAuth2Session`` holding a valid token (fetched or refreshed)."""
        if self._session is not None:
            return self._session
        from authlib.integrations.requests_client import OAuth2Session

        cfg = self.config
        secret = read_private_file(cfg.client_secret_file).decode().strip()
        token = self._load_json(self._token_path) or None
        if token is None and cfg.grant == "refresh_token":
            assert cfg.refresh_token_file is not None
            refresh = read_private_file(cfg.refresh_token_file).decode().strip()
            token = {"access_token": "", "refresh_token": refresh, "expires_at": 0,
                     "token_type": "Bearer"}  # fmt: skip
        s = OAuth2Session(
            cfg.client_id,
            secret,
            scope=cfg.scope or None,
            token=token,
            token_endpoint=cfg.token_url,
            grant_type=cfg.grant,
            update_token=self._save_token,
            default_timeout=cfg.timeout_s,
        )
        if cfg.ca_file:
            # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override Session.verify: with a
            # configured CA the environment must not choose whom the token is sent to.
            s.trust_env = False
            s.verify = str(cfg.ca_file)
        s.headers["Accept"] = "application/atom+xml"
        if token is None:
            self._save_token(self._with_retries(lambda: s.fetch_token(cfg.token_url)))
        self._session = s
        return s

    def _renew(self) -> None:
        """A new token now (the custodian refused ours before its ``expires_at``)."""
        s, cfg = self._session, self.config
        refresh = (s.token or {}).get("refresh_token")
        if refresh:
            s.refresh_token(cfg.token_url, refresh_token=refresh)  # update_token saves it
        else:
            self._save_token(s.fetch_token(cfg.token_url))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- HTTP --------------------------------------------------------------------------------

    def _backoff(self, attempt: int, retry_after: str | None = None) -> None:
        delay = self.config.backoff_s * (2**attempt) * (0.5 + random.random() / 2)
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), 60.0))
        self.sleep(delay)

    def _with_retries(self, fn: Callable[[], Any]) -> Any:
        import requests
        from authlib.integrations.base_client import OAuthError

        last: Exception | None = None
        for attempt in range(self.config.max_attempts):
            try:
                return fn()
            except requests.RequestException as exc:
                last = exc
            except OAuthError as exc:
                raise BackendError(
                    f"{NAME}: the token endpoint refused the client: {exc}",
                    transient=False, backend=NAME,
                ) from exc  # fmt: skip
            if attempt + 1 < self.config.max_attempts:
                self._backoff(attempt)
        raise BackendError(
            f"{NAME}: token endpoint unreachable after {self.config.max_attempts} attempts: "
            f"{last}", transient=True, backend=NAME,
        )  # fmt: skip

    def _get(self, url: str, params: dict[str, Any] | None = None) -> ET.Element:
        import requests

        s = self.session()
        renewed = False
        why = ""
        attempt = 0
        while attempt < self.config.max_attempts:
            try:
                resp = s.get(url, params=params, stream=True)
            except requests.RequestException as exc:
                why = f"{type(exc).__name__}: {exc}"
            else:
                status = resp.status_code
                if status == 200:
                    return _parse_body(resp, url)
                if status == 401 and not renewed:
                    resp.close()
                    renewed = True
                    self._with_retries(self._renew)
                    continue  # a refused token is not an attempt
                if status == 429 or status >= 500:
                    why = f"HTTP {status}"
                    retry_after = resp.headers.get("Retry-After")
                    resp.close()
                    attempt += 1
                    if attempt < self.config.max_attempts:
                        self._backoff(attempt - 1, retry_after)
                    continue
                body = resp.text[:300]
                resp.close()
                raise BackendError(
                    f"{NAME}: GET {url} answered HTTP {status}: {body}",
                    transient=False, backend=NAME,
                )  # fmt: skip
            attempt += 1
            if attempt < self.config.max_attempts:
                self._backoff(attempt - 1)
        raise BackendError(
            f"{NAME}: GET {url} failed {self.config.max_attempts} times (last: {why})",
            transient=True, backend=NAME,
        )  # fmt: skip

    def _feed(
        self, url: str, params: dict[str, Any] | None, counter: list[int]
    ) -> Iterator[ET.Element]:
        """The entries of a (paged) feed at ``url``; a single ``entry`` document is one entry."""
        origin = urlsplit(self.config.base_url)[:2]
        params = dict(params or {})
        params.setdefault("max-results", self.config.max_results)
        seen: set[str] = set()
        next_url: str | None = url
        while next_url is not None:
            root = self._get(next_url, params)
            counter[0] += 1
            params = None  # a next link carries its own query
            if root.tag == f"{_A}entry":
                yield root
                return
            yield from root.iterfind(f"{_A}entry")
            next_url = None
            for link in root.iterfind(f"{_A}link"):
                if link.get("rel") == "next" and link.get("href"):
                    candidate = urljoin(url, link.get("href"))
                    if urlsplit(candidate)[:2] != origin:
                        raise BackendError(
                            f"{NAME}: next link {candidate} leaves {self.config.base_url}",
                            transient=False, backend=NAME,
                        )  # fmt: skip
                    if candidate in seen:
                        raise BackendError(
                            f"{NAME}: paging loops at {candidate}", transient=False, backend=NAME
                        )
                    seen.add(candidate)
                    next_url = candidate

    # -- a pull ------------------------------------------------------------------------------

    def pull(
        self,
        subscription: str,
        *,
        since: int | None = None,
        until: int | None = None,
        kind: str | None = None,
    ) -> Pull:
        """Fetch the readings of ``subscription`` published in ``[since, until)`` (default:
        since its cursor, until now).  Nothing is recorded: call :meth:`commit` once the
        readings are stored."""
        if subscription not in self.config.subscriptions:
            raise InvalidArgument(
                f"unknown {NAME} subscription",
                [FieldViolation("subscription", f"{subscription!r} is not configured; one of: "
                                f"{', '.join(self.config.subscriptions)}")],
            )  # fmt: skip
        cursor = self.cursors().get(subscription)
        if since is None and cursor is not None:
            since = max(0, cursor - self.config.overlap_s)
        published_max = int(self.clock()) if until is None else until
        base = self.config.base_url
        sub = f"{base}/Subscription/{subscription}"
        pages = [0]
        entries: list[ET.Element] = []
        infos: list[UsagePointInfo] = []
        skipped: list[str] = []
        blocks = 0
        window: dict[str, Any] = {"published-max": _iso(published_max)}
        if since is not None:
            window["published-min"] = _iso(since)
        for up in list(self._feed(f"{sub}/UsagePoint", None, pages)):
            meter_id, up_id = _self_href(up), _last(up)
            kind_text = up.findtext(f"{_A}content/{_E}UsagePoint/{_E}ServiceCategory/{_E}kind")
            service = int(kind_text) if kind_text and kind_text.strip().isdigit() else None
            tz = dst = None
            for href in _related(up):
                if "/LocalTimeParameters/" in href:
                    ltp = next(self._feed(f"{base}/LocalTimeParameters/{_last_of(href)}", None,
                                          pages))  # fmt: skip
                    p = f"{_A}content/{_E}LocalTimeParameters/{_E}"
                    tz = _opt_int(ltp.findtext(f"{p}tzOffset"))
                    dst = _opt_int(ltp.findtext(f"{p}dstOffset"))
            info = UsagePointInfo(meter_id, service, tz, dst)
            infos.append(info)
            if not info.electricity:
                what = SERVICE_KINDS.get(service, "unknown service") if service is not None else (
                    "no ServiceCategory kind")  # fmt: skip
                skipped.append(
                    f"usage point {meter_id}: {what} (ServiceCategory kind {service}), "
                    "not electricity: not pulled"
                )
                continue
            entries.append(up)
            up_url = f"{sub}/UsagePoint/{up_id}"
            for mr in list(self._feed(f"{up_url}/MeterReading", None, pages)):
                entries.append(mr)
                for href in _related(mr):
                    if "/ReadingType/" in href:
                        entries.append(
                            next(self._feed(f"{base}/ReadingType/{_last_of(href)}", None, pages))
                        )
                for ib in self._feed(
                    f"{up_url}/MeterReading/{_last(mr)}/IntervalBlock", window, pages
                ):
                    entries.append(ib)
                    blocks += 1
        if not any(i.electricity for i in infos):
            raise InvalidArgument(
                f"{NAME} subscription {subscription} has no electricity usage point: refused "
                "(records are only issued from electricity)",
                [FieldViolation(f"subscription[{subscription}].UsagePoint", s) for s in skipped]
                or [FieldViolation(f"subscription[{subscription}]", "no UsagePoint")],
            )
        readings = self._read(subscription, entries, kind)
        return Pull(subscription, since, published_max, readings, tuple(infos), blocks,
                    pages[0], tuple(skipped))  # fmt: skip

    def _read(self, subscription: str, entries: list[ET.Element], kind: str | None):
        """The fetched entries read as one feed by the node's Green Button reader."""
        feed = ET.Element(f"{_A}feed")
        feed.extend(entries)
        with tempfile.TemporaryDirectory(prefix="eap-gbc-") as tmp:
            path = Path(tmp) / f"subscription-{re.sub(r'[^A-Za-z0-9_.-]', '_', subscription)}.xml"
            ET.ElementTree(feed).write(path, encoding="utf-8", xml_declaration=True)
            readings = GreenButtonSource().read(path, options=ReadOptions(kind=kind))
        return replace(readings, source=f"{NAME}:{self.config.base_url}/Subscription/"
                                        f"{subscription}")  # fmt: skip


def _parse_body(resp, url: str) -> ET.Element:
    body = bytearray()
    for chunk in resp.iter_content(65536):
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            resp.close()
            raise BackendError(f"{NAME}: {url} answered more than {MAX_RESPONSE_BYTES} bytes",
                               transient=False, backend=NAME)  # fmt: skip
    if b"<!DOCTYPE" in body[:4096]:
        raise BackendError(f"{NAME}: {url} answered a document with a DOCTYPE (refused)",
                           transient=False, backend=NAME)  # fmt: skip
    try:
        root = ET.fromstring(bytes(body))
    except ET.ParseError as exc:
        raise BackendError(f"{NAME}: {url} answered malformed XML ({exc})",
                           transient=False, backend=NAME) from None  # fmt: skip
    if root.tag not in (f"{_A}feed", f"{_A}entry"):
        raise BackendError(f"{NAME}: {url} answered {root.tag!r}, not an Atom feed or entry",
                           transient=False, backend=NAME)  # fmt: skip
    return root


def _links(entry: ET.Element, rel: str) -> list[str]:
    return [
        (link.get("href") or "").rstrip("/")
        for link in entry.iterfind(f"{_A}link")
        if link.get("rel") == rel and link.get("href")
    ]


def _self_href(entry: ET.Element) -> str:
    found = _links(entry, "self")
    return found[0] if found else (entry.findtext(f"{_A}id") or "").strip()


def _related(entry: ET.Element) -> list[str]:
    return _links(entry, "related")


def _last_of(href: str) -> str:
    m = _LAST.search(href)
    if m is None:
        raise BackendError(f"{NAME}: cannot take a resource id from {href!r}",
                           transient=False, backend=NAME)  # fmt: skip
    return m.group(1)


def _last(entry: ET.Element) -> str:
    return _last_of(_self_href(entry))


def _opt_int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def pull_into_node(node, client: GreenButtonConnect, subscriptions=None, *, request_id: str):
    """Pull each subscription and import its production readings into ``node``; the cursor of
    a subscription moves only after its import committed.  Returns ``[(Pull, ImportResult)]``."""
    out = []
    for sid in subscriptions or client.config.subscriptions:
        pull = client.pull(sid, kind="production")
        result = node.import_pulled_readings(
            pull.readings,
            request_id=f"{request_id}:{sid}",
            payload={"source": NAME, "subscription": sid, "published_max": pull.published_max},
        )
        client.commit(pull)
        out.append((pull, result))
    return out


# -- plugin ----------------------------------------------------------------------------------------


class ConnectPuller:
    """The ``eap_meter_pullers`` object: pulls every configured subscription into a node."""

    name = NAME

    def configured(self, node) -> bool:
        return isinstance(node.config.extra.get("meters", {}).get(NAME), dict)

    def pull_into_node(self, node, subscriptions=None, *, request_id: str):
        client = GreenButtonConnect(ConnectConfig.from_node(node.config))
        try:
            return pull_into_node(node, client, subscriptions, request_id=request_id)
        finally:
            client.close()

    def health(self, node) -> dict:
        if not self.configured(node):
            return {"ok": False, "detail": f"not configured ([meters.{NAME}])"}
        try:
            cfg = ConnectConfig.from_node(node.config)
        except ConfigError as exc:
            return {"ok": False, "detail": str(exc)}
        return {"ok": True, "detail": f"{len(cfg.subscriptions)} subscription(s) at {cfg.base_url}"}


@hookimpl
def eap_meter_pullers():
    return [ConnectPuller()]
