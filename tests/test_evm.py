"""Plugin ``evm`` against a real in-process chain (eth-tester on py-evm), no mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from support import write_csv

from eap.node.config import NodeConfig
from eap.node.domain import settlement_backends as sb
from eap.node.errors import BackendError, ConfigError

pytest.importorskip("web3")
pytest.importorskip("eth_tester")

from eap.plugins import evm
from eap.plugins.evm_devchain import DevChain

PEER = "barcelona.example"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    ch = DevChain()
    owner = tmp_path_factory.mktemp("owner") / "owner-key"
    ch.new_key(owner)
    ch.deploy(owner)
    yield ch
    ch.close()


@pytest.fixture
def evm_node(eap_node_factory, chain, tmp_path):
    """A node whose [evm] table points at the chain with its own funded, authorised key."""

    def make(settlement_backend="evm", **overrides):
        node = eap_node_factory(settlement={"backend": settlement_backend})
        address = chain.new_key(node.config.home / "evm-key")
        chain.authorise(address)
        node.config.extra["evm"] = {**chain.settings("evm-key"), **overrides}
        node.config.save()
        evm.forget_clients()
        return node

    yield make
    evm.forget_clients()


def _item(node, n, amount=100, side="debit", ins=None):
    return {
        # the homes differ per test, the node ids do not: instruction ids unique on the chain
        "instruction_id": ins or f"{node.node_id}/{node.config.home.parent.name}/r/{n}",
        "round_id": f"{node.node_id}/2026-01-01/r",
        "side": side,
        "payer": f"{node.node_id}/acct_" + "a" * 26,
        "payee": f"{PEER}/acct_" + "f" * 26,
        "amount_minor": amount,
        "currency": "EUR",
    }


def _nonce(chain, node) -> int:
    acct = evm.load_key(node.config.home / "evm-key")
    return chain.w3.eth.get_transaction_count(acct.address)


def test_committed_abi_and_bytecode_are_what_the_sources_compile_to():
    assert evm.compile_contracts() == evm.artifacts(), (
        "plugins/contracts changed: run `python -m eap.plugins.evm` and commit artifacts.json"
    )


def test_eap_batch_issued_anchors_each_batch_and_anchor_verify_checks_it(evm_node, tmp_path):
    node = evm_node()
    owner = node.create_account(request_id="o").account.id
    node.register_device(
        request_id="d", local_ref="roof-1", capacity_w=250, source="solar",
        technology="photovoltaic", commissioned_on="2020-05-01", latitude=6.2,
        longitude=-75.5, zone="CO-ANT", owner=owner, meter_id="1",
        attestation_evidence="interconnection 2020/117",
    )
    for day in (1, 2):
        f = write_csv(tmp_path / f"m{day}.csv",
                      [(f"2024-01-0{day} 10:00:00", f"2024-01-0{day} 11:00:00", "1", 100)])
        node.import_readings(f, request_id=f"i{day}")
        issued = node.issue(request_id=f"s{day}")
        settings = evm.settings_for(node.config.home, "anchoring")
        assert evm.anchored_root(settings, node.node_id, issued.batch_seq) == issued.merkle_root
    # anchoring again (a replayed hook call) is a no-op with the first transaction's hash
    again = evm.anchor(settings, 2, issued.merkle_root, node.node_id)
    assert again["new"] is False and again["reference"].startswith("0x")
    with pytest.raises(BackendError, match="anchored with root"):
        evm.anchor(settings, 2, b"\x01" * 32, node.node_id)

    from eap.node import cli

    cli._NODES[node.config.home] = node
    try:
        ok = CliRunner().invoke(
            cli.main, ["anchor", "verify", "2", "--home", str(node.config.home), "--json"])
        assert ok.exit_code == 0, ok.output
        assert json.loads(ok.output)["reference"] == again["reference"]
        missing = CliRunner().invoke(
            cli.main, ["anchor", "verify", "3", "--home", str(node.config.home)])
        assert missing.exit_code != 0
        # a root anchored for an issuer's batch that this node does not hold: mismatch
        evm.anchor(settings, 7, b"\x02" * 32, "other.example")
        assert evm.verify_batch(node, 1)["ok"]
    finally:
        cli._NODES.pop(node.config.home, None)


def test_settlement_backend_evm_executes_once_per_instruction_id(evm_node, chain):
    node = evm_node()
    first = sb.execute(node, _item(node, 0))
    assert first["backend"] == "evm" and first["reference"].startswith("0x")
    n = _nonce(chain, node)
    assert sb.execute(node, _item(node, 0)) == first  # replay: same receipt, nothing sent
    credit = sb.execute(node, _item(node, 0, side="credit"))  # the other side: same record
    assert credit["reference"] == first["reference"]
    assert _nonce(chain, node) == n
    [ev] = [e for e in chain.events("SettlementLedger", "Settled")
            if bytes(e["args"]["instruction_id"]) == evm.instruction_hash(_item(node, 0)[
                "instruction_id"])]
    assert evm.Client  # the receipt maps back to its instruction through the event
    assert "0x" + bytes(ev["transactionHash"]).hex().removeprefix("0x") == first["reference"]
    assert ev["args"]["amount"] == 100
    health = {h["name"]: h for h in sb.health(node)}["evm"]
    assert health["ok"] and health["selected"]


def test_one_reverted_transaction_neither_fails_nor_duplicates_the_rest(evm_node, chain):
    node = evm_node()
    clash = _item(node, 1, amount=999)  # same instruction id as item 1, other terms
    items = [_item(node, 0), _item(node, 1), clash, _item(node, 2)]
    n = _nonce(chain, node)
    results = sb.execute_many(node, items)
    assert _nonce(chain, node) == n + 4  # four transactions, consecutive nonces
    good = [results[0], results[1], results[3]]
    assert all(isinstance(r, dict) for r in good), results
    assert len({r["reference"] for r in good}) == 3
    assert isinstance(results[2], BackendError) and not results[2].transient
    assert "other terms" in str(results[2])
    again = sb.execute_many(node, items)
    assert _nonce(chain, node) == n + 4  # nothing sent twice
    assert [again[i] for i in (0, 1, 3)] == good and isinstance(again[2], BackendError)


def test_a_transaction_journalled_but_not_broadcast_is_sent_once_after_restart(
        evm_node, chain):
    node = evm_node()
    settings = evm.settings_for(node.config.home, "settlement")
    c = evm.client(settings)
    terms = evm._terms(_item(node, 5))
    # sign and journal as `send` does, then "crash" before broadcasting
    tx = c.ledger.functions.settle(*terms).build_transaction(
        {"from": c.address, "nonce": c.nonce, "chainId": c.chain_id, "gas": settings.gas})
    signed = c.account.sign_transaction(tx)
    c._journal({"key": "lost", "tx": evm._hex(signed.hash), "nonce": c.nonce,
                "from": c.address, "chain_id": c.chain_id,
                "raw": evm._hex(signed.raw_transaction)})
    n = _nonce(chain, node)
    evm.forget_clients()  # restart
    receipt = sb.execute(node, _item(node, 5))
    assert receipt["reference"] == evm._hex(signed.hash)  # the journalled bytes, not new ones
    assert _nonce(chain, node) == n + 1


def test_sigkill_after_send_then_restart_sends_nothing_twice(evm_node, chain, tmp_path):
    node = evm_node()
    url = chain.serve()
    node.config.extra["evm"]["rpc_url"] = url
    node.config.save()
    item = _item(node, 9)
    script = textwrap.dedent(f"""
        import os, signal, json
        from types import SimpleNamespace
        from pathlib import Path
        from eap.plugins import evm
        ctx = SimpleNamespace(home=Path({str(node.config.home)!r}), settings={{}})
        r = evm.EvmSettlement().execute(ctx, json.loads({json.dumps(item)!r}), "k")
        print(r["reference"], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # before the node could record the receipt
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    sent = proc.stdout.strip()
    n = _nonce(chain, node)
    evm.forget_clients()
    assert sb.execute(node, item)["reference"] == sent
    assert _nonce(chain, node) == n


def test_a_key_file_readable_by_others_is_refused(evm_node, chain):
    node = evm_node()
    key = node.config.home / "evm-key"
    os.chmod(key, 0o644)
    evm.forget_clients()
    with pytest.raises(BackendError, match="too open"):
        sb.execute(node, _item(node, 0))
    assert not {h["name"]: h for h in sb.health(node)}["evm"]["ok"]
    with pytest.raises(ConfigError, match="chmod 600"):
        evm.load_key(key)


def test_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="rpc_url"):
        evm.EvmSettings.from_dict({"key_file": "k"}, tmp_path)
    with pytest.raises(ConfigError, match="contract address"):
        evm.EvmSettings.from_dict(
            {"rpc_url": "http://x", "key_file": "k", "settlement_ledger": "0x12"}, tmp_path)


def test_wrong_chain_id_is_refused(evm_node, chain):
    node = evm_node(chain_id=1)
    with pytest.raises(ConfigError, match="chain_id"):
        evm.client(evm.settings_for(node.config.home, "settlement"))


def test_nodes_without_evm_settings_do_not_anchor(eap_node_factory):
    node = eap_node_factory()
    assert evm.settings_for(node.config.home, "anchoring") is None
    assert NodeConfig.load(node.config.home).extra.get("evm") is None


@pytest.mark.slow
def test_demo_chain_anchors_every_batch_and_settles_the_round_on_chain():
    from eap.node.demo import run_demo

    report = run_demo(chain=True)
    assert report.ok, report.chain
    ch = report.to_dict()["chain"]
    assert ch["anchors"] and all(a["verified"] and a["tx"].startswith("0x")
                                 for a in ch["anchors"])
    assert len(ch["settlements"]) == report.settlement["instructions"]
