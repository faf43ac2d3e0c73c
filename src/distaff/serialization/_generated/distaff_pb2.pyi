from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StepKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_NEXT: _ClassVar[StepKind]
    STEP_SEND: _ClassVar[StepKind]
    STEP_THROW: _ClassVar[StepKind]
    STEP_CLOSE: _ClassVar[StepKind]
    STEP_CREDIT: _ClassVar[StepKind]

class OutputKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_STDOUT: _ClassVar[OutputKind]
    OUTPUT_STDERR: _ClassVar[OutputKind]
    OUTPUT_LOG: _ClassVar[OutputKind]
STEP_NEXT: StepKind
STEP_SEND: StepKind
STEP_THROW: StepKind
STEP_CLOSE: StepKind
STEP_CREDIT: StepKind
OUTPUT_STDOUT: OutputKind
OUTPUT_STDERR: OutputKind
OUTPUT_LOG: OutputKind

class Envelope(_message.Message):
    __slots__ = ("frames", "load", "blobs")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    load: Load
    blobs: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ..., load: _Optional[_Union[Load, _Mapping]] = ..., blobs: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Load(_message.Message):
    __slots__ = ("running", "capacity", "loop_lag")
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LOOP_LAG_FIELD_NUMBER: _ClassVar[int]
    running: int
    capacity: int
    loop_lag: float
    def __init__(self, running: _Optional[int] = ..., capacity: _Optional[int] = ..., loop_lag: _Optional[float] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("call", "hello", "start", "step", "cancel", "ack", "value", "done", "error", "reject", "drain", "output")
    CALL_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    call: int
    hello: Hello
    start: Start
    step: Step
    cancel: Cancel
    ack: Ack
    value: Value
    done: Done
    error: Error
    reject: Reject
    drain: Drain
    output: Output
    def __init__(self, call: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., start: _Optional[_Union[Start, _Mapping]] = ..., step: _Optional[_Union[Step, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., reject: _Optional[_Union[Reject, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., output: _Optional[_Union[Output, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol", "peer")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    protocol: int
    peer: str
    def __init__(self, protocol: _Optional[int] = ..., peer: _Optional[str] = ...) -> None: ...

class Start(_message.Message):
    __slots__ = ("task_id", "caller", "routine", "arguments", "proxy_id", "proxy", "timeout", "generator", "window", "dispatch_timeout", "attempt", "context", "chain", "output", "traceparent", "arguments_blob")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    ROUTINE_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    PROXY_ID_FIELD_NUMBER: _ClassVar[int]
    PROXY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_BLOB_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    caller: str
    routine: bytes
    arguments: bytes
    proxy_id: str
    proxy: bytes
    timeout: float
    generator: bool
    window: int
    dispatch_timeout: float
    attempt: int
    context: bytes
    chain: str
    output: bool
    traceparent: str
    arguments_blob: int
    def __init__(self, task_id: _Optional[str] = ..., caller: _Optional[str] = ..., routine: _Optional[bytes] = ..., arguments: _Optional[bytes] = ..., proxy_id: _Optional[str] = ..., proxy: _Optional[bytes] = ..., timeout: _Optional[float] = ..., generator: _Optional[bool] = ..., window: _Optional[int] = ..., dispatch_timeout: _Optional[float] = ..., attempt: _Optional[int] = ..., context: _Optional[bytes] = ..., chain: _Optional[str] = ..., output: _Optional[bool] = ..., traceparent: _Optional[str] = ..., arguments_blob: _Optional[int] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("kind", "payload", "credit")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    kind: StepKind
    payload: bytes
    credit: int
    def __init__(self, kind: _Optional[_Union[StepKind, str]] = ..., payload: _Optional[bytes] = ..., credit: _Optional[int] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Ack(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Value(_message.Message):
    __slots__ = ("payload", "blob", "context")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    blob: int
    context: bytes
    def __init__(self, payload: _Optional[bytes] = ..., blob: _Optional[int] = ..., context: _Optional[bytes] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("context",)
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    context: bytes
    def __init__(self, context: _Optional[bytes] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("payload", "context")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    context: bytes
    def __init__(self, payload: _Optional[bytes] = ..., context: _Optional[bytes] = ...) -> None: ...

class Reject(_message.Message):
    __slots__ = ("reason", "busy")
    REASON_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    reason: str
    busy: bool
    def __init__(self, reason: _Optional[str] = ..., busy: _Optional[bool] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Output(_message.Message):
    __slots__ = ("kind", "text", "logger", "level", "routine", "pid", "host", "worker")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LOGGER_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    ROUTINE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    kind: OutputKind
    text: str
    logger: str
    level: int
    routine: str
    pid: int
    host: str
    worker: str
    def __init__(self, kind: _Optional[_Union[OutputKind, str]] = ..., text: _Optional[str] = ..., logger: _Optional[str] = ..., level: _Optional[int] = ..., routine: _Optional[str] = ..., pid: _Optional[int] = ..., host: _Optional[str] = ..., worker: _Optional[str] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ("grace",)
    GRACE_FIELD_NUMBER: _ClassVar[int]
    grace: float
    def __init__(self, grace: _Optional[float] = ...) -> None: ...

class StopReply(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: int
    def __init__(self, cancelled: _Optional[int] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeReply(_message.Message):
    __slots__ = ("uid", "address", "host", "pid", "tags", "secure", "version", "protocol", "python", "cloudpickle", "draining", "options", "in_flight", "completed", "failed", "uptime", "rss")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    UID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SECURE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PYTHON_FIELD_NUMBER: _ClassVar[int]
    CLOUDPICKLE_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    RSS_FIELD_NUMBER: _ClassVar[int]
    uid: str
    address: str
    host: str
    pid: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    secure: bool
    version: str
    protocol: int
    python: str
    cloudpickle: str
    draining: bool
    options: _containers.ScalarMap[str, str]
    in_flight: int
    completed: int
    failed: int
    uptime: float
    rss: int
    def __init__(self, uid: _Optional[str] = ..., address: _Optional[str] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., secure: _Optional[bool] = ..., version: _Optional[str] = ..., protocol: _Optional[int] = ..., python: _Optional[str] = ..., cloudpickle: _Optional[str] = ..., draining: _Optional[bool] = ..., options: _Optional[_Mapping[str, str]] = ..., in_flight: _Optional[int] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ..., uptime: _Optional[float] = ..., rss: _Optional[int] = ...) -> None: ...
