import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_METHOD_UNSPECIFIED: _ClassVar[TrainingMethod]
    TRAINING_METHOD_LORA: _ClassVar[TrainingMethod]
    TRAINING_METHOD_FULL: _ClassVar[TrainingMethod]

class SubjectKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBJECT_KIND_UNSPECIFIED: _ClassVar[SubjectKind]
    SUBJECT_KIND_SUBJECT: _ClassVar[SubjectKind]
    SUBJECT_KIND_STYLE: _ClassVar[SubjectKind]

class ModelOrigin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_ORIGIN_UNSPECIFIED: _ClassVar[ModelOrigin]
    MODEL_ORIGIN_TRAINED: _ClassVar[ModelOrigin]
    MODEL_ORIGIN_IMPORTED: _ClassVar[ModelOrigin]

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_JPEG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_WEBP: _ClassVar[ImageFormat]

class Scheduler(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEDULER_UNSPECIFIED: _ClassVar[Scheduler]
    SCHEDULER_DDIM: _ClassVar[Scheduler]
    SCHEDULER_EULER: _ClassVar[Scheduler]
    SCHEDULER_EULER_ANCESTRAL: _ClassVar[Scheduler]
    SCHEDULER_DPM_SOLVER_MULTISTEP: _ClassVar[Scheduler]
    SCHEDULER_UNI_PC: _ClassVar[Scheduler]
    SCHEDULER_DDPM: _ClassVar[Scheduler]
TRAINING_METHOD_UNSPECIFIED: TrainingMethod
TRAINING_METHOD_LORA: TrainingMethod
TRAINING_METHOD_FULL: TrainingMethod
SUBJECT_KIND_UNSPECIFIED: SubjectKind
SUBJECT_KIND_SUBJECT: SubjectKind
SUBJECT_KIND_STYLE: SubjectKind
MODEL_ORIGIN_UNSPECIFIED: ModelOrigin
MODEL_ORIGIN_TRAINED: ModelOrigin
MODEL_ORIGIN_IMPORTED: ModelOrigin
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat
IMAGE_FORMAT_JPEG: ImageFormat
IMAGE_FORMAT_WEBP: ImageFormat
SCHEDULER_UNSPECIFIED: Scheduler
SCHEDULER_DDIM: Scheduler
SCHEDULER_EULER: Scheduler
SCHEDULER_EULER_ANCESTRAL: Scheduler
SCHEDULER_DPM_SOLVER_MULTISTEP: Scheduler
SCHEDULER_UNI_PC: Scheduler
SCHEDULER_DDPM: Scheduler

class EncodedImage(_message.Message):
    __slots__ = ("format", "data", "width", "height", "name")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    format: ImageFormat
    data: bytes
    width: int
    height: int
    name: str
    def __init__(self, format: _Optional[_Union[ImageFormat, str]] = ..., data: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class GenerationParameters(_message.Message):
    __slots__ = ("negative_prompt", "num_inference_steps", "guidance_scale", "width", "height", "scheduler", "seed", "lora_scale")
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    NUM_INFERENCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LORA_SCALE_FIELD_NUMBER: _ClassVar[int]
    negative_prompt: str
    num_inference_steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: Scheduler
    seed: int
    lora_scale: float
    def __init__(self, negative_prompt: _Optional[str] = ..., num_inference_steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., scheduler: _Optional[_Union[Scheduler, str]] = ..., seed: _Optional[int] = ..., lora_scale: _Optional[float] = ...) -> None: ...

class SubjectModel(_message.Message):
    __slots__ = ("model_id", "identifier", "class_noun", "base_model", "method", "lora_rank", "create_time", "metrics", "job_id", "sample_image_keys", "size_bytes", "kind", "origin")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    CLASS_NOUN_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_IMAGE_KEYS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    identifier: str
    class_noun: str
    base_model: str
    method: TrainingMethod
    lora_rank: int
    create_time: _timestamp_pb2.Timestamp
    metrics: _containers.ScalarMap[str, float]
    job_id: str
    sample_image_keys: _containers.RepeatedScalarFieldContainer[str]
    size_bytes: int
    kind: SubjectKind
    origin: ModelOrigin
    def __init__(self, model_id: _Optional[str] = ..., identifier: _Optional[str] = ..., class_noun: _Optional[str] = ..., base_model: _Optional[str] = ..., method: _Optional[_Union[TrainingMethod, str]] = ..., lora_rank: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., job_id: _Optional[str] = ..., sample_image_keys: _Optional[_Iterable[str]] = ..., size_bytes: _Optional[int] = ..., kind: _Optional[_Union[SubjectKind, str]] = ..., origin: _Optional[_Union[ModelOrigin, str]] = ...) -> None: ...
