from eap.v1 import federation_pb2 as _federation_pb2
from eap.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReadPurpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    READ_PURPOSE_UNSPECIFIED: _ClassVar[ReadPurpose]
    READ_PURPOSE_OPERATIONS: _ClassVar[ReadPurpose]
    READ_PURPOSE_TRANSPARENCY: _ClassVar[ReadPurpose]
    READ_PURPOSE_HOLDINGS: _ClassVar[ReadPurpose]
    READ_PURPOSE_REGULATION: _ClassVar[ReadPurpose]
READ_PURPOSE_UNSPECIFIED: ReadPurpose
READ_PURPOSE_OPERATIONS: ReadPurpose
READ_PURPOSE_TRANSPARENCY: ReadPurpose
READ_PURPOSE_HOLDINGS: ReadPurpose
READ_PURPOSE_REGULATION: ReadPurpose

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "zone", "protocol_version", "key_id", "devices", "accounts", "readings", "bundles_active", "wh_metered", "wh_issued", "wh_active", "wh_retired", "wh_exported", "wh_imported", "core_backend", "database")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    WH_METERED_FIELD_NUMBER: _ClassVar[int]
    WH_ISSUED_FIELD_NUMBER: _ClassVar[int]
    WH_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    WH_RETIRED_FIELD_NUMBER: _ClassVar[int]
    WH_EXPORTED_FIELD_NUMBER: _ClassVar[int]
    WH_IMPORTED_FIELD_NUMBER: _ClassVar[int]
    CORE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    zone: str
    protocol_version: str
    key_id: str
    devices: int
    accounts: int
    readings: int
    bundles_active: int
    wh_metered: int
    wh_issued: int
    wh_active: int
    wh_retired: int
    wh_exported: int
    wh_imported: int
    core_backend: str
    database: str
    def __init__(self, node_id: _Optional[str] = ..., zone: _Optional[str] = ..., protocol_version: _Optional[str] = ..., key_id: _Optional[str] = ..., devices: _Optional[int] = ..., accounts: _Optional[int] = ..., readings: _Optional[int] = ..., bundles_active: _Optional[int] = ..., wh_metered: _Optional[int] = ..., wh_issued: _Optional[int] = ..., wh_active: _Optional[int] = ..., wh_retired: _Optional[int] = ..., wh_exported: _Optional[int] = ..., wh_imported: _Optional[int] = ..., core_backend: _Optional[str] = ..., database: _Optional[str] = ...) -> None: ...

class CreateAccountRequest(_message.Message):
    __slots__ = ("request_id", "label", "identity", "disclose", "holder_public_key")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    DISCLOSE_FIELD_NUMBER: _ClassVar[int]
    HOLDER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    label: str
    identity: str
    disclose: bool
    holder_public_key: bytes
    def __init__(self, request_id: _Optional[str] = ..., label: _Optional[str] = ..., identity: _Optional[str] = ..., disclose: _Optional[bool] = ..., holder_public_key: _Optional[bytes] = ...) -> None: ...

class CreateAccountResponse(_message.Message):
    __slots__ = ("account", "token")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    account: _types_pb2.Account
    token: str
    def __init__(self, account: _Optional[_Union[_types_pb2.Account, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class ListAccountsRequest(_message.Message):
    __slots__ = ("purpose", "page_size", "page_token")
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    purpose: ReadPurpose
    page_size: int
    page_token: str
    def __init__(self, purpose: _Optional[_Union[ReadPurpose, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAccountsResponse(_message.Message):
    __slots__ = ("accounts", "next_page_token")
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedCompositeFieldContainer[_types_pb2.Account]
    next_page_token: str
    def __init__(self, accounts: _Optional[_Iterable[_Union[_types_pb2.Account, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RegisterDeviceRequest(_message.Message):
    __slots__ = ("request_id", "device", "attestation")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    device: _types_pb2.Device
    attestation: _types_pb2.Attestation
    def __init__(self, request_id: _Optional[str] = ..., device: _Optional[_Union[_types_pb2.Device, _Mapping]] = ..., attestation: _Optional[_Union[_types_pb2.Attestation, _Mapping]] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ("purpose", "page_size", "page_token")
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    purpose: ReadPurpose
    page_size: int
    page_token: str
    def __init__(self, purpose: _Optional[_Union[ReadPurpose, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices", "next_page_token")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[_types_pb2.Device]
    next_page_token: str
    def __init__(self, devices: _Optional[_Iterable[_Union[_types_pb2.Device, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ImportReadingsRequest(_message.Message):
    __slots__ = ("request_id", "format", "content", "filename")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    format: str
    content: bytes
    filename: str
    def __init__(self, request_id: _Optional[str] = ..., format: _Optional[str] = ..., content: _Optional[bytes] = ..., filename: _Optional[str] = ...) -> None: ...

class ImportReadingsResponse(_message.Message):
    __slots__ = ("readings", "wh", "unchanged", "unknown_meters")
    READINGS_FIELD_NUMBER: _ClassVar[int]
    WH_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_METERS_FIELD_NUMBER: _ClassVar[int]
    readings: int
    wh: int
    unchanged: int
    unknown_meters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, readings: _Optional[int] = ..., wh: _Optional[int] = ..., unchanged: _Optional[int] = ..., unknown_meters: _Optional[_Iterable[str]] = ...) -> None: ...

class IssueRecordsRequest(_message.Message):
    __slots__ = ("request_id", "device", "since_unix")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    device: str
    since_unix: int
    def __init__(self, request_id: _Optional[str] = ..., device: _Optional[str] = ..., since_unix: _Optional[int] = ...) -> None: ...

class IssueRecordsResponse(_message.Message):
    __slots__ = ("bundles", "wh", "batch_seq", "merkle_root")
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    WH_FIELD_NUMBER: _ClassVar[int]
    BATCH_SEQ_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    bundles: int
    wh: int
    batch_seq: int
    merkle_root: bytes
    def __init__(self, bundles: _Optional[int] = ..., wh: _Optional[int] = ..., batch_seq: _Optional[int] = ..., merkle_root: _Optional[bytes] = ...) -> None: ...

class ListBundlesRequest(_message.Message):
    __slots__ = ("purpose", "owner", "status", "device", "page_size", "page_token")
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    purpose: ReadPurpose
    owner: str
    status: _types_pb2.BundleStatus
    device: str
    page_size: int
    page_token: str
    def __init__(self, purpose: _Optional[_Union[ReadPurpose, str]] = ..., owner: _Optional[str] = ..., status: _Optional[_Union[_types_pb2.BundleStatus, str]] = ..., device: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBundlesResponse(_message.Message):
    __slots__ = ("bundles", "next_page_token")
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    bundles: _containers.RepeatedCompositeFieldContainer[_types_pb2.RecordBundle]
    next_page_token: str
    def __init__(self, bundles: _Optional[_Iterable[_Union[_types_pb2.RecordBundle, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetBundleRequest(_message.Message):
    __slots__ = ("id", "purpose")
    ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    id: str
    purpose: ReadPurpose
    def __init__(self, id: _Optional[str] = ..., purpose: _Optional[_Union[ReadPurpose, str]] = ...) -> None: ...

class TransferBundleRequest(_message.Message):
    __slots__ = ("request_id", "bundle_id", "to_account", "wh", "price_minor", "currency", "holder_auth")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    TO_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    WH_FIELD_NUMBER: _ClassVar[int]
    PRICE_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    HOLDER_AUTH_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    bundle_id: str
    to_account: str
    wh: int
    price_minor: int
    currency: str
    holder_auth: HolderAuthorization
    def __init__(self, request_id: _Optional[str] = ..., bundle_id: _Optional[str] = ..., to_account: _Optional[str] = ..., wh: _Optional[int] = ..., price_minor: _Optional[int] = ..., currency: _Optional[str] = ..., holder_auth: _Optional[_Union[HolderAuthorization, _Mapping]] = ...) -> None: ...

class TransferBundleResponse(_message.Message):
    __slots__ = ("transferred", "remainder", "transfer")
    TRANSFERRED_FIELD_NUMBER: _ClassVar[int]
    REMAINDER_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    transferred: _types_pb2.RecordBundle
    remainder: _types_pb2.RecordBundle
    transfer: CrossNodeTransfer
    def __init__(self, transferred: _Optional[_Union[_types_pb2.RecordBundle, _Mapping]] = ..., remainder: _Optional[_Union[_types_pb2.RecordBundle, _Mapping]] = ..., transfer: _Optional[_Union[CrossNodeTransfer, _Mapping]] = ...) -> None: ...

class CrossNodeTransfer(_message.Message):
    __slots__ = ("id", "to", "wh", "state", "settled", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    WH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    to: str
    wh: int
    state: _federation_pb2.TransferState
    settled: bool
    reason: str
    def __init__(self, id: _Optional[str] = ..., to: _Optional[str] = ..., wh: _Optional[int] = ..., state: _Optional[_Union[_federation_pb2.TransferState, str]] = ..., settled: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class RetireBundleRequest(_message.Message):
    __slots__ = ("request_id", "bundle_id", "wh", "beneficiary", "purpose", "consumption", "consumption_zone", "holder_auth")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    WH_FIELD_NUMBER: _ClassVar[int]
    BENEFICIARY_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CONSUMPTION_FIELD_NUMBER: _ClassVar[int]
    CONSUMPTION_ZONE_FIELD_NUMBER: _ClassVar[int]
    HOLDER_AUTH_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    bundle_id: str
    wh: int
    beneficiary: str
    purpose: str
    consumption: _types_pb2.Interval
    consumption_zone: str
    holder_auth: HolderAuthorization
    def __init__(self, request_id: _Optional[str] = ..., bundle_id: _Optional[str] = ..., wh: _Optional[int] = ..., beneficiary: _Optional[str] = ..., purpose: _Optional[str] = ..., consumption: _Optional[_Union[_types_pb2.Interval, _Mapping]] = ..., consumption_zone: _Optional[str] = ..., holder_auth: _Optional[_Union[HolderAuthorization, _Mapping]] = ...) -> None: ...

class ListClaimsRequest(_message.Message):
    __slots__ = ("purpose", "beneficiary", "page_size", "page_token")
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    BENEFICIARY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    purpose: ReadPurpose
    beneficiary: str
    page_size: int
    page_token: str
    def __init__(self, purpose: _Optional[_Union[ReadPurpose, str]] = ..., beneficiary: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListClaimsResponse(_message.Message):
    __slots__ = ("claims", "next_page_token")
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    claims: _containers.RepeatedCompositeFieldContainer[_types_pb2.ClaimReceipt]
    next_page_token: str
    def __init__(self, claims: _Optional[_Iterable[_Union[_types_pb2.ClaimReceipt, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetIdentityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublicKey(_message.Message):
    __slots__ = ("key_id", "public_key", "active", "not_after_ms")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    public_key: bytes
    active: bool
    not_after_ms: int
    def __init__(self, key_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., active: _Optional[bool] = ..., not_after_ms: _Optional[int] = ...) -> None: ...

class NodeIdentity(_message.Message):
    __slots__ = ("node_id", "zone", "protocol_versions", "keys", "descriptor")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    zone: str
    protocol_versions: _containers.RepeatedScalarFieldContainer[str]
    keys: _containers.RepeatedCompositeFieldContainer[PublicKey]
    descriptor: bytes
    def __init__(self, node_id: _Optional[str] = ..., zone: _Optional[str] = ..., protocol_versions: _Optional[_Iterable[str]] = ..., keys: _Optional[_Iterable[_Union[PublicKey, _Mapping]]] = ..., descriptor: _Optional[bytes] = ...) -> None: ...

class GetBundleProofRequest(_message.Message):
    __slots__ = ("bundle_id",)
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    def __init__(self, bundle_id: _Optional[str] = ...) -> None: ...

class RunAuditRequest(_message.Message):
    __slots__ = ("skip_peers",)
    SKIP_PEERS_FIELD_NUMBER: _ClassVar[int]
    skip_peers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, skip_peers: _Optional[_Iterable[str]] = ...) -> None: ...

class AuditStatement(_message.Message):
    __slots__ = ("node_id", "digest", "key_id", "verified", "error")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    digest: str
    key_id: str
    verified: bool
    error: str
    def __init__(self, node_id: _Optional[str] = ..., digest: _Optional[str] = ..., key_id: _Optional[str] = ..., verified: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class IssuerAudit(_message.Message):
    __slots__ = ("issuer", "issued_wh", "active_wh", "retired_wh", "in_flight_wh", "missing_wh", "conflicting_wh", "ok", "problems")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    ISSUED_WH_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_WH_FIELD_NUMBER: _ClassVar[int]
    RETIRED_WH_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_WH_FIELD_NUMBER: _ClassVar[int]
    MISSING_WH_FIELD_NUMBER: _ClassVar[int]
    CONFLICTING_WH_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    issued_wh: int
    active_wh: int
    retired_wh: int
    in_flight_wh: int
    missing_wh: int
    conflicting_wh: int
    ok: bool
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, issuer: _Optional[str] = ..., issued_wh: _Optional[int] = ..., active_wh: _Optional[int] = ..., retired_wh: _Optional[int] = ..., in_flight_wh: _Optional[int] = ..., missing_wh: _Optional[int] = ..., conflicting_wh: _Optional[int] = ..., ok: _Optional[bool] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class AuditReport(_message.Message):
    __slots__ = ("ok", "at_ms", "auditor", "statements", "issuers", "problems")
    OK_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    AUDITOR_FIELD_NUMBER: _ClassVar[int]
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    ISSUERS_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    at_ms: int
    auditor: str
    statements: _containers.RepeatedCompositeFieldContainer[AuditStatement]
    issuers: _containers.RepeatedCompositeFieldContainer[IssuerAudit]
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ok: _Optional[bool] = ..., at_ms: _Optional[int] = ..., auditor: _Optional[str] = ..., statements: _Optional[_Iterable[_Union[AuditStatement, _Mapping]]] = ..., issuers: _Optional[_Iterable[_Union[IssuerAudit, _Mapping]]] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class SetPeerLimitsRequest(_message.Message):
    __slots__ = ("peer", "currency", "credit_limit_minor", "settle_threshold_minor")
    PEER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREDIT_LIMIT_MINOR_FIELD_NUMBER: _ClassVar[int]
    SETTLE_THRESHOLD_MINOR_FIELD_NUMBER: _ClassVar[int]
    peer: str
    currency: str
    credit_limit_minor: int
    settle_threshold_minor: int
    def __init__(self, peer: _Optional[str] = ..., currency: _Optional[str] = ..., credit_limit_minor: _Optional[int] = ..., settle_threshold_minor: _Optional[int] = ...) -> None: ...

class ListPeerBalancesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PeerBalance(_message.Message):
    __slots__ = ("peer", "currency", "credit_limit_minor", "settle_threshold_minor", "receivable_minor", "payable_minor", "balance_minor")
    PEER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREDIT_LIMIT_MINOR_FIELD_NUMBER: _ClassVar[int]
    SETTLE_THRESHOLD_MINOR_FIELD_NUMBER: _ClassVar[int]
    RECEIVABLE_MINOR_FIELD_NUMBER: _ClassVar[int]
    PAYABLE_MINOR_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MINOR_FIELD_NUMBER: _ClassVar[int]
    peer: str
    currency: str
    credit_limit_minor: int
    settle_threshold_minor: int
    receivable_minor: int
    payable_minor: int
    balance_minor: int
    def __init__(self, peer: _Optional[str] = ..., currency: _Optional[str] = ..., credit_limit_minor: _Optional[int] = ..., settle_threshold_minor: _Optional[int] = ..., receivable_minor: _Optional[int] = ..., payable_minor: _Optional[int] = ..., balance_minor: _Optional[int] = ...) -> None: ...

class ListPeerBalancesResponse(_message.Message):
    __slots__ = ("balances",)
    BALANCES_FIELD_NUMBER: _ClassVar[int]
    balances: _containers.RepeatedCompositeFieldContainer[PeerBalance]
    def __init__(self, balances: _Optional[_Iterable[_Union[PeerBalance, _Mapping]]] = ...) -> None: ...

class RunSettlementRequest(_message.Message):
    __slots__ = ("request_id", "period")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    period: str
    def __init__(self, request_id: _Optional[str] = ..., period: _Optional[str] = ...) -> None: ...

class GetSettlementRoundRequest(_message.Message):
    __slots__ = ("round_id",)
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    def __init__(self, round_id: _Optional[str] = ...) -> None: ...

class ListSettlementRoundsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class InstructionStatus(_message.Message):
    __slots__ = ("instruction", "state", "backend", "receipt", "last_error", "attempts")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    instruction: _types_pb2.SettlementInstruction
    state: str
    backend: str
    receipt: str
    last_error: str
    attempts: int
    def __init__(self, instruction: _Optional[_Union[_types_pb2.SettlementInstruction, _Mapping]] = ..., state: _Optional[str] = ..., backend: _Optional[str] = ..., receipt: _Optional[str] = ..., last_error: _Optional[str] = ..., attempts: _Optional[int] = ...) -> None: ...

class SettlementRound(_message.Message):
    __slots__ = ("round_id", "period", "state", "statement", "digest", "signed_by", "currencies", "instructions", "held_out", "problems", "coordinator", "started_at_ms")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNED_BY_FIELD_NUMBER: _ClassVar[int]
    CURRENCIES_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    period: str
    state: str
    statement: bytes
    digest: str
    signed_by: _containers.RepeatedScalarFieldContainer[str]
    currencies: _containers.RepeatedCompositeFieldContainer[_types_pb2.CurrencySummary]
    instructions: _containers.RepeatedCompositeFieldContainer[InstructionStatus]
    held_out: _containers.RepeatedCompositeFieldContainer[_types_pb2.Obligation]
    problems: _containers.RepeatedScalarFieldContainer[str]
    coordinator: str
    started_at_ms: int
    def __init__(self, round_id: _Optional[str] = ..., period: _Optional[str] = ..., state: _Optional[str] = ..., statement: _Optional[bytes] = ..., digest: _Optional[str] = ..., signed_by: _Optional[_Iterable[str]] = ..., currencies: _Optional[_Iterable[_Union[_types_pb2.CurrencySummary, _Mapping]]] = ..., instructions: _Optional[_Iterable[_Union[InstructionStatus, _Mapping]]] = ..., held_out: _Optional[_Iterable[_Union[_types_pb2.Obligation, _Mapping]]] = ..., problems: _Optional[_Iterable[str]] = ..., coordinator: _Optional[str] = ..., started_at_ms: _Optional[int] = ...) -> None: ...

class ListSettlementRoundsResponse(_message.Message):
    __slots__ = ("rounds", "next_page_token")
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rounds: _containers.RepeatedCompositeFieldContainer[SettlementRound]
    next_page_token: str
    def __init__(self, rounds: _Optional[_Iterable[_Union[SettlementRound, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetMatchingReportRequest(_message.Message):
    __slots__ = ("account", "start_unix", "end_unix", "load", "zone")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    account: str
    start_unix: int
    end_unix: int
    load: _containers.RepeatedCompositeFieldContainer[HourlyLoad]
    zone: str
    def __init__(self, account: _Optional[str] = ..., start_unix: _Optional[int] = ..., end_unix: _Optional[int] = ..., load: _Optional[_Iterable[_Union[HourlyLoad, _Mapping]]] = ..., zone: _Optional[str] = ...) -> None: ...

class HourlyLoad(_message.Message):
    __slots__ = ("hour_unix", "wh")
    HOUR_UNIX_FIELD_NUMBER: _ClassVar[int]
    WH_FIELD_NUMBER: _ClassVar[int]
    hour_unix: int
    wh: int
    def __init__(self, hour_unix: _Optional[int] = ..., wh: _Optional[int] = ...) -> None: ...

class MatchingHour(_message.Message):
    __slots__ = ("hour_unix", "load_wh", "claimed_wh", "cfe_wh", "matched_cfe_wh", "cfe_score", "market_g", "location_g", "residual_mg_per_kwh", "location_mg_per_kwh", "residual_basis")
    HOUR_UNIX_FIELD_NUMBER: _ClassVar[int]
    LOAD_WH_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_WH_FIELD_NUMBER: _ClassVar[int]
    CFE_WH_FIELD_NUMBER: _ClassVar[int]
    MATCHED_CFE_WH_FIELD_NUMBER: _ClassVar[int]
    CFE_SCORE_FIELD_NUMBER: _ClassVar[int]
    MARKET_G_FIELD_NUMBER: _ClassVar[int]
    LOCATION_G_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_MG_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    LOCATION_MG_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    hour_unix: int
    load_wh: int
    claimed_wh: int
    cfe_wh: int
    matched_cfe_wh: int
    cfe_score: float
    market_g: float
    location_g: float
    residual_mg_per_kwh: float
    location_mg_per_kwh: float
    residual_basis: str
    def __init__(self, hour_unix: _Optional[int] = ..., load_wh: _Optional[int] = ..., claimed_wh: _Optional[int] = ..., cfe_wh: _Optional[int] = ..., matched_cfe_wh: _Optional[int] = ..., cfe_score: _Optional[float] = ..., market_g: _Optional[float] = ..., location_g: _Optional[float] = ..., residual_mg_per_kwh: _Optional[float] = ..., location_mg_per_kwh: _Optional[float] = ..., residual_basis: _Optional[str] = ...) -> None: ...

class MatchingFlow(_message.Message):
    __slots__ = ("source_node", "target_node", "wh")
    SOURCE_NODE_FIELD_NUMBER: _ClassVar[int]
    TARGET_NODE_FIELD_NUMBER: _ClassVar[int]
    WH_FIELD_NUMBER: _ClassVar[int]
    source_node: str
    target_node: str
    wh: int
    def __init__(self, source_node: _Optional[str] = ..., target_node: _Optional[str] = ..., wh: _Optional[int] = ...) -> None: ...

class MatchingReport(_message.Message):
    __slots__ = ("node_id", "subject", "zone", "start_unix", "end_unix", "load_basis", "hours", "flows")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_FIELD_NUMBER: _ClassVar[int]
    LOAD_BASIS_FIELD_NUMBER: _ClassVar[int]
    HOURS_FIELD_NUMBER: _ClassVar[int]
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    subject: str
    zone: str
    start_unix: int
    end_unix: int
    load_basis: str
    hours: _containers.RepeatedCompositeFieldContainer[MatchingHour]
    flows: _containers.RepeatedCompositeFieldContainer[MatchingFlow]
    def __init__(self, node_id: _Optional[str] = ..., subject: _Optional[str] = ..., zone: _Optional[str] = ..., start_unix: _Optional[int] = ..., end_unix: _Optional[int] = ..., load_basis: _Optional[str] = ..., hours: _Optional[_Iterable[_Union[MatchingHour, _Mapping]]] = ..., flows: _Optional[_Iterable[_Union[MatchingFlow, _Mapping]]] = ...) -> None: ...

class HolderAuthorization(_message.Message):
    __slots__ = ("signature", "expires_at_ms")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    expires_at_ms: int
    def __init__(self, signature: _Optional[bytes] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class ListAuditEntriesRequest(_message.Message):
    __slots__ = ("account", "page_size", "page_token")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    account: str
    page_size: int
    page_token: str
    def __init__(self, account: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("seq", "at_ms", "principal", "via", "purpose", "what", "count", "accounts", "fields", "prev_hash", "row_hash")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    WHAT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    ROW_HASH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at_ms: int
    principal: str
    via: str
    purpose: str
    what: str
    count: int
    accounts: _containers.RepeatedScalarFieldContainer[str]
    fields: _containers.RepeatedScalarFieldContainer[str]
    prev_hash: str
    row_hash: str
    def __init__(self, seq: _Optional[int] = ..., at_ms: _Optional[int] = ..., principal: _Optional[str] = ..., via: _Optional[str] = ..., purpose: _Optional[str] = ..., what: _Optional[str] = ..., count: _Optional[int] = ..., accounts: _Optional[_Iterable[str]] = ..., fields: _Optional[_Iterable[str]] = ..., prev_hash: _Optional[str] = ..., row_hash: _Optional[str] = ...) -> None: ...

class ListAuditEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAggregatesRequest(_message.Message):
    __slots__ = ("purpose", "zone", "from_unix", "to_unix", "k", "epsilon", "bound_wh")
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    FROM_UNIX_FIELD_NUMBER: _ClassVar[int]
    TO_UNIX_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    BOUND_WH_FIELD_NUMBER: _ClassVar[int]
    purpose: ReadPurpose
    zone: str
    from_unix: int
    to_unix: int
    k: int
    epsilon: float
    bound_wh: int
    def __init__(self, purpose: _Optional[_Union[ReadPurpose, str]] = ..., zone: _Optional[str] = ..., from_unix: _Optional[int] = ..., to_unix: _Optional[int] = ..., k: _Optional[int] = ..., epsilon: _Optional[float] = ..., bound_wh: _Optional[int] = ...) -> None: ...

class AggregateCell(_message.Message):
    __slots__ = ("metric", "hour_start_unix", "source", "wh", "suppressed")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    HOUR_START_UNIX_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    WH_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    metric: str
    hour_start_unix: int
    source: _types_pb2.EnergySource
    wh: int
    suppressed: bool
    def __init__(self, metric: _Optional[str] = ..., hour_start_unix: _Optional[int] = ..., source: _Optional[_Union[_types_pb2.EnergySource, str]] = ..., wh: _Optional[int] = ..., suppressed: _Optional[bool] = ...) -> None: ...

class AggregatesReport(_message.Message):
    __slots__ = ("zone", "from_unix", "to_unix", "k", "epsilon", "mechanism", "noise_scale", "bound_wh", "cells", "suppressed_cells", "total_issued_wh", "total_transferred_wh", "total_claimed_wh")
    ZONE_FIELD_NUMBER: _ClassVar[int]
    FROM_UNIX_FIELD_NUMBER: _ClassVar[int]
    TO_UNIX_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    BOUND_WH_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_CELLS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ISSUED_WH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TRANSFERRED_WH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CLAIMED_WH_FIELD_NUMBER: _ClassVar[int]
    zone: str
    from_unix: int
    to_unix: int
    k: int
    epsilon: float
    mechanism: str
    noise_scale: float
    bound_wh: int
    cells: _containers.RepeatedCompositeFieldContainer[AggregateCell]
    suppressed_cells: int
    total_issued_wh: int
    total_transferred_wh: int
    total_claimed_wh: int
    def __init__(self, zone: _Optional[str] = ..., from_unix: _Optional[int] = ..., to_unix: _Optional[int] = ..., k: _Optional[int] = ..., epsilon: _Optional[float] = ..., mechanism: _Optional[str] = ..., noise_scale: _Optional[float] = ..., bound_wh: _Optional[int] = ..., cells: _Optional[_Iterable[_Union[AggregateCell, _Mapping]]] = ..., suppressed_cells: _Optional[int] = ..., total_issued_wh: _Optional[int] = ..., total_transferred_wh: _Optional[int] = ..., total_claimed_wh: _Optional[int] = ...) -> None: ...

class DeviceRegistration(_message.Message):
    __slots__ = ("device", "attestation")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    device: _types_pb2.Device
    attestation: _types_pb2.Attestation
    def __init__(self, device: _Optional[_Union[_types_pb2.Device, _Mapping]] = ..., attestation: _Optional[_Union[_types_pb2.Attestation, _Mapping]] = ...) -> None: ...

class RegisterDevicesRequest(_message.Message):
    __slots__ = ("request_id", "devices")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    devices: _containers.RepeatedCompositeFieldContainer[DeviceRegistration]
    def __init__(self, request_id: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[DeviceRegistration, _Mapping]]] = ...) -> None: ...

class RegisterDevicesResponse(_message.Message):
    __slots__ = ("devices", "first_id", "last_id")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    FIRST_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_ID_FIELD_NUMBER: _ClassVar[int]
    devices: int
    first_id: str
    last_id: str
    def __init__(self, devices: _Optional[int] = ..., first_id: _Optional[str] = ..., last_id: _Optional[str] = ...) -> None: ...
