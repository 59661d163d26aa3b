"""SD-JWT (IETF "Selective Disclosure for JWTs") with EdDSA: issue, select, key-bind, verify.

Generic over the claims; :mod:`eap.node.domain.receipts` gives them their EAP meaning and the
byte-exact algorithm is in ``docs/receipts.md``.  Summary:

* A *disclosure* is ``b64url(utf8(JSON [salt, name, value]))``; its *digest* is
  ``b64url(SHA-256(ascii(disclosure)))``.  Salts are 16 random bytes from :mod:`secrets`,
  written base64url (22 characters).  ``b64url`` is RFC 4648 §5 without padding.
* The issuer signs a compact JWS (``alg`` ``EdDSA``, Ed25519) whose payload holds the
  always-visible claims, ``_sd_alg: "sha-256"``, ``_sd`` (the digests, sorted) and, when a
  holder key is bound, ``cnf: {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": ...}}``.
* An SD-JWT is ``<JWS>~<disclosure>~...~<disclosure>~``; a presentation keeps only the chosen
  disclosures and, when ``cnf`` is present, appends a KB-JWT (``typ`` ``kb+jwt``) over
  ``{"iat", "aud", "nonce", "sd_hash"}`` with ``sd_hash = b64url(SHA-256(ascii(everything
  before it, final "~" included)))`` signed by the holder's key.

JSON written here is compact with sorted keys (reproducible test vectors); a verifier hashes
and verifies the transmitted strings, never a re-serialisation, so it needs no canonical form.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eap.node.errors import InvalidArgument

SD_ALG = "sha-256"
#: Bytes of randomness per salt (128 bits, the SD-JWT recommendation's floor).
SALT_BYTES = 16
KB_TYP = "kb+jwt"
#: JOSE ``alg`` written: ``EdDSA`` (RFC 8037), what JOSE and SD-JWT libraries implement today.
ALG = "EdDSA"
#: Accepted on verification: also the fully-specified ``Ed25519`` of RFC 9864, which
#: deprecates ``EdDSA``; keys are always Ed25519 (``cnf``, the issuer's), so both mean the same.
ACCEPTED_ALGS = ("EdDSA", "Ed25519")
#: Upper bounds that keep a hostile presentation from costing more than a receipt is worth.
MAX_TOKEN_CHARS = 256 * 1024
MAX_DISCLOSURES = 64

_B64URL = re.compile(r"[A-Za-z0-9_-]*")

#: Signs bytes with an Ed25519 private key; returns the 64-byte signature.
Signer = Callable[[bytes], bytes]


class SdError(InvalidArgument):
    """An SD-JWT or presentation that does not verify; ``reason`` says which step failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def b64url(data: bytes) -> str:
    """RFC 4648 §5 base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, what: str) -> bytes:
    """Strict base64url: alphabet only, no padding, canonical trailing bits."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise SdError(f"{what}: not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SdError(f"{what}: not base64url") from exc
    if b64url(raw) != text:
        raise SdError(f"{what}: non-canonical base64url")
    return raw


def compact_json(value: Any) -> bytes:
    """Compact JSON with sorted keys, ASCII only (how this module writes every JSON)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SdError(f"{what}: not UTF-8 JSON") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def new_salt() -> str:
    """A fresh salt: 16 bytes from :mod:`secrets`, base64url."""
    return b64url(secrets.token_bytes(SALT_BYTES))


def disclosure(salt: str, name: str, value: Any) -> str:
    """The disclosure of claim ``name`` = ``value`` under ``salt``."""
    return b64url(compact_json([salt, name, value]))


def digest(disc: str) -> str:
    """``b64url(SHA-256(ascii(disclosure)))``, the entry of ``_sd`` that commits to it."""
    return b64url(hashlib.sha256(disc.encode("ascii")).digest())


def ed25519_jwk(public_key: bytes) -> dict[str, str]:
    """The RFC 8037 JWK of a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise InvalidArgument("an Ed25519 public key has 32 bytes")
    return {"crv": "Ed25519", "kty": "OKP", "x": b64url(public_key)}


def sign_jws(header: Mapping[str, Any], payload: Mapping[str, Any], signer: Signer) -> str:
    """Compact JWS: ``b64url(header) "." b64url(payload) "." b64url(Ed25519(signing input))``."""
    head = b64url(compact_json(dict(header))) + "." + b64url(compact_json(dict(payload)))
    return head + "." + b64url(signer(head.encode("ascii")))


def issue(
    visible: Mapping[str, Any],
    claims: Mapping[str, Any],
    *,
    signer: Signer,
    kid: str,
    typ: str,
    holder_key: bytes | None = None,
    salts: Mapping[str, str] | None = None,
) -> str:
    """An SD-JWT with every one of ``claims`` selectively disclosable.

    ``visible`` claims go into the payload in clear; ``salts`` fixes the salt of a claim (test
    vectors only; a fixed salt must still carry >= 128 bits).  ``holder_key`` (raw Ed25519)
    adds ``cnf`` and makes every presentation need a key-binding JWT.
    """
    discs = []
    for name, value in claims.items():
        salt = (salts or {}).get(name)
        if salt is None:
            salt = new_salt()
        elif len(b64url_decode(salt, f"salt of {name}")) < SALT_BYTES:
            raise InvalidArgument(f"salt of {name}: fewer than {SALT_BYTES} bytes")
        discs.append(disclosure(salt, name, value))
    clash = {"_sd", "_sd_alg", "cnf", "..."} & (set(visible) | set(claims))
    if clash or set(visible) & set(claims):
        raise InvalidArgument(f"claim names clash: {sorted(clash or set(visible) & set(claims))}")
    payload = dict(visible)
    payload["_sd_alg"] = SD_ALG
    payload["_sd"] = sorted(digest(d) for d in discs)
    if holder_key is not None:
        payload["cnf"] = {"jwk": ed25519_jwk(holder_key)}
    jws = sign_jws({"alg": ALG, "kid": kid, "typ": typ}, payload, signer)
    return "~".join([jws, *discs]) + "~"


@dataclass(frozen=True)
class Parsed:
    """An SD-JWT or presentation split into its parts (nothing verified yet)."""

    jws: str
    disclosures: tuple[str, ...]
    kb_jwt: str

    @property
    def without_kb(self) -> str:
        """``<JWS>~<disclosures>~``: what ``sd_hash`` covers."""
        return "~".join([self.jws, *self.disclosures]) + "~"


def parse(token: str) -> Parsed:
    """Split ``token`` at ``~``; raises :class:`SdError` on a malformed shape."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise SdError(f"an SD-JWT is a string of at most {MAX_TOKEN_CHARS} characters")
    if not token.isascii():
        raise SdError("an SD-JWT is ASCII")
    parts = token.split("~")
    if len(parts) < 2:
        raise SdError("not an SD-JWT: no '~' after the issuer-signed JWT")
    if len(parts) - 2 > MAX_DISCLOSURES:
        raise SdError(f"more than {MAX_DISCLOSURES} disclosures")
    if any(not p for p in parts[1:-1]):
        raise SdError("empty disclosure between '~' separators")
    return Parsed(parts[0], tuple(parts[1:-1]), parts[-1])


def decode_disclosure(disc: str) -> tuple[str, str, Any]:
    """``(salt, name, value)`` of a disclosure; raises :class:`SdError` when malformed."""
    arr = _json(b64url_decode(disc, "disclosure"), "disclosure")
    if not isinstance(arr, list) or len(arr) != 3:
        raise SdError("a disclosure must be a JSON array [salt, name, value]")
    salt, name, value = arr
    if not isinstance(salt, str) or not isinstance(name, str):
        raise SdError("a disclosure's salt and claim name must be strings")
    if name in ("_sd", "...", "_sd_alg", "cnf"):
        raise SdError(f"a disclosure may not name the reserved claim {name!r}")
    return salt, name, value


def select(token: str, names: Iterable[str]) -> str:
    """``token`` (an issued SD-JWT, all disclosures) keeping only the disclosures of ``names``.

    Raises:
        InvalidArgument: a name is not among the token's disclosures.
    """
    parsed = parse(token)
    wanted = set(names)
    kept, have = [], set()
    for disc in parsed.disclosures:
        name = decode_disclosure(disc)[1]
        have.add(name)
        if name in wanted:
            kept.append(disc)
    missing = sorted(wanted - have)
    if missing:
        raise InvalidArgument(
            f"the receipt has no field {', '.join(missing)}; it has {', '.join(sorted(have))}"
        )
    return "~".join([parsed.jws, *kept]) + "~"


def unverified_payload(token: str) -> dict[str, Any]:
    """The issuer-signed payload of an SD-JWT, decoded but NOT verified (to choose a key or
    see whether a receipt binds a holder key; never to trust a claim)."""
    parts = parse(token).jws.split(".")
    if len(parts) != 3:
        raise SdError("issuer JWT: a compact JWS has three '.'-separated parts")
    payload = _json(b64url_decode(parts[1], "issuer JWT payload"), "issuer JWT payload")
    if not isinstance(payload, dict):
        raise SdError("issuer JWT payload: not a JSON object")
    return payload


def sd_hash(without_kb: str) -> str:
    return b64url(hashlib.sha256(without_kb.encode("ascii")).digest())


def key_bind(presentation: str, signer: Signer, *, nonce: str, audience: str, iat: int) -> str:
    """Append a KB-JWT to ``presentation`` (which ends with ``~``), signed by the holder."""
    if not presentation.endswith("~"):
        raise InvalidArgument("a presentation to key-bind ends with '~'")
    payload = {"aud": audience, "iat": iat, "nonce": nonce, "sd_hash": sd_hash(presentation)}
    return presentation + sign_jws({"alg": ALG, "typ": KB_TYP}, payload, signer)


@dataclass
class Verified:
    """What a verified presentation established."""

    header: dict[str, Any]
    #: The issuer-signed payload (``_sd`` digests included, disclosed values not).
    payload: dict[str, Any]
    #: Disclosed claims, name -> value, in presentation order.
    disclosed: dict[str, Any] = field(default_factory=dict)
    #: The KB-JWT payload when the receipt binds a holder key.
    key_binding: dict[str, Any] | None = None


def _open_jws(jws: str, what: str) -> tuple[dict, dict, bytes, bytes]:
    parts = jws.split(".")
    if len(parts) != 3:
        raise SdError(f"{what}: a compact JWS has three '.'-separated parts")
    header = _json(b64url_decode(parts[0], f"{what} header"), f"{what} header")
    payload = _json(b64url_decode(parts[1], f"{what} payload"), f"{what} payload")
    sig = b64url_decode(parts[2], f"{what} signature")
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise SdError(f"{what}: header and payload must be JSON objects")
    if header.get("alg") not in ACCEPTED_ALGS:
        raise SdError(f"{what}: alg must be EdDSA (or Ed25519)")
    return header, payload, (parts[0] + "." + parts[1]).encode("ascii"), sig


def _ed25519_ok(public_key: bytes, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify(
    token: str,
    issuer_key: Callable[[dict[str, Any], dict[str, Any]], bytes],
    *,
    typ: str,
    nonce: str | None = None,
    audience: str | None = None,
) -> Verified:
    """Verify a presentation: issuer signature, every disclosure's digest, key binding.

    ``issuer_key(header, payload)`` returns the raw Ed25519 key the verifier trusts for this
    issuer and ``kid`` (raising :class:`SdError` when it has none); it sees the payload before
    the signature is checked, so it must only *select* a key, never trust a claim.  With
    ``cnf`` in the payload a KB-JWT is required; ``nonce``/``audience``, when given, must equal
    its ``nonce``/``aud``.

    Raises:
        SdError: anything that does not verify, with the reason.
    """
    parsed = parse(token)
    header, payload, signing_input, sig = _open_jws(parsed.jws, "issuer JWT")
    if header.get("typ") != typ:
        raise SdError(f"issuer JWT: typ must be {typ!r}")
    if not _ed25519_ok(issuer_key(header, payload), sig, signing_input):
        raise SdError("issuer JWT: the Ed25519 signature does not verify with the issuer's key")
    if payload.get("_sd_alg") != SD_ALG:
        raise SdError(f"issuer JWT: _sd_alg must be {SD_ALG!r}")
    digests = payload.get("_sd")
    if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
        raise SdError("issuer JWT: _sd must be an array of strings")
    if len(set(digests)) != len(digests):
        raise SdError("issuer JWT: _sd repeats a digest")
    out = Verified(header=header, payload=payload)
    seen: set[str] = set()
    for disc in parsed.disclosures:
        d = digest(disc)
        if d not in digests:
            raise SdError("a disclosure is not committed to by the issuer (digest not in _sd)")
        if d in seen:
            raise SdError("a disclosure appears twice")
        seen.add(d)
        salt, name, value = decode_disclosure(disc)
        if len(b64url_decode(salt, f"salt of {name}")) < SALT_BYTES:
            raise SdError(f"salt of {name}: fewer than {SALT_BYTES} bytes")
        if name in out.disclosed or name in payload:
            raise SdError(f"claim {name!r} disclosed twice")
        out.disclosed[name] = value
    cnf = payload.get("cnf")
    if cnf is None:
        if parsed.kb_jwt:
            raise SdError("a key-binding JWT is present but the receipt binds no holder key")
        return out
    holder = cnf_key(cnf)
    if not parsed.kb_jwt:
        raise SdError("the receipt is bound to a holder key: the presentation needs a KB-JWT")
    kb_header, kb, kb_input, kb_sig = _open_jws(parsed.kb_jwt, "KB-JWT")
    if kb_header.get("typ") != KB_TYP:
        raise SdError(f"KB-JWT: typ must be {KB_TYP!r}")
    if not _ed25519_ok(holder, kb_sig, kb_input):
        raise SdError("KB-JWT: the signature does not verify with the holder key in cnf")
    if kb.get("sd_hash") != sd_hash(parsed.without_kb):
        raise SdError("KB-JWT: sd_hash does not match the presented SD-JWT")
    if (
        not isinstance(kb.get("iat"), int)
        or not isinstance(kb.get("nonce"), str)
        or not (isinstance(kb.get("aud"), str))
    ):
        raise SdError("KB-JWT: needs integer iat, string nonce and string aud")
    if nonce is not None and kb["nonce"] != nonce:
        raise SdError("KB-JWT: nonce differs from the expected one")
    if audience is not None and kb["aud"] != audience:
        raise SdError("KB-JWT: aud differs from the expected audience")
    out.key_binding = kb
    return out


def cnf_key(cnf: Any) -> bytes:
    """The raw Ed25519 holder key of a ``cnf`` claim; raises :class:`SdError` if malformed."""
    jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise SdError("cnf: expected an Ed25519 OKP jwk")
    key = b64url_decode(jwk.get("x", ""), "cnf.jwk.x")
    if len(key) != 32:
        raise SdError("cnf.jwk.x: an Ed25519 key has 32 bytes")
    return key
