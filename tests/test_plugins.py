"""The plugin system: hooks documented and tested, allow-list, third-party plugins, anchoring."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
from support import write_csv

from eap.node.errors import InvalidArgument
from eap.node.meters import MeterReadings
from eap.plugins import hookimpl, hookspecs
from eap.plugins.anchor_log import LOG_NAME, verify_log

HOOKS = [
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("eap_")
]


def test_every_hook_is_documented_and_tested():
    tests = [n for n in globals() if n.startswith("test_")]
    for name in HOOKS:
        assert inspect.getdoc(getattr(hookspecs, name)), f"{name} has no docstring"
        assert any(name in t for t in tests), f"{name} has no test named after it"


class TsvSource:
    """A third-party meter format: ``meter<TAB>start<TAB>wh`` hourly rows."""

    name = "tsv"

    def sniff(self, path):
        return path.suffix == ".tsv"

    def read(self, path, *, options=None):
        rows = [line.split("\t") for line in path.read_text().splitlines() if line]
        meters = sorted({r[0] for r in rows})
        start = np.array([int(r[1]) for r in rows])
        return MeterReadings(
            meters=meters,
            meter=np.array([meters.index(r[0]) for r in rows]),
            interval_start=start,
            interval_end=start + 3600,
            wh=np.array([int(r[2]) for r in rows]),
            kind="production",
            source=self.name,
        )


class TsvPlugin:
    @hookimpl
    def eap_meter_sources(self):
        return [TsvSource()]


class GridRegistryAttestation:
    """A stricter scheme: evidence must be a registry number known to the 'grid registry'."""

    known = {"GR-2020-117"}

    @hookimpl
    def eap_attest_device(self, device, scheme, evidence):
        if scheme != "grid-registry":
            return None
        if evidence not in self.known:
            raise InvalidArgument("attestation rejected")
        return {"ref": f"grid-registry:{evidence}"}


def _device(node, owner, **kw):
    args = dict(
        request_id="d",
        local_ref="roof-1",
        capacity_w=250,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2020-05-01",
        latitude=6.2,
        longitude=-75.5,
        zone="CO-ANT",
        owner=owner,
        meter_id="1",
        attestation_evidence="interconnection 2020/117",
    )
    args.update(kw)
    return node.register_device(**args)


def test_eap_meter_sources_from_a_third_party_plugin(eap_node_factory, tmp_path):
    node = eap_node_factory(plugins=[TsvPlugin()])
    assert next(s.name for s in node.meter_sources()) == "tsv"  # plugins before built-ins
    owner = node.create_account(request_id="o").account.id
    _device(node, owner)
    f = tmp_path / "m.tsv"
    f.write_text("1\t1704067200\t90\n1\t1704070800\t80\n")
    assert node.import_readings(f, request_id="i").wh == 170
    assert node.issue(request_id="s").wh == 170


def test_eap_attest_device_plugin_accepts_and_rejects(eap_node_factory):
    node = eap_node_factory(plugins=[GridRegistryAttestation()])
    owner = node.create_account(request_id="o").account.id
    dev = _device(
        node, owner, attestation_scheme="grid-registry", attestation_evidence="GR-2020-117"
    )
    assert dev.attested_by == "grid-registry" and dev.attestation_ref.endswith("GR-2020-117")
    with pytest.raises(InvalidArgument):
        _device(
            node,
            owner,
            request_id="d2",
            local_ref="roof-2",
            meter_id="2",
            attestation_scheme="grid-registry",
            attestation_evidence="forged",
        )
    with pytest.raises(InvalidArgument, match="scheme"):
        _device(
            node,
            owner,
            request_id="d3",
            local_ref="roof-3",
            meter_id="3",
            attestation_scheme="self-declared",
        )
    assert node.status().devices == 1


def test_eap_batch_issued_anchors_hash_chained_roots(eap_node_factory, tmp_path):
    node = eap_node_factory()
    owner = node.create_account(request_id="o").account.id
    _device(node, owner)
    roots = []
    for day in range(2):
        f = write_csv(
            tmp_path / f"m{day}.csv",
            [(f"2024-01-0{day + 1} 10:00:00", f"2024-01-0{day + 1} 11:00:00", "1", 100)],
        )
        node.import_readings(f, request_id=f"i{day}")
        roots.append(node.issue(request_id=f"s{day}").merkle_root.hex())
    log = node.config.home / LOG_NAME
    assert verify_log(log) == 2
    assert [json.loads(x)["root"] for x in log.read_text().splitlines()] == roots
    lines = log.read_text().splitlines()
    lines[0] = lines[0].replace(roots[0], "00" * 32)
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="broken chain"):
        verify_log(log)


def test_eap_settlement_backends_built_in_and_third_party(eap_node_factory, eap_flaky_backend):
    from eap.node.domain import settlement_backends

    flaky = eap_flaky_backend(failures=0, name="third-party")
    node = eap_node_factory(plugins=[flaky], settlement={"backend": "third-party"})
    offered = settlement_backends.available(node.plugins)
    assert offered["coop-ledger"][0] == "coop_ledger"  # a built-in, registered like any plugin
    assert offered["third-party"] == ("FlakyBackendPlugin", flaky.backend)
    assert settlement_backends.select(node)[1] is flaky.backend


def test_allow_list_limits_loaded_plugins(tmp_path):
    code = (
        "from eap.plugins.manager import get_plugin_manager;"
        "print(sorted(n for n, _ in get_plugin_manager().list_name_plugin()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"EAP_PLUGINS": "meter_files", "PATH": ""},
        check=True,
    ).stdout
    assert out.strip() == "['meter_files']"


def test_eap_settlement_backends_flaky_switch_loads_the_test_backend(monkeypatch):
    """``EAP_TEST_FLAKY_BACKEND=N`` registers the ``flaky`` backend (for serve processes in
    fault tests); unset, it is not there."""
    from eap.node.domain import settlement_backends
    from eap.node.errors import BackendError
    from eap.plugins import flaky_backend
    from eap.plugins.manager import get_plugin_manager

    monkeypatch.setattr(flaky_backend, "_backend", None)
    monkeypatch.delenv("EAP_TEST_FLAKY_BACKEND", raising=False)
    assert "flaky" not in settlement_backends.available(get_plugin_manager(load_entry_points=False))
    monkeypatch.setenv("EAP_TEST_FLAKY_BACKEND", "3")
    pm = get_plugin_manager(load_entry_points=False)
    plugin, backend = settlement_backends.available(pm)["flaky"]
    assert plugin == "flaky_backend" and backend.failures == 3
    assert settlement_backends.available(pm)["flaky"][1] is backend  # one instance: counts kept
    monkeypatch.setattr(flaky_backend, "_backend", None)
    monkeypatch.setenv("EAP_TEST_FLAKY_BACKEND", "often")
    with pytest.raises(BackendError, match=r"flaky_backend.*EAP_TEST_FLAKY_BACKEND"):
        settlement_backends.available(get_plugin_manager(load_entry_points=False))
