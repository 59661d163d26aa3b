"""Public device location is an H3 cell no finer than resolution 7 (issue: privacy, part 1).

The operator picks the resolution (``[privacy] h3_resolution``); finer than 7 is refused by
the configuration, by the cell function and, from peers, by the federation's checks.  Every
cell in the federation messages of a real cross-node transfer is checked.
"""

from __future__ import annotations

import re

import h3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_transfers_support import Federation

from eap.node.config import CONFIG_NAME, NodeConfig
from eap.node.domain import cells
from eap.node.errors import ConfigError
from eap.node.federation import inprocess
from eap.node.federation.admission import bundle_violation
from eap.node.records.enums import Purpose


def _set_privacy(home, text: str) -> None:
    path = home / CONFIG_NAME
    path.write_text(path.read_text() + "\n[privacy]\n" + text + "\n")


@pytest.mark.parametrize(
    "setting, message",
    [
        ("h3_resolution = 8", "h3_resolution must be an integer 0..7"),
        ("h3_resolution = 15", "too precisely"),
        ("h3_resolution = -1", "0..7"),
        ('h3_resolution = "7"', "0..7"),
        ("k_anonymity = 1", "k_anonymity must be an integer 2..1000"),
        ("cell_size = 3", "unknown [privacy] setting"),
    ],
)
def test_config_refuses_fine_resolutions_and_bad_settings(node, setting, message):
    _set_privacy(node.config.home, setting)
    with pytest.raises(ConfigError) as err:
        NodeConfig.load(node.config.home)
    assert message in str(err.value)


def test_device_cell_uses_the_configured_resolution(node):
    _set_privacy(node.config.home, "h3_resolution = 5")
    node.config = NodeConfig.load(node.config.home)
    owner = node.create_account(request_id="o").account.id
    dev = node.register_device(
        request_id="d",
        local_ref="roof",
        capacity_w=500,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2021-01-01",
        latitude=6.2442,
        longitude=-75.5812,
        zone="CO-ANT",
        owner=owner,
        meter_id="m1",
        attestation_evidence="grid agreement",
    )
    assert h3.get_resolution(dev.cell) == 5
    assert dev.cell == h3.cell_to_parent(h3.latlng_to_cell(6.2442, -75.5812, 7), 5)
    public = node.list_devices(purpose=Purpose.TRANSPARENCY).items[0]
    assert public.cell == dev.cell and public.latitude is None
    # The bulk path (`eap-node device import`) honours the same setting.
    bulk = node.register_devices(
        [
            {
                "ref": "roof-2", "capacity_w": 500, "source": "solar",
                "technology": "photovoltaic", "commissioned": "2021-01-01",
                "lat": 6.2442, "lon": -75.5812, "zone": "CO-ANT", "owner": owner,
                "meter_id": "m2", "attestation": "grid agreement",
            }
        ],
        request_id="bulk",
    )
    assert bulk.devices == 1
    cells_now = {d.local_ref: d.cell for d in node.list_devices(purpose=Purpose.OPERATIONS).items}
    assert cells_now["roof-2"] == dev.cell


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-90, 90, allow_nan=False),
    st.floats(-180, 180, allow_nan=False),
    st.integers(0, cells.MAX_PUBLIC_RESOLUTION),
)
def test_public_cells_contain_the_point_and_are_never_finer_than_7(lat, lon, res):
    cell = cells.public_cell(lat, lon, res)
    assert cells.cell_problem(cell) is None
    assert cells.resolution_of(cell) == res
    assert h3.latlng_to_cell(lat, lon, res) == cell


@given(st.integers(8, 15))
def test_finer_cells_are_refused_everywhere(res):
    with pytest.raises(ValueError):
        cells.public_cell(6.2, -75.5, res)
    assert "finer than" in cells.cell_problem(h3.latlng_to_cell(6.2, -75.5, res))


def test_legacy_and_malformed_cells():
    assert cells.cell_problem("N06W076") is None and cells.cell_problem("") is None
    assert cells.legacy_cell(6.2442, -75.5812) == "N06W076"
    assert "H3 cell" in cells.cell_problem("not-a-cell")
    assert "H3 cell" in cells.cell_problem("8f66ffffffffff")


_CELL = re.compile(rb"(?<![0-9a-f])8[0-9a-f]{14}(?![0-9a-f])")


def test_every_cell_in_federation_messages_is_resolution_7_or_coarser(tmp_path, monkeypatch):
    seen: list[bytes] = []
    deliver = inprocess.InProcessTransport._deliver

    def spy(self, peer_id, rpc_name, payload_type, payload):
        seen.append(bytes(payload))
        answer = deliver(self, peer_id, rpc_name, payload_type, payload)
        seen.append(bytes(answer[1]))
        return answer

    monkeypatch.setattr(inprocess.InProcessTransport, "_deliver", spy)
    f = Federation(tmp_path, "ab")
    try:
        a = f["a"]
        a.engine.send(a.bundles[1], to=f.to("b"), wh=100, request_id="move")
        f.settle()
        found = {m.decode() for p in seen for m in _CELL.findall(p) if h3.is_valid_cell(m)}
        assert found, "the transfer carried no cell"
        assert all(h3.get_resolution(c) <= cells.MAX_PUBLIC_RESOLUTION for c in found)
        assert cells.public_cell(6.2, -75.5) in found
        # the receiving node stores exactly the issuer's public cell
        b_bundles = [b for b in f.active("b") if b.issuer == "medellin.example"]
        assert b_bundles and {b.cell for b in b_bundles} <= found
    finally:
        f.close()


def test_a_peer_announcing_a_fine_cell_is_refused(tmp_path):
    f = Federation(tmp_path, "a")
    try:
        wire, _ = f.wire("a", f["a"].bundles[0])
        assert bundle_violation(wire) is None
        wire.attributes.cell = h3.latlng_to_cell(6.2, -75.5, 9)
        assert "finer than the public maximum 7" in bundle_violation(wire)
        wire.attributes.cell = "somewhere"
        assert "H3 cell" in bundle_violation(wire)
    finally:
        f.close()
