import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from likeness_client.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_SCOPE_UNSPECIFIED: _ClassVar[SearchScope]
    SEARCH_SCOPE_ALL: _ClassVar[SearchScope]
    SEARCH_SCOPE_OWN: _ClassVar[SearchScope]
    SEARCH_SCOPE_SHARED: _ClassVar[SearchScope]
SEARCH_SCOPE_UNSPECIFIED: SearchScope
SEARCH_SCOPE_ALL: SearchScope
SEARCH_SCOPE_OWN: SearchScope
SEARCH_SCOPE_SHARED: SearchScope

class PromptRecord(_message.Message):
    __slots__ = ("prompt_id", "prompt", "parameters", "base_model", "tags", "subject_model_id", "create_time", "use_count", "builtin", "shared", "thumbnail_webp", "has_image", "source")
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    USE_COUNT_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_WEBP_FIELD_NUMBER: _ClassVar[int]
    HAS_IMAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    prompt_id: str
    prompt: str
    parameters: _types_pb2.GenerationParameters
    base_model: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    subject_model_id: str
    create_time: _timestamp_pb2.Timestamp
    use_count: int
    builtin: bool
    shared: bool
    thumbnail_webp: bytes
    has_image: bool
    source: str
    def __init__(self, prompt_id: _Optional[str] = ..., prompt: _Optional[str] = ..., parameters: _Optional[_Union[_types_pb2.GenerationParameters, _Mapping]] = ..., base_model: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., subject_model_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., use_count: _Optional[int] = ..., builtin: _Optional[bool] = ..., shared: _Optional[bool] = ..., thumbnail_webp: _Optional[bytes] = ..., has_image: _Optional[bool] = ..., source: _Optional[str] = ...) -> None: ...

class SearchPromptsRequest(_message.Message):
    __slots__ = ("query", "tags", "base_model", "page_size", "page_token", "scope", "subject_model_id", "create_time_after", "create_time_before")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_BEFORE_FIELD_NUMBER: _ClassVar[int]
    query: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    base_model: str
    page_size: int
    page_token: str
    scope: SearchScope
    subject_model_id: str
    create_time_after: _timestamp_pb2.Timestamp
    create_time_before: _timestamp_pb2.Timestamp
    def __init__(self, query: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., base_model: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., scope: _Optional[_Union[SearchScope, str]] = ..., subject_model_id: _Optional[str] = ..., create_time_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("prompt", "score")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    prompt: PromptRecord
    score: float
    def __init__(self, prompt: _Optional[_Union[PromptRecord, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class SearchPromptsResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetPromptRequest(_message.Message):
    __slots__ = ("prompt_id",)
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    prompt_id: str
    def __init__(self, prompt_id: _Optional[str] = ...) -> None: ...

class GetPromptResponse(_message.Message):
    __slots__ = ("prompt",)
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    prompt: PromptRecord
    def __init__(self, prompt: _Optional[_Union[PromptRecord, _Mapping]] = ...) -> None: ...

class RecordPromptRequest(_message.Message):
    __slots__ = ("prompt", "parameters", "base_model", "tags", "subject_model_id", "image")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    parameters: _types_pb2.GenerationParameters
    base_model: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    subject_model_id: str
    image: bytes
    def __init__(self, prompt: _Optional[str] = ..., parameters: _Optional[_Union[_types_pb2.GenerationParameters, _Mapping]] = ..., base_model: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., subject_model_id: _Optional[str] = ..., image: _Optional[bytes] = ...) -> None: ...

class RecordPromptResponse(_message.Message):
    __slots__ = ("prompt", "existing")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    prompt: PromptRecord
    existing: bool
    def __init__(self, prompt: _Optional[_Union[PromptRecord, _Mapping]] = ..., existing: _Optional[bool] = ...) -> None: ...

class ListTemplatesRequest(_message.Message):
    __slots__ = ("category",)
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    category: str
    def __init__(self, category: _Optional[str] = ...) -> None: ...

class Template(_message.Message):
    __slots__ = ("template_id", "name", "category", "template", "parameters", "tags")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    name: str
    category: str
    template: str
    parameters: _types_pb2.GenerationParameters
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, template_id: _Optional[str] = ..., name: _Optional[str] = ..., category: _Optional[str] = ..., template: _Optional[str] = ..., parameters: _Optional[_Union[_types_pb2.GenerationParameters, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class ListTemplatesResponse(_message.Message):
    __slots__ = ("templates",)
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[Template]
    def __init__(self, templates: _Optional[_Iterable[_Union[Template, _Mapping]]] = ...) -> None: ...

class GetPromptImageRequest(_message.Message):
    __slots__ = ("prompt_id",)
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    prompt_id: str
    def __init__(self, prompt_id: _Optional[str] = ...) -> None: ...

class GetPromptImageResponse(_message.Message):
    __slots__ = ("data", "media_type", "last")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    media_type: str
    last: bool
    def __init__(self, data: _Optional[bytes] = ..., media_type: _Optional[str] = ..., last: _Optional[bool] = ...) -> None: ...

class DeletePromptRequest(_message.Message):
    __slots__ = ("prompt_id",)
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    prompt_id: str
    def __init__(self, prompt_id: _Optional[str] = ...) -> None: ...

class DeletePromptResponse(_message.Message):
    __slots__ = ("prompt_id", "files_removed")
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    prompt_id: str
    files_removed: int
    def __init__(self, prompt_id: _Optional[str] = ..., files_removed: _Optional[int] = ...) -> None: ...
