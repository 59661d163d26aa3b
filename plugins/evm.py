"""Plugin ``evm``: anchor issuance-batch roots and execute settlement instructions on an EVM chain.

Two Vyper contracts (``plugins/contracts/*.vy``, compiled with the ``vyper`` package; the
committed ABI and bytecode are in ``contracts/artifacts.json``):

* ``AnchorRegistry.anchor(issuer, seq, root)``: one Merkle root per (issuer, seq), written
  once; the same root again is a no-op, another root reverts.  ``issuer`` is
  ``keccak256(node id)``.
* ``SettlementLedger.settle(instruction_id, payer, payee, currency, amount)``: records an
  instruction once, keyed by ``keccak256(instruction id)``, and emits ``Settled``; the same
  terms again are a no-op, other terms revert.  Parties are ``keccak256("<node>/acct_...")``
  (no account ids on chain), the currency its ISO code left-aligned in ``bytes32``.

Configuration (``eap-node.toml``): one ``[evm]`` table, which ``[settlement.evm]`` and
``[anchoring.evm]`` may override key by key::

    [evm]
    rpc_url = "https://rpc.example:8545"   # any EVM JSON-RPC endpoint
    chain_id = 11155111
    key_file = "evm-key"                   # hex private key, mode 0600; relative to the home
    anchor_registry = "0x..."              # anchoring is on when this is set
    settlement_ledger = "0x..."            # needed by [settlement] backend = "evm"
    gas = 300000                           # gas limit of each call
    receipt_timeout_s = 120

Exactly-once, also across a crash: one signer per process with a nonce counter synced from
the chain's pending count; each signed transaction is written to ``<home>/evm-journal.jsonl``
*before* it is broadcast, and on start every journalled transaction without a receipt is
broadcast again as the same bytes (same nonce, same hash), never re-signed.  Before sending,
the chain is asked whether the instruction id (or batch) is recorded already; if it is, the
receipt is the transaction that recorded it (found through the contract's event).  The
contract's idempotency is the last line: a duplicate that slips through moves nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eap.node.crypto._files import read_private_file
from eap.node.errors import BackendError, ConfigError
from eap.plugins import hookimpl

log = logging.getLogger(__name__)

NAME = "evm"
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
ARTIFACTS = CONTRACTS_DIR / "artifacts.json"
CONTRACTS = ("AnchorRegistry", "SettlementLedger")
JOURNAL = "evm-journal.jsonl"
DEFAULT_GAS = 300_000
DEFAULT_RECEIPT_TIMEOUT_S = 120.0
ZERO32 = b"\0" * 32

#: ``inproc://<name>`` providers (an in-process chain for tests and the demo).
_PROVIDERS: dict[str, Any] = {}


# -- contracts ------------------------------------------------------------------------------------


def compile_contracts() -> dict[str, dict[str, Any]]:
    """Compile ``contracts/*.vy`` with the installed ``vyper``: ``{name: {abi, bytecode,
    source_sha256, vyper}}`` (what ``artifacts.json`` holds)."""
    import vyper
    from vyper.compiler import compile_code

    out = {}
    for name in CONTRACTS:
        source = (CONTRACTS_DIR / f"{name}.vy").read_text()
        built = compile_code(source, output_formats=["abi", "bytecode"])
        out[name] = {
            "abi": built["abi"],
            "bytecode": built["bytecode"],
            "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
            "vyper": vyper.__version__,
        }
    return out


def write_artifacts(path: Path = ARTIFACTS) -> None:
    """Recompile and write ``artifacts.json`` (``python -m eap.plugins.evm``)."""
    path.write_text(json.dumps(compile_contracts(), indent=1, sort_keys=True) + "\n")


def artifacts() -> dict[str, dict[str, Any]]:
    """The committed ABI and bytecode of the contracts."""
    return json.loads(ARTIFACTS.read_text())


# -- encodings ------------------------------------------------------------------------------------


def _keccak(text: str) -> bytes:
    from eth_utils import keccak

    return keccak(text=text)


def issuer_hash(node_id: str) -> bytes:
    return _keccak(node_id)


def instruction_hash(instruction_id: str) -> bytes:
    return _keccak(str(instruction_id))


def party_hash(party: str) -> bytes:
    return _keccak(str(party))


def currency_bytes(code: str) -> bytes:
    raw = str(code).encode("ascii")
    if not 0 < len(raw) <= 32:
        raise BackendError(f"currency {code!r} does not fit bytes32", backend=NAME)
    return raw.ljust(32, b"\0")


def _hex(value: Any) -> str:
    h = bytes(value).hex()
    return h if h.startswith("0x") else "0x" + h


# -- settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvmSettings:
    rpc_url: str
    key_file: Path
    chain_id: int | None = None
    anchor_registry: str = ""
    settlement_ledger: str = ""
    gas: int = DEFAULT_GAS
    receipt_timeout_s: float = DEFAULT_RECEIPT_TIMEOUT_S
    #: Where the journal of signed transactions lives (the node's home).
    home: Path = Path(".")

    @classmethod
    def from_dict(cls, table: dict[str, Any], home: Path) -> EvmSettings:
        rpc = table.get("rpc_url")
        key = table.get("key_file")
        if not isinstance(rpc, str) or not rpc:
            raise ConfigError("[evm] rpc_url must be a JSON-RPC URL")
        if not isinstance(key, str) or not key:
            raise ConfigError("[evm] key_file must name the signer's private key file (0600)")
        chain_id = table.get("chain_id")
        if chain_id is not None and (isinstance(chain_id, bool) or not isinstance(chain_id, int)):
            raise ConfigError(f"[evm] chain_id must be an integer, not {chain_id!r}")
        gas = table.get("gas", DEFAULT_GAS)
        if isinstance(gas, bool) or not isinstance(gas, int) or gas <= 21_000:
            raise ConfigError(f"[evm] gas must be an integer above 21000, not {gas!r}")
        timeout = table.get("receipt_timeout_s", DEFAULT_RECEIPT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"[evm] receipt_timeout_s must be positive, not {timeout!r}")
        for k in ("anchor_registry", "settlement_ledger"):
            v = table.get(k, "")
            if not isinstance(v, str) or (v and not (v.startswith("0x") and len(v) == 42)):
                raise ConfigError(f"[evm] {k} must be a 0x contract address, not {v!r}")
        key_path = Path(key).expanduser()
        return cls(
            rpc_url=rpc,
            key_file=key_path if key_path.is_absolute() else home / key_path,
            chain_id=chain_id,
            anchor_registry=table.get("anchor_registry", ""),
            settlement_ledger=table.get("settlement_ledger", ""),
            gas=gas,
            receipt_timeout_s=float(timeout),
            home=home,
        )


def settings_for(home: Path, section: str, own: dict[str, Any] | None = None) -> EvmSettings | None:
    """``[evm]`` of the node at ``home`` overridden by ``[<section>.evm]`` (or ``own``, the
    backend's table when the caller has it); None when neither names an ``rpc_url``."""
    from eap.node.config import NodeConfig

    extra = NodeConfig.load(Path(home)).extra
    table = dict(extra.get("evm", {}) or {})
    table.update(own if own is not None else (extra.get(section, {}) or {}).get("evm", {}) or {})
    if not table.get("rpc_url"):
        return None
    return EvmSettings.from_dict(table, Path(home))


# -- the signer -----------------------------------------------------------------------------------


def load_key(path: Path) -> Any:
    """The signer's account from a hex private key file that only its owner can read.

    Raises:
        ConfigError: the file is missing, readable by group or others, or not a key.
    """
    from eth_account import Account

    raw = read_private_file(Path(path)).decode("ascii", "replace").strip()
    try:
        return Account.from_key(raw)
    except Exception as exc:  # eth_account raises ValueError / binascii errors
        raise ConfigError(f"{path} does not hold a hex private key") from exc


def _provider(url: str) -> Any:
    from web3 import Web3

    if url.startswith("inproc://"):
        try:
            return _PROVIDERS[url]
        except KeyError:
            raise ConfigError(f"no in-process chain registered as {url}") from None
    if url.startswith(("http://", "https://")):
        return Web3.HTTPProvider(url, request_kwargs={"timeout": 30})
    if url.startswith(("ws://", "wss://")):
        raise ConfigError("[evm] rpc_url: use the chain's HTTP(S) JSON-RPC endpoint")
    return Web3.IPCProvider(url)


class Client:
    """One signer on one chain: nonce counter, journal of signed transactions, receipts."""

    def __init__(self, settings: EvmSettings) -> None:
        from web3 import Web3

        self.settings = settings
        self.account = load_key(settings.key_file)
        self.w3 = Web3(_provider(settings.rpc_url))
        try:
            self.chain_id = int(self.w3.eth.chain_id)
        except Exception as exc:
            raise BackendError(
                f"chain at {settings.rpc_url} does not answer: {exc}", transient=True, backend=NAME
            ) from exc
        if settings.chain_id is not None and settings.chain_id != self.chain_id:
            raise ConfigError(
                f"[evm] chain_id is {settings.chain_id} but {settings.rpc_url} is chain "
                f"{self.chain_id}"
            )
        self.journal = settings.home / JOURNAL
        self.lock = threading.RLock()
        arts = artifacts()
        self.registry = (
            self.w3.eth.contract(address=Web3.to_checksum_address(settings.anchor_registry),
                                 abi=arts["AnchorRegistry"]["abi"])
            if settings.anchor_registry else None
        )
        self.ledger = (
            self.w3.eth.contract(address=Web3.to_checksum_address(settings.settlement_ledger),
                                 abi=arts["SettlementLedger"]["abi"])
            if settings.settlement_ledger else None
        )
        self.nonce = 0
        self.recover()

    @property
    def address(self) -> str:
        return self.account.address

    # journal ---------------------------------------------------------------------------------

    def _journalled(self) -> list[dict]:
        if not self.journal.exists():
            return []
        out = []
        for line in self.journal.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut by a crash: its transaction was never broadcast
                continue
            if entry.get("from") == self.address and entry.get("chain_id") == self.chain_id:
                out.append(entry)
        return out

    def _journal(self, entry: dict) -> None:
        fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def recover(self) -> int:
        """Broadcast again (same bytes) every journalled transaction the chain does not know,
        then sync the nonce counter.  Returns how many were broadcast again."""
        with self.lock:
            again = 0
            for entry in sorted(self._journalled(), key=lambda e: e["nonce"]):
                if self._receipt(entry["tx"]) is not None:
                    continue
                try:
                    self.w3.eth.send_raw_transaction(entry["raw"])
                    again += 1
                except Exception as exc:  # known already, or its nonce was used: nothing to do
                    log.info("evm: journalled %s not re-broadcast: %s", entry["tx"], exc)
            pending = int(self.w3.eth.get_transaction_count(self.address, "pending"))
            self.nonce = max([pending] + [e["nonce"] + 1 for e in self._journalled()])
            return again

    def journalled_tx(self, key: str) -> str | None:
        """The last transaction journalled for ``key`` (an instruction or batch key)."""
        found = [e["tx"] for e in self._journalled() if e.get("key") == key]
        return found[-1] if found else None

    # transactions ----------------------------------------------------------------------------

    def send(self, call: Any, key: str) -> str:
        """Sign ``call`` with the next nonce, journal it, broadcast it; returns the tx hash."""
        with self.lock:
            tx = call.build_transaction(
                {
                    "from": self.address,
                    "nonce": self.nonce,
                    "chainId": self.chain_id,
                    "gas": self.settings.gas,
                }
            )
            signed = self.account.sign_transaction(tx)
            tx_hash = _hex(signed.hash)
            self._journal(
                {
                    "key": key,
                    "tx": tx_hash,
                    "nonce": self.nonce,
                    "from": self.address,
                    "chain_id": self.chain_id,
                    "raw": _hex(signed.raw_transaction),
                }
            )
            self.nonce += 1
            try:
                self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception as exc:
                # Refused before mining: its nonce is free again, unless the node saw it.
                self.nonce = int(self.w3.eth.get_transaction_count(self.address, "pending"))
                raise BackendError(
                    f"chain refused transaction {tx_hash}: {exc}", transient=True, backend=NAME
                ) from exc
            return tx_hash

    def _receipt(self, tx_hash: str) -> Any:
        from web3.exceptions import TransactionNotFound

        try:
            return self.w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            return None

    def wait(self, tx_hash: str) -> Any:
        deadline = time.monotonic() + self.settings.receipt_timeout_s
        delay = 0.05
        while True:
            receipt = self._receipt(tx_hash)
            if receipt is not None:
                return receipt
            if time.monotonic() > deadline:
                raise BackendError(
                    f"no receipt for {tx_hash} within {self.settings.receipt_timeout_s:g} s "
                    "(it stays journalled and is re-broadcast on restart)",
                    transient=True,
                    backend=NAME,
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def at_ms(self, receipt: Any) -> int:
        block = self.w3.eth.get_block(receipt["blockNumber"])
        return int(block["timestamp"]) * 1000

    def revert_reason(self, call: Any, block: int) -> str:
        """Why ``call`` reverts, replayed with ``eth_call`` against the block before ``block``."""
        try:
            call.call({"from": self.address}, block_identifier=max(block - 1, 0))
        except Exception as exc:
            return str(exc)
        return "reverted (no reason given)"

    def _event_tx(self, event: Any, **filters: Any) -> Any:
        logs = event.get_logs(from_block=0, argument_filters=filters)
        return logs[0] if logs else None


_CLIENTS: dict[tuple, Client] = {}
_CLIENTS_LOCK = threading.Lock()


def client(settings: EvmSettings) -> Client:
    """The process's client for these settings (one nonce counter per signer and chain)."""
    key = (settings.rpc_url, str(settings.key_file), settings.anchor_registry,
           settings.settlement_ledger, str(settings.home))
    with _CLIENTS_LOCK:
        found = _CLIENTS.get(key)
        if found is None:
            found = _CLIENTS[key] = Client(settings)
        return found


def forget_clients() -> None:
    """Drop every cached client (the next call starts as after a restart)."""
    with _CLIENTS_LOCK:
        _CLIENTS.clear()


# -- anchoring ------------------------------------------------------------------------------------


def anchored_root(settings: EvmSettings, issuer: str, seq: int) -> bytes | None:
    """The root anchored on chain for batch ``seq`` of node ``issuer`` (None: none)."""
    c = client(settings)
    if c.registry is None:
        raise ConfigError("[evm] anchor_registry is not set")
    root = bytes(c.registry.functions.roots(issuer_hash(issuer), int(seq)).call())
    return None if root == ZERO32 else root


def anchor(settings: EvmSettings, seq: int, root: bytes, issuer: str) -> dict:
    """Anchor batch ``seq`` of node ``issuer`` with Merkle ``root``, once.

    Returns ``{"reference": tx hash, "at_ms", "new": bool}``; ``new`` is False when the chain
    held this root already (the reference is then the transaction that anchored it).

    Raises:
        BackendError: another root is anchored for this batch (not transient), or the chain
            refused or did not mine the transaction (transient).
    """
    c = client(settings)
    if c.registry is None:
        raise ConfigError("[evm] anchor_registry is not set")
    issuer_h, root = issuer_hash(issuer), bytes(root)
    key = f"anchor:{issuer}:{seq}:{root.hex()}"
    with c.lock:
        known = anchored_root(settings, issuer, seq)
        if known is None:
            tx_hash = c.journalled_tx(key) or c.send(
                c.registry.functions.anchor(issuer_h, int(seq), root), key)
            receipt = c.wait(tx_hash)
            if receipt["status"] == 1:
                return {"reference": tx_hash, "at_ms": c.at_ms(receipt), "new": True}
            known = anchored_root(settings, issuer, seq)
            if known is None:
                why = c.revert_reason(
                    c.registry.functions.anchor(issuer_h, int(seq), root), receipt["blockNumber"])
                raise BackendError(f"anchor of batch {seq} reverted: {why}", backend=NAME)
    if known != root:
        raise BackendError(
            f"batch {seq} of {issuer} is anchored with root {known.hex()}, not {root.hex()}",
            backend=NAME,
        )
    ev = c._event_tx(c.registry.events.Anchored, issuer=issuer_h, seq=int(seq))
    receipt = c.w3.eth.get_transaction_receipt(ev["transactionHash"])
    return {"reference": _hex(ev["transactionHash"]), "at_ms": c.at_ms(receipt), "new": False}


@hookimpl
def eap_batch_issued(node_id, seq, count, wh, merkle_root, signature, key_id, home):
    settings = settings_for(Path(home), "anchoring")
    if settings is None or not settings.anchor_registry:
        return  # not configured: this node does not anchor on a chain
    receipt = anchor(settings, seq, merkle_root, node_id)
    log.info("evm: batch %s anchored in %s", seq, receipt["reference"])


# -- settlement -----------------------------------------------------------------------------------


def _terms(item: dict) -> tuple[bytes, bytes, bytes, bytes, int]:
    amount = item.get("amount_minor")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise BackendError(f"amount_minor {amount!r} is not positive", backend=NAME)
    if str(item.get("payer")) == str(item.get("payee")):
        raise BackendError("payer and payee are the same account", backend=NAME)
    return (
        instruction_hash(item["instruction_id"]),
        party_hash(item["payer"]),
        party_hash(item["payee"]),
        currency_bytes(item["currency"]),
        amount,
    )


class EvmSettlement:
    """The ``evm`` settlement backend: one ``settle`` call per instruction.

    Both sides of an instruction are the same on-chain record: whichever node executes its
    side first sends the transaction, the other finds it and returns the same hash.
    """

    name = NAME

    def _client(self, ctx: Any) -> Client:
        settings = settings_for(Path(ctx.home), "settlement", dict(ctx.settings or {}))
        if settings is None or not settings.settlement_ledger:
            raise BackendError(
                "[evm] rpc_url and settlement_ledger are not configured", backend=NAME
            )
        c = client(settings)
        return c

    def _recorded(self, c: Client, terms: tuple) -> dict | None:
        """The receipt of the chain's record of this instruction; None when there is none.

        Raises:
            BackendError: (not transient) the id is recorded with other terms.
        """
        ins = terms[0]
        record = c.ledger.functions.records(ins).call()
        if record[1] == "0x0000000000000000000000000000000000000000":
            return None
        want = c.ledger.functions.terms_of(*terms[1:]).call()
        if bytes(record[0]) != bytes(want):
            raise BackendError(
                f"instruction {ins.hex()} is settled on chain with other terms", backend=NAME
            )
        ev = c._event_tx(c.ledger.events.Settled, instruction_id=ins)
        receipt = c.w3.eth.get_transaction_receipt(ev["transactionHash"])
        return {"reference": _hex(ev["transactionHash"]), "at_ms": c.at_ms(receipt)}

    def execute(self, ctx: Any, item: dict, idempotency_key: str) -> dict:
        result = self.execute_many(ctx, [(item, idempotency_key)])[0]
        if isinstance(result, BackendError):
            raise result
        return result

    def execute_many(self, ctx: Any, batch: list[tuple[dict, str]]) -> list:
        """Send every instruction not on chain yet (consecutive nonces), then collect the
        receipts; one result per item, in order.  A reverted transaction fails only its
        own item."""
        c = self._client(ctx)
        results: list[Any] = [None] * len(batch)
        sent: dict[tuple, str] = {}  # terms -> tx hash, in this batch
        waiting: list[tuple[int, tuple, str]] = []
        with c.lock:
            todo: list[tuple[int, tuple]] = []
            for i, (item, _key) in enumerate(batch):  # what the chain holds before the batch
                try:
                    terms = _terms(item)
                    done = self._recorded(c, terms)
                    if done is not None:
                        results[i] = done
                    else:
                        todo.append((i, terms))
                except BackendError as exc:
                    results[i] = exc
                except Exception as exc:
                    results[i] = BackendError(
                        f"{type(exc).__name__}: {exc}", transient=True, backend=NAME)
            for i, terms in todo:  # then every transaction, consecutive nonces
                try:
                    if terms in sent:  # the other side of an instruction in this batch
                        waiting.append((i, terms, sent[terms]))
                        continue
                    digest = hashlib.sha256(b"".join([*terms[:4], str(terms[4]).encode()]))
                    chain_key = f"settle:{terms[0].hex()}:{digest.hexdigest()[:16]}"
                    tx_hash = c.journalled_tx(chain_key) or c.send(
                        c.ledger.functions.settle(*terms), chain_key)
                    sent[terms] = tx_hash
                    waiting.append((i, terms, tx_hash))
                except BackendError as exc:
                    results[i] = exc
        for i, terms, tx_hash in waiting:
            try:
                receipt = c.wait(tx_hash)
                if receipt["status"] == 1 and receipt["logs"]:
                    results[i] = {"reference": tx_hash, "at_ms": c.at_ms(receipt)}
                    continue
                done = self._recorded(c, terms)  # recorded by another transaction
                if done is not None:
                    results[i] = done
                    continue
                why = c.revert_reason(c.ledger.functions.settle(*terms), receipt["blockNumber"])
                results[i] = BackendError(
                    f"settle {terms[0].hex()} reverted in {tx_hash}: {why}", backend=NAME)
            except BackendError as exc:
                results[i] = exc
            except Exception as exc:
                results[i] = BackendError(
                    f"{type(exc).__name__}: {exc}", transient=True, backend=NAME)
        return results

    def health(self, ctx: Any) -> dict:
        try:
            c = self._client(ctx)
            block = c.w3.eth.block_number
            balance = c.w3.eth.get_balance(c.address)
        except Exception as exc:
            return {"ok": False, "detail": str(exc)}
        return {
            "ok": True,
            "detail": f"chain {c.chain_id} at block {block}, signer {c.address} "
            f"(balance {balance} wei), ledger {c.settings.settlement_ledger}",
        }


@hookimpl
def eap_settlement_backends():
    return [EvmSettlement()]


if __name__ == "__main__":  # pragma: no cover - maintenance: refresh the committed artifacts
    write_artifacts()
    print(f"wrote {ARTIFACTS}")


# -- verification ---------------------------------------------------------------------------------


def verify_batch(node: Any, seq: int) -> dict:
    """Compare the Merkle root of batch ``seq`` stored by ``node`` with the root on chain.

    Returns ``{"seq", "issuer", "root", "chain_root", "ok", "message", "reference"}``;
    ``reference`` is the anchoring transaction when the chain has one.

    Raises:
        NotFound: the node has no batch ``seq``.
        ConfigError: ``[evm]`` (or ``[anchoring.evm]``) names no chain or no anchor registry.
    """
    from eap.node.errors import NotFound
    from eap.node.store import repos

    with node.store.read() as conn:
        rows = repos.batches_after(conn, int(seq) - 1, 1)
    if not rows or int(rows[0].seq) != int(seq):
        raise NotFound(f"this node has no batch {seq}")
    root = bytes(rows[0].merkle_root)
    settings = settings_for(Path(node.config.home), "anchoring")
    if settings is None or not settings.anchor_registry:
        raise ConfigError("no chain configured: set [evm] rpc_url and anchor_registry")
    issuer = node.config.node_id
    chain_root = anchored_root(settings, issuer, int(seq))
    out = {"seq": int(seq), "issuer": issuer, "root": root.hex(),
           "chain_root": chain_root.hex() if chain_root else None, "reference": None}
    if chain_root is None:
        out.update(ok=False, message=f"batch {seq} of {issuer} is not anchored on chain "
                                     f"{client(settings).chain_id}")
        return out
    c = client(settings)
    ev = c._event_tx(c.registry.events.Anchored, issuer=issuer_hash(issuer), seq=int(seq))
    out["reference"] = _hex(ev["transactionHash"]) if ev else None
    if chain_root != root:
        out.update(ok=False, message=f"batch {seq}: the chain holds root {chain_root.hex()}, "
                                     f"this node {root.hex()}")
    else:
        out.update(ok=True, message=f"batch {seq} of {issuer}: root {root.hex()} anchored in "
                                    f"{out['reference']} on chain {c.chain_id}")
    return out
