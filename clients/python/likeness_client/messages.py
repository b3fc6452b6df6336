"""What the synchronous and asyncio clients share: request builders, photo chunking, image and artifact
reassembly, and the typed results. Nothing here makes a call, so both clients are only their transports.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

from likeness_client import errors
from likeness_client.v1 import gallery_service_pb2 as gallery_pb
from likeness_client.v1 import inference_service_pb2 as inference_pb
from likeness_client.v1 import trainer_service_pb2 as trainer_pb
from likeness_client.v1 import types_pb2

#: Photo bytes per PrepareDataset message: small enough to keep memory flat, large enough to keep overhead low.
UPLOAD_CHUNK_BYTES = 1024 * 1024

#: A photo to upload: a file path, raw bytes, a (file name, bytes) pair, or a `Photo` message (with caption).
PhotoSource = str | os.PathLike[str] | bytes | tuple[str, bytes] | trainer_pb.Photo


# --- photos ---


def photo_name(source: PhotoSource, position: int) -> str:
    """The file name a photo is uploaded under."""
    if isinstance(source, trainer_pb.Photo):
        return source.file_name or f"photo-{position:03d}"
    if isinstance(source, tuple):
        return source[0]
    if isinstance(source, bytes):
        return f"photo-{position:03d}"
    return Path(source).name


def upload_names(photos: Sequence[PhotoSource], chunk_bytes: int, max_message_bytes: int) -> list[str]:
    """Validates an upload before anything is sent and returns each photo's file name."""
    names = [photo_name(source, position) for position, source in enumerate(photos)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        # The server joins chunks by file name, so two photos with one name would be merged into garbage.
        raise errors.InvalidArgument(f"photo file names must be unique; repeated: {duplicates}", field="photos")
    if chunk_bytes <= 0 or chunk_bytes > max_message_bytes - 4096:
        raise errors.InvalidArgument("must be positive and below the message limit", field="chunk_bytes")
    return names


def _photo_chunks(source: PhotoSource, name: str, chunk_bytes: int) -> Iterator[trainer_pb.PhotoChunk]:
    """Chunks of one photo; files are read lazily so a large upload never sits in memory whole."""
    caption = source.caption if isinstance(source, trainer_pb.Photo) else ""
    data: bytes | None
    if isinstance(source, trainer_pb.Photo):
        data = source.data
    elif isinstance(source, tuple):
        data = source[1]
    elif isinstance(source, bytes):
        data = source
    else:
        data = None
    if data is not None:
        # An empty photo still sends one chunk, so it gets a report (rejected as empty) instead of vanishing.
        starts = range(0, len(data), chunk_bytes) or range(1)
        for position, start in enumerate(starts):
            piece = data[start : start + chunk_bytes]
            yield trainer_pb.PhotoChunk(file_name=name, data=piece, caption=caption if position == 0 else "")
        return
    with open(cast("str | os.PathLike[str]", source), "rb") as handle:
        yield from _file_chunks(handle, name, chunk_bytes)


def _file_chunks(handle: IO[bytes], name: str, chunk_bytes: int) -> Iterator[trainer_pb.PhotoChunk]:
    sent_any = False
    while piece := handle.read(chunk_bytes):
        sent_any = True
        yield trainer_pb.PhotoChunk(file_name=name, data=piece)
    if not sent_any:
        yield trainer_pb.PhotoChunk(file_name=name, data=b"")


def upload_requests(
    photos: Sequence[PhotoSource],
    names: Sequence[str],
    options: trainer_pb.DatasetOptions | None,
    chunk_bytes: int,
) -> Iterator[trainer_pb.PrepareDatasetRequest]:
    """The PrepareDataset stream: options first, then each photo's chunks."""
    yield trainer_pb.PrepareDatasetRequest(options=options or trainer_pb.DatasetOptions())
    for source, name in zip(photos, names, strict=True):
        for chunk in _photo_chunks(source, name, chunk_bytes):
            yield trainer_pb.PrepareDatasetRequest(photo_chunk=chunk)


# --- imported LoRAs ---

#: ImportLora's kinds by name: a subject (bound to its identifier) or a style.
LORA_KINDS: dict[str, int] = {"subject": types_pb2.SUBJECT_KIND_SUBJECT, "style": types_pb2.SUBJECT_KIND_STYLE}


def subject_kind(kind: str, *, field: str = "kind") -> int:
    """The SubjectKind value of "subject" or "style"; SUBJECT_KIND_UNSPECIFIED for "" (both)."""
    if not kind:
        return types_pb2.SUBJECT_KIND_UNSPECIFIED
    if kind not in LORA_KINDS:
        raise errors.InvalidArgument(f"must be one of {', '.join(LORA_KINDS)}, got {kind!r}", field=field)
    return LORA_KINDS[kind]


def lora_import_header(
    path: str | os.PathLike[str],
    *,
    base_model: str,
    kind: str,
    identifier: str,
    class_noun: str,
    chunk_bytes: int,
    max_message_bytes: int,
) -> inference_pb.ImportLoraHeader:
    """The ImportLora header for a local file, checked before anything is sent (the file must exist)."""
    wire_kind = subject_kind(kind) if kind else LORA_KINDS["subject"]
    if chunk_bytes <= 0 or chunk_bytes > max_message_bytes - 4096:
        raise errors.InvalidArgument("must be positive and below the message limit", field="chunk_bytes")
    file = Path(path)
    if not file.is_file():
        raise errors.InvalidArgument(f"{file} is not a file", field="path")
    return inference_pb.ImportLoraHeader(
        base_model=base_model,
        kind=wire_kind,  # type: ignore[arg-type]  # enum values are ints
        identifier=identifier,
        class_noun=class_noun,
        file_name=file.name,
        size_bytes=file.stat().st_size,
    )


def lora_import_requests(
    path: str | os.PathLike[str], header: inference_pb.ImportLoraHeader, chunk_bytes: int
) -> Iterator[inference_pb.ImportLoraRequest]:
    """The ImportLora stream: the header, then the file in chunks, read lazily so it never sits in memory whole."""
    yield inference_pb.ImportLoraRequest(header=header)
    with open(path, "rb") as handle:
        while piece := handle.read(chunk_bytes):
            yield inference_pb.ImportLoraRequest(chunk=piece)


def _inline_photo(source: PhotoSource, position: int) -> trainer_pb.Photo:
    if isinstance(source, trainer_pb.Photo):
        return source
    name = photo_name(source, position)
    if isinstance(source, tuple):
        return trainer_pb.Photo(file_name=name, data=source[1])
    if isinstance(source, bytes):
        return trainer_pb.Photo(file_name=name, data=source)
    return trainer_pb.Photo(file_name=name, data=Path(source).read_bytes())


def create_job_request(
    spec: trainer_pb.TrainingJobSpec,
    *,
    photos: Sequence[PhotoSource],
    dataset_options: trainer_pb.DatasetOptions | None,
    idempotency_key: str,
    priority: int,
    webhook: trainer_pb.Webhook | None,
    max_message_bytes: int,
) -> trainer_pb.CreateTrainingJobRequest:
    """A CreateTrainingJobRequest with a fresh idempotency key unless one is given, so gRPC's retries (and the
    caller's) return the first job instead of queueing a second."""
    inline = [_inline_photo(source, position) for position, source in enumerate(photos)]
    inline_bytes = sum(len(photo.data) for photo in inline)
    if inline_bytes > max_message_bytes - 1024 * 1024:
        raise errors.InvalidArgument(
            f"inline photos total {inline_bytes} bytes, over the message limit; upload them with "
            "prepare_dataset and pass spec.dataset_id",
            field="photos",
        )
    return trainer_pb.CreateTrainingJobRequest(
        spec=spec,
        photos=inline,
        idempotency_key=idempotency_key or uuid.uuid4().hex,
        dataset_options=dataset_options,
        priority=priority,
        webhook=webhook,
    )


def list_jobs_request(states: Sequence[int], page_size: int, page_token: str) -> trainer_pb.ListTrainingJobsRequest:
    """A ListTrainingJobsRequest for one page."""
    return trainer_pb.ListTrainingJobsRequest(
        states=cast("Sequence[trainer_pb.JobState]", states), page_size=page_size, page_token=page_token
    )


def erase_subject_request(dataset_id: str, job_id: str, model_id: str) -> trainer_pb.EraseSubjectRequest:
    """An EraseSubjectRequest naming the subject by exactly one id of its lineage."""
    named = {
        name: value for name, value in (("dataset_id", dataset_id), ("job_id", job_id), ("model_id", model_id)) if value
    }
    if len(named) != 1:
        raise errors.InvalidArgument("name the subject by exactly one of dataset_id, job_id or model_id")
    return trainer_pb.EraseSubjectRequest(**named)


def generate_request(
    request: inference_pb.GenerateImagesRequest | None, fields: dict[str, Any]
) -> inference_pb.GenerateImagesRequest:
    """The request as given, or built from keyword fields."""
    if request is None:
        return inference_pb.GenerateImagesRequest(**fields)
    if fields:
        raise TypeError("pass either a request or keyword fields, not both")
    return request


def search_request(
    query: str,
    *,
    tags: Sequence[str] = (),
    base_model: str = "",
    page_size: int = 0,
    page_token: str = "",
    scope: int = gallery_pb.SEARCH_SCOPE_ALL,
    subject_model_id: str = "",
) -> gallery_pb.SearchPromptsRequest:
    """A SearchPromptsRequest for one page."""
    return gallery_pb.SearchPromptsRequest(
        query=query,
        tags=tags,
        base_model=base_model,
        page_size=page_size,
        page_token=page_token,
        scope=cast("gallery_pb.SearchScope", scope),
        subject_model_id=subject_model_id,
    )


def record_request(
    prompt: str,
    *,
    parameters: types_pb2.GenerationParameters | None = None,
    base_model: str = "",
    tags: Sequence[str] = (),
    subject_model_id: str = "",
    image: bytes = b"",
) -> gallery_pb.RecordPromptRequest:
    """A RecordPromptRequest."""
    return gallery_pb.RecordPromptRequest(
        prompt=prompt,
        parameters=parameters,
        base_model=base_model,
        tags=tags,
        subject_model_id=subject_model_id,
        image=image,
    )


# --- generated images ---


@dataclass(frozen=True)
class GeneratedImage:
    """One whole generated image, reassembled from its chunks."""

    index: int
    seed: int
    format: int  # types_pb2.ImageFormat value
    width: int
    height: int
    data: bytes
    gallery_prompt_id: str = ""  # the gallery entry it was recorded as, when the request recorded it

    @property
    def extension(self) -> str:
        """File extension of the encoding, for example "png"."""
        extensions: dict[int, str] = {types_pb2.IMAGE_FORMAT_JPEG: "jpg", types_pb2.IMAGE_FORMAT_WEBP: "webp"}
        return extensions.get(self.format, "png")


#: What `generate_images` yields: the stream's protocol messages, with image chunks replaced by whole images.
GenerationEvent = (
    inference_pb.Accepted | inference_pb.Progress | inference_pb.Warning | inference_pb.Summary | GeneratedImage
)


class ImageAssembler:
    """Joins the `ImageChunk`s of a GenerateImages stream into whole images.

    Chunks of different images may interleave; chunks of one image must arrive in order, which the server
    guarantees. A gap or a duplicate means a broken stream and raises `Unavailable` rather than returning a
    corrupt image.
    """

    def __init__(self) -> None:
        self._parts: dict[int, list[bytes]] = {}
        self._completed: set[int] = set()

    def add(self, chunk: inference_pb.ImageChunk) -> GeneratedImage | None:
        """Takes the next chunk; returns the whole image when this was its last chunk, else None."""
        index = chunk.image_index
        if index in self._completed:
            raise errors.Unavailable(f"stream sent chunk {chunk.chunk_index} of image {index} after its last chunk")
        parts = self._parts.setdefault(index, [])
        if chunk.chunk_index != len(parts):
            raise errors.Unavailable(
                f"stream sent chunk {chunk.chunk_index} of image {index}, expected chunk {len(parts)}"
            )
        parts.append(chunk.data)
        if not chunk.last:
            return None
        del self._parts[index]
        self._completed.add(index)
        return GeneratedImage(
            index=index,
            seed=chunk.seed,
            format=chunk.format,
            width=chunk.width,
            height=chunk.height,
            data=b"".join(parts),
            gallery_prompt_id=chunk.gallery_prompt_id,
        )

    def event(self, response: inference_pb.GenerateImagesResponse) -> GenerationEvent | None:
        """What one stream message means to the caller: the message itself, a whole image, or None for a chunk
        of an image not complete yet."""
        kind = response.WhichOneof("event")
        if kind == "image_chunk":
            return self.add(response.image_chunk)
        return getattr(response, kind) if kind is not None else None

    def finish(self) -> None:
        """Raises when the stream ended with images still incomplete."""
        if self._parts:
            raise errors.Unavailable(f"stream ended before images {sorted(self._parts)} were complete")


@dataclass
class GenerationResult:
    """Everything a GenerateImages call returned, collected by `generate`."""

    accepted: inference_pb.Accepted | None = None
    images: list[GeneratedImage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: inference_pb.Summary | None = None

    def add(self, event: GenerationEvent) -> None:
        """Files one event of the stream."""
        if isinstance(event, GeneratedImage):
            self.images.append(event)
        elif isinstance(event, inference_pb.Accepted):
            self.accepted = event
        elif isinstance(event, inference_pb.Warning):
            self.warnings.append(event.message)
        elif isinstance(event, inference_pb.Summary):
            self.summary = event


# --- downloaded artifacts ---


@dataclass(frozen=True)
class DownloadedFile:
    """One file of a subject model, written and checked against its SHA-256."""

    path: Path
    kind: int  # inference_pb.ArtifactKind value
    size_bytes: int
    sha256: str


class ArtifactWriter:
    """Writes a DownloadSubjectModel stream into a folder: each header opens a file under the folder (a path that
    would leave it is refused), its chunks are appended, and the size and SHA-256 are checked when the next header
    or the end arrives. A file is written under a temporary name and renamed once it checks out."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.files: list[DownloadedFile] = []
        self._header: inference_pb.ArtifactFile | None = None
        self._handle: IO[bytes] | None = None
        self._digest: Any = None
        self._written = 0

    def add(self, response: inference_pb.DownloadSubjectModelResponse) -> None:
        """Takes the next stream message."""
        kind = response.WhichOneof("payload")
        if kind == "file":
            self._close()
            self._open(response.file)
        elif kind == "data":
            if self._handle is None:
                raise errors.Unavailable("download stream sent data before a file header")
            self._handle.write(response.data)
            self._digest.update(response.data)
            self._written += len(response.data)

    def finish(self) -> list[DownloadedFile]:
        """Checks the last file and returns every file written."""
        self._close()
        return self.files

    def _target(self, relative: str) -> Path:
        pure = PurePosixPath(relative)
        if not relative or pure.is_absolute() or ".." in pure.parts:
            raise errors.Unavailable(f"download stream named an unsafe path {relative!r}")
        return self.folder.joinpath(*pure.parts)

    def _open(self, header: inference_pb.ArtifactFile) -> None:
        target = self._target(header.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._header = header
        self._handle = open(target.with_name(target.name + ".part"), "wb")  # noqa: SIM115 - closed in _close
        self._digest = hashlib.sha256()
        self._written = 0

    def _close(self) -> None:
        if self._handle is None or self._header is None:
            return
        self._handle.close()
        header, self._handle = self._header, None
        target = self._target(header.path)
        partial = target.with_name(target.name + ".part")
        digest = self._digest.hexdigest()
        if self._written != header.size_bytes or digest != header.sha256:
            partial.unlink(missing_ok=True)
            raise errors.Unavailable(
                f"{header.path}: received {self._written} bytes with SHA-256 {digest[:12]}…, the server announced "
                f"{header.size_bytes} bytes with {header.sha256[:12]}…; download again"
            )
        partial.replace(target)
        self.files.append(DownloadedFile(target, header.kind, header.size_bytes, header.sha256))
