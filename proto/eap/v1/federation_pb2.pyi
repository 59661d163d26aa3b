from eap.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TransferState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_STATE_UNSPECIFIED: _ClassVar[TransferState]
    TRANSFER_STATE_UNKNOWN: _ClassVar[TransferState]
    TRANSFER_STATE_PREPARED: _ClassVar[TransferState]
    TRANSFER_STATE_COMMITTED: _ClassVar[TransferState]
    TRANSFER_STATE_ABORTED: _ClassVar[TransferState]
    TRANSFER_STATE_PREPARING: _ClassVar[TransferState]

class CustodyOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CUSTODY_OUTCOME_UNSPECIFIED: _ClassVar[CustodyOutcome]
    CUSTODY_OUTCOME_MOVED: _ClassVar[CustodyOutcome]
    CUSTODY_OUTCOME_REFUSED: _ClassVar[CustodyOutcome]
TRANSFER_STATE_UNSPECIFIED: TransferState
TRANSFER_STATE_UNKNOWN: TransferState
TRANSFER_STATE_PREPARED: TransferState
TRANSFER_STATE_COMMITTED: TransferState
TRANSFER_STATE_ABORTED: TransferState
TRANSFER_STATE_PREPARING: TransferState
CUSTODY_OUTCOME_UNSPECIFIED: CustodyOutcome
CUSTODY_OUTCOME_MOVED: CustodyOutcome
CUSTODY_OUTCOME_REFUSED: CustodyOutcome

class HelloRequest(_message.Message):
    __slots__ = ("node_id", "protocol_versions", "capabilities", "public_keys", "max_batch_records", "descriptor")
    class PublicKeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEYS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_RECORDS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    protocol_versions: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    public_keys: _containers.ScalarMap[str, bytes]
    max_batch_records: int
    descriptor: bytes
    def __init__(self, node_id: _Optional[str] = ..., protocol_versions: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., public_keys: _Optional[_Mapping[str, bytes]] = ..., max_batch_records: _Optional[int] = ..., descriptor: _Optional[bytes] = ...) -> None: ...

class HelloResponse(_message.Message):
    __slots__ = ("node_id", "protocol_version", "capabilities", "public_keys", "max_batch_records", "descriptor")
    class PublicKeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEYS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_RECORDS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    protocol_version: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    public_keys: _containers.ScalarMap[str, bytes]
    max_batch_records: int
    descriptor: bytes
    def __init__(self, node_id: _Optional[str] = ..., protocol_version: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., public_keys: _Optional[_Mapping[str, bytes]] = ..., max_batch_records: _Optional[int] = ..., descriptor: _Optional[bytes] = ...) -> None: ...

class PullBatchesRequest(_message.Message):
    __slots__ = ("node_id", "cursor", "max_batches")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCHES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    cursor: int
    max_batches: int
    def __init__(self, node_id: _Optional[str] = ..., cursor: _Optional[int] = ..., max_batches: _Optional[int] = ...) -> None: ...

class TransferPrepare(_message.Message):
    __slots__ = ("transfer_id", "bundle", "to_account", "expires_at_ms", "parent_lineage_hash", "proof", "price", "seller")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    TO_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PARENT_LINEAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    SELLER_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    bundle: _types_pb2.RecordBundle
    to_account: str
    expires_at_ms: int
    parent_lineage_hash: str
    proof: _types_pb2.RecordProof
    price: _types_pb2.Price
    seller: str
    def __init__(self, transfer_id: _Optional[str] = ..., bundle: _Optional[_Union[_types_pb2.RecordBundle, _Mapping]] = ..., to_account: _Optional[str] = ..., expires_at_ms: _Optional[int] = ..., parent_lineage_hash: _Optional[str] = ..., proof: _Optional[_Union[_types_pb2.RecordProof, _Mapping]] = ..., price: _Optional[_Union[_types_pb2.Price, _Mapping]] = ..., seller: _Optional[str] = ...) -> None: ...

class TransferDecision(_message.Message):
    __slots__ = ("transfer_id", "decision", "custody")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    CUSTODY_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    decision: TransferState
    custody: _types_pb2.Signed
    def __init__(self, transfer_id: _Optional[str] = ..., decision: _Optional[_Union[TransferState, str]] = ..., custody: _Optional[_Union[_types_pb2.Signed, _Mapping]] = ...) -> None: ...

class TransferStatus(_message.Message):
    __slots__ = ("transfer_id", "state", "reason", "custody")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CUSTODY_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    state: TransferState
    reason: str
    custody: _types_pb2.Signed
    def __init__(self, transfer_id: _Optional[str] = ..., state: _Optional[_Union[TransferState, str]] = ..., reason: _Optional[str] = ..., custody: _Optional[_Union[_types_pb2.Signed, _Mapping]] = ...) -> None: ...

class CustodyRequest(_message.Message):
    __slots__ = ("transfer_id", "issuer", "serial_start", "serial_end", "to_node", "expires_at_ms")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SERIAL_START_FIELD_NUMBER: _ClassVar[int]
    SERIAL_END_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    issuer: str
    serial_start: int
    serial_end: int
    to_node: str
    expires_at_ms: int
    def __init__(self, transfer_id: _Optional[str] = ..., issuer: _Optional[str] = ..., serial_start: _Optional[int] = ..., serial_end: _Optional[int] = ..., to_node: _Optional[str] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class CustodyAnswer(_message.Message):
    __slots__ = ("transfer_id", "outcome", "custody", "reason")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CUSTODY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    outcome: CustodyOutcome
    custody: _types_pb2.Signed
    reason: str
    def __init__(self, transfer_id: _Optional[str] = ..., outcome: _Optional[_Union[CustodyOutcome, str]] = ..., custody: _Optional[_Union[_types_pb2.Signed, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class RetirementReport(_message.Message):
    __slots__ = ("claim_id", "issuer", "serial_start", "serial_end", "retired_at_ms")
    CLAIM_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SERIAL_START_FIELD_NUMBER: _ClassVar[int]
    SERIAL_END_FIELD_NUMBER: _ClassVar[int]
    RETIRED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    claim_id: str
    issuer: str
    serial_start: int
    serial_end: int
    retired_at_ms: int
    def __init__(self, claim_id: _Optional[str] = ..., issuer: _Optional[str] = ..., serial_start: _Optional[int] = ..., serial_end: _Optional[int] = ..., retired_at_ms: _Optional[int] = ...) -> None: ...

class RetirementAck(_message.Message):
    __slots__ = ("claim_id", "recorded", "reason")
    CLAIM_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    claim_id: str
    recorded: bool
    reason: str
    def __init__(self, claim_id: _Optional[str] = ..., recorded: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class HoldingsRequest(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    def __init__(self, nonce: _Optional[bytes] = ...) -> None: ...

class SettlementViewRequest(_message.Message):
    __slots__ = ("round_id", "period")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    period: str
    def __init__(self, round_id: _Optional[str] = ..., period: _Optional[str] = ...) -> None: ...

class SettlementProposal(_message.Message):
    __slots__ = ("round_id", "statement", "views")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    statement: bytes
    views: _containers.RepeatedCompositeFieldContainer[_types_pb2.Signed]
    def __init__(self, round_id: _Optional[str] = ..., statement: _Optional[bytes] = ..., views: _Optional[_Iterable[_Union[_types_pb2.Signed, _Mapping]]] = ...) -> None: ...

class SettlementFinal(_message.Message):
    __slots__ = ("round_id", "statement", "signatures")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    statement: bytes
    signatures: _containers.RepeatedCompositeFieldContainer[_types_pb2.Signed]
    def __init__(self, round_id: _Optional[str] = ..., statement: _Optional[bytes] = ..., signatures: _Optional[_Iterable[_Union[_types_pb2.Signed, _Mapping]]] = ...) -> None: ...

class SettlementAck(_message.Message):
    __slots__ = ("round_id", "final", "executed", "pending")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    final: bool
    executed: int
    pending: int
    def __init__(self, round_id: _Optional[str] = ..., final: _Optional[bool] = ..., executed: _Optional[int] = ..., pending: _Optional[int] = ...) -> None: ...

class DeviceCheckRequest(_message.Message):
    __slots__ = ("blinded", "after_seq")
    BLINDED_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    blinded: _containers.RepeatedScalarFieldContainer[bytes]
    after_seq: int
    def __init__(self, blinded: _Optional[_Iterable[bytes]] = ..., after_seq: _Optional[int] = ...) -> None: ...

class DeviceTag(_message.Message):
    __slots__ = ("seq", "tag")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    seq: int
    tag: bytes
    def __init__(self, seq: _Optional[int] = ..., tag: _Optional[bytes] = ...) -> None: ...

class DeviceCheckResponse(_message.Message):
    __slots__ = ("evaluated", "tags", "more")
    EVALUATED_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    evaluated: _containers.RepeatedScalarFieldContainer[bytes]
    tags: _containers.RepeatedCompositeFieldContainer[DeviceTag]
    more: bool
    def __init__(self, evaluated: _Optional[_Iterable[bytes]] = ..., tags: _Optional[_Iterable[_Union[DeviceTag, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...
