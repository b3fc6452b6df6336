"""Decode and validate one uploaded photo: format, truncation, decompression bombs, size, EXIF, colour.

A photo is opened once to read its header (cheap checks first), then fully decoded. JPEGs are decoded at a
reduced DCT scale (`Image.draft`): libjpeg then decodes every block at 1/2, 1/4 or 1/8 size, so the whole file
is still read (truncation is still detected) for a fraction of the cost. The small decode feeds face detection
and saliency; the crop itself is decoded again at the smallest scale that still has enough pixels for the
output resolution.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pillow_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from likeness.dataset.options import PrepareOptions
from likeness.dataset.report import PhotoRejected

# Long side of the copy used for face detection and saliency: faces down to 4% of the frame are found, and
# MTCNN takes ~30 ms at this size on two CPU cores (dataset/faces.py).
ANALYSIS_SIDE = 512
ORIENTATION_TAG = 0x0112
# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
SWAPPING_ORIENTATIONS = {5, 6, 7, 8}

# Magic bytes of formats people upload that this Pillow build cannot read: a precise "export as JPEG" beats
# a vague "not an image".
_KNOWN_UNSUPPORTED = (
    (4, b"ftypavif", "AVIF"),
    (0, b"%PDF", "PDF"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "SVG/XML"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"\xff\x0a", "JPEG XL"),
)
# Signatures of formats Pillow reads: data that starts with one but cannot be identified is a damaged file,
# not a wrong kind of file.
_KNOWN_SUPPORTED = (
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"GIF8", "GIF"),
    (8, b"WEBP", "WebP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"BM", "BMP"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftyphevc", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
)
_SRGB = ImageCms.createProfile("sRGB")

# HEIC/HEIF, what phones shoot by default, through pillow-heif (libheif in its wheels): Pillow then opens them
# like any other format, with their EXIF orientation and ICC profile.
pillow_heif.register_heif_opener()


@dataclass
class DecodedPhoto:
    """A validated photo, oriented upright, with a small RGB copy for analysis.

    `size` is the original's size after EXIF orientation: every crop box is expressed in it.
    """

    data: bytes
    format: str
    mode: str
    size: tuple[int, int]
    exif_rotated: bool
    analysis: Image.Image
    notes: list[str] = field(default_factory=list)
    # The upright RGB decode the analysis copy was made from: full resolution for most formats, a reduced DCT
    # scale for JPEG.
    decoded: Image.Image | None = None

    def region_source(self, crop_side: float, resolution: int) -> tuple[Image.Image, float, float]:
        """An upright RGB image holding the photo with at least `resolution` px across a `crop_side` crop,
        and its x/y scale relative to `size`. A JPEG decoded too small is decoded again at the smallest
        sufficient DCT scale."""
        needed = min(1.0, resolution / crop_side)
        for candidate in (self.analysis, self.decoded):
            if candidate is None:
                continue
            scale_x, scale_y = candidate.width / self.size[0], candidate.height / self.size[1]
            if min(scale_x, scale_y) >= needed or candidate.size == self.size:
                return candidate, scale_x, scale_y
        image, _ = open_checked(self.data, max_pixels=None)
        stored_w, stored_h = image.size
        image.draft("RGB", (math.ceil(stored_w * needed), math.ceil(stored_h * needed)))
        upright, _ = load_upright_rgb(image)
        return upright, upright.width / self.size[0], upright.height / self.size[1]


def decode_photo(data: bytes, options: PrepareOptions) -> DecodedPhoto:
    """Validate and decode `data`; PhotoRejected with a precise code when it cannot be used."""
    if not data:
        raise PhotoRejected("empty_file", "the file has 0 bytes")
    if len(data) > options.max_file_bytes:
        raise PhotoRejected(
            "file_too_large", f"{len(data) / 1e6:.1f} MB exceeds the {options.max_file_bytes / 1e6:.1f} MB limit"
        )
    image, orientation = open_checked(data, max_pixels=options.max_pixels)
    stored_w, stored_h = image.size
    size = (stored_h, stored_w) if orientation in SWAPPING_ORIENTATIONS else (stored_w, stored_h)
    min_side = options.effective_min_side
    if min(size) < min_side:
        raise PhotoRejected("too_small", f"{size[0]}x{size[1]} px; the shorter side must be at least {min_side} px")
    image_format = image.format or "unknown"
    mode = image.mode
    if image_format == "JPEG":
        # Ask for the smallest DCT scale that still leaves ANALYSIS_SIDE px on the long side.
        factor = min(1.0, ANALYSIS_SIDE / max(stored_w, stored_h))
        image.draft("RGB", (math.ceil(stored_w * factor), math.ceil(stored_h * factor)))
    decoded, notes = load_upright_rgb(image)
    analysis = _downscale(decoded, ANALYSIS_SIDE) if max(decoded.size) > ANALYSIS_SIDE else decoded
    return DecodedPhoto(
        data=data,
        format=image_format,
        mode=mode,
        size=size,
        exif_rotated=orientation not in (1, None),
        analysis=analysis,
        notes=notes,
        decoded=decoded,
    )


def open_checked(data: bytes, *, max_pixels: int | None) -> tuple[Image.Image, int]:
    """Open the header only; reject unreadable data and images that claim too many pixels."""
    try:
        with warnings.catch_warnings():
            # Our own max_pixels (below Pillow's warning threshold) decides; Pillow's warning becomes an error
            # as a second line of defence for formats whose size is only known while decoding.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoRejected("decompression_bomb", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise _unidentified(data) from exc
    except Exception as exc:  # Pillow plugins raise OSError, SyntaxError, ValueError, struct.error, ...
        raise _decode_failure(exc) from exc
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise PhotoRejected(
            "decompression_bomb",
            f"the header claims {width}x{height} = {width * height / 1e6:.0f} MP, above the "
            f"{max_pixels / 1e6:.0f} MP limit",
        )
    if width < 1 or height < 1:
        raise PhotoRejected("corrupt", f"the header claims an empty {width}x{height} image")
    try:
        orientation = int(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block must not cost the photo; it is then taken as upright
        orientation = 1
    return image, orientation if 1 <= orientation <= 8 else 1


def load_upright_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Force the full decode (truncated files raise), apply EXIF orientation, normalise to RGB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoRejected("decompression_bomb", str(exc)) from exc
    except Exception as exc:
        raise _decode_failure(exc) from exc
    try:
        upright = ImageOps.exif_transpose(image) or image
    except Exception:  # unreadable EXIF: keep the stored orientation rather than losing the photo
        upright = image
    # exif_transpose returns a copy without the ICC profile in some Pillow versions; carry it over.
    if "icc_profile" in image.info and "icc_profile" not in upright.info:
        upright.info["icc_profile"] = image.info["icc_profile"]
    return to_rgb(upright)


def to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Convert any Pillow mode to 8-bit sRGB: ICC profiles applied, high bit depths scaled (not clipped),
    transparency flattened onto white. Returns the image and notes about non-trivial conversions."""
    notes: list[str] = []
    image = _apply_icc_profile(image, notes)
    mode = image.mode
    if mode == "RGB":
        return image, notes
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(image, notes), notes
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    elif mode in ("LA", "La", "PA", "RGBa") or (mode == "L" and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        alpha_low = image.getextrema()[3][0]  # type: ignore[misc]  # RGBA: one (low, high) pair per band
        if alpha_low < 255:
            notes.append("transparency flattened onto white")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image).convert("RGB"), notes
    if image.mode == "RGB":
        return image, notes
    try:
        return image.convert("RGB"), notes
    except ValueError as exc:
        raise PhotoRejected("unsupported_format", f"colour mode {mode} cannot be converted to RGB") from exc


def _apply_icc_profile(image: Image.Image, notes: list[str]) -> Image.Image:
    """Convert from an embedded ICC profile (Display P3, Adobe RGB, press CMYK) to sRGB, the space the model
    was trained on. A profile that is already sRGB, or that LittleCMS cannot use, leaves the pixels as they are."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(profile).strip()
        if "srgb" in description.lower() and image.mode != "CMYK":
            return image
        output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(image, profile, _SRGB, outputMode=output_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        notes.append("embedded colour profile unreadable; colours taken as sRGB")
        return image
    if converted is None:
        return image
    notes.append(f"colour profile {description!r} converted to sRGB")
    return converted


def _high_depth_to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float images to 0..255 by their nominal range, not by clipping."""
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = values.astype(np.float32) / 257.0
        notes.append("16-bit image scaled to 8 bits")
    elif image.mode == "I":
        # Pillow opens 16-bit greyscale PNG/TIFF as mode I; values above 255 mean a 16-bit range.
        if values.max(initial=0) > 255:
            scaled = np.clip(values, 0, 65535).astype(np.float32) / 257.0
            notes.append("16-bit image scaled to 8 bits")
        else:
            scaled = values.astype(np.float32)
    else:
        finite = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        # Float images are either normalised to 0..1 or already in 0..255.
        scaled = finite * 255.0 if finite.max(initial=0.0) <= 1.0 else finite
        notes.append("floating-point image scaled to 8 bits")
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _downscale(image: Image.Image, long_side: int) -> Image.Image:
    factor = long_side / max(image.size)
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _unidentified(data: bytes) -> PhotoRejected:
    head = data[:64]
    for offset, magic, name in _KNOWN_SUPPORTED:
        if head[offset : offset + len(magic)] == magic:
            return PhotoRejected("corrupt", f"starts like a {name} file but its header is damaged or cut short")
    for offset, magic, name in _KNOWN_UNSUPPORTED:
        if head[offset : offset + len(magic)] == magic:
            return PhotoRejected("unsupported_format", f"{name} files cannot be decoded here")
    if _looks_like_text(head):
        return PhotoRejected("not_an_image", "the file contains text, not image data")
    return PhotoRejected("not_an_image", "the bytes match no image format Pillow can read")


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(char.isprintable() or char in "\r\n\t" for char in text)


def _decode_failure(exc: Exception) -> PhotoRejected:
    message = str(exc) or type(exc).__name__
    lowered = message.lower()
    if "truncated" in lowered or "premature end" in lowered or isinstance(exc, EOFError):
        return PhotoRejected("truncated", f"decoding stopped early ({message})")
    if "decoder" in lowered and "not available" in lowered:
        return PhotoRejected("unsupported_format", f"no decoder for this file ({message})")
    return PhotoRejected("corrupt", f"the image data could not be decoded ({message})")
