"""The plugin system: hooks documented and tested, allow-list, third-party plugins, anchoring."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from support import write_csv

from eap.node.errors import InvalidArgument, NotFound, PluginError
from eap.node.meters import MeterReadings
from eap.node.records.enums import Purpose
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


# -- plugin failures are bounded and name the plugin ------------------------------------------

SLOW = {"plugins": {"timeout_s": 0.3}}


class Hang:
    """Blocks until released (a plugin that hangs past the node's timeout)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, *args, **kw):
        self.release.wait(10)
        return []


def _readings_file(tmp_path, name="m.csv", wh=100):
    return write_csv(tmp_path / name, [("2024-01-01 10:00:00", "2024-01-01 11:00:00", "1", wh)])


def test_eap_attest_device_plugin_that_hangs_refuses_cleanly(eap_node_factory):
    hang = Hang()

    class SlowRegistry:
        @hookimpl
        def eap_attest_device(self, device, scheme, evidence):
            return hang() or {"ref": "never"}

    node = eap_node_factory(plugins=[SlowRegistry()], config=SLOW)
    owner = node.create_account(request_id="o").account.id
    with pytest.raises(PluginError, match="plugin SlowRegistry did not answer"):
        _device(node, owner)
    hang.release.set()
    assert node.status().devices == 0


# -- validation policies ------------------------------------------------------------------------


class MaxCapacity:
    @hookimpl
    def eap_validate_device(self, device):
        if device["capacity_w"] > 100:
            return [("device.capacity_w", "above this co-op's 100 W limit")]
        return []


def test_eap_validate_device_refuses_before_anything_changes(eap_node_factory):
    node = eap_node_factory(plugins=[MaxCapacity()])
    owner = node.create_account(request_id="o").account.id
    with pytest.raises(InvalidArgument, match=r"100 W limit \(plugin MaxCapacity\)"):
        _device(node, owner, capacity_w=250)
    assert node.status().devices == 0
    assert _device(node, owner, request_id="d2", capacity_w=90).capacity_w == 90


def test_eap_validate_device_plugin_that_raises_or_hangs_names_itself(eap_node_factory):
    class Broken:
        @hookimpl
        def eap_validate_device(self, device):
            raise RuntimeError("policy database unreachable")

    node = eap_node_factory(plugins=[Broken()], config=SLOW)
    owner = node.create_account(request_id="o").account.id
    with pytest.raises(PluginError, match="plugin Broken failed in eap_validate_device"):
        _device(node, owner)
    hang = Hang()

    class Stuck:
        @hookimpl
        def eap_validate_device(self, device):
            return hang()

    node = eap_node_factory(plugins=[Stuck()], config=SLOW)
    owner = node.create_account(request_id="o").account.id
    with pytest.raises(PluginError, match=r"plugin Stuck did not answer .* within 0.3 s"):
        _device(node, owner)
    hang.release.set()
    assert node.status().devices == 0


def test_eap_validate_readings_refuses_whole_import(eap_node_factory, tmp_path):
    class NoSpikes:
        @hookimpl
        def eap_validate_readings(self, readings, source):
            big = readings.wh > 150
            return [
                {"field": f"readings[{readings.meters[readings.meter[i]]}]", "description": "spike"}
                for i in big.nonzero()[0]
            ]

    node = eap_node_factory(plugins=[NoSpikes()])
    owner = node.create_account(request_id="o").account.id
    _device(node, owner)
    with pytest.raises(InvalidArgument, match=r"spike \(plugin NoSpikes\)"):
        node.import_readings(_readings_file(tmp_path, wh=200), request_id="i")
    assert node.status().readings == 0
    assert node.import_readings(_readings_file(tmp_path, "ok.csv", 120), request_id="i2").wh == 120


# -- record lifecycle events --------------------------------------------------------------------


def test_eap_record_event_after_commit_and_failures_never_undo(eap_node_factory, tmp_path, caplog):
    seen = []

    class Recorder:
        @hookimpl
        def eap_record_event(self, event):
            seen.append(event)

    class Broken:
        @hookimpl
        def eap_record_event(self, event):
            raise RuntimeError("webhook down")

    node = eap_node_factory(plugins=[Recorder(), Broken()])
    owner = node.create_account(request_id="o").account.id
    other = node.create_account(request_id="o2").account.id
    _device(node, owner)
    node.import_readings(_readings_file(tmp_path), request_id="i")
    issued = node.issue(request_id="s")
    bundle = node.list_bundles(purpose=Purpose.OPERATIONS).items[0]
    moved = node.transfer(bundle.id, to_account=other, wh=40, request_id="t")
    node.retire(moved.remainder.id, beneficiary="x", purpose="scope2", wh=10, request_id="r")
    assert [e["type"] for e in seen] == ["issued", "transferred", "retired"]
    assert seen[0]["batch_seq"] == issued.batch_seq and seen[0]["wh"] == 100
    assert seen[1]["to_account"] == other and seen[1]["wh"] == 40
    assert all(e["node_id"] == node.node_id for e in seen)
    assert "plugin Broken failed" in caplog.text
    node.transfer(bundle.id, to_account=other, wh=40, request_id="t")  # a replay: no event
    assert len(seen) == 3


# -- account directories ------------------------------------------------------------------------


class MemberDirectory:
    name = "members"

    def __init__(self, mapping, fail=False) -> None:
        self.mapping, self.fail = mapping, fail

    def lookup(self, ctx, member_ref):
        assert ctx.node_id  # the node's context, like settlement backends get
        if self.fail:
            raise ConnectionError("member database went away")
        return self.mapping.get(member_ref)

    def health(self, ctx):
        return {"ok": not self.fail, "detail": f"{len(self.mapping)} members"}


class DirectoryPlugin:
    def __init__(self, directory) -> None:
        self.directory = directory

    @hookimpl
    def eap_account_directories(self):
        return [self.directory]


def test_eap_account_directories_lookup_and_health(eap_node_factory):
    from eap.node.domain import directories

    node = eap_node_factory(plugins=[DirectoryPlugin(MemberDirectory({}))])
    acct = node.create_account(request_id="o").account.id
    plugin = next(p for p in node.plugins.get_plugins() if isinstance(p, DirectoryPlugin))
    plugin.directory.mapping["M-0042"] = acct
    assert directories.lookup(node, "members", "M-0042") == acct
    assert directories.lookup(node, "members", "M-9999") is None
    with pytest.raises(NotFound, match=r"loaded: .*members"):
        directories.lookup(node, "nope", "M-0042")
    health = {d["name"]: d for d in directories.health(node)}
    assert health["members"] == {
        "name": "members", "plugin": "DirectoryPlugin", "ok": True, "detail": "1 members"}
    plugin.directory.fail = True
    with pytest.raises(PluginError, match=r"plugin DirectoryPlugin failed .*went away"):
        directories.lookup(node, "members", "M-0042")
    assert {d["name"]: d for d in directories.health(node)}["members"]["ok"] is False


# -- anchoring through the durable queue --------------------------------------------------------


def _issue_day(node, tmp_path, day):
    f = write_csv(
        tmp_path / f"d{day}.csv",
        [(f"2024-01-0{day} 10:00:00", f"2024-01-0{day} 11:00:00", "1", 100)],
    )
    node.import_readings(f, request_id=f"i{day}")
    return node.issue(request_id=f"s{day}")


class SimulatedCrash(BaseException):
    """Stands for the process dying: no ``except Exception`` swallows it."""


def test_eap_batch_issued_crash_between_commit_and_anchor_catches_up_once(
    eap_node_factory, tmp_path, monkeypatch
):
    from eap.node.domain import anchoring

    # anchor_log as the only anchoring plugin (evm, also built in, anchors only when configured)
    monkeypatch.setenv("EAP_PLUGINS", "meter_files,operator_attestation,anchor_log")
    node = eap_node_factory()
    owner = node.create_account(request_id="o").account.id
    _device(node, owner)

    def crash(*args, **kw):
        raise SimulatedCrash

    with monkeypatch.context() as m:
        m.setattr(anchoring, "drain", crash)
        with pytest.raises(SimulatedCrash):
            _issue_day(node, tmp_path, 1)
    assert node.status().wh_issued == 100  # committed
    log = node.config.home / LOG_NAME
    assert not log.exists()  # ... but not anchored
    assert anchoring.status(node)[0] == {
        "plugin": "anchor_log",
        "loaded": True,
        "anchored": 0,
        "pending": 1,
        "oldest_pending": 1,
        "last_error": "",
    }
    assert anchoring.drain(node) == {"anchored": 1, "failed": {}, "pending": 0}
    assert anchoring.drain(node) == {"anchored": 0, "failed": {}, "pending": 0}
    assert verify_log(log) == 1

    # a crash after the plugin answered but before the queue recorded it: sent again with the
    # same seq, and the log does not append it twice
    with monkeypatch.context() as m:
        m.setattr(anchoring, "mark_done", crash)
        m.setattr(anchoring, "drain", crash)
        with pytest.raises(SimulatedCrash):
            _issue_day(node, tmp_path, 2)
        m.undo()
    with monkeypatch.context() as m:
        m.setattr(anchoring, "mark_done", crash)
        with pytest.raises(SimulatedCrash):
            anchoring.drain(node)
    assert verify_log(log) == 2
    assert anchoring.drain(node)["anchored"] == 1
    assert verify_log(log) == 2
    assert [json.loads(x)["seq"] for x in log.read_text().splitlines()] == [1, 2]


def test_eap_batch_issued_gets_the_signature_in_the_batch(eap_node_factory, tmp_path,
                                                         monkeypatch):
    """Anchoring reads a batch's signature from its own column (migration 0023), not from the
    5 MB payload; a batch stored before the column (NULL there) is read from its payload."""
    from sqlalchemy import select, update

    from eap.node import batches
    from eap.node.domain import anchoring
    from eap.node.store import schema as t

    class Recorder:
        def __init__(self) -> None:
            self.sent: dict[int, bytes] = {}

        @hookimpl
        def eap_batch_issued(self, seq, signature):
            self.sent[seq] = signature

    rec = Recorder()
    node = eap_node_factory(plugins=[rec])
    owner = node.create_account(request_id="o").account.id
    _device(node, owner)
    _issue_day(node, tmp_path, 1)
    with monkeypatch.context() as m:
        m.setattr(anchoring, "drain", lambda *a, **k: None)  # queued, not yet sent
        _issue_day(node, tmp_path, 2)
    with node.store.transaction() as conn:
        conn.execute(update(t.batches).where(t.batches.c.seq == 2).values(signature=None))
    anchoring.drain(node)
    with node.store.read() as conn:
        stored = {r.seq: r for r in conn.execute(select(t.batches)).all()}
    assert stored[1].signature is not None and stored[2].signature is None
    signed = {seq: batches.parse(r.payload).signature for seq, r in stored.items()}
    assert rec.sent == signed
    assert bytes(stored[1].signature) == signed[1] and len(signed[1]) == 64


def test_eap_batch_issued_plugin_down_does_not_stop_issuance(eap_node_factory, tmp_path):
    from eap.node.domain import anchoring

    class Chain:
        def __init__(self) -> None:
            self.up, self.sent = False, []

        @hookimpl
        def eap_batch_issued(self, seq, merkle_root):
            if not self.up:
                raise ConnectionError("chain RPC unreachable")
            self.sent.append(seq)

    chain = Chain()
    node = eap_node_factory(plugins=[chain])
    owner = node.create_account(request_id="o").account.id
    _device(node, owner)
    for day in (1, 2):
        assert _issue_day(node, tmp_path, day).wh == 100
    assert verify_log(node.config.home / LOG_NAME) == 2  # the other anchor is not held up
    state = {s["plugin"]: s for s in anchoring.status(node)}
    assert state["Chain"]["pending"] == 2 and "unreachable" in state["Chain"]["last_error"]
    chain.up = True
    assert anchoring.drain(node)["anchored"] == 2
    assert anchoring.drain(node)["anchored"] == 0
    assert chain.sent == [1, 2]


def test_plugins_command_lists_plugins_versions_hooks_and_health(tmp_path):
    from click.testing import CliRunner

    from eap.node.cli import main

    home = tmp_path / "home"
    runner = CliRunner()
    assert runner.invoke(main, ["init", "--node-id", "a.example", "--zone", "ZZ", "--home",
                                str(home)]).exit_code == 0
    out = runner.invoke(main, ["plugins", "--json", "--home", str(home)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["anchor_log"] == {
        "name": "anchor_log", "version": "built-in", "hooks": ["eap_batch_issued"]
    }
    assert "eap_settlement_backends" in by_name["coop_ledger"]["hooks"]
    kinds = {(b["kind"], b["name"]): b for b in data["backends"]}
    assert kinds[("settlement", "coop-ledger")]["ok"] is True
    assert kinds[("anchoring", "anchor_log")]["ok"] is True
    out = runner.invoke(main, ["anchor", "catch-up", "--json", "--home", str(home)])
    assert json.loads(out.output) == {"anchored": 0, "failed": {}, "pending": 0}


# -- the attestation baseline: the utility's signed allowlist ------------------------------------


def test_eap_attest_device_utility_allowlist_and_operator_signed_opt_in(eap_node_factory, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from eap.plugins.utility_allowlist import sign_allowlist

    utility = Ed25519PrivateKey.generate()
    pub = utility.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    allow = tmp_path / "allowlist.json"
    sign_allowlist(allow, ["1", "7"], utility, utility="EPM", issued_at="2024-01-01")
    node = eap_node_factory(
        operator_signed=False,
        config={"attestation": {"allowlist": str(allow), "utility_public_key": pub}},
    )
    owner = node.create_account(request_id="o").account.id
    with pytest.raises(InvalidArgument, match="operator-signed is for demos"):
        _device(node, owner)
    dev = _device(node, owner, request_id="d1", attestation_scheme="utility-allowlist")
    assert dev.attested_by == "utility-allowlist" and len(dev.attestation_ref) == 32
    with pytest.raises(InvalidArgument, match="not on the utility's signed allowlist"):
        _device(node, owner, request_id="d2", local_ref="r2", meter_id="2",
                attestation_scheme="utility-allowlist")
    forged = json.loads(allow.read_text())
    forged["payload"]["meter_ids"].append("2")  # the operator edits the list: refused
    allow.write_text(json.dumps(forged))
    with pytest.raises(InvalidArgument, match="signature does not verify"):
        _device(node, owner, request_id="d3", local_ref="r2", meter_id="2",
                attestation_scheme="utility-allowlist")
    assert node.status().devices == 1


# -- meter pullers --------------------------------------------------------------------------------


class RecordingPuller:
    """A remote source that "pulls" fixed readings through the node's import path."""

    name = "fixed"

    def __init__(self, readings) -> None:
        self.readings, self.calls = readings, []

    def pull_into_node(self, node, subscriptions=None, *, request_id):
        self.calls.append((tuple(subscriptions or ()), request_id))
        return []

    def health(self, node):
        return {"ok": True, "detail": "always"}


class PullerPlugin:
    def __init__(self, puller) -> None:
        self.puller = puller

    @hookimpl
    def eap_meter_pullers(self):
        return [self.puller]


def test_eap_meter_pullers_collects_every_source_and_the_cli_picks_one(eap_node_factory):
    node = eap_node_factory(plugins=[PullerPlugin(RecordingPuller([]))])
    pullers = {p.name: p for found in node.plugins.hook.eap_meter_pullers() for p in found}
    assert {"fixed", "greenbutton_connect"} <= set(pullers)
    # the built-in Green Button Connect puller stays inactive until configured
    assert pullers["greenbutton_connect"].health(node)["ok"] is False
    assert "not configured" in pullers["greenbutton_connect"].health(node)["detail"]
    assert pullers["fixed"].pull_into_node(node, ["s1"], request_id="r") == []
    assert pullers["fixed"].calls == [(("s1",), "r")]
