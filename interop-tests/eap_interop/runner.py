"""Command line of the suite: run cases against a node by address, print PASS/FAIL/SKIP.

``python interop-tests/run.py --help`` for the flags, ``run.py identity --help`` for the
client identity kit.  Exit status: 0 when no case failed, 1 when one did, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from eap_interop.cases import CASES, Case
from eap_interop.context import Context, Settings, Skip, describe_error
from eap_interop.identity import DEFAULT_ENDPOINT, DEFAULT_NODE_ID, load_kit, make_kit

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class Result:
    case: Case
    verdict: str
    detail: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "case": self.case.value,
            "result": self.verdict,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }


def run_case(ctx: Context, case: Case, *, verbose: bool = False) -> Result:
    """Run one case; never raises (every outcome is a :class:`Result`)."""
    t0 = time.monotonic()
    try:
        CASES[case].fn(ctx)
        verdict, detail = PASS, ""
    except Skip as skip:
        verdict, detail = SKIP, str(skip)
    except AssertionError as exc:
        verdict, detail = FAIL, str(exc) or "assertion failed"
        if verbose:
            detail += "\n" + traceback.format_exc()
    except grpc.RpcError as error:
        verdict, detail = FAIL, f"unexpected RPC error: {describe_error(error)}"
        if verbose:
            detail += "\n" + traceback.format_exc()
    except Exception as exc:
        verdict, detail = FAIL, f"{type(exc).__name__}: {exc}"
        if verbose:
            detail += "\n" + traceback.format_exc()
    return Result(case, verdict, detail, time.monotonic() - t0)


def run(
    ctx: Context,
    cases: Iterable[Case],
    skip: dict[Case, str] | None = None,
    *,
    verbose: bool = False,
    out=None,
) -> list[Result]:
    """Run ``cases`` in order, skipping those in ``skip`` (case -> reason); prints each
    result as it comes when ``out`` is a stream."""
    skip = skip or {}
    results = []
    for case in cases:
        if case in skip:
            result = Result(case, SKIP, f"skip list: {skip[case]}" if skip[case] else "skip list")
        else:
            result = run_case(ctx, case, verbose=verbose)
        results.append(result)
        if out is not None:
            print(format_result(result), file=out, flush=True)
    return results


def format_result(r: Result) -> str:
    head = f"{r.verdict}  {r.case.value:<30} {r.seconds:6.2f} s"
    if not r.detail:
        return head
    lines = r.detail.rstrip().splitlines()
    return "\n".join([f"{head}  {lines[0]}", *(f"      {line}" for line in lines[1:])])


def summary(results: Sequence[Result]) -> str:
    count = {v: sum(r.verdict == v for r in results) for v in (PASS, FAIL, SKIP)}
    return (
        f"{len(results)} cases: {count[PASS]} passed, {count[FAIL]} failed, {count[SKIP]} skipped"
    )


def parse_cases(text: str | None, option: str) -> list[Case]:
    """``a,b,c`` -> cases; unknown names are a usage error."""
    if not text:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    by_name = {c.value: c for c in Case}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"{option}: unknown case(s) {', '.join(unknown)}; see --list")
    return [by_name[n] for n in names]


def read_skip_file(path: Path) -> dict[Case, str]:
    """A skip list: one case name per line, ``# reason`` after it; blank lines and lines
    starting with ``#`` are ignored."""
    out: dict[Case, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        name, _, reason = raw.partition("#")
        name = name.strip()
        if not name:
            continue
        try:
            out[Case(name)] = reason.strip()
        except ValueError:
            raise SystemExit(f"{path}:{number}: unknown case {name!r}") from None
    return out


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.py",
        description="EAP interop conformance suite: run the cases of interop-tests/SPEC.md "
        "against a node. `run.py identity --help`: make the client identity kit "
        "the federation cases need.",
    )
    p.add_argument("--server_host", default="127.0.0.1", help="local API host")
    p.add_argument("--server_port", type=int, default=7443, help="local API port")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--token", help="operator bearer token of the local API")
    tok.add_argument("--token_file", help="file holding the operator token (<home>/api-token)")
    p.add_argument("--use_tls", action="store_true", help="the local API uses TLS")
    p.add_argument("--server_host_override", help="TLS name of the local API's certificate")
    p.add_argument("--ca", help="PEM CA that signed the node's certificates (default: kit)")
    p.add_argument("--cert", help="PEM client certificate (default: the kit's)")
    p.add_argument("--key", help="PEM client key (default: the kit's)")
    p.add_argument("--federation_host", help="federation host (default: --server_host)")
    p.add_argument(
        "--federation_port",
        type=int,
        help="federation port (mutual TLS); without it the federation cases are skipped",
    )
    p.add_argument(
        "--identity",
        help="identity kit folder made by `run.py identity` and enrolled on the node's trust list",
    )
    p.add_argument(
        "--peer_listen",
        metavar="HOST:PORT",
        help="where the suite's fake peer listens during the transfer and holdings cases; the "
        "kit's descriptor endpoint (`run.py identity --endpoint`) must lead there from the "
        "node; without it those cases are skipped",
    )
    p.add_argument("--cases", help="comma-separated cases to run (default: all)")
    p.add_argument("--skip", help="comma-separated cases not to run (reported SKIP)")
    p.add_argument("--skip_file", help="skip list file: one case per line, `# reason`")
    p.add_argument("--timeout", type=float, default=15.0, help="deadline of each call, s")
    p.add_argument(
        "--attestation_scheme",
        default="operator-signed",
        help="device attestation scheme the node accepts",
    )
    p.add_argument("--attestation_evidence", default="eap interop conformance suite")
    p.add_argument("--report", help="also write the results as JSON to this file")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on failures")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    token = args.token
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
    return Settings(
        server_host=args.server_host,
        server_port=args.server_port,
        token=token,
        use_tls=args.use_tls,
        server_host_override=args.server_host_override,
        ca=_read(args.ca),
        cert=_read(args.cert),
        key=_read(args.key),
        federation_host=args.federation_host,
        federation_port=args.federation_port,
        kit=load_kit(Path(args.identity)) if args.identity else None,
        peer_listen=args.peer_listen,
        timeout=args.timeout,
        attestation_scheme=args.attestation_scheme,
        attestation_evidence=args.attestation_evidence,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["identity"]:
        return identity_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.list:
        for c in Case:
            print(f"{c.value:<30} {CASES[c].area:<10} {CASES[c].summary}")
        return 0
    try:
        cases = parse_cases(args.cases, "--cases") or list(Case)
        skip = {c: "" for c in parse_cases(args.skip, "--skip")}
        if args.skip_file:
            skip.update(read_skip_file(Path(args.skip_file)))
        settings = settings_from(args)
    except (OSError, ValueError) as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        return 2
    ctx = Context(settings)
    fed = (
        f"federation {settings.federation_host or settings.server_host}:{settings.federation_port}"
        if settings.federation_port
        else "no federation port"
    )
    if settings.peer_listen:
        fed += f", fake peer on {settings.peer_listen}"
    print(
        f"EAP interop suite: local API {settings.server_host}:{settings.server_port}, {fed}",
        flush=True,
    )
    try:
        results = run(ctx, cases, skip, verbose=args.verbose, out=sys.stdout)
    finally:
        ctx.close()
    print(summary(results))
    if args.report:
        Path(args.report).write_text(
            json.dumps(
                {"results": [r.to_dict() for r in results], "summary": summary(results)}, indent=2
            )
            + "\n"
        )
    return 1 if any(r.verdict == FAIL for r in results) else 0


def identity_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="run.py identity",
        description="Write the client identity kit for the federation cases: an Ed25519 "
        "signing key, a signed node descriptor for the node's trust list, and TLS "
        "client certificates (minted when the federation CA's key is given, else "
        "CSRs to have signed).",
    )
    p.add_argument("--out", required=True, help="kit folder (created)")
    p.add_argument("--node_id", default=DEFAULT_NODE_ID, help="the suite's node id")
    p.add_argument(
        "--ca_cert",
        help="federation CA certificate (PEM), e.g. ca/ca.crt of `eap-node certs init-ca`",
    )
    p.add_argument("--ca_key", help="federation CA private key (PEM), e.g. ca/ca.key")
    p.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help="endpoint advertised in the descriptor: where the node reaches the suite's fake "
        "peer (run.py --peer_listen) in the transfer and holdings cases; the default serves "
        "nothing",
    )
    args = p.parse_args(argv)
    if bool(args.ca_key) and not args.ca_cert:
        print("run.py identity: --ca_key needs --ca_cert", file=sys.stderr)
        return 2
    try:
        kit = make_kit(
            Path(args.out),
            args.node_id,
            endpoint=args.endpoint,
            ca_cert=_read(args.ca_cert),
            ca_key=_read(args.ca_key),
        )
    except (OSError, ValueError) as exc:
        print(f"run.py identity: {exc}", file=sys.stderr)
        return 2
    c = kit.client
    print(
        f"wrote identity kit {kit.path} for {c.node_id}\n"
        f"  signing key {c.key_id} fingerprint {c.fingerprint}\n"
        f"enrol it on the node under test (eap-node):\n"
        f"  eap-node peer add {kit.path / 'descriptor.json'} --fingerprint {c.fingerprint}"
    )
    if c.tls_cert is None:
        print(
            f"then have the federation CA sign {kit.path / 'tls' / 'client.csr'} into "
            f"{kit.path / 'tls' / 'client.crt'} (CN = SAN = {c.node_id}, clientAuth), and "
            f"the same for {kit.path / 'stranger' / 'tls' / 'client.csr'}; put the CA "
            f"certificate in {kit.path / 'tls' / 'ca.crt'}"
        )
    print(
        f"never enrol {kit.stranger.node_id if kit.stranger else 'the stranger'}: "
        "fed_unknown_peer needs a caller the node does not trust"
    )
    return 0
