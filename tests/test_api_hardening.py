"""Findings of the attacker's review (issue #7): local gRPC API, federation server, node home."""

from __future__ import annotations

import logging
import re
import tempfile
from types import SimpleNamespace

import grpc
import pytest
from fednet import FedNet

from eap.node.api.guard import ThrottledLog
from eap.node.api.server import build_server
from eap.node.api.servicer import NodeApiServicer
from eap.node.api.status import field_violations
from eap.node.config import create_home
from eap.node.crypto import load_tls_material, peer_channel_options
from eap.node.domain.rules import MAX_READING_WH
from eap.node.errors import ConfigError
from eap.node.federation.server import build_server as build_fed_server
from eap.node.federation.settings import FederationSettings
from eap.node.federation.transfers import split_destination
from eap.node.records.enums import Purpose
from eap.node.store import repos
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc

INT64_MAX = 2**63 - 1
OPS = api.READ_PURPOSE_OPERATIONS
CSV_HEADER = (
    "interval_start_datetime,interval_end_datetime,device_id,interval_usage,gross_net_indicator"
)


def _csv(*rows: tuple[str, int]) -> bytes:
    """An hourly CSV for meter ``1``: ``(start hour, Wh)`` rows."""
    lines = [CSV_HEADER]
    for hour, wh in rows:
        h = int(hour)
        lines.append(f"2024-01-01 {h:02d}:00:00,2024-01-01 {h + 1:02d}:00:00,1,{wh},NET")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def served(node):
    server, port = build_server(node, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield node, channel
    channel.close()
    server.stop(0).wait()


def _call(channel, token: str):
    stub = node_api_pb2_grpc.NodeApiStub(channel)
    md = (("authorization", f"Bearer {token}"),)

    def call(method: str, request):
        return getattr(stub, method)(request, metadata=md)

    return call


def _refused(call, method: str, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(method, request)
    return err.value


# -- 1. meter values that overflow int64 arithmetic -----------------------------------------------


@pytest.mark.parametrize("wh", [INT64_MAX, 2**62, MAX_READING_WH + 1, 251])
def test_out_of_range_meter_reading_is_invalid_argument_and_changes_nothing(served, solar, wh):
    node, channel = served
    call = _call(channel, node.config.api_token())
    before = call("GetStatus", api.GetStatusRequest())
    req = api.ImportReadingsRequest(request_id=f"i{wh}", content=_csv((0, 10), (1, wh)),
                                    filename="m.csv")
    err = _refused(call, "ImportReadings", req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err)] == ["content.readings[1@1704070800].wh"]
    after = call("GetStatus", api.GetStatusRequest())
    assert after == before and after.readings == 0 and after.wh_metered == 0


def test_reading_at_the_capacity_bound_is_accepted(served, solar):
    node, channel = served
    call = _call(channel, node.config.api_token())
    res = call("ImportReadings",
               api.ImportReadingsRequest(request_id="i", content=_csv((0, 250)), filename="m.csv"))
    assert res.readings == 1 and res.wh == 250


def test_status_survives_stored_totals_past_int64(served, solar):
    """A node that stored such readings before the fix still answers GetStatus, saturated."""
    node, channel = served
    _, dev = solar
    with node.store.transaction() as conn:
        repos.insert_readings(conn, {
            "device_id": [dev.id] * 2, "interval_start": [0, 3600], "interval_end": [3600, 7200],
            "wh": [INT64_MAX] * 2, "issued_wh": [0, 0],
        })
    st = _call(channel, node.config.api_token())("GetStatus", api.GetStatusRequest())
    assert st.readings == 2 and st.wh_metered == INT64_MAX


# -- 3. malformed request bodies -------------------------------------------------------------------

GARBAGE = b"\x0a\x05ab"  # a length-delimited field cut short: no message decodes from it


def _raw_unary(channel, method: str):
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def _guard_records(caplog) -> list:
    return [r for r in caplog.records if r.name == "eap.node.api.guard" or r.exc_info]


@pytest.mark.parametrize("method", ["GetStatus", "TransferBundle", "ImportReadings"])
def test_malformed_body_is_invalid_argument_logged_once_without_traceback(
    served, caplog, method
):
    _node, channel = served
    call = _raw_unary(channel, f"/eap.v1.NodeApi/{method}")
    caplog.set_level(logging.INFO)
    for _ in range(20):  # unauthenticated, as an attacker flooding the log would call
        with pytest.raises(grpc.RpcError) as err:
            call(GARBAGE, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed request body" in err.value.details()
    lines = _guard_records(caplog)
    assert len(lines) == 1 and lines[0].exc_info is None, lines
    assert f"/eap.v1.NodeApi/{method}" in lines[0].getMessage()
    assert "\n" not in lines[0].getMessage()
    assert not [r for r in caplog.records if r.name.startswith("grpc")]


def test_well_formed_calls_still_pass_the_guard(served):
    node, channel = served
    st = _call(channel, node.config.api_token())("GetStatus", api.GetStatusRequest())
    assert st.node_id == node.node_id
    raw = _raw_unary(channel, "/eap.v1.NodeApi/GetStatus")
    with pytest.raises(grpc.RpcError) as err:  # decodes fine, so authentication runs
        raw(b"", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_throttled_log_counts_what_it_suppressed(caplog):
    now = [100.0]
    throttle = ThrottledLog(logging.getLogger("eap.test.throttle"), 60, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="eap.test.throttle")
    assert throttle.warning("/m", "first")
    assert not any(throttle.warning("/m", "again") for _ in range(5))
    assert throttle.warning("/other", "other method")  # one budget per key
    now[0] += 61
    assert throttle.warning("/m", "later")
    assert [r.getMessage() for r in caplog.records] == [
        "first",
        "other method",
        "later (5 more since the last report)",
    ]


@pytest.fixture(scope="module")
def fed_pair(tmp_path_factory):
    net = FedNet(tmp_path_factory.mktemp("pair"), [("a.example", "CO-ANT"), ("b.example", "ES")])
    net.connect_all()
    yield net
    net.stop_all()


def test_federation_answers_malformed_bodies_with_invalid_argument(fed_pair, caplog):
    a, b = fed_pair["a.example"], fed_pair["b.example"]
    settings = FederationSettings.load(a.node.config)
    server, port, _ = build_fed_server(a.node, settings=settings, listen="127.0.0.1:0")
    server.start()
    tls = load_tls_material(b.tls_dir)
    channel = grpc.secure_channel(f"127.0.0.1:{port}", tls.channel_credentials(),
                                  options=peer_channel_options("a.example"))
    caplog.set_level(logging.INFO)
    try:
        hello = _raw_unary(channel, "/eap.v1.Federation/Hello")
        pull = channel.unary_stream("/eap.v1.Federation/PullBatches",
                                    request_serializer=None, response_deserializer=None)
        for _ in range(10):
            with pytest.raises(grpc.RpcError) as err:
                hello(GARBAGE, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as err:
                list(pull(GARBAGE, timeout=10))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        channel.close()
        server.stop(0).wait()
    lines = [r for r in caplog.records if "malformed" in r.getMessage() or r.exc_info]
    assert len(lines) == 2 and not any(r.exc_info for r in lines), lines
    assert not [r for r in caplog.records if r.name.startswith("grpc")]


# -- 4. field violations name the request's own fields; page tokens are checked ------------------


def _fields(err: grpc.RpcError) -> list[str]:
    return [f for f, _ in field_violations(err)]


def _roots_are_request_fields(request, err: grpc.RpcError) -> bool:
    fields = request.DESCRIPTOR.fields_by_name
    return all(re.split(r"[.\[]", f)[0] in fields for f in _fields(err))


class _Transfers:
    """The cross-node engine as far as the servicer needs it: the real destination rules."""

    settings = SimpleNamespace(inline_wait_s=1.0)

    def send(self, bundle_ref, *, to, **_):
        split_destination(to)
        raise AssertionError("a malformed destination must not get here")


@pytest.fixture
def wired(node):
    servicer = NodeApiServicer(node, transfers=_Transfers())
    server, port = build_server(node, "127.0.0.1:0", servicer=servicer)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield node, _call(channel, node.config.api_token())
    channel.close()
    server.stop(0).wait()


BAD_REQUESTS = [
    ("IssueRecords", api.IssueRecordsRequest(request_id="s", since_unix=-1), ["since_unix"]),
    ("ImportReadings", api.ImportReadingsRequest(request_id="i"), ["content"]),
    ("ImportReadings", api.ImportReadingsRequest(request_id="i", format="nope"), ["format"]),
    ("GetBundle", api.GetBundleRequest(id="medellin.example/1-2", purpose=OPS), ["id"]),
    ("ListBundles", api.ListBundlesRequest(purpose=99), ["purpose"]),
    ("GetBundle", api.GetBundleRequest(id="x", purpose=77), ["purpose"]),
    ("TransferBundle",
     api.TransferBundleRequest(request_id="t", bundle_id="b", to_account="Bad Node/acct"),
     ["to_account", "to_account"]),
    ("TransferBundle", api.TransferBundleRequest(request_id="t", bundle_id="b", to_account="x"),
     ["to_account"]),
    ("RetireBundle", api.RetireBundleRequest(request_id="r", bundle_id="b", wh=-1),
     ["beneficiary", "purpose", "wh"]),
    ("RegisterDevice", api.RegisterDeviceRequest(request_id="d"), None),
    ("CreateAccount", api.CreateAccountRequest(request_id="a", identity="x"), ["identity"]),
]


@pytest.mark.parametrize(("method", "request_", "expected"), BAD_REQUESTS,
                         ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(BAD_REQUESTS)])
def test_violations_name_the_request_fields(wired, method, request_, expected):
    _node, call = wired
    err = _refused(call, method, request_)
    assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert _roots_are_request_fields(request_, err), _fields(err)
    if expected is not None:
        assert _fields(err) == expected


@pytest.mark.parametrize("filename", ["", "readings.csv"])
def test_import_errors_never_show_a_server_path(served, filename):
    node, channel = served
    call = _call(channel, node.config.api_token())
    err = _refused(call, "ImportReadings",
                   api.ImportReadingsRequest(request_id="i", filename=filename))
    (field, description), = field_violations(err)
    assert field == "content" and "no meter-data reader recognises" in description
    assert tempfile.gettempdir() not in err.details() + description
    assert "upload" not in description
    assert description.startswith(f"{filename or 'content'}: ")


PAGE_TOKENS = {
    "ListAccounts": ("acct_nope", api.ListAccountsRequest),
    "ListDevices": ("dev_", api.ListDevicesRequest),
    "ListBundles": ("not a bundle id", api.ListBundlesRequest),
    "ListClaims": ("12abc", api.ListClaimsRequest),
}


@pytest.mark.parametrize("method", sorted(PAGE_TOKENS))
@pytest.mark.parametrize("token", ["bad", "-1", "' OR 1=1 --", "9" * 40])
def test_malformed_page_token_is_invalid_argument(served, method, token):
    node, channel = served
    call = _call(channel, node.config.api_token())
    own_bad, request_type = PAGE_TOKENS[method]
    for bad in (token, own_bad):
        err = _refused(call, method, request_type(purpose=OPS, page_token=bad))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _fields(err) == ["page_token"]


def test_page_tokens_handed_out_still_page(served, solar, meter_csv):
    node, channel = served
    call = _call(channel, node.config.api_token())
    node.import_readings(meter_csv, request_id="i")
    node.issue(request_id="s")
    for k in range(3):  # with the owner: 4 accounts
        node.create_account(request_id=f"a{k}")
    for b in node.list_bundles(purpose=Purpose.OPERATIONS, page_size=3).items:
        node.retire(b.id, beneficiary="Metro", purpose="scope2", request_id=f"r-{b.id}")
    for method, (_, request_type) in PAGE_TOKENS.items():
        seen, token = [], ""
        for _ in range(4):
            page = call(method, request_type(purpose=OPS, page_size=2, page_token=token))
            seen += list(getattr(page, page.DESCRIPTOR.fields[0].name))
            token = page.next_page_token
            if not token:
                break
        expected = {"ListAccounts": 4, "ListDevices": 1, "ListBundles": 8, "ListClaims": 3}
        assert len({m.SerializeToString() for m in seen}) == expected[method], method


# -- 5. secrets of the node home ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["api-token", "node-secret"])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_loose_home_secrets_are_refused_naming_file_and_fix(tmp_path, name, mode):
    cfg = create_home(tmp_path / "home", "medellin.example", "CO-ANT", operator_signed=True)
    read = {"api-token": cfg.api_token, "node-secret": cfg.node_secret}[name]
    assert read()  # created 0600: fine
    path = tmp_path / "home" / name
    path.chmod(mode)
    with pytest.raises(ConfigError) as err:
        read()
    assert str(path) in str(err.value) and f"chmod 600 {path}" in str(err.value)
    path.chmod(0o400)
    assert read()


def test_loose_api_token_fails_the_call_not_the_process(served):
    """A token loosened while the server runs: calls fail cleanly, nothing is accepted."""
    node, channel = served
    token = node.config.api_token()
    node.config.token_path.chmod(0o644)
    err = _refused(_call(channel, token), "GetStatus", api.GetStatusRequest())
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    "fields",
    [{}, {"parent_id": "node-a.example/0-20", "held_by": "node-b.example"}],
)
def test_a_bundle_survives_the_wire_both_ways(fields):
    """``convert.bundle_from`` is the inverse of ``convert.bundle``: an admitted import and a
    test vector read every field as the sender wrote it (empty strings become None)."""
    from support import make_bundle

    from eap.node.api import convert
    from eap.node.records.enums import Status

    b = make_bundle("node-a.example", 10, 15, "acct_x", Status.ACTIVE, hour=3, **fields)
    assert convert.bundle_from(convert.bundle(b)) == b
