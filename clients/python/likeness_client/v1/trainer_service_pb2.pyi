import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from likeness_client.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WebhookDeliveryState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEBHOOK_DELIVERY_STATE_UNSPECIFIED: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_PENDING: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_DELIVERED: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_RETRYING: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_FAILED: _ClassVar[WebhookDeliveryState]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class SubjectType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBJECT_TYPE_UNSPECIFIED: _ClassVar[SubjectType]
    SUBJECT_TYPE_FACE: _ClassVar[SubjectType]
    SUBJECT_TYPE_OBJECT: _ClassVar[SubjectType]

class MixedPrecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MIXED_PRECISION_UNSPECIFIED: _ClassVar[MixedPrecision]
    MIXED_PRECISION_NO: _ClassVar[MixedPrecision]
    MIXED_PRECISION_FP16: _ClassVar[MixedPrecision]
    MIXED_PRECISION_BF16: _ClassVar[MixedPrecision]

class MemoryPlan(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMORY_PLAN_UNSPECIFIED: _ClassVar[MemoryPlan]
    MEMORY_PLAN_AUTO: _ClassVar[MemoryPlan]
    MEMORY_PLAN_OFF: _ClassVar[MemoryPlan]

class Optimizer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPTIMIZER_UNSPECIFIED: _ClassVar[Optimizer]
    OPTIMIZER_ADAMW: _ClassVar[Optimizer]
    OPTIMIZER_ADAMW_8BIT: _ClassVar[Optimizer]
    OPTIMIZER_ADAFACTOR: _ClassVar[Optimizer]
WEBHOOK_DELIVERY_STATE_UNSPECIFIED: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_PENDING: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_DELIVERED: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_RETRYING: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_FAILED: WebhookDeliveryState
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
SUBJECT_TYPE_UNSPECIFIED: SubjectType
SUBJECT_TYPE_FACE: SubjectType
SUBJECT_TYPE_OBJECT: SubjectType
MIXED_PRECISION_UNSPECIFIED: MixedPrecision
MIXED_PRECISION_NO: MixedPrecision
MIXED_PRECISION_FP16: MixedPrecision
MIXED_PRECISION_BF16: MixedPrecision
MEMORY_PLAN_UNSPECIFIED: MemoryPlan
MEMORY_PLAN_AUTO: MemoryPlan
MEMORY_PLAN_OFF: MemoryPlan
OPTIMIZER_UNSPECIFIED: Optimizer
OPTIMIZER_ADAMW: Optimizer
OPTIMIZER_ADAMW_8BIT: Optimizer
OPTIMIZER_ADAFACTOR: Optimizer

class Photo(_message.Message):
    __slots__ = ("file_name", "data", "caption")
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    file_name: str
    data: bytes
    caption: str
    def __init__(self, file_name: _Optional[str] = ..., data: _Optional[bytes] = ..., caption: _Optional[str] = ...) -> None: ...

class DatasetOptions(_message.Message):
    __slots__ = ("resolution", "subject_type", "face_margin", "base_model", "photo_uris", "dedupe_threshold", "display_name")
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FACE_MARGIN_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    PHOTO_URIS_FIELD_NUMBER: _ClassVar[int]
    DEDUPE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    resolution: int
    subject_type: SubjectType
    face_margin: float
    base_model: str
    photo_uris: _containers.RepeatedScalarFieldContainer[str]
    dedupe_threshold: int
    display_name: str
    def __init__(self, resolution: _Optional[int] = ..., subject_type: _Optional[_Union[SubjectType, str]] = ..., face_margin: _Optional[float] = ..., base_model: _Optional[str] = ..., photo_uris: _Optional[_Iterable[str]] = ..., dedupe_threshold: _Optional[int] = ..., display_name: _Optional[str] = ...) -> None: ...

class PhotoChunk(_message.Message):
    __slots__ = ("file_name", "data", "caption")
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    file_name: str
    data: bytes
    caption: str
    def __init__(self, file_name: _Optional[str] = ..., data: _Optional[bytes] = ..., caption: _Optional[str] = ...) -> None: ...

class PrepareDatasetRequest(_message.Message):
    __slots__ = ("options", "photo_chunk")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PHOTO_CHUNK_FIELD_NUMBER: _ClassVar[int]
    options: DatasetOptions
    photo_chunk: PhotoChunk
    def __init__(self, options: _Optional[_Union[DatasetOptions, _Mapping]] = ..., photo_chunk: _Optional[_Union[PhotoChunk, _Mapping]] = ...) -> None: ...

class CropBox(_message.Message):
    __slots__ = ("left", "top", "right", "bottom")
    LEFT_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_FIELD_NUMBER: _ClassVar[int]
    left: int
    top: int
    right: int
    bottom: int
    def __init__(self, left: _Optional[int] = ..., top: _Optional[int] = ..., right: _Optional[int] = ..., bottom: _Optional[int] = ...) -> None: ...

class PhotoReport(_message.Message):
    __slots__ = ("file_name", "kept", "reason_code", "reason", "original_width", "original_height", "original_format", "exif_rotated", "crop_box", "crop_method", "output_name")
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_WIDTH_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    EXIF_ROTATED_FIELD_NUMBER: _ClassVar[int]
    CROP_BOX_FIELD_NUMBER: _ClassVar[int]
    CROP_METHOD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    file_name: str
    kept: bool
    reason_code: str
    reason: str
    original_width: int
    original_height: int
    original_format: str
    exif_rotated: bool
    crop_box: CropBox
    crop_method: str
    output_name: str
    def __init__(self, file_name: _Optional[str] = ..., kept: _Optional[bool] = ..., reason_code: _Optional[str] = ..., reason: _Optional[str] = ..., original_width: _Optional[int] = ..., original_height: _Optional[int] = ..., original_format: _Optional[str] = ..., exif_rotated: _Optional[bool] = ..., crop_box: _Optional[_Union[CropBox, _Mapping]] = ..., crop_method: _Optional[str] = ..., output_name: _Optional[str] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("dataset_id", "resolution", "image_count", "create_time", "display_name", "reports")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    resolution: int
    image_count: int
    create_time: _timestamp_pb2.Timestamp
    display_name: str
    reports: _containers.RepeatedCompositeFieldContainer[PhotoReport]
    def __init__(self, dataset_id: _Optional[str] = ..., resolution: _Optional[int] = ..., image_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., display_name: _Optional[str] = ..., reports: _Optional[_Iterable[_Union[PhotoReport, _Mapping]]] = ...) -> None: ...

class PrepareDatasetResponse(_message.Message):
    __slots__ = ("dataset", "contact_sheet")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    CONTACT_SHEET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    contact_sheet: _types_pb2.EncodedImage
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ..., contact_sheet: _Optional[_Union[_types_pb2.EncodedImage, _Mapping]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class GetDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class Hyperparameters(_message.Message):
    __slots__ = ("max_train_steps", "learning_rate", "lr_scheduler", "lr_warmup_steps", "train_batch_size", "gradient_accumulation_steps", "mixed_precision", "gradient_checkpointing", "seed", "snr_gamma", "noise_offset", "random_flip", "center_crop", "resolution", "train_text_encoder", "text_encoder_learning_rate", "memory_plan", "memory_budget_mib", "optimizer")
    MAX_TRAIN_STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    LR_WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    MIXED_PRECISION_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SNR_GAMMA_FIELD_NUMBER: _ClassVar[int]
    NOISE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    RANDOM_FLIP_FIELD_NUMBER: _ClassVar[int]
    CENTER_CROP_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    TRAIN_TEXT_ENCODER_FIELD_NUMBER: _ClassVar[int]
    TEXT_ENCODER_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PLAN_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_MIB_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    max_train_steps: int
    learning_rate: float
    lr_scheduler: str
    lr_warmup_steps: int
    train_batch_size: int
    gradient_accumulation_steps: int
    mixed_precision: MixedPrecision
    gradient_checkpointing: bool
    seed: int
    snr_gamma: float
    noise_offset: float
    random_flip: bool
    center_crop: bool
    resolution: int
    train_text_encoder: bool
    text_encoder_learning_rate: float
    memory_plan: MemoryPlan
    memory_budget_mib: int
    optimizer: Optimizer
    def __init__(self, max_train_steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., lr_scheduler: _Optional[str] = ..., lr_warmup_steps: _Optional[int] = ..., train_batch_size: _Optional[int] = ..., gradient_accumulation_steps: _Optional[int] = ..., mixed_precision: _Optional[_Union[MixedPrecision, str]] = ..., gradient_checkpointing: _Optional[bool] = ..., seed: _Optional[int] = ..., snr_gamma: _Optional[float] = ..., noise_offset: _Optional[float] = ..., random_flip: _Optional[bool] = ..., center_crop: _Optional[bool] = ..., resolution: _Optional[int] = ..., train_text_encoder: _Optional[bool] = ..., text_encoder_learning_rate: _Optional[float] = ..., memory_plan: _Optional[_Union[MemoryPlan, str]] = ..., memory_budget_mib: _Optional[int] = ..., optimizer: _Optional[_Union[Optimizer, str]] = ...) -> None: ...

class LoraConfig(_message.Message):
    __slots__ = ("rank", "alpha", "target_modules", "dropout")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    rank: int
    alpha: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    dropout: float
    def __init__(self, rank: _Optional[int] = ..., alpha: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ..., dropout: _Optional[float] = ...) -> None: ...

class PriorPreservation(_message.Message):
    __slots__ = ("enabled", "class_prompt", "num_class_images", "prior_loss_weight", "class_dataset_id")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    CLASS_PROMPT_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASS_IMAGES_FIELD_NUMBER: _ClassVar[int]
    PRIOR_LOSS_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CLASS_DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    class_prompt: str
    num_class_images: int
    prior_loss_weight: float
    class_dataset_id: str
    def __init__(self, enabled: _Optional[bool] = ..., class_prompt: _Optional[str] = ..., num_class_images: _Optional[int] = ..., prior_loss_weight: _Optional[float] = ..., class_dataset_id: _Optional[str] = ...) -> None: ...

class ValidationConfig(_message.Message):
    __slots__ = ("prompts", "every_n_steps", "num_inference_steps", "seed")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    EVERY_N_STEPS_FIELD_NUMBER: _ClassVar[int]
    NUM_INFERENCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedScalarFieldContainer[str]
    every_n_steps: int
    num_inference_steps: int
    seed: int
    def __init__(self, prompts: _Optional[_Iterable[str]] = ..., every_n_steps: _Optional[int] = ..., num_inference_steps: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class CheckpointConfig(_message.Message):
    __slots__ = ("every_n_steps", "keep_last")
    EVERY_N_STEPS_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    every_n_steps: int
    keep_last: int
    def __init__(self, every_n_steps: _Optional[int] = ..., keep_last: _Optional[int] = ...) -> None: ...

class TrainingJobSpec(_message.Message):
    __slots__ = ("base_model", "identifier", "class_noun", "method", "dataset_id", "instance_prompt", "hyperparameters", "lora", "prior_preservation", "validation", "checkpointing", "export_kohya", "display_name", "labels", "processes")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    CLASS_NOUN_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    PRIOR_PRESERVATION_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    EXPORT_KOHYA_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    identifier: str
    class_noun: str
    method: _types_pb2.TrainingMethod
    dataset_id: str
    instance_prompt: str
    hyperparameters: Hyperparameters
    lora: LoraConfig
    prior_preservation: PriorPreservation
    validation: ValidationConfig
    checkpointing: CheckpointConfig
    export_kohya: bool
    display_name: str
    labels: _containers.ScalarMap[str, str]
    processes: int
    def __init__(self, base_model: _Optional[str] = ..., identifier: _Optional[str] = ..., class_noun: _Optional[str] = ..., method: _Optional[_Union[_types_pb2.TrainingMethod, str]] = ..., dataset_id: _Optional[str] = ..., instance_prompt: _Optional[str] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., lora: _Optional[_Union[LoraConfig, _Mapping]] = ..., prior_preservation: _Optional[_Union[PriorPreservation, _Mapping]] = ..., validation: _Optional[_Union[ValidationConfig, _Mapping]] = ..., checkpointing: _Optional[_Union[CheckpointConfig, _Mapping]] = ..., export_kohya: _Optional[bool] = ..., display_name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., processes: _Optional[int] = ...) -> None: ...

class TrainingProgress(_message.Message):
    __slots__ = ("step", "total_steps", "loss", "learning_rate", "steps_per_second", "images_per_second", "eta_seconds")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    loss: float
    learning_rate: float
    steps_per_second: float
    images_per_second: float
    eta_seconds: float
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., steps_per_second: _Optional[float] = ..., images_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ...) -> None: ...

class TrainingJob(_message.Message):
    __slots__ = ("job_id", "state", "spec", "progress", "queue_position", "subject_model_id", "error", "idempotency_key", "create_time", "start_time", "end_time", "last_sequence", "last_checkpoint_step", "resume_count", "priority", "webhook", "webhook_deliveries")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_CHECKPOINT_STEP_FIELD_NUMBER: _ClassVar[int]
    RESUME_COUNT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    spec: TrainingJobSpec
    progress: TrainingProgress
    queue_position: int
    subject_model_id: str
    error: str
    idempotency_key: str
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    last_sequence: int
    last_checkpoint_step: int
    resume_count: int
    priority: int
    webhook: Webhook
    webhook_deliveries: _containers.RepeatedCompositeFieldContainer[WebhookDelivery]
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ..., progress: _Optional[_Union[TrainingProgress, _Mapping]] = ..., queue_position: _Optional[int] = ..., subject_model_id: _Optional[str] = ..., error: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_sequence: _Optional[int] = ..., last_checkpoint_step: _Optional[int] = ..., resume_count: _Optional[int] = ..., priority: _Optional[int] = ..., webhook: _Optional[_Union[Webhook, _Mapping]] = ..., webhook_deliveries: _Optional[_Iterable[_Union[WebhookDelivery, _Mapping]]] = ...) -> None: ...

class Webhook(_message.Message):
    __slots__ = ("url", "secret", "send_progress", "progress_interval_seconds")
    URL_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    SEND_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    url: str
    secret: str
    send_progress: bool
    progress_interval_seconds: int
    def __init__(self, url: _Optional[str] = ..., secret: _Optional[str] = ..., send_progress: _Optional[bool] = ..., progress_interval_seconds: _Optional[int] = ...) -> None: ...

class WebhookDelivery(_message.Message):
    __slots__ = ("delivery_id", "event_type", "sequence", "attempts", "state", "last_http_status", "last_error", "last_attempt_time", "next_attempt_time")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    event_type: str
    sequence: int
    attempts: int
    state: WebhookDeliveryState
    last_http_status: int
    last_error: str
    last_attempt_time: _timestamp_pb2.Timestamp
    next_attempt_time: _timestamp_pb2.Timestamp
    def __init__(self, delivery_id: _Optional[str] = ..., event_type: _Optional[str] = ..., sequence: _Optional[int] = ..., attempts: _Optional[int] = ..., state: _Optional[_Union[WebhookDeliveryState, str]] = ..., last_http_status: _Optional[int] = ..., last_error: _Optional[str] = ..., last_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTrainingJobRequest(_message.Message):
    __slots__ = ("spec", "photos", "idempotency_key", "dataset_options", "priority", "webhook")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    DATASET_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    spec: TrainingJobSpec
    photos: _containers.RepeatedCompositeFieldContainer[Photo]
    idempotency_key: str
    dataset_options: DatasetOptions
    priority: int
    webhook: Webhook
    def __init__(self, spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ..., photos: _Optional[_Iterable[_Union[Photo, _Mapping]]] = ..., idempotency_key: _Optional[str] = ..., dataset_options: _Optional[_Union[DatasetOptions, _Mapping]] = ..., priority: _Optional[int] = ..., webhook: _Optional[_Union[Webhook, _Mapping]] = ...) -> None: ...

class CreateTrainingJobResponse(_message.Message):
    __slots__ = ("job", "existing")
    JOB_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    job: TrainingJob
    existing: bool
    def __init__(self, job: _Optional[_Union[TrainingJob, _Mapping]] = ..., existing: _Optional[bool] = ...) -> None: ...

class GetTrainingJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetTrainingJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: TrainingJob
    def __init__(self, job: _Optional[_Union[TrainingJob, _Mapping]] = ...) -> None: ...

class ListTrainingJobsRequest(_message.Message):
    __slots__ = ("states", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTrainingJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[TrainingJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[TrainingJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelTrainingJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelTrainingJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: TrainingJob
    def __init__(self, job: _Optional[_Union[TrainingJob, _Mapping]] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class DeleteDatasetResponse(_message.Message):
    __slots__ = ("dataset_id", "files_removed")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    files_removed: int
    def __init__(self, dataset_id: _Optional[str] = ..., files_removed: _Optional[int] = ...) -> None: ...

class DeleteTrainingJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteTrainingJobResponse(_message.Message):
    __slots__ = ("job_id", "files_removed", "events_removed")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    files_removed: int
    events_removed: int
    def __init__(self, job_id: _Optional[str] = ..., files_removed: _Optional[int] = ..., events_removed: _Optional[int] = ...) -> None: ...

class EraseSubjectRequest(_message.Message):
    __slots__ = ("dataset_id", "job_id", "model_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    job_id: str
    model_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., job_id: _Optional[str] = ..., model_id: _Optional[str] = ...) -> None: ...

class ErasureReceipt(_message.Message):
    __slots__ = ("erasure_id", "tenant", "dataset_ids", "job_ids", "model_ids", "cancelled_job_ids", "gallery_entries_removed", "class_image_sets_removed", "files_removed", "events_removed", "api_keys_removed", "erase_time", "replica_cache_bound")
    ERASURE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DATASET_IDS_FIELD_NUMBER: _ClassVar[int]
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_IDS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    GALLERY_ENTRIES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    CLASS_IMAGE_SETS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    FILES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    API_KEYS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    ERASE_TIME_FIELD_NUMBER: _ClassVar[int]
    REPLICA_CACHE_BOUND_FIELD_NUMBER: _ClassVar[int]
    erasure_id: str
    tenant: str
    dataset_ids: _containers.RepeatedScalarFieldContainer[str]
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    model_ids: _containers.RepeatedScalarFieldContainer[str]
    cancelled_job_ids: _containers.RepeatedScalarFieldContainer[str]
    gallery_entries_removed: int
    class_image_sets_removed: int
    files_removed: int
    events_removed: int
    api_keys_removed: int
    erase_time: _timestamp_pb2.Timestamp
    replica_cache_bound: _duration_pb2.Duration
    def __init__(self, erasure_id: _Optional[str] = ..., tenant: _Optional[str] = ..., dataset_ids: _Optional[_Iterable[str]] = ..., job_ids: _Optional[_Iterable[str]] = ..., model_ids: _Optional[_Iterable[str]] = ..., cancelled_job_ids: _Optional[_Iterable[str]] = ..., gallery_entries_removed: _Optional[int] = ..., class_image_sets_removed: _Optional[int] = ..., files_removed: _Optional[int] = ..., events_removed: _Optional[int] = ..., api_keys_removed: _Optional[int] = ..., erase_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replica_cache_bound: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class EraseSubjectResponse(_message.Message):
    __slots__ = ("receipt",)
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: ErasureReceipt
    def __init__(self, receipt: _Optional[_Union[ErasureReceipt, _Mapping]] = ...) -> None: ...

class EraseTenantRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class EraseTenantResponse(_message.Message):
    __slots__ = ("receipt",)
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: ErasureReceipt
    def __init__(self, receipt: _Optional[_Union[ErasureReceipt, _Mapping]] = ...) -> None: ...

class WatchTrainingJobRequest(_message.Message):
    __slots__ = ("after_sequence", "job_id")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    job_id: str
    def __init__(self, after_sequence: _Optional[int] = ..., job_id: _Optional[str] = ...) -> None: ...

class JobStateChanged(_message.Message):
    __slots__ = ("state", "message")
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    message: str
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., message: _Optional[str] = ...) -> None: ...

class CheckpointSaved(_message.Message):
    __slots__ = ("step", "key", "write_seconds")
    STEP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    WRITE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    step: int
    key: str
    write_seconds: float
    def __init__(self, step: _Optional[int] = ..., key: _Optional[str] = ..., write_seconds: _Optional[float] = ...) -> None: ...

class ValidationImages(_message.Message):
    __slots__ = ("step", "images")
    STEP_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    step: int
    images: _containers.RepeatedCompositeFieldContainer[_types_pb2.EncodedImage]
    def __init__(self, step: _Optional[int] = ..., images: _Optional[_Iterable[_Union[_types_pb2.EncodedImage, _Mapping]]] = ...) -> None: ...

class JobSucceeded(_message.Message):
    __slots__ = ("subject_model",)
    SUBJECT_MODEL_FIELD_NUMBER: _ClassVar[int]
    subject_model: _types_pb2.SubjectModel
    def __init__(self, subject_model: _Optional[_Union[_types_pb2.SubjectModel, _Mapping]] = ...) -> None: ...

class WatchTrainingJobResponse(_message.Message):
    __slots__ = ("sequence", "time", "state_changed", "progress", "checkpoint_saved", "validation_images", "succeeded")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SAVED_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_IMAGES_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    state_changed: JobStateChanged
    progress: TrainingProgress
    checkpoint_saved: CheckpointSaved
    validation_images: ValidationImages
    succeeded: JobSucceeded
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_changed: _Optional[_Union[JobStateChanged, _Mapping]] = ..., progress: _Optional[_Union[TrainingProgress, _Mapping]] = ..., checkpoint_saved: _Optional[_Union[CheckpointSaved, _Mapping]] = ..., validation_images: _Optional[_Union[ValidationImages, _Mapping]] = ..., succeeded: _Optional[_Union[JobSucceeded, _Mapping]] = ...) -> None: ...
