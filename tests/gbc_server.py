"""A local Green Button Connect data custodian for the tests: HTTPS (a CA made here with
``cryptography``), an OAuth 2.0 token endpoint (RFC 6749 client credentials and refresh token
grants, client_secret_basic or client_secret_post, RFC 6750 bearer tokens checked on every
resource), and the ESPI REST resources of the real Green Button files, sliced into UsagePoint,
MeterReading, ReadingType, LocalTimeParameters and IntervalBlock resources, filtered by
``published-min``/``published-max`` (the IntervalBlocks' own ``published`` dates) and paged
with ``start-index``/``max-results`` and an Atom ``rel="next"`` link."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import re
import secrets
import ssl
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ATOM = "http://www.w3.org/2005/Atom"
ESPI = "http://naesb.org/espi"
A, E = f"{{{ATOM}}}", f"{{{ESPI}}}"
PREFIX = "/DataCustodian/espi/1_1/resource"
ET.register_namespace("", ATOM)

_UP = re.compile(r"/UsagePoint/([^/]+)$")
_MR = re.compile(r"/UsagePoint/([^/]+)/MeterReading/([^/]+)$")
_IB = re.compile(r"/UsagePoint/([^/]+)/MeterReading/([^/]+)/IntervalBlock/([^/]+)$")
_ANY = re.compile(r"/(ReadingType|LocalTimeParameters)/([^/]+)$")


def make_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost: (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test utility CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )  # fmt: skip
    return paths


def _ts(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp())


def _self(entry: ET.Element) -> str:
    for link in entry.iterfind(f"{A}link"):
        if link.get("rel") == "self":
            return (link.get("href") or "").rstrip("/")
    return ""


@dataclass
class Subscription:
    ups: dict[str, ET.Element] = field(default_factory=dict)
    mrs: dict[str, list[ET.Element]] = field(default_factory=dict)  # by usage point id
    ibs: dict[tuple[str, str], list[tuple[int, ET.Element]]] = field(default_factory=dict)


class Custodian:
    """The server's state; tests read and change it between pulls."""

    def __init__(self, files: dict[str, list[Path]], client_id: str, client_secret: str) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.subs: dict[str, Subscription] = {}
        self.shared: dict[tuple[str, str], ET.Element] = {}
        for sid, paths in files.items():
            sub = self.subs[sid] = Subscription()
            for path in paths:
                self._load(sub, path)
        self.access: dict[str, dict] = {}  # token -> {"expires": ts}
        self.refresh: dict[str, str] = {}  # refresh token -> client id
        self.fail_next: list[int] = []  # statuses to answer before serving
        self.requests: list[tuple[str, str]] = []  # (path, query)
        self.token_grants: list[str] = []
        self.refused_tokens = 0
        self.lock = threading.Lock()

    def _load(self, sub: Subscription, path: Path) -> None:
        for entry in ET.parse(path).getroot().iterfind(f"{A}entry"):
            href = _self(entry)
            if m := _IB.search(href):
                published = _ts(entry.findtext(f"{A}published") or "1970-01-01T00:00:00Z")
                sub.ibs.setdefault((m[1], m[2]), []).append((published, entry))
            elif m := _MR.search(href):
                sub.mrs.setdefault(m[1], []).append(entry)
            elif m := _UP.search(href):
                sub.ups[m[1]] = entry
            elif m := _ANY.search(href):
                self.shared[(m[1], m[2])] = entry

    # -- OAuth 2.0 -------------------------------------------------------------------------------

    def issue(self, with_refresh: bool, lifetime: int = 3600) -> dict:
        token = secrets.token_urlsafe(24)
        self.access[token] = {"expires": dt.datetime.now(dt.UTC).timestamp() + lifetime}
        out = {"access_token": token, "token_type": "Bearer", "expires_in": lifetime}
        if with_refresh:
            refresh = secrets.token_urlsafe(24)
            self.refresh[refresh] = self.client_id
            out["refresh_token"] = refresh
        return out

    def grant_refresh_token(self) -> str:
        """A refresh token as an authorization-code grant would have given the customer."""
        refresh = secrets.token_urlsafe(24)
        self.refresh[refresh] = self.client_id
        return refresh

    def expire_all(self) -> None:
        """Every access token expires now (server side; clients still think them valid)."""
        for info in self.access.values():
            info["expires"] = 0

    def bearer_ok(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        info = self.access.get(header[7:].strip())
        return info is not None and info["expires"] > dt.datetime.now(dt.UTC).timestamp()


def _feed(entries: list[ET.Element], self_url: str, next_url: str | None) -> bytes:
    feed = ET.Element(f"{A}feed")
    ET.SubElement(feed, f"{A}id").text = f"urn:uuid:{secrets.token_hex(8)}"
    ET.SubElement(feed, f"{A}link", rel="self", href=self_url)
    if next_url:
        ET.SubElement(feed, f"{A}link", rel="next", href=next_url)
    ET.SubElement(feed, f"{A}updated").text = dt.datetime.now(dt.UTC).isoformat()
    feed.extend(entries)
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


class Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", headers)

    def do_POST(self) -> None:
        c = self.server.custodian
        if urlsplit(self.path).path != "/oauth/token":
            return self._json(404, {"error": "not_found"})
        form = {
            k: v[0]
            for k, v in parse_qs(
                self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            ).items()
        }
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if (client_id, secret) != (c.client_id, c.client_secret):
            return self._json(401, {"error": "invalid_client"},
                              {"WWW-Authenticate": 'Basic realm="token"'})  # fmt: skip
        grant = form.get("grant_type")
        with c.lock:
            c.token_grants.append(grant or "")
            if grant == "client_credentials":
                return self._json(200, c.issue(with_refresh=False))
            if grant == "refresh_token":
                if c.refresh.pop(form.get("refresh_token", ""), None) != client_id:
                    return self._json(400, {"error": "invalid_grant"})
                return self._json(200, c.issue(with_refresh=True))  # rotated
        return self._json(400, {"error": "unsupported_grant_type"})

    def do_GET(self) -> None:
        c = self.server.custodian
        url = urlsplit(self.path)
        with c.lock:
            c.requests.append((url.path, url.query))
            if c.fail_next:
                status = c.fail_next.pop(0)
                return self._send(status, b"custodian busy", "text/plain")
        if not c.bearer_ok(self.headers.get("Authorization")):
            c.refused_tokens += 1
            return self._send(401, b"", "text/plain",
                              {"WWW-Authenticate": 'Bearer error="invalid_token"'})  # fmt: skip
        if not url.path.startswith(PREFIX + "/"):
            return self._send(404, b"", "text/plain")
        parts = url.path[len(PREFIX) + 1 :].split("/")
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        base = f"https://127.0.0.1:{self.server.server_port}{url.path}"
        if len(parts) == 2 and (parts[0], parts[1]) in c.shared:
            body = ET.tostring(c.shared[(parts[0], parts[1])], encoding="utf-8",
                               xml_declaration=True)  # fmt: skip
            return self._send(200, body, "application/atom+xml")
        if len(parts) < 3 or parts[0] != "Subscription" or parts[1] not in c.subs:
            return self._send(404, b"", "text/plain")
        sub, rest = c.subs[parts[1]], parts[2:]
        if rest == ["UsagePoint"]:
            items = list(sub.ups.values())
        elif len(rest) == 3 and rest[0] == "UsagePoint" and rest[2] == "MeterReading":
            items = sub.mrs.get(rest[1], [])
        elif len(rest) == 5 and rest[2] == "MeterReading" and rest[4] == "IntervalBlock":
            low = _ts(q["published-min"]) if "published-min" in q else None
            high = _ts(q["published-max"]) if "published-max" in q else None
            items = [
                e for p, e in sub.ibs.get((rest[1], rest[3]), [])
                if (low is None or p >= low) and (high is None or p < high)
            ]  # fmt: skip
        else:
            return self._send(404, b"", "text/plain")
        start = int(q.get("start-index", "1"))
        size = int(q.get("max-results", "500"))
        page = items[start - 1 : start - 1 + size]
        next_url = None
        if start - 1 + size < len(items):
            nq = {**q, "start-index": str(start + size), "max-results": str(size)}
            next_url = f"{base}?{urlencode(nq)}"
        self_url = f"{base}?{url.query}" if url.query else base
        return self._send(200, _feed(page, self_url, next_url), "application/atom+xml")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    custodian: Custodian


def serve(custodian: Custodian, cert: Path, key: Path) -> tuple[_Server, threading.Thread]:
    server = _Server(("127.0.0.1", 0), Handler)
    server.custodian = custodian
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
