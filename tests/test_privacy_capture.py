"""Three nodes over real gRPC (issue, a plain and a priced cross-node transfer, a claim, sync,
the duplicate-device sweep, the holdings audit, a settlement round): no exact location, meter
id, account label, undisclosed identity, token or secret appears in any federation message
(both directions), export file, log line (every logger at DEBUG, and the nodes' log files) or
TRANSPARENCY read.  docs/privacy.md "What the capture test adds"."""

from __future__ import annotations

import json
import logging
import struct

import pytest
from privacy_scenario import (
    BENEFICIARY,
    EVIDENCE,
    IDENTITY_B,
    LABEL_A,
    LABEL_B,
    LAT,
    LOCAL_REF,
    LON,
    METER,
    NEIGHBOUR_METERS,
    build,
)

from eap.node.crypto import sd
from eap.node.crypto.meter_oprf import normalise_meter_id


def _float_forms(x: float) -> list[bytes]:
    texts = {repr(x), str(x), f"{x:.6f}", f"{x:.5f}", f"{x:.4f}", f"{x:.7f}", f"{x:g}"}
    out = [t.encode() for t in texts]
    out += [struct.pack("<d", x), struct.pack(">d", x), struct.pack("<f", x), struct.pack(">f", x)]
    return out


def forbidden(s) -> dict[str, list[bytes]]:
    """What must never appear, by kind, as the byte strings to look for."""
    out = {
        "latitude": _float_forms(LAT),
        "longitude": _float_forms(LON),
        "meter id": [
            m.encode()
            for meter in (METER, *NEIGHBOUR_METERS)
            for m in {meter, meter.lower(), normalise_meter_id(meter)}
        ],
        "account label": [LABEL_A.encode(), LABEL_B.encode()],
        "device local ref": [LOCAL_REF.encode()],
        "attestation evidence": [EVIDENCE.encode()],
        "identity": [IDENTITY_B.encode()],
    }
    for kind, values in s.secrets.items():
        out[kind] = [v.encode() for v in values if v]
    out["node secret"] += [bytes.fromhex(v) for v in s.secrets["node secret"]]
    out["private key"].append(s.values["account.holder_private_key"])
    return out


def _sources(s, caplog_lines: list[str]):
    for i, (rpc, direction, data) in enumerate(s.wire):
        yield f"federation message #{i} {rpc} {direction}", data, "wire"
    for name, data in s.exports.items():
        yield f"export {name}", data, "export"
    for i, line in enumerate(s.logs + caplog_lines):
        yield f"log line #{i}", line.encode(), "log"
    for m in s.fed:
        for path in m.home.rglob("*.log"):
            yield f"log file {path.name} of {m.node_id}", path.read_bytes(), "log"
    yield (
        "TRANSPARENCY reads",
        json.dumps(s.reads["TRANSPARENCY"], default=str).encode(),
        "transparency",
    )


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        s = build(tmp_path_factory.mktemp("privacy-capture"), mp)
        try:
            yield s
        finally:
            s.fed.close()


def test_every_kind_of_message_was_captured(captured):
    rpcs = {(rpc, d) for rpc, d, _ in captured.wire}
    for rpc in (
        "Hello",
        "PullBatches",
        "PrepareTransfer",
        "DecideTransfer",
        "ReportRetirement",
        "GetHoldings",
        "CheckDevices",
        "GetSettlementView",
        "SignSettlement",
        "FinalizeSettlement",
    ):
        assert (rpc, "request") in rpcs and (rpc, "response") in rpcs, rpc
    assert len(captured.logs) > 50 and any("DEBUG" in ln or ln for ln in captured.logs)
    assert {"proof a.example", "proof b.example", "audit report"} <= set(captured.exports)
    # The new outputs of the public API and CLI are scanned like any export.
    assert {
        "api aggregates GetAggregates",
        "api aggregates --json",
        "api matching report",
        "api SD presentation",
    } <= set(captured.exports)


def test_nothing_private_leaves_in_messages_exports_logs_or_public_reads(captured, caplog):
    caplog.set_level(logging.DEBUG)
    bad = forbidden(captured)
    leaks = []
    for where, data, kind in _sources(captured, [r.getMessage() for r in caplog.records]):
        for what, needles in bad.items():
            if what == "identity" and kind == "transparency":
                continue  # disclosed by its holder: public on purpose (docs/privacy.md)
            for needle in needles:
                if needle and needle in data:
                    leaks.append(f"{what} {needle!r} in {where}")
                    break
    assert not leaks, "\n".join(leaks[:20])


def test_the_scanner_finds_what_it_looks_for(captured):
    """The same scan over the operator's own reads finds the private values: a scanner that
    finds nothing would pass the test above vacuously."""
    bad = forbidden(captured)
    ops = json.dumps(captured.reads["OPERATIONS"], default=str).encode()
    for what in ("latitude", "longitude", "meter id", "account label", "device local ref"):
        assert any(n in ops for n in bad[what]), what
    assert any(
        n in json.dumps(captured.reads["TRANSPARENCY"]).encode() for n in bad["identity"]
    )  # the disclosed identity is public
    assert all(
        bad[k]
        for k in ("node secret", "api token", "account token", "regulator token", "private key")
    )


def test_the_new_outputs_say_something(captured):
    """The aggregates (RPC and CLI), the matching report and the presentation scanned above
    carry their content: a scan of empty outputs would pass vacuously."""
    ex = captured.exports
    for name in ("api aggregates GetAggregates", "api aggregates --json"):
        assert b"CO-ANT" in ex[name] and b"issued" in ex[name], name
    assert b"cfe" in ex["api matching report"].lower()
    assert ex["api SD presentation"].count(b"~") >= 2


def test_a_presentation_carries_no_undisclosed_value(captured):
    """The beneficiary, stated purpose, owner and device of the claim were not chosen for the
    presentation: they appear in none of its parts, even decoded."""
    shown = captured.exports["api SD presentation"].decode()
    parsed = sd.parse(shown)
    opened = shown + json.dumps(
        [sd.unverified_payload(shown), [sd.decode_disclosure(d) for d in parsed.disclosures]]
    )
    v = captured.values
    for hidden in (BENEFICIARY, v["claim.purpose"], v["transfer.to_account"], v["device.id"]):
        assert hidden not in opened, hidden
    full = captured.values["claim.sd_receipt"]
    decoded = json.dumps([sd.decode_disclosure(d) for d in sd.parse(full).disclosures])
    assert BENEFICIARY in decoded  # the full receipt had it: the presentation dropped it
