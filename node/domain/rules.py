"""Field rules for requests (DESIGN §3): bounded strings, closed enums, physical bounds.

A :class:`Checker` collects every violation of a request and raises one
:class:`~eap.node.errors.InvalidArgument` listing them all, before anything is changed.
Per-record rules over whole batches run in the ``_core`` kernels (:mod:`eap.node.kernels`).
"""

from __future__ import annotations

import datetime as dt
import re

from eap.node.errors import FieldViolation, InvalidArgument

NODE_ID_RE = re.compile(
    r"^(?=.{1,128}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
ZONE_RE = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,8}){0,3}$")
ACCOUNT_RE = re.compile(r"^acct_[a-z2-7]{26}$")
REQUEST_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
LOCAL_REF_RE = re.compile(r"^[\w.:-]{1,64}$")
DEVICE_ID_RE = re.compile(r"^dev_[a-z2-7]{26}$")
BUNDLE_ID_RE = re.compile(r"^[a-z0-9.-]{1,128}/[0-9]{1,19}-[0-9]{1,19}$")
#: A claim sequence number as a page token (18 digits stay below 2**63).
CLAIM_SEQ_RE = re.compile(r"^[0-9]{1,18}$")

MAX_CAPACITY_W = 10**12  # 1 TW: larger is not a device
#: Largest Wh of one meter reading: a 1 TW device over a full hour (far below 2**53).
MAX_READING_WH = MAX_CAPACITY_W
MAX_RENEWABLE_PPM = 1_000_000
MAX_CARBON_MG = 2_000_000  # 2000 g CO2e/kWh, above the dirtiest lignite
MAX_INTERVAL_S = 3600


def interval_violation(start: int, end: int) -> str | None:
    """Why ``[start, end)`` is not a valid record interval, or None."""
    if end <= start:
        return "end must be after start"
    duration = end - start
    if duration > MAX_INTERVAL_S:
        return f"interval is {duration} s; at most {MAX_INTERVAL_S} s"
    if MAX_INTERVAL_S % duration or start % duration:
        return f"interval of {duration} s must divide the hour and start on a multiple of it"
    return None


def page_token(token: str, pattern: re.Pattern[str]) -> str:
    """``token`` when empty (first page) or well-formed for its listing, else INVALID_ARGUMENT.

    Tokens are keys of the listing's order (an id, a sequence number); anything else was not
    handed out by this node and would silently restart or skip the listing.
    """
    if token and not pattern.match(token):
        raise InvalidArgument(
            "invalid request",
            [FieldViolation("page_token", "malformed; pass the previous next_page_token")],
        )
    return token


#: Control characters (below U+0020), refused in every text field.
_CONTROL = re.compile(r"[\x00-\x1f]")


class Checker:
    """Accumulates field violations; :meth:`done` raises them all at once."""

    def __init__(self, message: str = "invalid request") -> None:
        self.message = message
        self.violations: list[FieldViolation] = []

    def fail(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def require(self, ok: bool, field: str, description: str) -> bool:
        if not ok:
            self.fail(field, description)
        return ok

    def text(
        self,
        value: str | None,
        field: str,
        *,
        min_len: int = 1,
        max_len: int = 128,
        pattern: re.Pattern[str] | None = None,
        hint: str = "",
    ) -> None:
        value = value or ""
        if not min_len <= len(value) <= max_len:
            self.fail(field, f"must be {min_len}..{max_len} characters")
        elif pattern is not None and not pattern.match(value):
            self.fail(field, f"malformed{': ' + hint if hint else ''}")
        elif _CONTROL.search(value):
            self.fail(field, "must not contain control characters")

    def int_range(self, value: int, field: str, lo: int, hi: int, unit: str = "") -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, "must be an integer")
        elif not lo <= value <= hi:
            self.fail(field, f"must be within {lo}..{hi}{' ' + unit if unit else ''}")

    def interval(self, start: int, end: int, field: str) -> None:
        why = interval_violation(start, end)
        if why:
            self.fail(field, why)

    def iso_date(self, value: str, field: str) -> None:
        try:
            day = dt.date.fromisoformat(value)
        except (TypeError, ValueError):
            self.fail(field, "must be an ISO date YYYY-MM-DD")
            return
        if day > dt.datetime.now(dt.UTC).date():
            self.fail(field, "must not be in the future")

    def done(self) -> None:
        if self.violations:
            raise InvalidArgument(self.message, list(self.violations))
