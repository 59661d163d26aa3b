from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnergySource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENERGY_SOURCE_UNSPECIFIED: _ClassVar[EnergySource]
    ENERGY_SOURCE_SOLAR: _ClassVar[EnergySource]
    ENERGY_SOURCE_WIND: _ClassVar[EnergySource]
    ENERGY_SOURCE_HYDRO: _ClassVar[EnergySource]
    ENERGY_SOURCE_NUCLEAR: _ClassVar[EnergySource]
    ENERGY_SOURCE_BIOMASS: _ClassVar[EnergySource]
    ENERGY_SOURCE_GEOTHERMAL: _ClassVar[EnergySource]
    ENERGY_SOURCE_MARINE: _ClassVar[EnergySource]
    ENERGY_SOURCE_GAS: _ClassVar[EnergySource]
    ENERGY_SOURCE_COAL: _ClassVar[EnergySource]
    ENERGY_SOURCE_OIL: _ClassVar[EnergySource]
    ENERGY_SOURCE_STORAGE: _ClassVar[EnergySource]
    ENERGY_SOURCE_OTHER: _ClassVar[EnergySource]

class Technology(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TECHNOLOGY_UNSPECIFIED: _ClassVar[Technology]
    TECHNOLOGY_PHOTOVOLTAIC: _ClassVar[Technology]
    TECHNOLOGY_CONCENTRATED_SOLAR: _ClassVar[Technology]
    TECHNOLOGY_ONSHORE_WIND: _ClassVar[Technology]
    TECHNOLOGY_OFFSHORE_WIND: _ClassVar[Technology]
    TECHNOLOGY_RUN_OF_RIVER: _ClassVar[Technology]
    TECHNOLOGY_RESERVOIR_HYDRO: _ClassVar[Technology]
    TECHNOLOGY_NUCLEAR_FISSION: _ClassVar[Technology]
    TECHNOLOGY_STEAM_TURBINE: _ClassVar[Technology]
    TECHNOLOGY_COMBINED_CYCLE: _ClassVar[Technology]
    TECHNOLOGY_COMBUSTION_ENGINE: _ClassVar[Technology]
    TECHNOLOGY_BATTERY: _ClassVar[Technology]
    TECHNOLOGY_PUMPED_HYDRO: _ClassVar[Technology]
    TECHNOLOGY_FUEL_CELL: _ClassVar[Technology]
    TECHNOLOGY_OTHER: _ClassVar[Technology]

class BundleStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUNDLE_STATUS_UNSPECIFIED: _ClassVar[BundleStatus]
    BUNDLE_STATUS_ACTIVE: _ClassVar[BundleStatus]
    BUNDLE_STATUS_SPLIT: _ClassVar[BundleStatus]
    BUNDLE_STATUS_RETIRED: _ClassVar[BundleStatus]
    BUNDLE_STATUS_EXPIRED: _ClassVar[BundleStatus]
    BUNDLE_STATUS_WITHDRAWN: _ClassVar[BundleStatus]
    BUNDLE_STATUS_EXPORT_PENDING: _ClassVar[BundleStatus]
    BUNDLE_STATUS_EXPORTED: _ClassVar[BundleStatus]
ENERGY_SOURCE_UNSPECIFIED: EnergySource
ENERGY_SOURCE_SOLAR: EnergySource
ENERGY_SOURCE_WIND: EnergySource
ENERGY_SOURCE_HYDRO: EnergySource
ENERGY_SOURCE_NUCLEAR: EnergySource
ENERGY_SOURCE_BIOMASS: EnergySource
ENERGY_SOURCE_GEOTHERMAL: EnergySource
ENERGY_SOURCE_MARINE: EnergySource
ENERGY_SOURCE_GAS: EnergySource
ENERGY_SOURCE_COAL: EnergySource
ENERGY_SOURCE_OIL: EnergySource
ENERGY_SOURCE_STORAGE: EnergySource
ENERGY_SOURCE_OTHER: EnergySource
TECHNOLOGY_UNSPECIFIED: Technology
TECHNOLOGY_PHOTOVOLTAIC: Technology
TECHNOLOGY_CONCENTRATED_SOLAR: Technology
TECHNOLOGY_ONSHORE_WIND: Technology
TECHNOLOGY_OFFSHORE_WIND: Technology
TECHNOLOGY_RUN_OF_RIVER: Technology
TECHNOLOGY_RESERVOIR_HYDRO: Technology
TECHNOLOGY_NUCLEAR_FISSION: Technology
TECHNOLOGY_STEAM_TURBINE: Technology
TECHNOLOGY_COMBINED_CYCLE: Technology
TECHNOLOGY_COMBUSTION_ENGINE: Technology
TECHNOLOGY_BATTERY: Technology
TECHNOLOGY_PUMPED_HYDRO: Technology
TECHNOLOGY_FUEL_CELL: Technology
TECHNOLOGY_OTHER: Technology
BUNDLE_STATUS_UNSPECIFIED: BundleStatus
BUNDLE_STATUS_ACTIVE: BundleStatus
BUNDLE_STATUS_SPLIT: BundleStatus
BUNDLE_STATUS_RETIRED: BundleStatus
BUNDLE_STATUS_EXPIRED: BundleStatus
BUNDLE_STATUS_WITHDRAWN: BundleStatus
BUNDLE_STATUS_EXPORT_PENDING: BundleStatus
BUNDLE_STATUS_EXPORTED: BundleStatus

class Interval(_message.Message):
    __slots__ = ("start_unix", "end_unix")
    START_UNIX_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_FIELD_NUMBER: _ClassVar[int]
    start_unix: int
    end_unix: int
    def __init__(self, start_unix: _Optional[int] = ..., end_unix: _Optional[int] = ...) -> None: ...

class RecordAttributes(_message.Message):
    __slots__ = ("source", "technology", "renewable_ppm", "carbon_mg_per_kwh", "zone", "cell", "interval", "device_id")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TECHNOLOGY_FIELD_NUMBER: _ClassVar[int]
    RENEWABLE_PPM_FIELD_NUMBER: _ClassVar[int]
    CARBON_MG_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    CELL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    source: EnergySource
    technology: Technology
    renewable_ppm: int
    carbon_mg_per_kwh: int
    zone: str
    cell: str
    interval: Interval
    device_id: str
    def __init__(self, source: _Optional[_Union[EnergySource, str]] = ..., technology: _Optional[_Union[Technology, str]] = ..., renewable_ppm: _Optional[int] = ..., carbon_mg_per_kwh: _Optional[int] = ..., zone: _Optional[str] = ..., cell: _Optional[str] = ..., interval: _Optional[_Union[Interval, _Mapping]] = ..., device_id: _Optional[str] = ...) -> None: ...

class RecordBundle(_message.Message):
    __slots__ = ("id", "issuer", "serial_start", "serial_end", "attributes", "status", "owner", "parent_id", "lineage_hash", "issued_at_ms", "held_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SERIAL_START_FIELD_NUMBER: _ClassVar[int]
    SERIAL_END_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    HELD_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    issuer: str
    serial_start: int
    serial_end: int
    attributes: RecordAttributes
    status: BundleStatus
    owner: str
    parent_id: str
    lineage_hash: str
    issued_at_ms: int
    held_by: str
    def __init__(self, id: _Optional[str] = ..., issuer: _Optional[str] = ..., serial_start: _Optional[int] = ..., serial_end: _Optional[int] = ..., attributes: _Optional[_Union[RecordAttributes, _Mapping]] = ..., status: _Optional[_Union[BundleStatus, str]] = ..., owner: _Optional[str] = ..., parent_id: _Optional[str] = ..., lineage_hash: _Optional[str] = ..., issued_at_ms: _Optional[int] = ..., held_by: _Optional[str] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("id", "local_ref", "capacity_w", "source", "technology", "commissioned_on", "latitude", "longitude", "zone", "cell", "owner", "meter_id", "renewable_ppm", "carbon_mg_per_kwh", "attested_by", "attestation_ref", "registered_at_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    LOCAL_REF_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_W_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TECHNOLOGY_FIELD_NUMBER: _ClassVar[int]
    COMMISSIONED_ON_FIELD_NUMBER: _ClassVar[int]
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    CELL_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    METER_ID_FIELD_NUMBER: _ClassVar[int]
    RENEWABLE_PPM_FIELD_NUMBER: _ClassVar[int]
    CARBON_MG_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    ATTESTED_BY_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_REF_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    local_ref: str
    capacity_w: int
    source: EnergySource
    technology: Technology
    commissioned_on: str
    latitude: float
    longitude: float
    zone: str
    cell: str
    owner: str
    meter_id: str
    renewable_ppm: int
    carbon_mg_per_kwh: int
    attested_by: str
    attestation_ref: str
    registered_at_ms: int
    def __init__(self, id: _Optional[str] = ..., local_ref: _Optional[str] = ..., capacity_w: _Optional[int] = ..., source: _Optional[_Union[EnergySource, str]] = ..., technology: _Optional[_Union[Technology, str]] = ..., commissioned_on: _Optional[str] = ..., latitude: _Optional[float] = ..., longitude: _Optional[float] = ..., zone: _Optional[str] = ..., cell: _Optional[str] = ..., owner: _Optional[str] = ..., meter_id: _Optional[str] = ..., renewable_ppm: _Optional[int] = ..., carbon_mg_per_kwh: _Optional[int] = ..., attested_by: _Optional[str] = ..., attestation_ref: _Optional[str] = ..., registered_at_ms: _Optional[int] = ...) -> None: ...

class Attestation(_message.Message):
    __slots__ = ("scheme", "evidence")
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    scheme: str
    evidence: str
    def __init__(self, scheme: _Optional[str] = ..., evidence: _Optional[str] = ...) -> None: ...

class MeterReading(_message.Message):
    __slots__ = ("device_id", "interval", "wh", "issued_wh")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    WH_FIELD_NUMBER: _ClassVar[int]
    ISSUED_WH_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    interval: Interval
    wh: int
    issued_wh: int
    def __init__(self, device_id: _Optional[str] = ..., interval: _Optional[_Union[Interval, _Mapping]] = ..., wh: _Optional[int] = ..., issued_wh: _Optional[int] = ...) -> None: ...

class Account(_message.Message):
    __slots__ = ("id", "label", "identity", "disclosed", "balance_wh", "created_at_ms", "holder_public_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    DISCLOSED_FIELD_NUMBER: _ClassVar[int]
    BALANCE_WH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    HOLDER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    label: str
    identity: str
    disclosed: bool
    balance_wh: int
    created_at_ms: int
    holder_public_key: bytes
    def __init__(self, id: _Optional[str] = ..., label: _Optional[str] = ..., identity: _Optional[str] = ..., disclosed: _Optional[bool] = ..., balance_wh: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., holder_public_key: _Optional[bytes] = ...) -> None: ...

class ClaimReceipt(_message.Message):
    __slots__ = ("id", "bundle", "beneficiary", "purpose", "consumption", "consumption_zone", "claimed_at_ms", "digest", "signature", "key_id", "sd_receipt")
    ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    BENEFICIARY_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CONSUMPTION_FIELD_NUMBER: _ClassVar[int]
    CONSUMPTION_ZONE_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SD_RECEIPT_FIELD_NUMBER: _ClassVar[int]
    id: str
    bundle: RecordBundle
    beneficiary: str
    purpose: str
    consumption: Interval
    consumption_zone: str
    claimed_at_ms: int
    digest: bytes
    signature: bytes
    key_id: str
    sd_receipt: str
    def __init__(self, id: _Optional[str] = ..., bundle: _Optional[_Union[RecordBundle, _Mapping]] = ..., beneficiary: _Optional[str] = ..., purpose: _Optional[str] = ..., consumption: _Optional[_Union[Interval, _Mapping]] = ..., consumption_zone: _Optional[str] = ..., claimed_at_ms: _Optional[int] = ..., digest: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., key_id: _Optional[str] = ..., sd_receipt: _Optional[str] = ...) -> None: ...

class RecordBatch(_message.Message):
    __slots__ = ("issuer", "seq", "count", "serial_start", "serial_end", "interval_start", "interval_end", "device", "source", "technology", "renewable_ppm", "carbon_mg", "zone", "owner", "devices", "zones", "owners", "merkle_root", "created_at_ms", "key_id", "signature")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SERIAL_START_FIELD_NUMBER: _ClassVar[int]
    SERIAL_END_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_END_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TECHNOLOGY_FIELD_NUMBER: _ClassVar[int]
    RENEWABLE_PPM_FIELD_NUMBER: _ClassVar[int]
    CARBON_MG_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ZONES_FIELD_NUMBER: _ClassVar[int]
    OWNERS_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    seq: int
    count: int
    serial_start: bytes
    serial_end: bytes
    interval_start: bytes
    interval_end: bytes
    device: bytes
    source: bytes
    technology: bytes
    renewable_ppm: bytes
    carbon_mg: bytes
    zone: bytes
    owner: bytes
    devices: _containers.RepeatedScalarFieldContainer[str]
    zones: _containers.RepeatedScalarFieldContainer[str]
    owners: _containers.RepeatedScalarFieldContainer[str]
    merkle_root: bytes
    created_at_ms: int
    key_id: str
    signature: bytes
    def __init__(self, issuer: _Optional[str] = ..., seq: _Optional[int] = ..., count: _Optional[int] = ..., serial_start: _Optional[bytes] = ..., serial_end: _Optional[bytes] = ..., interval_start: _Optional[bytes] = ..., interval_end: _Optional[bytes] = ..., device: _Optional[bytes] = ..., source: _Optional[bytes] = ..., technology: _Optional[bytes] = ..., renewable_ppm: _Optional[bytes] = ..., carbon_mg: _Optional[bytes] = ..., zone: _Optional[bytes] = ..., owner: _Optional[bytes] = ..., devices: _Optional[_Iterable[str]] = ..., zones: _Optional[_Iterable[str]] = ..., owners: _Optional[_Iterable[str]] = ..., merkle_root: _Optional[bytes] = ..., created_at_ms: _Optional[int] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SignedEnvelope(_message.Message):
    __slots__ = ("payload", "payload_type", "origin", "destination", "expires_at_ms", "key_id", "signature", "nonce")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_TYPE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    payload_type: str
    origin: str
    destination: str
    expires_at_ms: int
    key_id: str
    signature: bytes
    nonce: bytes
    def __init__(self, payload: _Optional[bytes] = ..., payload_type: _Optional[str] = ..., origin: _Optional[str] = ..., destination: _Optional[str] = ..., expires_at_ms: _Optional[int] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class BatchHeader(_message.Message):
    __slots__ = ("issuer", "seq", "count", "merkle_root", "created_at_ms", "key_id", "signature")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    seq: int
    count: int
    merkle_root: bytes
    created_at_ms: int
    key_id: str
    signature: bytes
    def __init__(self, issuer: _Optional[str] = ..., seq: _Optional[int] = ..., count: _Optional[int] = ..., merkle_root: _Optional[bytes] = ..., created_at_ms: _Optional[int] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class IssuedRecord(_message.Message):
    __slots__ = ("serial_start", "serial_end", "interval", "source", "technology", "renewable_ppm", "carbon_mg_per_kwh", "device_id", "zone", "owner")
    SERIAL_START_FIELD_NUMBER: _ClassVar[int]
    SERIAL_END_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TECHNOLOGY_FIELD_NUMBER: _ClassVar[int]
    RENEWABLE_PPM_FIELD_NUMBER: _ClassVar[int]
    CARBON_MG_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    serial_start: int
    serial_end: int
    interval: Interval
    source: EnergySource
    technology: Technology
    renewable_ppm: int
    carbon_mg_per_kwh: int
    device_id: str
    zone: str
    owner: str
    def __init__(self, serial_start: _Optional[int] = ..., serial_end: _Optional[int] = ..., interval: _Optional[_Union[Interval, _Mapping]] = ..., source: _Optional[_Union[EnergySource, str]] = ..., technology: _Optional[_Union[Technology, str]] = ..., renewable_ppm: _Optional[int] = ..., carbon_mg_per_kwh: _Optional[int] = ..., device_id: _Optional[str] = ..., zone: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class RecordProof(_message.Message):
    __slots__ = ("batch", "index", "record", "path", "lineage")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    batch: BatchHeader
    index: int
    record: IssuedRecord
    path: _containers.RepeatedScalarFieldContainer[bytes]
    lineage: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, batch: _Optional[_Union[BatchHeader, _Mapping]] = ..., index: _Optional[int] = ..., record: _Optional[_Union[IssuedRecord, _Mapping]] = ..., path: _Optional[_Iterable[bytes]] = ..., lineage: _Optional[_Iterable[str]] = ...) -> None: ...

class BundleProof(_message.Message):
    __slots__ = ("bundle", "proof", "cell")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    CELL_FIELD_NUMBER: _ClassVar[int]
    bundle: RecordBundle
    proof: RecordProof
    cell: str
    def __init__(self, bundle: _Optional[_Union[RecordBundle, _Mapping]] = ..., proof: _Optional[_Union[RecordProof, _Mapping]] = ..., cell: _Optional[str] = ...) -> None: ...

class Signed(_message.Message):
    __slots__ = ("body", "signer", "key_id", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    signer: str
    key_id: str
    signature: bytes
    def __init__(self, body: _Optional[bytes] = ..., signer: _Optional[str] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class CustodyRecord(_message.Message):
    __slots__ = ("issuer", "serial_start", "serial_end", "transfer_id", "from_node", "to_node", "cell", "moved_at_ms")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SERIAL_START_FIELD_NUMBER: _ClassVar[int]
    SERIAL_END_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    CELL_FIELD_NUMBER: _ClassVar[int]
    MOVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    serial_start: int
    serial_end: int
    transfer_id: str
    from_node: str
    to_node: str
    cell: str
    moved_at_ms: int
    def __init__(self, issuer: _Optional[str] = ..., serial_start: _Optional[int] = ..., serial_end: _Optional[int] = ..., transfer_id: _Optional[str] = ..., from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., cell: _Optional[str] = ..., moved_at_ms: _Optional[int] = ...) -> None: ...

class SerialRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class CustodyRange(_message.Message):
    __slots__ = ("start", "end", "holder", "retired")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    holder: str
    retired: bool
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ..., holder: _Optional[str] = ..., retired: _Optional[bool] = ...) -> None: ...

class IssuerHoldings(_message.Message):
    __slots__ = ("issuer", "active", "retired", "exporting", "importing", "issued_wh", "custody")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    EXPORTING_FIELD_NUMBER: _ClassVar[int]
    IMPORTING_FIELD_NUMBER: _ClassVar[int]
    ISSUED_WH_FIELD_NUMBER: _ClassVar[int]
    CUSTODY_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    active: _containers.RepeatedCompositeFieldContainer[SerialRange]
    retired: _containers.RepeatedCompositeFieldContainer[SerialRange]
    exporting: _containers.RepeatedCompositeFieldContainer[SerialRange]
    importing: _containers.RepeatedCompositeFieldContainer[SerialRange]
    issued_wh: int
    custody: _containers.RepeatedCompositeFieldContainer[CustodyRange]
    def __init__(self, issuer: _Optional[str] = ..., active: _Optional[_Iterable[_Union[SerialRange, _Mapping]]] = ..., retired: _Optional[_Iterable[_Union[SerialRange, _Mapping]]] = ..., exporting: _Optional[_Iterable[_Union[SerialRange, _Mapping]]] = ..., importing: _Optional[_Iterable[_Union[SerialRange, _Mapping]]] = ..., issued_wh: _Optional[int] = ..., custody: _Optional[_Iterable[_Union[CustodyRange, _Mapping]]] = ...) -> None: ...

class HoldingsStatement(_message.Message):
    __slots__ = ("node_id", "at_ms", "issuers", "audience", "nonce")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    ISSUERS_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    at_ms: int
    issuers: _containers.RepeatedCompositeFieldContainer[IssuerHoldings]
    audience: str
    nonce: bytes
    def __init__(self, node_id: _Optional[str] = ..., at_ms: _Optional[int] = ..., issuers: _Optional[_Iterable[_Union[IssuerHoldings, _Mapping]]] = ..., audience: _Optional[str] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class Price(_message.Message):
    __slots__ = ("amount_minor", "currency")
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    amount_minor: int
    currency: str
    def __init__(self, amount_minor: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class Obligation(_message.Message):
    __slots__ = ("id", "payer", "payee", "amount_minor", "currency", "period")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYER_FIELD_NUMBER: _ClassVar[int]
    PAYEE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    id: str
    payer: str
    payee: str
    amount_minor: int
    currency: str
    period: str
    def __init__(self, id: _Optional[str] = ..., payer: _Optional[str] = ..., payee: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., period: _Optional[str] = ...) -> None: ...

class SettlementView(_message.Message):
    __slots__ = ("round_id", "node_id", "period", "obligations", "at_ms", "columns")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    OBLIGATIONS_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    node_id: str
    period: str
    obligations: _containers.RepeatedCompositeFieldContainer[Obligation]
    at_ms: int
    columns: ObligationColumns
    def __init__(self, round_id: _Optional[str] = ..., node_id: _Optional[str] = ..., period: _Optional[str] = ..., obligations: _Optional[_Iterable[_Union[Obligation, _Mapping]]] = ..., at_ms: _Optional[int] = ..., columns: _Optional[_Union[ObligationColumns, _Mapping]] = ...) -> None: ...

class ObligationColumns(_message.Message):
    __slots__ = ("count", "ids", "parties", "payer", "payee", "amount_minor", "currencies", "currency", "periods", "period")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    PAYER_FIELD_NUMBER: _ClassVar[int]
    PAYEE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCIES_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PERIODS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    count: int
    ids: _containers.RepeatedScalarFieldContainer[str]
    parties: _containers.RepeatedScalarFieldContainer[str]
    payer: bytes
    payee: bytes
    amount_minor: bytes
    currencies: _containers.RepeatedScalarFieldContainer[str]
    currency: bytes
    periods: _containers.RepeatedScalarFieldContainer[str]
    period: bytes
    def __init__(self, count: _Optional[int] = ..., ids: _Optional[_Iterable[str]] = ..., parties: _Optional[_Iterable[str]] = ..., payer: _Optional[bytes] = ..., payee: _Optional[bytes] = ..., amount_minor: _Optional[bytes] = ..., currencies: _Optional[_Iterable[str]] = ..., currency: _Optional[bytes] = ..., periods: _Optional[_Iterable[str]] = ..., period: _Optional[bytes] = ...) -> None: ...

class NetPosition(_message.Message):
    __slots__ = ("party", "currency", "net_minor")
    PARTY_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    NET_MINOR_FIELD_NUMBER: _ClassVar[int]
    party: str
    currency: str
    net_minor: int
    def __init__(self, party: _Optional[str] = ..., currency: _Optional[str] = ..., net_minor: _Optional[int] = ...) -> None: ...

class SettlementInstruction(_message.Message):
    __slots__ = ("id", "payer", "payee", "amount_minor", "currency")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYER_FIELD_NUMBER: _ClassVar[int]
    PAYEE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    id: str
    payer: str
    payee: str
    amount_minor: int
    currency: str
    def __init__(self, id: _Optional[str] = ..., payer: _Optional[str] = ..., payee: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class CurrencySummary(_message.Message):
    __slots__ = ("currency", "gross_minor", "net_minor", "efficiency", "obligations")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    GROSS_MINOR_FIELD_NUMBER: _ClassVar[int]
    NET_MINOR_FIELD_NUMBER: _ClassVar[int]
    EFFICIENCY_FIELD_NUMBER: _ClassVar[int]
    OBLIGATIONS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    gross_minor: int
    net_minor: int
    efficiency: float
    obligations: int
    def __init__(self, currency: _Optional[str] = ..., gross_minor: _Optional[int] = ..., net_minor: _Optional[int] = ..., efficiency: _Optional[float] = ..., obligations: _Optional[int] = ...) -> None: ...

class SettlementStatement(_message.Message):
    __slots__ = ("round_id", "period", "coordinator", "participants", "obligations_digest", "obligations", "positions", "instructions", "currencies", "held_out")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    OBLIGATIONS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    OBLIGATIONS_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    CURRENCIES_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    period: str
    coordinator: str
    participants: _containers.RepeatedScalarFieldContainer[str]
    obligations_digest: bytes
    obligations: int
    positions: _containers.RepeatedCompositeFieldContainer[NetPosition]
    instructions: _containers.RepeatedCompositeFieldContainer[SettlementInstruction]
    currencies: _containers.RepeatedCompositeFieldContainer[CurrencySummary]
    held_out: _containers.RepeatedCompositeFieldContainer[Obligation]
    def __init__(self, round_id: _Optional[str] = ..., period: _Optional[str] = ..., coordinator: _Optional[str] = ..., participants: _Optional[_Iterable[str]] = ..., obligations_digest: _Optional[bytes] = ..., obligations: _Optional[int] = ..., positions: _Optional[_Iterable[_Union[NetPosition, _Mapping]]] = ..., instructions: _Optional[_Iterable[_Union[SettlementInstruction, _Mapping]]] = ..., currencies: _Optional[_Iterable[_Union[CurrencySummary, _Mapping]]] = ..., held_out: _Optional[_Iterable[_Union[Obligation, _Mapping]]] = ...) -> None: ...
