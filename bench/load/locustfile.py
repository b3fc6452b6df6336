"""Load test of a running Likeness deployment over gRPC, with Locust.

Each simulated backend mixes what production traffic looks like: subject-driven generations (mostly), prompt
searches, subject status look-ups, and some bad requests that must come back as INVALID_ARGUMENT while everything
else keeps working. A generation counts as a failure unless its stream ends with every image and a summary.

    likeness serve all --port 50051 &
    LIKENESS_LOAD_SUBJECTS=sm-...,sm-... locust -f bench/load/locustfile.py --host 127.0.0.1:50051 \\
        --headless -u 8 -r 8 --run-time 60s

Settings (environment): LIKENESS_LOAD_SUBJECTS (comma-separated subject model ids, required),
LIKENESS_LOAD_STEPS (denoising steps per generation, default 4), LIKENESS_LOAD_SIZE (width = height, default
64; use 512 or 1024 against real base models), LIKENESS_LOAD_IMAGES (images per request, default 1),
LIKENESS_LOAD_GALLERY_HOST (the gallery's address where it is a separate service; default: --host).
Locust's exit code is 1 when any request failed, so the run can gate a release.
"""

from __future__ import annotations

# gRPC must be switched to gevent before any channel exists, or every call blocks all simulated users.
import grpc.experimental.gevent as grpc_gevent  # isort: skip

grpc_gevent.init_gevent()

import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import grpc  # noqa: E402
from locust import User, between, events, task  # noqa: E402

from likeness_client.v1 import gallery_service_pb2 as gallery_pb  # noqa: E402
from likeness_client.v1 import gallery_service_pb2_grpc as gallery_rpc  # noqa: E402
from likeness_client.v1 import inference_service_pb2 as inference_pb  # noqa: E402
from likeness_client.v1 import inference_service_pb2_grpc as inference_rpc  # noqa: E402
from likeness_client.v1 import types_pb2  # noqa: E402

PROMPTS = (
    "a photo of {subject} on the beach",
    "{subject} in the snow, golden hour",
    "a watercolor painting of {subject}",
    "{subject} wearing a red scarf, studio lighting",
)
SEARCHES = ("beach", "snow portrait", "watercolor", "city at night", "studio lighting")
CALL_TIMEOUT_SECONDS = 120


def _setting(name: str, default: str) -> str:
    return os.environ.get(f"LIKENESS_LOAD_{name}", default)


class CallFailed(Exception):
    """A call that returned, but not what the test expects."""


class LikenessUser(User):
    """One backend calling the inference and gallery services."""

    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        subjects = [s for s in _setting("SUBJECTS", "").split(",") if s]
        if not subjects:
            raise RuntimeError("set LIKENESS_LOAD_SUBJECTS to the subject model ids to generate with")
        self.subjects = subjects
        self.steps = int(_setting("STEPS", "4"))
        self.size = int(_setting("SIZE", "64"))
        self.images = int(_setting("IMAGES", "1"))
        self.channel = grpc.insecure_channel(self.host)
        gallery_host = _setting("GALLERY_HOST", self.host)
        self.gallery_channel = self.channel if gallery_host == self.host else grpc.insecure_channel(gallery_host)
        self.inference = inference_rpc.InferenceServiceStub(self.channel)
        self.gallery = gallery_rpc.GalleryServiceStub(self.gallery_channel)

    def on_stop(self) -> None:
        self.channel.close()
        self.gallery_channel.close()

    def _timed(self, name: str, call: Callable[[], int]) -> None:
        """Runs `call` (returns the response size) and reports it to Locust as one request."""
        started = time.perf_counter()
        length, exception = 0, None
        try:
            length = call()
        except (grpc.RpcError, CallFailed) as error:
            exception = error
        events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )

    @task(6)
    def generate(self) -> None:
        request = inference_pb.GenerateImagesRequest(
            subject_model_id=random.choice(self.subjects),
            prompt=random.choice(PROMPTS),
            num_images=self.images,
            parameters=types_pb2.GenerationParameters(
                num_inference_steps=self.steps, width=self.size, height=self.size, seed=random.randrange(2**31)
            ),
        )

        def stream() -> int:
            received, images, summary = 0, 0, None
            for response in self.inference.GenerateImages(request, timeout=CALL_TIMEOUT_SECONDS):
                received += response.ByteSize()
                kind = response.WhichOneof("event")
                if kind == "image_chunk" and response.image_chunk.last:
                    images += 1
                elif kind == "summary":
                    summary = response.summary
            if summary is None or images != self.images:
                raise CallFailed(
                    f"stream ended with {images} of {self.images} images and summary={summary is not None}"
                )
            return received

        self._timed("GenerateImages", stream)

    @task(2)
    def search_prompts(self) -> None:
        def search() -> int:
            response = self.gallery.SearchPrompts(
                gallery_pb.SearchPromptsRequest(query=random.choice(SEARCHES), page_size=10),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            return response.ByteSize()

        self._timed("SearchPrompts", search)

    @task(1)
    def subject_status(self) -> None:
        def status() -> int:
            request = inference_pb.GetSubjectModelRequest(model_id=random.choice(self.subjects))
            return self.inference.GetSubjectModel(request, timeout=CALL_TIMEOUT_SECONDS).ByteSize()

        self._timed("GetSubjectModel", status)

    @task(1)
    def bad_request(self) -> None:
        """Too many images: must be refused with INVALID_ARGUMENT naming the field, without disturbing others."""

        def refused() -> int:
            request = inference_pb.GenerateImagesRequest(
                subject_model_id=random.choice(self.subjects), prompt="{subject}", num_images=99
            )
            try:
                list(self.inference.GenerateImages(request, timeout=CALL_TIMEOUT_SECONDS))  # read to the status
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.INVALID_ARGUMENT and "num_images" in (error.details() or ""):
                    return 0
                raise
            raise CallFailed("a request for 99 images was accepted")

        self._timed("GenerateImages (invalid, expect INVALID_ARGUMENT)", refused)
