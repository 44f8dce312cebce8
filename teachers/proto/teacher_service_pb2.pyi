from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("name", "model_version", "output_space", "num_classes", "tokenizer_hash", "schema_version", "in_features", "parameters", "default_temperature")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SPACE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_HASH_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    IN_FEATURES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_version: str
    output_space: str
    num_classes: int
    tokenizer_hash: str
    schema_version: int
    in_features: int
    parameters: int
    default_temperature: float
    def __init__(self, name: _Optional[str] = ..., model_version: _Optional[str] = ..., output_space: _Optional[str] = ..., num_classes: _Optional[int] = ..., tokenizer_hash: _Optional[str] = ..., schema_version: _Optional[int] = ..., in_features: _Optional[int] = ..., parameters: _Optional[int] = ..., default_temperature: _Optional[float] = ...) -> None: ...

class SoftTargetsRequest(_message.Message):
    __slots__ = ("batch_id", "inputs_chunk", "last_chunk", "temperature", "top_k", "dense_max_classes", "target_kind")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_CHUNK_FIELD_NUMBER: _ClassVar[int]
    LAST_CHUNK_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    DENSE_MAX_CLASSES_FIELD_NUMBER: _ClassVar[int]
    TARGET_KIND_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    inputs_chunk: bytes
    last_chunk: bool
    temperature: float
    top_k: int
    dense_max_classes: int
    target_kind: str
    def __init__(self, batch_id: _Optional[str] = ..., inputs_chunk: _Optional[bytes] = ..., last_chunk: _Optional[bool] = ..., temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., dense_max_classes: _Optional[int] = ..., target_kind: _Optional[str] = ...) -> None: ...

class SoftTargetsResponse(_message.Message):
    __slots__ = ("batch_id", "payload_chunk", "last_chunk")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_CHUNK_FIELD_NUMBER: _ClassVar[int]
    LAST_CHUNK_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    payload_chunk: bytes
    last_chunk: bool
    def __init__(self, batch_id: _Optional[str] = ..., payload_chunk: _Optional[bytes] = ..., last_chunk: _Optional[bool] = ...) -> None: ...
