from likeness_client.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoadState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOAD_STATE_UNSPECIFIED: _ClassVar[LoadState]
    LOAD_STATE_NOT_LOADED: _ClassVar[LoadState]
    LOAD_STATE_LOADING: _ClassVar[LoadState]
    LOAD_STATE_LOADED: _ClassVar[LoadState]
    LOAD_STATE_FAILED: _ClassVar[LoadState]

class ArtifactKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_KIND_UNSPECIFIED: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_WEIGHTS: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_KOHYA_LORA: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_MANIFEST: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_SAMPLE_IMAGE: _ClassVar[ArtifactKind]

class LoraFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LORA_FORMAT_UNSPECIFIED: _ClassVar[LoraFormat]
    LORA_FORMAT_DIFFUSERS: _ClassVar[LoraFormat]
    LORA_FORMAT_KOHYA: _ClassVar[LoraFormat]
LOAD_STATE_UNSPECIFIED: LoadState
LOAD_STATE_NOT_LOADED: LoadState
LOAD_STATE_LOADING: LoadState
LOAD_STATE_LOADED: LoadState
LOAD_STATE_FAILED: LoadState
ARTIFACT_KIND_UNSPECIFIED: ArtifactKind
ARTIFACT_KIND_WEIGHTS: ArtifactKind
ARTIFACT_KIND_KOHYA_LORA: ArtifactKind
ARTIFACT_KIND_MANIFEST: ArtifactKind
ARTIFACT_KIND_SAMPLE_IMAGE: ArtifactKind
LORA_FORMAT_UNSPECIFIED: LoraFormat
LORA_FORMAT_DIFFUSERS: LoraFormat
LORA_FORMAT_KOHYA: LoraFormat

class GenerateImagesRequest(_message.Message):
    __slots__ = ("subject_model_id", "base_model", "prompt", "parameters", "num_images", "output_format", "preview_every_n_steps", "record_in_gallery", "gallery_tags", "remix_prompt_id", "loras", "init_image", "strength", "mask_image")
    SUBJECT_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_N_STEPS_FIELD_NUMBER: _ClassVar[int]
    RECORD_IN_GALLERY_FIELD_NUMBER: _ClassVar[int]
    GALLERY_TAGS_FIELD_NUMBER: _ClassVar[int]
    REMIX_PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    MASK_IMAGE_FIELD_NUMBER: _ClassVar[int]
    subject_model_id: str
    base_model: str
    prompt: str
    parameters: _types_pb2.GenerationParameters
    num_images: int
    output_format: _types_pb2.ImageFormat
    preview_every_n_steps: int
    record_in_gallery: bool
    gallery_tags: _containers.RepeatedScalarFieldContainer[str]
    remix_prompt_id: str
    loras: _containers.RepeatedCompositeFieldContainer[LoraWeight]
    init_image: bytes
    strength: float
    mask_image: bytes
    def __init__(self, subject_model_id: _Optional[str] = ..., base_model: _Optional[str] = ..., prompt: _Optional[str] = ..., parameters: _Optional[_Union[_types_pb2.GenerationParameters, _Mapping]] = ..., num_images: _Optional[int] = ..., output_format: _Optional[_Union[_types_pb2.ImageFormat, str]] = ..., preview_every_n_steps: _Optional[int] = ..., record_in_gallery: _Optional[bool] = ..., gallery_tags: _Optional[_Iterable[str]] = ..., remix_prompt_id: _Optional[str] = ..., loras: _Optional[_Iterable[_Union[LoraWeight, _Mapping]]] = ..., init_image: _Optional[bytes] = ..., strength: _Optional[float] = ..., mask_image: _Optional[bytes] = ...) -> None: ...

class LoraWeight(_message.Message):
    __slots__ = ("lora_id", "weight")
    LORA_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    lora_id: str
    weight: float
    def __init__(self, lora_id: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class Accepted(_message.Message):
    __slots__ = ("request_id", "queue_position", "effective_prompt")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    queue_position: int
    effective_prompt: str
    def __init__(self, request_id: _Optional[str] = ..., queue_position: _Optional[int] = ..., effective_prompt: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("step", "total_steps", "preview")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    preview: _types_pb2.EncodedImage
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., preview: _Optional[_Union[_types_pb2.EncodedImage, _Mapping]] = ...) -> None: ...

class ImageChunk(_message.Message):
    __slots__ = ("image_index", "chunk_index", "last", "data", "seed", "format", "width", "height", "gallery_prompt_id")
    IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    GALLERY_PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    image_index: int
    chunk_index: int
    last: bool
    data: bytes
    seed: int
    format: _types_pb2.ImageFormat
    width: int
    height: int
    gallery_prompt_id: str
    def __init__(self, image_index: _Optional[int] = ..., chunk_index: _Optional[int] = ..., last: _Optional[bool] = ..., data: _Optional[bytes] = ..., seed: _Optional[int] = ..., format: _Optional[_Union[_types_pb2.ImageFormat, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., gallery_prompt_id: _Optional[str] = ...) -> None: ...

class Warning(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class Summary(_message.Message):
    __slots__ = ("num_images", "seeds", "queue_ms", "load_ms", "denoise_ms", "decode_ms", "total_ms", "batch_size")
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    DENOISE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    num_images: int
    seeds: _containers.RepeatedScalarFieldContainer[int]
    queue_ms: float
    load_ms: float
    denoise_ms: float
    decode_ms: float
    total_ms: float
    batch_size: int
    def __init__(self, num_images: _Optional[int] = ..., seeds: _Optional[_Iterable[int]] = ..., queue_ms: _Optional[float] = ..., load_ms: _Optional[float] = ..., denoise_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class GenerateImagesResponse(_message.Message):
    __slots__ = ("accepted", "progress", "image_chunk", "warning", "summary")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_CHUNK_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    accepted: Accepted
    progress: Progress
    image_chunk: ImageChunk
    warning: Warning
    summary: Summary
    def __init__(self, accepted: _Optional[_Union[Accepted, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., image_chunk: _Optional[_Union[ImageChunk, _Mapping]] = ..., warning: _Optional[_Union[Warning, _Mapping]] = ..., summary: _Optional[_Union[Summary, _Mapping]] = ...) -> None: ...

class SubjectModelStatus(_message.Message):
    __slots__ = ("model", "state", "failure_reason", "memory_bytes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    model: _types_pb2.SubjectModel
    state: LoadState
    failure_reason: str
    memory_bytes: int
    def __init__(self, model: _Optional[_Union[_types_pb2.SubjectModel, _Mapping]] = ..., state: _Optional[_Union[LoadState, str]] = ..., failure_reason: _Optional[str] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class ListSubjectModelsRequest(_message.Message):
    __slots__ = ("base_model", "loaded_only", "kind")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    LOADED_ONLY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    loaded_only: bool
    kind: _types_pb2.SubjectKind
    def __init__(self, base_model: _Optional[str] = ..., loaded_only: _Optional[bool] = ..., kind: _Optional[_Union[_types_pb2.SubjectKind, str]] = ...) -> None: ...

class ListSubjectModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[SubjectModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[SubjectModelStatus, _Mapping]]] = ...) -> None: ...

class GetSubjectModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class GetSubjectModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: SubjectModelStatus
    def __init__(self, model: _Optional[_Union[SubjectModelStatus, _Mapping]] = ...) -> None: ...

class LoadSubjectModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class LoadSubjectModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: SubjectModelStatus
    def __init__(self, model: _Optional[_Union[SubjectModelStatus, _Mapping]] = ...) -> None: ...

class UnloadSubjectModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class UnloadSubjectModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: SubjectModelStatus
    def __init__(self, model: _Optional[_Union[SubjectModelStatus, _Mapping]] = ...) -> None: ...

class GetServerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BaseModelStatus(_message.Message):
    __slots__ = ("base_model", "arch", "state", "default_resolution", "memory_bytes")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    arch: str
    state: LoadState
    default_resolution: int
    memory_bytes: int
    def __init__(self, base_model: _Optional[str] = ..., arch: _Optional[str] = ..., state: _Optional[_Union[LoadState, str]] = ..., default_resolution: _Optional[int] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class GetServerStatusResponse(_message.Message):
    __slots__ = ("base_models", "loaded_subjects", "subject_cache_budget_bytes", "subject_cache_used_bytes", "queue_depth", "queue_capacity", "device")
    BASE_MODELS_FIELD_NUMBER: _ClassVar[int]
    LOADED_SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_CACHE_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_CACHE_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    base_models: _containers.RepeatedCompositeFieldContainer[BaseModelStatus]
    loaded_subjects: _containers.RepeatedCompositeFieldContainer[SubjectModelStatus]
    subject_cache_budget_bytes: int
    subject_cache_used_bytes: int
    queue_depth: int
    queue_capacity: int
    device: str
    def __init__(self, base_models: _Optional[_Iterable[_Union[BaseModelStatus, _Mapping]]] = ..., loaded_subjects: _Optional[_Iterable[_Union[SubjectModelStatus, _Mapping]]] = ..., subject_cache_budget_bytes: _Optional[int] = ..., subject_cache_used_bytes: _Optional[int] = ..., queue_depth: _Optional[int] = ..., queue_capacity: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class DeleteSubjectModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class DeleteSubjectModelResponse(_message.Message):
    __slots__ = ("model_id", "files_removed", "gallery_entries_removed")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    GALLERY_ENTRIES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    files_removed: int
    gallery_entries_removed: int
    def __init__(self, model_id: _Optional[str] = ..., files_removed: _Optional[int] = ..., gallery_entries_removed: _Optional[int] = ...) -> None: ...

class DownloadSubjectModelRequest(_message.Message):
    __slots__ = ("model_id", "kinds")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    kinds: _containers.RepeatedScalarFieldContainer[ArtifactKind]
    def __init__(self, model_id: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[ArtifactKind, str]]] = ...) -> None: ...

class ArtifactFile(_message.Message):
    __slots__ = ("path", "kind", "size_bytes", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    kind: ArtifactKind
    size_bytes: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., kind: _Optional[_Union[ArtifactKind, str]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class DownloadSubjectModelResponse(_message.Message):
    __slots__ = ("file", "data")
    FILE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    file: ArtifactFile
    data: bytes
    def __init__(self, file: _Optional[_Union[ArtifactFile, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImportLoraHeader(_message.Message):
    __slots__ = ("base_model", "kind", "identifier", "class_noun", "file_name", "size_bytes")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    CLASS_NOUN_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    kind: _types_pb2.SubjectKind
    identifier: str
    class_noun: str
    file_name: str
    size_bytes: int
    def __init__(self, base_model: _Optional[str] = ..., kind: _Optional[_Union[_types_pb2.SubjectKind, str]] = ..., identifier: _Optional[str] = ..., class_noun: _Optional[str] = ..., file_name: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ImportLoraRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ImportLoraHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[ImportLoraHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ImportLoraResponse(_message.Message):
    __slots__ = ("model", "source_format", "layer_count")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    LAYER_COUNT_FIELD_NUMBER: _ClassVar[int]
    model: SubjectModelStatus
    source_format: LoraFormat
    layer_count: int
    def __init__(self, model: _Optional[_Union[SubjectModelStatus, _Mapping]] = ..., source_format: _Optional[_Union[LoraFormat, str]] = ..., layer_count: _Optional[int] = ...) -> None: ...
