"""Observability end to end: one trace across two real federation servers, trust-gated trace
context, Prometheus ``/metrics`` over a socket, JSON logs without private fields."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import time
import urllib.error
import urllib.request

import pytest
from fednet import FedNet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from support import write_csv

from eap.node import telemetry
from eap.node.errors import PermissionDenied
from eap.node.federation.client import PeerClient
from eap.node.federation.runtime import FederationRuntime
from eap.node.records.enums import Purpose
from eap.node.telemetry import logs
from eap.node.telemetry.spans import ALLOWED

A, B, C = "a.example", "b.example", "c.example"
# Private values of the flow: none may reach a log line or a span attribute.
LABEL = "Casa-Lucia-Privada"
METER = "MTR-SECRET-7781"
LAT, LON = 6.2442, -75.5812
BENEFICIARY = "Beneficiaria-Ana-Gomez"
WH = 900


class Net:
    """Two trusted nodes (a, b) serving federation in this process, and c: a node with a
    certificate of the same CA that b does not trust."""

    def __init__(self, tmp_path):
        self.fed = FedNet(tmp_path, [(A, "CO-ANT"), (B, "ES"), (C, "NL")])
        self.fed.connect(A, B)
        self.fed.trust(C, B)  # c knows b; b does not know c
        self.spans: dict[str, InMemorySpanExporter] = {}
        self.runtimes: dict[str, FederationRuntime] = {}
        for node_id in (A, B, C):
            exporter = InMemorySpanExporter()
            tele = telemetry.of(self.fed[node_id].node)
            tele.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
            self.spans[node_id] = exporter
        for node_id in (A, B):
            rt = FederationRuntime(self.fed[node_id].node)
            rt.server.start()  # the servers only: no background worker racing the test
            self.runtimes[node_id] = rt

    def node(self, node_id):
        return self.fed[node_id].node

    def close(self):
        for rt in self.runtimes.values():
            rt.stop(grace=1)
        self.fed.stop_all()

    def finished(self, node_id):
        return list(self.spans[node_id].get_finished_spans())


@pytest.fixture
def net(tmp_path):
    n = Net(tmp_path)
    yield n
    n.close()


def _issue(node, tmp_path):
    """A private account, device and meter on ``node``; one hour of WH Wh issued."""
    created = node.create_account(request_id="acct-1", label=LABEL)
    owner = created.account.id
    node.register_device(
        request_id="dev-1",
        local_ref="roof-private-1",
        capacity_w=5000,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2020-01-01",
        latitude=LAT,
        longitude=LON,
        zone=node.config.zone,
        owner=owner,
        meter_id=METER,
        attestation_evidence="grid-connection private",
    )
    t0 = dt.datetime(2026, 1, 1)
    rows = [
        (
            t0.strftime("%Y-%m-%d %H:%M:%S"),
            (t0 + dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"),
            METER,
            WH,
        )
    ]
    node.import_readings(write_csv(tmp_path / "readings.csv", rows), request_id="imp-1")
    node.issue(request_id="iss-1")
    bundle = node.list_bundles(purpose=Purpose.OPERATIONS).items[0]
    return created, bundle


def _send(net, tmp_path, wh=300):
    a, b = net.node(A), net.node(B)
    created, bundle = _issue(a, tmp_path)
    dest = b.create_account(request_id="acct-b", label="Receiver-Private-Label")
    engine = net.runtimes[A].transfers
    _, rec = engine.send(bundle.id, to=f"{B}/{dest.account.id}", wh=wh, request_id="x-1", wait_s=20)
    assert rec.state == "committed"
    return created, dest, rec, bundle


def test_cross_node_transfer_is_one_trace_across_both_nodes(net, tmp_path):
    _, _, rec, _ = _send(net, tmp_path)
    root = [s for s in net.finished(A) if s.name == "eap.transfer.cross_node"]
    assert len(root) == 1
    trace_id = root[0].context.trace_id
    assert root[0].attributes["eap.wh"] == 300
    assert root[0].attributes["eap.transfer_id"] == rec.id
    assert root[0].attributes["eap.outcome"] == "ok"

    a_ids = {s.context.span_id: s for s in net.finished(A)}
    clients = {
        sid: s
        for sid, s in a_ids.items()
        if s.kind == trace.SpanKind.CLIENT and s.context.trace_id == trace_id
    }
    served = [
        s
        for s in net.finished(B)
        if s.kind == trace.SpanKind.SERVER
        and s.name in ("eap.v1.Federation/PrepareTransfer", "eap.v1.Federation/DecideTransfer")
    ]
    assert {s.name for s in served} == {
        "eap.v1.Federation/PrepareTransfer",
        "eap.v1.Federation/DecideTransfer",
    }
    for s in served:
        # b's server span continues a's trace, as the child of a's client span of that call
        assert s.context.trace_id == trace_id
        assert s.parent is not None and s.parent.is_remote
        assert s.parent.span_id in clients
        assert s.attributes["eap.peer"] == A
        assert s.attributes["rpc.grpc.status_code"] == 0
    # and b's domain work hangs below its server span
    accept = [s for s in net.finished(B) if s.name == "eap.transfer.accept_prepare"]
    assert accept and accept[0].context.trace_id == trace_id
    assert accept[0].parent.span_id in {s.context.span_id for s in served}


def test_untrusted_caller_does_not_join_the_trace(net):
    c = net.node(C)
    tracer = telemetry.of(c).tracer
    client = PeerClient(c)
    try:
        with tracer.start_as_current_span("c.probe") as probe, pytest.raises(PermissionDenied):
            client.hello(B)
    finally:
        client.close()
    offered = probe.get_span_context()
    hello = [s for s in net.finished(B) if s.name == "eap.v1.Federation/Hello"]
    assert len(hello) == 1
    span = hello[0]
    assert span.context.trace_id != offered.trace_id  # a new trace, not c's
    assert span.parent is None
    assert [link.context.trace_id for link in span.links] == [offered.trace_id]
    assert span.links[0].attributes["eap.link.untrusted"] is True
    assert span.attributes["rpc.grpc.status_code"] == 7  # PERMISSION_DENIED
    # c's own client span did send the context: only b's refusal kept it out
    sent = [s for s in net.finished(C) if s.kind == trace.SpanKind.CLIENT]
    assert sent and sent[0].context.trace_id == offered.trace_id


def test_sync_is_one_trace(net, tmp_path):
    _issue(net.node(A), tmp_path)
    syncer = net.runtimes[B].syncer
    result = syncer.sync_peer(A)
    assert result.batches == 1
    sync = [s for s in net.finished(B) if s.name == "eap.sync"]
    assert sync[0].attributes["eap.batches"] == 1
    assert sync[0].attributes["eap.wh"] == WH
    pulled = [s for s in net.finished(A) if s.name == "eap.v1.Federation/PullBatches"]
    assert pulled and pulled[-1].context.trace_id == sync[0].context.trace_id


def _scrape(port: int, wait_s: float = 30.0) -> dict[tuple[str, tuple], float]:
    """The samples of /metrics; a refused connection is retried until ``wait_s`` (a serve
    process may report ready before its metrics listener is up on a loaded machine)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                text = resp.read().decode()
            break
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_endpoint_counts_the_transferred_wh(net, tmp_path):
    ta, tb = telemetry.of(net.node(A)), telemetry.of(net.node(B))
    port_a, port_b = ta.start_metrics_server("127.0.0.1:0"), tb.start_metrics_server("127.0.0.1:0")
    before_a, before_b = _scrape(port_a), _scrape(port_b)
    out = ("eap_transferred_wh_total", (("direction", "out"), ("scope", "cross_node")))
    into = ("eap_transferred_wh_total", (("direction", "in"), ("scope", "cross_node")))
    assert before_a.get(out, 0) == 0 and before_b.get(into, 0) == 0
    _, dest, _, bundle = _send(net, tmp_path, wh=250)
    after_a, after_b = _scrape(port_a), _scrape(port_b)
    assert after_a[out] == 250
    assert after_b[into] == 250
    assert after_a[("eap_issued_wh_total", ())] == WH
    committed = (("direction", "out"), ("outcome", "committed"), ("scope", "cross_node"))
    assert after_a[("eap_transfers_total", committed)] == 1
    assert after_a[("eap_import_readings_total", ())] == 1
    # an idempotent replay moves nothing
    engine = net.runtimes[A].transfers
    engine.send(bundle.id, to=f"{B}/{dest.account.id}", wh=250, request_id="x-1")
    assert _scrape(port_a)[out] == 250
    # RPC latency histograms of the federation server, by method and status
    served = [k for k in after_b if k[0] == "eap_rpc_server_duration_seconds_count"]
    methods = {dict(k[1])["rpc_method"] for k in served}
    assert {"PrepareTransfer", "DecideTransfer"} <= methods
    # gauges: the outbox and the sync lag per peer
    assert any(k[0] == "eap_outbox_depth" for k in after_a)
    assert any(k[0] == "eap_sync_lag_seconds" and dict(k[1]).get("peer") == A for k in after_b)


def test_json_logs_carry_trace_ids_and_no_private_fields(net, tmp_path):
    stream = io.StringIO()
    handler = logs.configure("json", logging.DEBUG, stream=stream)
    try:
        created, dest, _, _ = _send(net, tmp_path)
        a = net.node(A)
        bundle = next(x for x in a.list_bundles(purpose=Purpose.OPERATIONS).items if x.status == 1)
        a.retire(
            bundle.id, beneficiary=BENEFICIARY, purpose="audit-test", wh=100, request_id="ret-1"
        )
        net.runtimes[B].syncer.sync_peer(A)
        with telemetry.of(a).tracer.start_as_current_span("probe") as probe:
            logging.getLogger("eap.test").info("inside a span")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) > 5
    for entry in lines:
        assert {"timestamp", "level", "logger", "message", "trace_id", "span_id"} <= set(entry)
    mine = next(e for e in lines if e["message"] == "inside a span")
    assert mine["trace_id"] == f"{probe.get_span_context().trace_id:032x}"
    assert mine["span_id"] == f"{probe.get_span_context().span_id:016x}"
    assert any(e["trace_id"] for e in lines if e["logger"].startswith("eap.node"))
    a_home = net.fed[A].home
    secrets = [
        LABEL,
        METER,
        BENEFICIARY,
        "Receiver-Private-Label",
        "roof-private-1",
        str(LAT),
        str(LON),
        created.token,
        dest.token,
        a.config.api_token(),
        a.config.node_secret().hex(),
    ]
    for key in (a_home / "keys").rglob("*"):
        if key.is_file():
            secrets += [
                line
                for line in key.read_text(errors="ignore").splitlines()
                if len(line) > 20 and "-----" not in line
            ]
    for secret in secrets:
        assert secret and secret not in text, f"log output leaks {secret[:12]}…"
    # the location rounded to two decimals, as a number of its own: a timestamp's
    # milliseconds (":56.243Z") hold the same digits after another digit
    for rounded in ("6.24", "75.58"):
        assert not re.search(rf"(?<![\d]){re.escape(rounded)}", text), f"log output leaks {rounded}"
    # span attributes of every node stay on the allowlist
    for node_id in (A, B):
        for s in net.finished(node_id):
            for key, value in (s.attributes or {}).items():
                if key.startswith("eap."):
                    assert key[4:] in ALLOWED | {"link.untrusted"}
                assert not any(secret in str(value) for secret in secrets[:5])


def test_serve_process_json_logs_and_metrics(tmp_path):
    """``eap-node serve`` as a process: ``[telemetry] metrics_listen`` serves /metrics and
    ``EAP_LOG_FORMAT=json`` (the global ``--log-format``) makes every log line a JSON object."""
    from fednet import free_port, write_settings

    fed = FedNet(tmp_path, [(A, "CO-ANT")])
    port = free_port()
    write_settings(fed[A].home, "telemetry", metrics_listen=f"127.0.0.1:{port}")
    fed[A].issue_hours(2)
    fed[A].close()
    try:
        fed[A].start(env={"EAP_LOG_FORMAT": "json", "EAP_LOG_LEVEL": "debug"})
        scraped = _scrape(port)
        assert ("eap_outbox_depth", (("kind", "all"),)) in scraped
        assert any(
            k[0] == "target_info" and dict(k[1]).get("service_instance_id") == A for k in scraped
        )
    finally:
        fed.stop_all()
    entries = [json.loads(line) for line in fed[A].log().splitlines() if line.startswith("{")]
    assert entries, fed[A].log()
    assert all(
        {"timestamp", "level", "logger", "message", "trace_id", "span_id"} <= set(e)
        for e in entries
    )
    # nothing but the serve banners is printed outside JSON
    others = [line for line in fed[A].log().splitlines() if line and not line.startswith("{")]
    assert all(line.startswith(f"eap-node {A} serving") for line in others), others


def test_bad_telemetry_settings_are_refused(tmp_path):
    from eap.node.errors import ConfigError
    from eap.node.telemetry import TelemetrySettings

    class Cfg:
        extra = {"telemetry": {"traces_exporter": "zipkin"}}

    with pytest.raises(ConfigError, match="traces_exporter"):
        TelemetrySettings.from_config(Cfg(), env={})
    Cfg.extra = {"telemetry": {"metrics_listen": "nowhere"}}
    with pytest.raises(ConfigError, match="metrics_listen"):
        TelemetrySettings.from_config(Cfg(), env={})
    Cfg.extra = {"telemetry": {"traces_exporter": "otlp", "otlp_endpoint": "http://c:4317"}}
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "city-node"}
    s = TelemetrySettings.from_config(Cfg(), env=env)
    assert (s.traces_exporter, s.service_name, s.otlp_endpoint) == (
        "console",
        "city-node",
        "http://c:4317",
    )


def test_settlement_round_is_one_trace(net):
    settlement = net.runtimes[A].transfers.settlement
    result = settlement.run("2026-01-01", request_id="round-1")
    (root,) = [s for s in net.finished(A) if s.name == "eap.settlement.round"]
    assert root.attributes["eap.round_id"] == result.round_id
    assert root.attributes["eap.state"] == result.state
    views = [s for s in net.finished(B) if s.name == "eap.v1.Federation/GetSettlementView"]
    assert views and all(s.context.trace_id == root.context.trace_id for s in views)
    handled = [s for s in net.finished(B) if s.name == "eap.settlement.view"]
    assert handled and handled[0].parent.span_id == views[0].context.span_id


@pytest.mark.parametrize("accept", [False, True])
def test_local_api_adopts_a_traceparent_only_when_configured(tmp_path, accept):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from eap.node.api.server import build_server
    from eap.node.config import create_home
    from eap.node.domain.node import Node

    cfg = create_home(tmp_path / "n", "n.example", "ES")
    cfg.extra["telemetry"] = {"api_accept_traceparent": accept}
    node = Node.initialise(cfg)
    exporter = InMemorySpanExporter()
    telemetry.of(node).tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    server, port = build_server(node, "127.0.0.1:0")
    server.start()
    offered_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
            health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(service=""),
                timeout=10,
                metadata=(("traceparent", f"00-{offered_trace}-00f067aa0ba902b7-01"),),
            )
    finally:
        server.stop(None)
        node.close()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "grpc.health.v1.Health/Check"]
    assert span.kind == trace.SpanKind.SERVER
    assert (f"{span.context.trace_id:032x}" == offered_trace) is accept
    assert bool(span.links) is not accept
    assert span.attributes["rpc.grpc.status_code"] == 0


def test_refused_transfer_counts_as_aborted_on_both_nodes(net, tmp_path):
    a = net.node(A)
    _, bundle = _issue(a, tmp_path)
    engine = net.runtimes[A].transfers
    _, rec = engine.send(
        bundle.id, to=f"{B}/acct_{'a' * 26}", wh=100, request_id="bad-1", wait_s=20
    )
    assert rec.state == "aborted"
    aborted = {"scope": "cross_node", "outcome": "aborted"}
    for node_id, direction in ((A, "out"), (B, "in")):
        port = telemetry.of(net.node(node_id)).start_metrics_server("127.0.0.1:0")
        key = tuple(sorted({**aborted, "direction": direction}.items()))
        assert _scrape(port)[("eap_transfers_total", key)] == 1, node_id
    (root,) = [s for s in net.finished(A) if s.name == "eap.transfer.cross_node"]
    assert root.attributes["eap.state"] == "aborted"


def test_background_delivery_continues_the_transfer_trace(net, tmp_path):
    """The peer is down when the transfer starts; the worker delivers later, outside any
    span, and the peer's spans still join the transfer's trace (traceparent in the outbox)."""
    net.runtimes[B].stop(grace=0)
    a, b = net.node(A), net.node(B)
    _, bundle = _issue(a, tmp_path)
    dest = b.create_account(request_id="acct-b", label="Receiver-Private-Label")
    engine = net.runtimes[A].transfers
    _, rec = engine.send(
        bundle.id, to=f"{B}/{dest.account.id}", wh=200, request_id="late-1", wait_s=0.2
    )
    assert rec.state == "preparing"
    (root,) = [s for s in net.finished(A) if s.name == "eap.transfer.cross_node"]
    net.runtimes[B] = FederationRuntime(b)
    net.runtimes[B].server.start()
    assert trace.get_current_span().get_span_context().is_valid is False
    for _ in range(100):  # the worker's rounds, until the channel has reconnected
        engine.tick(force=True)
        if engine.get(rec.id).state != "preparing":
            break
        time.sleep(0.1)
    assert engine.get(rec.id).state == "committed"
    served = [s for s in net.finished(B) if s.name == "eap.v1.Federation/PrepareTransfer"]
    assert served and {s.context.trace_id for s in served} == {root.context.trace_id}
    late = [
        s
        for s in net.finished(A)
        if s.name == "eap.transfer.deliver" and s.attributes["eap.outcome"] == "ok"
    ]
    assert {s.attributes["eap.phase"] for s in late} == {"prepare", "commit"}
    assert all(s.context.trace_id == root.context.trace_id for s in late)


def test_unsampled_spans_do_not_break_operations(tmp_path, monkeypatch):
    """``OTEL_TRACES_SAMPLER=always_off``: spans are not recorded, operations still run and
    the metrics still count."""
    from eap.node.config import create_home
    from eap.node.domain.node import Node

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    node = Node.initialise(create_home(tmp_path / "n", "n.example", "ES", operator_signed=True))
    try:
        _, bundle = _issue(node, tmp_path)
        other = node.create_account(request_id="acct-2", label="x").account.id
        node.transfer(bundle.id, to_account=other, wh=10, request_id="t-1")
        port = telemetry.of(node).start_metrics_server("127.0.0.1:0")
        scraped = _scrape(port)
        assert scraped[("eap_issued_wh_total", ())] == WH
        key = ("eap_transferred_wh_total", (("direction", "local"), ("scope", "local")))
        assert scraped[key] == 10
    finally:
        node.close()


def test_database_errors_do_not_quote_private_values(db_url):
    """A failed statement's error (which the node logs with its traceback) names the SQL,
    not the values bound to it."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from eap.node.store import open_store

    store = open_store(db_url)
    try:
        with pytest.raises(DBAPIError) as info, store.transaction() as conn:
            conn.execute(text("SELECT * FROM no_such_table WHERE x = :meter"), {"meter": METER})
        assert METER not in str(info.value)
        assert "no_such_table" in str(info.value)
    finally:
        store.dispose()


def test_pending_peer_is_authenticated_but_does_not_join_the_trace(net):
    """c is on b's trust list as ``pending`` (pinned fingerprint, no handshake): its Hello is
    served, but b still starts a trace of its own for it."""
    from eap.node.federation.descriptor import describe
    from eap.node.federation.peers import TrustList

    c = net.node(C)
    desc = describe(c)
    TrustList(net.node(B).store, B).add_pinned(C, net.fed[C].endpoint, desc.signer_fingerprint())
    net.runtimes[B].trust.reload()
    client = PeerClient(c)
    try:
        with telemetry.of(c).tracer.start_as_current_span("c.hello") as probe:
            client.hello(B)
    finally:
        client.close()
    (span,) = [s for s in net.finished(B) if s.name == "eap.v1.Federation/Hello"]
    assert span.attributes["rpc.grpc.status_code"] == 0  # served
    assert span.attributes["eap.peer"] == C
    assert span.context.trace_id != probe.get_span_context().trace_id
    assert span.links[0].context.trace_id == probe.get_span_context().trace_id


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["transfer", "retire", "replay"]), st.integers(1, 40)),
        min_size=1,
        max_size=6,
    )
)
def test_wh_counters_equal_the_committed_wh(tmp_path_factory, steps):
    """Whatever mix of local transfers, claims and replays: the Wh counters moved by exactly
    the Wh committed, and a replay of a request id moves nothing."""
    from eap.node.config import create_home
    from eap.node.domain.node import Node

    tmp = tmp_path_factory.mktemp("wh")
    node = Node.initialise(create_home(tmp / "n", "n.example", "ES", operator_signed=True))
    try:
        _, bundle = _issue(node, tmp)
        other = node.create_account(request_id="acct-2", label="x").account.id
        m = telemetry.of(node)
        port = m.start_metrics_server("127.0.0.1:0")
        moved = claimed = 0
        ref, last = bundle.id, None
        for i, (op, wh) in enumerate(steps):
            if op == "replay" and last is not None:
                last()
                continue
            if op == "transfer":

                def call(ref=ref, wh=wh, i=i):
                    return node.transfer(ref, to_account=other, wh=wh, request_id=f"t{i}")

                ref = call().remainder.id
                moved += wh
            else:

                def call(ref=ref, wh=wh, i=i):
                    return node.retire(ref, beneficiary="b", purpose="p", wh=wh, request_id=f"r{i}")

                call()
                ref = next(
                    b.id
                    for b in node.list_bundles(purpose=Purpose.OPERATIONS, status=1).items
                    if b.owner != other
                )
                claimed += wh
            last = call
        scraped = _scrape(port)
        local = ("eap_transferred_wh_total", (("direction", "local"), ("scope", "local")))
        assert scraped.get(local, 0) == moved
        assert scraped.get(("eap_claimed_wh_total", ()), 0) == claimed
        assert scraped[("eap_issued_wh_total", ())] == WH
    finally:
        node.close()


def test_a_failing_span_description_does_not_fail_the_operation(caplog):
    """Telemetry runs after the operation committed: its own failure is logged, not raised."""
    from types import SimpleNamespace

    from eap.node.telemetry.ops import traced

    class Op:
        node_id = "n.example"
        config = SimpleNamespace(node_id="n.example", extra={})

        @traced("eap.issue", lambda r: {"not_allowed": r})
        def run(self):
            return 42

    with caplog.at_level(logging.ERROR, logger="eap.node.telemetry.ops"):
        assert Op().run() == 42
    assert "telemetry of eap.issue failed" in caplog.text
