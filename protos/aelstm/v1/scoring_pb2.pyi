from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ItemStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_STATUS_UNSPECIFIED: _ClassVar[ItemStatus]
    ITEM_STATUS_OK: _ClassVar[ItemStatus]
    ITEM_STATUS_WARMING_UP: _ClassVar[ItemStatus]
    ITEM_STATUS_ERROR: _ClassVar[ItemStatus]
ITEM_STATUS_UNSPECIFIED: ItemStatus
ITEM_STATUS_OK: ItemStatus
ITEM_STATUS_WARMING_UP: ItemStatus
ITEM_STATUS_ERROR: ItemStatus

class Tensor(_message.Message):
    __slots__ = ("shape", "packed", "values")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    packed: bytes
    values: FloatList
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., packed: _Optional[bytes] = ..., values: _Optional[_Union[FloatList, _Mapping]] = ...) -> None: ...

class FloatList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("device_id", "window", "readings", "timestamp_ms")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    window: Tensor
    readings: Tensor
    timestamp_ms: int
    def __init__(self, device_id: _Optional[str] = ..., window: _Optional[_Union[Tensor, _Mapping]] = ..., readings: _Optional[_Union[Tensor, _Mapping]] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("request_id", "fleet_id", "items")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FLEET_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    fleet_id: str
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, request_id: _Optional[str] = ..., fleet_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message", "retry_after_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    retry_after_ms: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class ItemResult(_message.Message):
    __slots__ = ("device_id", "status", "score", "rec_part", "pred_part", "threshold", "is_anomaly", "model_name", "model_version", "error", "readings_held", "readings_needed", "timestamp_ms", "alarm_score", "alarmed_windows")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REC_PART_FIELD_NUMBER: _ClassVar[int]
    PRED_PART_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    IS_ANOMALY_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    READINGS_HELD_FIELD_NUMBER: _ClassVar[int]
    READINGS_NEEDED_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    ALARM_SCORE_FIELD_NUMBER: _ClassVar[int]
    ALARMED_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    status: ItemStatus
    score: float
    rec_part: float
    pred_part: float
    threshold: float
    is_anomaly: bool
    model_name: str
    model_version: str
    error: ItemError
    readings_held: int
    readings_needed: int
    timestamp_ms: int
    alarm_score: float
    alarmed_windows: int
    def __init__(self, device_id: _Optional[str] = ..., status: _Optional[_Union[ItemStatus, str]] = ..., score: _Optional[float] = ..., rec_part: _Optional[float] = ..., pred_part: _Optional[float] = ..., threshold: _Optional[float] = ..., is_anomaly: _Optional[bool] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ..., readings_held: _Optional[int] = ..., readings_needed: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., alarm_score: _Optional[float] = ..., alarmed_windows: _Optional[int] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("request_id", "fleet_id", "results", "server_time_us")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FLEET_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_US_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    fleet_id: str
    results: _containers.RepeatedCompositeFieldContainer[ItemResult]
    server_time_us: int
    def __init__(self, request_id: _Optional[str] = ..., fleet_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[ItemResult, _Mapping]]] = ..., server_time_us: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("fleet_id", "model_name", "model_version", "window", "features", "threshold", "threshold_method", "is_default", "manifest_json", "drift")
    FLEET_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_METHOD_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    fleet_id: str
    model_name: str
    model_version: str
    window: int
    features: _containers.RepeatedScalarFieldContainer[str]
    threshold: float
    threshold_method: str
    is_default: bool
    manifest_json: str
    drift: float
    def __init__(self, fleet_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., window: _Optional[int] = ..., features: _Optional[_Iterable[str]] = ..., threshold: _Optional[float] = ..., threshold_method: _Optional[str] = ..., is_default: _Optional[bool] = ..., manifest_json: _Optional[str] = ..., drift: _Optional[float] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("fleet_id",)
    FLEET_ID_FIELD_NUMBER: _ClassVar[int]
    fleet_id: str
    def __init__(self, fleet_id: _Optional[str] = ...) -> None: ...

class WatchAnomaliesRequest(_message.Message):
    __slots__ = ("fleet_id",)
    FLEET_ID_FIELD_NUMBER: _ClassVar[int]
    fleet_id: str
    def __init__(self, fleet_id: _Optional[str] = ...) -> None: ...

class Anomaly(_message.Message):
    __slots__ = ("fleet_id", "request_id", "result", "flagged_at_ms")
    FLEET_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    fleet_id: str
    request_id: str
    result: ItemResult
    flagged_at_ms: int
    def __init__(self, fleet_id: _Optional[str] = ..., request_id: _Optional[str] = ..., result: _Optional[_Union[ItemResult, _Mapping]] = ..., flagged_at_ms: _Optional[int] = ...) -> None: ...
