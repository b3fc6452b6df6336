"""What a caller hands to dataset preparation: the photos and the knobs, validated up front."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from likeness.errors import InvalidArgument

SUBJECT_TYPES = ("auto", "face", "object")
# 32 px is the native size of the built-in toy base model; real base models use 512 or more.
MIN_RESOLUTION = 32
MAX_RESOLUTION = 2048
# Below 64 px nothing (faces, saliency, the hash) can be judged reliably.
MIN_SIDE_FLOOR = 64
# An upscale beyond 4x turns into blur the model learns as a feature, so a photo's short side must be at
# least a quarter of the output resolution whatever min_side says.
MAX_UPSCALE = 4
MAX_PHOTOS_HARD_CAP = 100
MAX_CAPTION_CHARS = 2000
# Pillow warns from this many pixels and refuses at twice as many; our own limit must stay below its warning
# so that a photo we accept never trips it.
PILLOW_PIXEL_LIMIT = int(Image.MAX_IMAGE_PIXELS or 89_478_485)


@dataclass
class PhotoInput:
    """One uploaded photo: its client-side file name (used in reports), raw bytes and an optional caption."""

    name: str
    data: bytes
    caption: str | None = None


@dataclass
class PrepareOptions:
    """How to turn raw photos into a training set. See docs/dataset.md for the reasoning behind each default.

    - resolution: side of the square output images (32..2048, multiple of 8: the VAE downsamples by 8).
    - subject_type: "face" frames the largest face; "object" frames the salient region; "auto" uses a
      face when one is found with confidence, else the object strategy.
    - face_margin: the square's side is the face box side x (1 + 2 x face_margin), i.e. a margin of
      `face_margin` face-widths on each side. 0.6 gives a head-and-shoulders framing (2.2 face widths).
    - min_side: photos whose shorter side is below max(min_side, resolution / 4) are rejected.
    - dedupe_threshold: two crops whose 64-bit perceptual hashes differ in at most this many bits are
      near-duplicates (recompressed/resized copies differ by 0-2 bits; distinct shots of one subject by 10+).
      -1 turns deduplication off.
    - min_photos / max_photos: how many usable photos a dataset needs / may take (hard cap 100).
    - max_pixels: decompression-bomb limit on width x height, checked from the header before decoding.
    - max_file_bytes: larger uploads are rejected without being parsed.
    - captions: per-photo captions keyed by PhotoInput.name (a PhotoInput.caption takes precedence).
    """

    resolution: int = 512
    subject_type: str = "auto"
    face_margin: float = 0.6
    min_side: int = 256
    dedupe_threshold: int = 6
    min_photos: int = 3
    max_photos: int = 20
    max_pixels: int = 64_000_000
    max_file_bytes: int = 50 * 1024 * 1024
    captions: dict[str, str] = field(default_factory=dict)

    @property
    def effective_min_side(self) -> int:
        """The shortest acceptable photo side: min_side, raised so that no photo is upscaled more than 4x."""
        return max(self.min_side, -(-self.resolution // MAX_UPSCALE))

    def validate(self) -> None:
        """Raise InvalidArgument naming the first option that is out of range."""
        if not isinstance(self.resolution, int) or not MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION:
            raise InvalidArgument(
                f"must be an integer between {MIN_RESOLUTION} and {MAX_RESOLUTION}, got {self.resolution!r}",
                field="resolution",
            )
        if self.resolution % 8:
            raise InvalidArgument(
                f"must be a multiple of 8 (the VAE works on 8x8 blocks), got {self.resolution}",
                field="resolution",
            )
        if self.subject_type not in SUBJECT_TYPES:
            raise InvalidArgument(
                f"must be one of {', '.join(SUBJECT_TYPES)}, got {self.subject_type!r}", field="subject_type"
            )
        if not 0.0 <= self.face_margin <= 3.0:
            raise InvalidArgument(f"must be between 0 and 3 face widths, got {self.face_margin}", field="face_margin")
        if self.min_side < MIN_SIDE_FLOOR:
            raise InvalidArgument(f"must be at least {MIN_SIDE_FLOOR} px, got {self.min_side}", field="min_side")
        if not -1 <= self.dedupe_threshold <= 32:
            raise InvalidArgument(
                f"must be between 0 and 32 bits of 64 (or -1 to disable), got {self.dedupe_threshold}",
                field="dedupe_threshold",
            )
        if not 1 <= self.max_photos <= MAX_PHOTOS_HARD_CAP:
            raise InvalidArgument(
                f"must be between 1 and {MAX_PHOTOS_HARD_CAP}, got {self.max_photos}", field="max_photos"
            )
        if not 1 <= self.min_photos <= self.max_photos:
            raise InvalidArgument(
                f"must be between 1 and max_photos ({self.max_photos}), got {self.min_photos}", field="min_photos"
            )
        if not self.effective_min_side**2 <= self.max_pixels <= PILLOW_PIXEL_LIMIT:
            raise InvalidArgument(
                f"must be between {self.effective_min_side**2} and {PILLOW_PIXEL_LIMIT} pixels, got {self.max_pixels}",
                field="max_pixels",
            )
        if self.max_file_bytes < 1024:
            raise InvalidArgument(f"must be at least 1024 bytes, got {self.max_file_bytes}", field="max_file_bytes")
        for name, caption in self.captions.items():
            if not isinstance(caption, str) or len(caption) > MAX_CAPTION_CHARS:
                raise InvalidArgument(
                    f"caption for {name!r} must be a string of at most {MAX_CAPTION_CHARS} characters",
                    field="captions",
                )


def validate_photos(photos: list[PhotoInput], options: PrepareOptions) -> None:
    """Check the request as a whole: count, unique non-empty names, captions that refer to real photos."""
    if not photos:
        raise InvalidArgument(f"no photos given; upload at least {options.min_photos}", field="photos")
    if len(photos) > options.max_photos:
        raise InvalidArgument(
            f"{len(photos)} photos given, at most {options.max_photos} allowed; pick the best "
            f"{options.max_photos} (raise max_photos up to {MAX_PHOTOS_HARD_CAP} if needed)",
            field="photos",
        )
    seen: set[str] = set()
    for index, photo in enumerate(photos):
        if not photo.name or not photo.name.strip():
            raise InvalidArgument(f"photo #{index + 1} has no name", field="photos")
        if photo.name in seen:
            raise InvalidArgument(f"photo name {photo.name!r} is used twice; names must be unique", field="photos")
        seen.add(photo.name)
        if photo.caption is not None and len(photo.caption) > MAX_CAPTION_CHARS:
            raise InvalidArgument(
                f"caption of {photo.name!r} is longer than {MAX_CAPTION_CHARS} characters", field="captions"
            )
    unknown = sorted(set(options.captions) - seen)
    if unknown:
        raise InvalidArgument(
            f"captions given for photos that were not uploaded: {', '.join(map(repr, unknown))}", field="captions"
        )
