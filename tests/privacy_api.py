"""The public-API half of the privacy scenario (tests/privacy_scenario.py): what the holder,
the operator and the regulator read over real gRPC (ListAuditEntries, GetAggregates,
GetMatchingReport, ListClaims), the operator's CLI aggregates, and an SD presentation.

Every read is kept as it arrived (protobuf as JSON, CLI output as printed) so that the
capture test scans the bytes a client gets, and each refusal is kept with its status code."""

from __future__ import annotations

import json
from typing import Any

import grpc
from click.testing import CliRunner
from google.protobuf.json_format import MessageToDict

from eap.node.api.server import build_server
from eap.node.domain import receipts
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc

#: Receipt fields a holder shows a verifier in the scenario; the rest must stay hidden.
SHOWN = ("claim_id", "hour", "zone", "source", "wh")


def _md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _as_dict(msg) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True)


def aggregate_cells(cells: list[dict[str, Any]]) -> str:
    """Published cells as one comparable string, whatever client printed them (CLI JSON or
    the RPC's message): ``metric@hour/source=Wh`` joined by ``;``, suppressed cells left out."""
    out = []
    for c in cells:
        if c.get("suppressed"):
            continue
        hour = int(c.get("hour_start_unix") or c.get("hour_unix") or 0)
        source = str(c["source"]).lower().removeprefix("energy_source_")
        out.append(
            f"{c['metric'].lower().removeprefix('aggregate_metric_')}@{hour}/{source}"
            f"={int(c.get('wh') or 0)}"
        )
    return ";".join(sorted(out))


def api_reads(
    a,
    b,
    *,
    acct_a: str,
    token_a: str,
    acct_b: str,
    token_b: str,
    claim_id: str,
    zone: str,
    start: int,
    end: int,
    cli,
) -> dict[str, Any]:
    """Reads of nodes ``a`` (issuer) and ``b`` (claimant) by their holders, operators and
    regulators; returns the raw outputs, the views by audience and the refusals."""
    out: dict[str, Any] = {"refused": [], "raw": {}}
    servers = []
    try:
        stubs = {}
        for m in (a, b):
            server, port = build_server(m.node, "127.0.0.1:0", workers=4)
            server.start()
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            servers.append((server, channel))
            stubs[m.node_id] = node_api_pb2_grpc.NodeApiStub(channel)
        sa, sb = stubs[a.node_id], stubs[b.node_id]
        op_a = _md(a.node.config.api_token())
        reg_a = _md(a.node.config.create_regulator_token())
        reg_b = _md(b.node.config.create_regulator_token())

        def refused(who: str, rpc: str, call) -> None:
            try:
                call()
            except grpc.RpcError as exc:
                out["refused"].append((who, rpc, exc.code()))
            else:
                out["refused"].append((who, rpc, grpc.StatusCode.OK))

        # The holder reads its own audit rows (its reads below come first: rows to show).
        sa.ListAccounts(
            api.ListAccountsRequest(purpose=api.READ_PURPOSE_HOLDINGS), metadata=_md(token_a)
        )
        mine = sa.ListAuditEntries(api.ListAuditEntriesRequest(), metadata=_md(token_a))
        out["holder_audit"] = [_as_dict(e) for e in mine.entries]
        refused(
            "holder",
            "ListAuditEntries(other account)",
            lambda: sa.ListAuditEntries(
                api.ListAuditEntriesRequest(account=acct_b), metadata=_md(token_a)
            ),
        )
        ops = sa.ListAuditEntries(api.ListAuditEntriesRequest(account=acct_a), metadata=op_a)
        out["operator_audit"] = [_as_dict(e) for e in ops.entries]
        # Aggregates: the regulator over gRPC, the operator with the CLI.
        req = api.GetAggregatesRequest(
            purpose=api.READ_PURPOSE_REGULATION, zone=zone, from_unix=start, to_unix=end
        )
        rep = sa.GetAggregates(req, metadata=reg_a)
        out["aggregates_rpc"] = _as_dict(rep)
        out["raw"]["aggregates GetAggregates"] = json.dumps(out["aggregates_rpc"]).encode()
        res = CliRunner().invoke(
            cli,
            [
                "aggregates",
                "--zone",
                zone,
                "--from",
                str(start),
                "--to",
                str(end),
                "--json",
                "--home",
                str(a.home),
            ],
        )
        assert res.exit_code == 0, res.output
        out["aggregates_cli"] = json.loads(res.output)
        out["raw"]["aggregates --json"] = res.output.encode()
        refused("holder", "GetAggregates", lambda: sa.GetAggregates(req, metadata=_md(token_a)))
        # The regulator token reads aggregates and nothing else.
        for who, stub, reg, acct in (
            ("regulator a", sa, reg_a, acct_a),
            ("regulator b", sb, reg_b, acct_b),
        ):
            for rpc, request in (
                ("ListDevices", api.ListDevicesRequest(purpose=api.READ_PURPOSE_TRANSPARENCY)),
                ("ListAccounts", api.ListAccountsRequest(purpose=api.READ_PURPOSE_TRANSPARENCY)),
                ("ListBundles", api.ListBundlesRequest(purpose=api.READ_PURPOSE_TRANSPARENCY)),
                ("ListClaims", api.ListClaimsRequest(purpose=api.READ_PURPOSE_TRANSPARENCY)),
                ("ListAuditEntries", api.ListAuditEntriesRequest(account=acct)),
                (
                    "GetMatchingReport",
                    api.GetMatchingReportRequest(account=acct, start_unix=start, end_unix=end),
                ),
            ):
                refused(
                    who, rpc, lambda s=stub, r=rpc, q=request, m=reg: getattr(s, r)(q, metadata=m)
                )
        # The claimant's hourly matching report, and its SD receipt shown to a verifier.
        msg = sb.GetMatchingReport(
            api.GetMatchingReportRequest(account=acct_b, start_unix=start, end_unix=end),
            metadata=_md(token_b),
        )
        out["matching"] = _as_dict(msg)
        out["raw"]["matching report"] = json.dumps(out["matching"]).encode()
        claims = sb.ListClaims(
            api.ListClaimsRequest(purpose=api.READ_PURPOSE_HOLDINGS), metadata=_md(token_b)
        ).claims
        full = next(c.sd_receipt for c in claims if c.id == claim_id)
        out["sd_receipt"] = full
        out["presentation"] = receipts.present(full, SHOWN)
        out["raw"]["SD presentation"] = out["presentation"].encode()
    finally:
        for server, channel in servers:
            channel.close()
            server.stop(0).wait()
    return out
