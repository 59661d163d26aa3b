"""An in-process EVM chain (eth-tester on py-evm) for tests and ``eap-node demo --chain``.

:class:`DevChain` deploys the ``evm`` plugin's contracts, funds signer accounts, writes their
key files, registers itself as ``inproc://<name>`` for code in this process and, with
:meth:`DevChain.serve`, answers JSON-RPC over HTTP on loopback so that other processes (the
demo's nodes) share the same chain.  Blocks are mined as transactions arrive.  Not a
production chain: no persistence, no peers.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from eap.node.crypto._files import create_file
from eap.plugins import evm

_names = itertools.count(1)


def _jsonable(value: Any) -> Any:
    """A web3-side result as JSON-RPC wants it: quantities and bytes as 0x hex."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class DevChain:
    """One in-process chain; see the module docstring."""

    def __init__(self) -> None:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider, Web3

        self.provider = EthereumTesterProvider(EthereumTester(PyEVMBackend()))
        self.w3 = Web3(self.provider)
        self.chain_id = int(self.w3.eth.chain_id)
        self.url = f"inproc://devchain-{next(_names)}"
        evm._PROVIDERS[self.url] = self.provider
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.contracts: dict[str, str] = {}

    # accounts ---------------------------------------------------------------------------------

    def new_key(self, path: Path, *, fund_wei: int = 10**21) -> str:
        """Create a signer key file (0600) at ``path``, fund its account; returns the address."""
        from eth_account import Account

        acct = Account.create()
        create_file(Path(path), acct.key.hex().encode() + b"\n")
        self.fund(acct.address, fund_wei)
        return acct.address

    def fund(self, address: str, wei: int) -> None:
        with self.lock:
            tx = self.w3.eth.send_transaction(
                {"from": self.w3.eth.accounts[0], "to": address, "value": wei})
            self.w3.eth.wait_for_transaction_receipt(tx)

    # contracts --------------------------------------------------------------------------------

    def deploy(self, key_file: Path) -> dict[str, str]:
        """Deploy both contracts from the account of ``key_file`` (which then owns the ledger);
        returns ``{"anchor_registry": address, "settlement_ledger": address}``."""
        acct = evm.load_key(key_file)
        arts = evm.artifacts()
        out = {}
        with self.lock:
            for name, setting in (("AnchorRegistry", "anchor_registry"),
                                  ("SettlementLedger", "settlement_ledger")):
                factory = self.w3.eth.contract(abi=arts[name]["abi"],
                                               bytecode=arts[name]["bytecode"])
                tx = factory.constructor().build_transaction({
                    "from": acct.address,
                    "nonce": self.w3.eth.get_transaction_count(acct.address, "pending"),
                    "chainId": self.chain_id,
                    "gas": 2_000_000,
                })
                h = self.w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
                receipt = self.w3.eth.wait_for_transaction_receipt(h)
                if receipt["status"] != 1:
                    raise RuntimeError(f"deploying {name} failed")
                out[setting] = receipt["contractAddress"]
        self.contracts = out
        self.owner_key = Path(key_file)
        return out

    def authorise(self, settler: str) -> str:
        """Let ``settler`` call the ledger's ``settle`` (signed by the deploying account)."""
        acct = evm.load_key(self.owner_key)
        ledger = self.w3.eth.contract(address=self.contracts["settlement_ledger"],
                                      abi=evm.artifacts()["SettlementLedger"]["abi"])
        with self.lock:
            tx = ledger.functions.authorise(settler, True).build_transaction({
                "from": acct.address,
                "nonce": self.w3.eth.get_transaction_count(acct.address, "pending"),
                "chainId": self.chain_id,
                "gas": 100_000,
            })
            h = self.w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
            self.w3.eth.wait_for_transaction_receipt(h)
        return "0x" + bytes(h).hex().removeprefix("0x")

    def settings(self, key_file: str | Path, *, url: str | None = None) -> dict[str, Any]:
        """An ``[evm]`` table pointing at this chain and its contracts."""
        return {
            "rpc_url": url or self.url,
            "chain_id": self.chain_id,
            "key_file": str(key_file),
            **self.contracts,
        }

    def events(self, contract: str, event: str) -> list[Any]:
        """Every log of ``event`` emitted by our deployed ``contract``."""
        setting = {"AnchorRegistry": "anchor_registry",
                   "SettlementLedger": "settlement_ledger"}[contract]
        c = self.w3.eth.contract(address=self.contracts[setting],
                                 abi=evm.artifacts()[contract]["abi"])
        with self.lock:
            return list(getattr(c.events, event)().get_logs(from_block=0))

    # JSON-RPC over HTTP -----------------------------------------------------------------------

    def rpc(self, method: str, params: list) -> Any:
        """One JSON-RPC call answered by the chain: the response dict."""
        with self.lock:
            try:
                response = self.w3.manager._make_request(method, params)
            except Exception as exc:
                return {"error": {"code": -32000, "message": f"{type(exc).__name__}: {exc}"}}
        if "error" in response:
            return {"error": _jsonable(dict(response["error"]))}
        return {"result": _jsonable(response.get("result"))}

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Answer JSON-RPC over HTTP on ``host:port`` (0: any free port); returns the URL."""
        chain = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                except (ValueError, TypeError):
                    self.send_error(400, "not JSON")
                    return
                calls = body if isinstance(body, list) else [body]
                out = [{"jsonrpc": "2.0", "id": c.get("id"),
                        **chain.rpc(c.get("method", ""), c.get("params") or [])}
                       for c in calls]
                data = json.dumps(out if isinstance(body, list) else out[0]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="eap-devchain-rpc",
                         daemon=True).start()
        return f"http://{host}:{self.server.server_address[1]}"

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        evm._PROVIDERS.pop(self.url, None)
