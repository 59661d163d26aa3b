"""docs/privacy.md's table, enforced: each `yes`/`no` cell of each row is checked against a
three-node federation running over real gRPC (tests/privacy_scenario.py).

Data-driven: the rows come from the document; a probe per audience decides whether a field's
value is visible to it.  Rows marked ``pending: …`` are skipped with that reason."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import struct
from pathlib import Path
from typing import Any

import grpc
import h3
import pytest
from privacy_api import SHOWN
from privacy_scenario import BENEFICIARY, LAT, LON, Scenario, build

from eap.node.crypto import sd
from eap.node.domain import cells, receipts

DOC = Path(__file__).resolve().parents[1] / "docs" / "privacy.md"
AUDIENCES = ("holder", "operator", "peer", "regulator", "public")


def parse_table(text: str) -> list[dict[str, str]]:
    """The rows of the table under "## The table" as dicts (cells stripped, backticks off)."""
    section = text.split("## The table", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


ROWS = parse_table(DOC.read_text())


def test_table_is_well_formed():
    assert len(ROWS) >= 20
    seen = set()
    for row in ROWS:
        assert re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", row["field"]), row
        assert row["field"] not in seen, f"{row['field']} twice"
        seen.add(row["field"])
        for aud in AUDIENCES:
            assert row[aud] in ("yes", "no", "—"), (row["field"], aud, row[aud])
        assert row["status"] == "checked" or row["status"].startswith("pending: "), row
        assert row["why"], row


# -- probes -------------------------------------------------------------------------------------


def encodings(value: Any) -> list[bytes]:
    """How ``value`` may appear in bytes: text forms, binary forms; [] when not searchable."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, float):
        texts = {repr(value), str(value), f"{value:.6f}", f"{value:.5f}", f"{value:.4f}"}
        return [x.encode() for x in texts] + [struct.pack("<d", value), struct.pack(">d", value)]
    if isinstance(value, int):
        return []  # small integers occur everywhere in binary messages
    if isinstance(value, bytes):
        return [
            value,
            value.hex().encode(),
            base64.b64encode(value),
            base64.urlsafe_b64encode(value).rstrip(b"="),
        ]
    return [str(value).encode()]


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, bytes):
        return a in (b, b.hex(), base64.b64encode(b).decode())
    if isinstance(b, float) and isinstance(a, int | float) and not isinstance(a, bool):
        return abs(a - b) < 1e-12
    return a == b


def _in_dicts(dicts: list[dict], name: str, value: Any) -> bool:
    return any(name in d and _same(d[name], value) for d in dicts)


def _in_text(dicts: Any, value: Any) -> bool:
    text = json.dumps(dicts, default=str).encode()
    return any(e in text for e in encodings(value) if len(e) >= 4)


class Probes:
    def __init__(self, s: Scenario) -> None:
        self.s = s
        self.wire = b"\x00".join(data for _, _, data in s.wire)
        self.audit = str(s.values["audit"]).encode()
        public_values = {r["field"] for r in ROWS if r["public"] == "yes"}
        self.public_texts = {repr(s.values.get(f)) for f in public_values}

    def entity_reads(self, purpose: str, entity: str) -> list[dict]:
        return self.s.reads[purpose].get(entity, [])

    def holder(self, entity, name, value) -> bool:
        return _in_dicts(self.entity_reads("HOLDINGS", entity), name, value)

    def operator(self, entity, name, value) -> bool:
        return _in_dicts(self.entity_reads("OPERATIONS", entity), name, value) or _in_dicts(
            self.s.operator_views.get(entity, []), name, value
        )

    def peer(self, entity, name, value) -> bool:
        found = [e for e in encodings(value) if e in self.wire]
        return bool(found)

    def public(self, entity, name, value) -> bool:
        if _in_dicts(self.entity_reads("TRANSPARENCY", entity), name, value):
            return True
        # A private string or float must not show anywhere in a public read.
        if isinstance(value, str | float) and repr(value) not in self.public_texts:
            return _in_text(self.s.reads["TRANSPARENCY"], value)
        return False

    def regulator(self, entity, name, value) -> bool:
        if _in_dicts(self.s.reads["REGULATION"].get(entity, []), name, value):
            return True
        return self.public(entity, name, value) or any(
            e in self.audit for e in encodings(value) if len(e) >= 4
        )


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        s = build(tmp_path_factory.mktemp("privacy-table"), mp)
        try:
            yield s
        finally:
            s.fed.close()


@pytest.fixture(scope="module")
def probes(scenario):
    return Probes(scenario)


@pytest.mark.parametrize("row", ROWS, ids=[r["field"] for r in ROWS])
def test_row_holds_in_the_running_system(row, scenario, probes):
    if row["status"] != "checked":
        pytest.skip(f"{row['field']}: {row['status']}")
    field = row["field"]
    assert field in scenario.values, f"privacy_scenario.build has no value for {field}"
    value = scenario.values[field]
    assert value not in (None, "", b""), f"{field} has no value in the scenario"
    entity, name = field.split(".", 1)
    wrong = []
    for aud in AUDIENCES:
        if row[aud] == "—":
            continue
        if aud == "peer" and not encodings(value):
            pytest.fail(f"{field}: an integer cannot be searched in messages; mark peer '—'")
        seen = getattr(probes, aud)(entity, name, value)
        if seen != (row[aud] == "yes"):
            wrong.append(f"{aud}: table says {row[aud]}, system {'shows' if seen else 'hides'}")
    assert not wrong, f"{field}: " + "; ".join(wrong)


def test_the_probes_can_fail(scenario, probes):
    """A probe that sees nothing would make every `no` pass: check each sees something."""
    v = scenario.values
    assert probes.peer("device", "id", v["device.id"])
    assert not probes.peer("device", "meter_id", "never-sent-anywhere-4711")
    assert probes.public("device", "zone", v["device.zone"])
    assert probes.operator("device", "meter_id", v["device.meter_id"])
    assert probes.holder("account", "label", v["account.label"])
    assert probes.regulator("claim", "beneficiary", v["claim.beneficiary"])
    # A location leaked as an IEEE double in one message would be seen.
    lat = v["device.latitude"]
    leaky = dataclasses.replace(
        scenario, wire=[*scenario.wire, ("X", "request", struct.pack("<d", lat))]
    )
    assert not probes.peer("device", "latitude", lat)
    assert Probes(leaky).peer("device", "latitude", lat)
    # The probes of the new reads see their values where they are.
    agg = v["regulator.zone_aggregate"]
    assert agg.startswith("issued@") and probes.regulator("regulator", "zone_aggregate", agg)
    assert probes.operator("regulator", "zone_aggregate", agg)
    assert probes.holder("audit", "row_hash", v["audit.row_hash"])
    assert probes.operator("audit", "row_hash", v["audit.row_hash"])
    assert probes.holder("account", "holder_public_key", v["account.holder_public_key"])


def test_federation_cells_are_coarse_h3_cells(scenario):
    """Every H3 cell in any federation message has the node's configured resolution (<= 7),
    and no finer cell of the device's location appears anywhere on the wire."""
    wire = b"\x00".join(data for _, _, data in scenario.wire)
    configured = scenario.values["h3_resolution"]
    assert configured <= cells.MAX_PUBLIC_RESOLUTION
    assert cells.resolution_of(scenario.values["device.cell"]) == configured
    # Cells near the device: any 15 hex digits from 8 are a valid cell one time in ten, so
    # windows inside longer hex text (hashes, ids) and cells of other continents are noise.
    home = h3.latlng_to_cell(LAT, LON, 0)
    found = {
        c
        for c in (m.decode() for m in re.findall(rb"(?<![0-9a-f])8[0-9a-f]{14}", wire))
        if h3.is_valid_cell(c) and h3.cell_to_parent(c, 0) == home
    }
    assert scenario.values["device.cell"] in found
    assert {cells.resolution_of(c) for c in found} == {configured}, found
    for res in range(configured + 1, 16):
        finer = h3.latlng_to_cell(LAT, LON, res)
        assert finer.encode() not in wire, res
        assert struct.pack(">Q", h3.str_to_int(finer)) not in wire, res


def test_a_presentation_hides_undisclosed_fields(scenario):
    """The holder's presentation carries the chosen fields and not one undisclosed value,
    salt or disclosure of the full receipt, encoded or decoded."""
    full, shown = scenario.values["claim.sd_receipt"], scenario.values["presentation"]
    disclosures = {sd.decode_disclosure(d)[1]: d for d in sd.parse(full).disclosures}
    got = {sd.decode_disclosure(d)[1] for d in sd.parse(shown).disclosures}
    assert got == set(SHOWN)
    hidden = set(receipts.FIELDS) - set(SHOWN)
    assert {"beneficiary", "purpose", "owner", "device"} <= hidden
    opened = shown + json.dumps(
        [
            sd.unverified_payload(shown),
            [sd.decode_disclosure(d) for d in sd.parse(shown).disclosures],
        ]
    )
    shown_values = {json.dumps(sd.decode_disclosure(disclosures[n])[2]) for n in SHOWN}
    for name in hidden:
        salt, _, value = sd.decode_disclosure(disclosures[name])
        if json.dumps(value) in shown_values:
            continue  # e.g. consumption_zone equal to the shown zone: nothing more is learnt
        assert disclosures[name] not in shown and salt not in opened, name
        for form in (json.dumps(value), str(value)):
            if len(form) >= 8:
                assert form not in opened, (name, form)
    assert BENEFICIARY not in opened and scenario.values["device.owner"] not in opened
    assert BENEFICIARY in json.dumps([sd.decode_disclosure(d) for d in disclosures.values()])


def test_the_regulator_token_reads_aggregates_and_nothing_else(scenario):
    refused = scenario.api["refused"]
    by_regulator = [(w, rpc, code) for w, rpc, code in refused if w.startswith("regulator")]
    assert len(by_regulator) == 12
    assert all(code == grpc.StatusCode.PERMISSION_DENIED for _, _, code in by_regulator), refused
    assert ("holder", "GetAggregates", grpc.StatusCode.PERMISSION_DENIED) in refused
    assert (
        "holder",
        "ListAuditEntries(other account)",
        grpc.StatusCode.PERMISSION_DENIED,
    ) in refused
    rep = scenario.api["aggregates_rpc"]
    assert int(rep["k"]) == 5
    published = [c for c in rep["cells"] if not c.get("suppressed")]
    suppressed = [c for c in rep["cells"] if c.get("suppressed")]
    # Hour 1: five devices issued (published); hours 2-4 one device, and every transfer and
    # claim (one holder) stay below k: suppressed, with no Wh.
    assert [(c["metric"], int(c["wh"])) for c in published] == [("issued", 1500 + 900 * 4 + 6)]
    assert len(suppressed) >= 5 and all(not int(c.get("wh", 0)) for c in suppressed)
    assert int(rep["suppressed_cells"]) == len(suppressed)


def test_holders_see_only_their_own_audit_rows(scenario):
    acct = scenario.values["account.id"]
    rows = scenario.reads["HOLDINGS"]["audit"]
    assert rows and all(acct in r.get("accounts", []) for r in rows)
    assert {r["row_hash"] for r in rows} <= {
        r["row_hash"] for r in scenario.operator_views["audit"]
    }
