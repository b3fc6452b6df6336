"""Likeness Studio: a web console on the gRPC services (discover prompts, train subjects, generate).

Flask with server-side Jinja templates and one small script for progressive enhancement (instant search,
infinite scroll, drag-and-drop, live job view, streamed previews); every page also works as plain HTML forms.
Each route only translates: it calls the services through the Python client with the session's API key and
renders what comes back. The Studio stores nothing; a restart or another replica loses no state.

Safety: Jinja autoescapes every value; a Content-Security-Policy allows scripts, styles and connections only
from the Studio itself (so HTML or script in a prompt renders as text and never runs); the API key lives
encrypted in an HttpOnly, SameSite=Lax cookie; every form and fetch that changes something carries a CSRF token.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from flask import Flask, Response, abort, g, redirect, render_template, request, session, url_for
from PIL import Image, ImageOps

from likeness import errors
from likeness.api.generation import SCHEDULER_ENUMS, SCHEDULER_NAMES, SCHEDULERS
from likeness.studio import present
from likeness.studio.clients import ClientPool, key_slot
from likeness.studio.session import CSRF_FIELD, KeyVault, check_csrf, csrf_token
from likeness.studio.thumbnails import ThumbnailCache, shrink
from likeness_client import GeneratedImage, LikenessClient
from likeness_client.v1 import gallery_service_pb2 as gallery_pb
from likeness_client.v1 import inference_service_pb2 as inference_pb
from likeness_client.v1 import trainer_service_pb2 as trainer_pb
from likeness_client.v1 import types_pb2

log = logging.getLogger("likeness.studio")

#: Largest upload the Studio accepts (all photos of one request together).
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
PAGE_SIZE = 24
PREVIEW_SIDE = 320
DEFAULT_STEPS = 20
PLACEHOLDER_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4"><rect width="4" height="4" fill="#e3e7eb"/></svg>'
)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class StudioConfig:
    """Where the services are and how sessions are sealed."""

    services_address: str
    secret: str = ""
    tls_ca_file: str | None = None
    #: Set the Secure flag on the session cookie (serve the Studio behind HTTPS).
    secure_cookies: bool = False
    default_base_model: str = ""
    #: Largest single photo; bigger ones are reported as rejected, the others still go through.
    max_photo_bytes: int = 20 * 1024 * 1024


class SignInRequired(Exception):
    """The services want an API key and the session has none (or it stopped working)."""


def create_app(config: StudioConfig) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=config.secret or secrets.token_hex(32),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.secure_cookies,
        SESSION_COOKIE_NAME="likeness_studio",
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
    )
    if not config.secret:
        log.warning("no studio secret set: sessions last until this process restarts (set LIKENESS_STUDIO_SECRET)")
    vault = KeyVault(app.config["SECRET_KEY"])
    pool = ClientPool(config.services_address, tls_ca_file=config.tls_ca_file)
    app.extensions["likeness_pool"] = pool

    thumbnails = ThumbnailCache()

    def api_key() -> str:
        return vault.open(session.get("key", ""))

    def client() -> LikenessClient:
        return pool.get(api_key())

    def remember_thumbnails(page: gallery_pb.SearchPromptsResponse) -> None:
        slot = key_slot(api_key())
        for hit in page.results:
            if hit.prompt.thumbnail_webp:
                thumbnails.put(slot, hit.prompt.prompt_id, hit.prompt.thumbnail_webp)

    @app.context_processor
    def template_globals() -> dict[str, Any]:
        return {"csrf_token": csrf_token, "csrf_field": CSRF_FIELD, "signed_in": bool(session.get("key"))}

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.before_request
    def csrf_on_changes() -> None:
        if request.method == "POST" and request.endpoint != "signin":
            check_csrf()
        g.banner = ""

    @app.errorhandler(SignInRequired)
    def to_signin(error: SignInRequired) -> Any:
        session.pop("key", None)
        if request.headers.get("Accept", "").startswith("application/json") or request.path.startswith("/api/"):
            return Response(json.dumps({"error": "sign in again"}), status=401, mimetype="application/json")
        return redirect(url_for("signin", next=request.full_path if request.method == "GET" else "/"))

    @app.errorhandler(errors.Unavailable)
    def unavailable(error: errors.Unavailable) -> tuple[str, int]:
        return render_template("unavailable.html", message=str(error)), 503

    @app.errorhandler(errors.LikenessError)
    def domain_error(error: errors.LikenessError) -> Any:
        if isinstance(error, errors.Unauthenticated):
            return to_signin(SignInRequired())
        status = 404 if isinstance(error, errors.NotFound) else 400
        return render_template("error.html", message=str(error)), status

    # ---- sign-in --------------------------------------------------------------------------------------

    @app.route("/signin", methods=["GET", "POST"])
    def signin() -> Any:
        target = _safe_next(request.values.get("next", "/"))
        if request.method == "GET":
            return render_template("signin.html", next=target, error="")
        check_csrf()
        key = request.form.get("api_key", "").strip()
        try:
            pool.get(key).list_training_jobs(page_size=1)
        except errors.Unauthenticated as error:
            return render_template("signin.html", next=target, error=str(error)), 401
        session.clear()
        session["key"] = vault.seal(key)
        return redirect(target)

    @app.post("/signout")
    def signout() -> Any:
        session.clear()
        return redirect(url_for("signin"))

    # ---- discover -------------------------------------------------------------------------------------

    @app.get("/")
    def home() -> Any:
        return redirect(url_for("discover"))

    @app.get("/discover")
    def discover() -> str:
        query = request.args.get("q", "")
        page, notice = _search(client(), query, "")
        remember_thumbnails(page)
        return render_template("discover.html", query=query, page=page, notice=notice)

    @app.get("/discover/results")
    def discover_results() -> str:
        page, notice = _search(client(), request.args.get("q", ""), request.args.get("page_token", ""))
        remember_thumbnails(page)
        return render_template("_results.html", page=page, notice=notice, query=request.args.get("q", ""))

    @app.get("/thumbs/<prompt_id>")
    def thumbnail(prompt_id: str) -> Response:
        slot = key_slot(api_key())
        webp = thumbnails.get(slot, prompt_id)
        if webp is None:  # not from a search of this replica: ask the gallery
            webp = _call(lambda: client().get_prompt(prompt_id)).thumbnail_webp
        if not webp:
            abort(404)
        small = shrink(webp)
        thumbnails.put(slot, prompt_id, small)  # shrunk once: a second request serves it as is
        return _image_response(small, "image/webp")

    @app.get("/prompts/<prompt_id>")
    def prompt_detail(prompt_id: str) -> str:
        record = _call(lambda: client().get_prompt(prompt_id))
        return render_template("prompt.html", prompt=present.prompt_card(record))

    @app.get("/prompts/<prompt_id>/image")
    def prompt_image(prompt_id: str) -> Response:
        data, media = _call(lambda: client().get_prompt_image(prompt_id))
        return _image_response(data, media)

    # ---- subjects and training ------------------------------------------------------------------------

    @app.get("/subjects")
    def subjects() -> str:
        models = _call(lambda: client().list_subject_models())
        jobs = _call(lambda: client().list_training_jobs(page_size=20)).jobs
        return render_template(
            "subjects.html", subjects=[present.subject(m) for m in models], jobs=[present.job(j) for j in jobs]
        )

    @app.get("/subjects/<model_id>/sample")
    def subject_sample(model_id: str) -> Response:
        """The newest gallery image made with the subject (its thumbnail), or a neutral placeholder."""
        page = _call(lambda: client().search_prompts(subject_model_id=model_id, page_size=5))
        for hit in page.results:
            if hit.prompt.thumbnail_webp:
                return _image_response(hit.prompt.thumbnail_webp, "image/webp")
        return Response(PLACEHOLDER_SVG, mimetype="image/svg+xml", headers={"Cache-Control": "private, max-age=60"})

    @app.route("/subjects/new", methods=["GET", "POST"])
    def new_subject() -> Any:
        if request.method == "GET":
            _call(lambda: client().list_training_jobs(page_size=1))  # signed in and reachable before the form
            return render_template("new_subject.html", report=None, error="")
        uploads = [(f.filename or f"photo-{i}", f.read()) for i, f in enumerate(request.files.getlist("photos"))]
        uploads = [(name, data) for name, data in uploads if data]
        if not uploads:
            return render_template("new_subject.html", report=None, error="choose at least one photo"), 400
        limit = config.max_photo_bytes
        too_big = [name for name, data in uploads if len(data) > limit]
        sendable = [(name, data) for name, data in uploads if len(data) <= limit]
        options = trainer_pb.DatasetOptions(base_model=config.default_base_model)
        try:
            dataset = _call(lambda: client().prepare_dataset(_unique(sendable), options)).dataset if sendable else None
        except errors.InvalidArgument as error:
            return render_template("new_subject.html", report=None, error=str(error)), 400
        previews = {name: _preview(data) for name, data in sendable}
        reports = [present.photo_report(r, previews.get(r.file_name, "")) for r in dataset.reports] if dataset else []
        reports += [
            {"name": name, "kept": False, "reason": f"larger than {limit / 2**20:g} MiB; send a smaller photo", "crop": None,
             "preview": "", "size": "", "crop_method": ""}
            for name in too_big
        ]  # fmt: skip
        kept = sum(1 for r in reports if r["kept"])
        return render_template(
            "new_subject.html",
            report={"dataset_id": dataset.dataset_id if dataset and kept else "", "photos": reports, "kept": kept},
            error="",
        )

    @app.post("/jobs")
    def create_job() -> Any:
        form = request.form
        spec = trainer_pb.TrainingJobSpec(
            base_model=form.get("base_model", "") or config.default_base_model,
            class_noun=form.get("class_noun", "").strip(),
            dataset_id=form.get("dataset_id", ""),
            method=types_pb2.TRAINING_METHOD_LORA,
            hyperparameters=trainer_pb.Hyperparameters(max_train_steps=_int(form, "steps", 400, 1, 100_000)),
            prior_preservation=trainer_pb.PriorPreservation(enabled=form.get("prior") == "on"),
            validation=trainer_pb.ValidationConfig(
                prompts=["a photo of {subject}"], every_n_steps=_int(form, "validate_every", 0, 0, 100_000)
            ),
        )
        job = _call(lambda: client().create_training_job(spec)).job
        return redirect(url_for("job_page", job_id=job.job_id))

    @app.get("/jobs/<job_id>")
    def job_page(job_id: str) -> str:
        job = _call(lambda: client().get_training_job(job_id))
        return render_template("job.html", job=present.job(job))

    @app.get("/jobs/<job_id>/events")
    def job_events(job_id: str) -> Response:
        # EventSource reconnects on its own and sends the last id it saw: resume from there, losing nothing.
        resumed = request.headers.get("Last-Event-ID", "")
        after = max(_int(request.args, "after", 0, 0, 2**62), int(resumed) if resumed.isdigit() else 0)
        watcher = client()
        watcher.get_training_job(job_id)  # NotFound before the stream starts

        def stream() -> Iterator[str]:
            try:
                for event in watcher.watch_training_job(job_id, after_sequence=after):
                    shown = present.job_event(event)
                    if shown is not None:
                        yield f"id: {event.sequence}\ndata: {json.dumps(shown)}\n\n"
                yield "event: end\ndata: {}\n\n"
            except errors.LikenessError as error:
                yield f"event: failure\ndata: {json.dumps({'error': str(error)})}\n\n"

        return Response(stream(), mimetype="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.post("/jobs/<job_id>/cancel")
    def cancel_job(job_id: str) -> Any:
        _call(lambda: client().cancel_training_job(job_id))
        return redirect(url_for("job_page", job_id=job_id))

    # ---- generate -------------------------------------------------------------------------------------

    @app.get("/generate")
    def generate_form() -> str:
        values = {"prompt": "a photo of {subject}", "negative_prompt": "", "steps": DEFAULT_STEPS, "seed": "",
                  "num_images": 1, "subject_model_id": request.args.get("subject", ""), "record": False,
                  "guidance_scale": "", "scheduler": ""}  # fmt: skip
        prompt_id = request.args.get("prompt_id", "")
        if prompt_id:
            record = _call(lambda: client().get_prompt(prompt_id))
            params = record.parameters
            values.update(prompt=record.prompt, negative_prompt=params.negative_prompt)
            if params.HasField("num_inference_steps"):
                values["steps"] = params.num_inference_steps
            if params.HasField("seed"):
                values["seed"] = params.seed
            if params.HasField("guidance_scale"):
                values["guidance_scale"] = f"{params.guidance_scale:g}"
            values["scheduler"] = SCHEDULER_NAMES.get(params.scheduler, "")
        models = [present.subject(m) for m in _call(lambda: client().list_subject_models())]
        return render_template(
            "generate.html", values=values, subjects=models, images=[], error="", schedulers=SCHEDULERS
        )

    @app.post("/generate")
    def generate() -> Any:
        models = [present.subject(m) for m in _call(lambda: client().list_subject_models())]
        values = dict(request.form)
        try:
            request_message = _generation_request(request.form)
            result = _call(lambda: client().generate(request_message, timeout=600))
        except errors.InvalidArgument as error:
            return (
                render_template(
                    "generate.html", values=values, subjects=models, images=[], error=str(error), schedulers=SCHEDULERS
                ),
                400,
            )
        images = [_shown_image(image) for image in result.images]
        return render_template(
            "generate.html", values=values, subjects=models, images=images, error="", schedulers=SCHEDULERS
        )

    @app.post("/api/generate")
    def generate_stream() -> Response:
        request_message = _generation_request(request.form)
        request_message.preview_every_n_steps = max(1, request_message.parameters.num_inference_steps // 5)
        generator = client()

        def stream() -> Iterator[str]:
            try:
                for event in generator.generate_images(request_message, timeout=600):
                    if isinstance(event, GeneratedImage):
                        yield _line({"type": "image", **_shown_image(event)})
                    elif isinstance(event, inference_pb.Progress):
                        line: dict[str, Any] = {"type": "progress", "step": event.step, "total": event.total_steps}
                        if event.preview.data:
                            line["preview"] = present.data_uri(
                                event.preview.data, present.media_type(event.preview.format)
                            )
                        yield _line(line)
                    elif isinstance(event, inference_pb.Warning):
                        yield _line({"type": "warning", "message": event.message})
                yield _line({"type": "done"})
            except errors.LikenessError as error:
                yield _line({"type": "error", "message": str(error)})

        return Response(stream(), mimetype="application/x-ndjson", headers={"Cache-Control": "no-store"})

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        return "ok", 200

    return app


# ---- helpers ---------------------------------------------------------------------------------------------


def _call(function: Any) -> Any:
    """Run one client call; UNAUTHENTICATED sends the browser to sign-in, other errors render as pages."""
    try:
        return function()
    except errors.Unauthenticated as error:
        raise SignInRequired() from error


def _search(client: LikenessClient, query: str, page_token: str) -> tuple[gallery_pb.SearchPromptsResponse, str]:
    try:
        page = _call(lambda: client.search_prompts(query, page_size=PAGE_SIZE, page_token=page_token))
        return page, ""
    except errors.InvalidArgument as error:
        return gallery_pb.SearchPromptsResponse(), str(error)


def _image_response(data: bytes, media: str) -> Response:
    return Response(data, mimetype=media, headers={"Cache-Control": "private, max-age=3600"})


def _preview(data: bytes) -> str:
    """A small JPEG of an uploaded photo (upright, as the report measured it), or "" when it is no image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            upright = ImageOps.exif_transpose(image).convert("RGB")
            upright.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            out = io.BytesIO()
            upright.save(out, "JPEG", quality=80)
            return present.data_uri(out.getvalue(), "image/jpeg")
    except Exception:
        return ""


def _unique(photos: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """File names made unique (two uploads both named image.jpg), since the service joins chunks by name."""
    seen: dict[str, int] = {}
    unique = []
    for name, data in photos:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append((name if count == 0 else f"{count}-{name}", data))
    return unique


def _int(values: Any, name: str, default: int, low: int, high: int) -> int:
    raw = str(values.get(name, "") or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.InvalidArgument("must be a whole number", field=name) from None
    if not low <= value <= high:
        raise errors.InvalidArgument(f"must be between {low} and {high}", field=name)
    return value


def _generation_request(form: Any) -> inference_pb.GenerateImagesRequest:
    parameters = types_pb2.GenerationParameters(
        negative_prompt=form.get("negative_prompt", ""), num_inference_steps=_int(form, "steps", DEFAULT_STEPS, 1, 150)
    )
    if str(form.get("seed", "")).strip():
        parameters.seed = _int(form, "seed", 0, 0, 2**53)
    guidance = str(form.get("guidance_scale", "")).strip()
    if guidance:
        try:
            parameters.guidance_scale = float(guidance)
        except ValueError:
            raise errors.InvalidArgument("must be a number such as 7.5", field="guidance_scale") from None
    scheduler = form.get("scheduler", "")
    if scheduler:
        if scheduler not in SCHEDULER_ENUMS:
            raise errors.InvalidArgument(f"must be one of {', '.join(SCHEDULERS)}", field="scheduler")
        parameters.scheduler = cast("types_pb2.Scheduler", SCHEDULER_ENUMS[scheduler])
    return inference_pb.GenerateImagesRequest(
        prompt=form.get("prompt", ""),
        subject_model_id=form.get("subject_model_id", ""),
        parameters=parameters,
        num_images=_int(form, "num_images", 1, 1, 8),
        record_in_gallery=form.get("record") == "on",
    )


def _shown_image(image: GeneratedImage) -> dict[str, Any]:
    return {
        "src": present.data_uri(image.data, present.media_type(image.format)),
        "seed": image.seed,
        "width": image.width,
        "height": image.height,
        "gallery_prompt_id": image.gallery_prompt_id,
    }


def _line(payload: dict[str, Any]) -> str:
    return json.dumps(payload) + "\n"


def _safe_next(target: str) -> str:
    """Only paths of this site (no open redirect to another host)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"
