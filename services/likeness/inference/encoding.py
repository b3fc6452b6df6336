"""Encoding generated images (PNG, JPEG, WebP) with their generation parameters, and splitting them into chunks.

PNG images carry a `parameters` text chunk in AUTOMATIC1111's format, which A1111, ComfyUI, InvokeAI and
image-metadata viewers read:

    a photo of sks dog on a beach
    Negative prompt: blurry
    Steps: 30, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15, Lora scale: 1.0, ...

plus a `likeness` chunk holding the same parameters as JSON for programs. JPEG and WebP carry the A1111 text in
the EXIF UserComment field (UTF-16, "UNICODE" header), where A1111 itself puts it for those formats.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import ExifTags, Image, PngImagePlugin

from likeness.errors import InvalidArgument

FORMATS = ("png", "jpeg", "webp")
LOSSY_QUALITY = 95
PARAMETERS_KEY = "parameters"
LIKENESS_KEY = "likeness"
_EXIF_UNICODE_HEADER = b"UNICODE\x00"

# diffusers scheduler class -> the sampler name AUTOMATIC1111 writes, so other tools recognise it.
A1111_SAMPLER_NAMES = {
    "DDIMScheduler": "DDIM",
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "UniPCMultistepScheduler": "UniPC",
    "DDPMScheduler": "DDPM",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
}


@dataclass(frozen=True)
class ImageMetadata:
    """What produced an image: enough to reproduce it, and to show it in other tools."""

    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    guidance_scale: float
    seed: int
    width: int
    height: int
    base_model: str
    subject_model_id: str = ""
    lora_scale: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def a1111_text(self) -> str:
        """The `parameters` text AUTOMATIC1111 writes: prompt, optional negative prompt line, then key: value."""
        settings: list[tuple[str, Any]] = [
            ("Steps", self.steps),
            ("Sampler", self.sampler),
            ("CFG scale", _number(self.guidance_scale)),
            ("Seed", self.seed),
            ("Size", f"{self.width}x{self.height}"),
            ("Model", self.base_model),
        ]
        if self.subject_model_id:
            settings.append(("Subject model", self.subject_model_id))
            if self.lora_scale is not None:
                settings.append(("Lora scale", _number(self.lora_scale)))
        settings.extend(self.extra.items())
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        lines.append(", ".join(f"{key}: {_a1111_quote(value)}" for key, value in settings))
        return "\n".join(lines)

    def as_json(self) -> str:
        data = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "steps": self.steps,
            "sampler": self.sampler,
            "guidance_scale": self.guidance_scale,
            "seed": self.seed,
            "width": self.width,
            "height": self.height,
            "base_model": self.base_model,
            "subject_model_id": self.subject_model_id,
            "lora_scale": self.lora_scale,
            **self.extra,
        }
        return json.dumps(data, sort_keys=True, ensure_ascii=False)


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 4)


def _a1111_quote(value: Any) -> str:
    """A1111 quotes values that would break its `key: value, ...` line (commas, colons, newlines) as JSON."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def sampler_name(scheduler_class_name: str) -> str:
    """The A1111 sampler name of a diffusers scheduler class (the class name itself when A1111 has none)."""
    return A1111_SAMPLER_NAMES.get(scheduler_class_name, scheduler_class_name)


def encode_image(image: Image.Image, image_format: str, metadata: ImageMetadata | None = None) -> bytes:
    """Encode `image` as "png" (lossless, metadata in text chunks), "jpeg" or "webp" (quality 95, EXIF)."""
    if image_format not in FORMATS:
        raise InvalidArgument(f"unknown image format {image_format!r}; use one of {', '.join(FORMATS)}", field="format")
    buffer = io.BytesIO()
    rgb = image.convert("RGB")
    if image_format == "png":
        info = PngImagePlugin.PngInfo()
        if metadata is not None:
            info.add_text(PARAMETERS_KEY, metadata.a1111_text())
            info.add_itxt(LIKENESS_KEY, metadata.as_json())
        # compress_level 1: generated images barely compress better at 9 and encoding gets several times slower.
        rgb.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    else:
        exif = Image.Exif()
        if metadata is not None:
            text = metadata.a1111_text()
            exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = _EXIF_UNICODE_HEADER + text.encode("utf-16-be")
        rgb.save(buffer, format=image_format.upper(), quality=LOSSY_QUALITY, exif=exif.tobytes())
    return buffer.getvalue()


def read_parameters(data: bytes) -> str | None:
    """The A1111 `parameters` text of an encoded image (PNG text chunk or EXIF UserComment), None if absent."""
    image = Image.open(io.BytesIO(data))
    text = image.info.get(PARAMETERS_KEY)
    if isinstance(text, str):
        return text
    comment = image.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
    if isinstance(comment, bytes) and comment.startswith(_EXIF_UNICODE_HEADER):
        return comment[len(_EXIF_UNICODE_HEADER) :].decode("utf-16-be")
    return None
