"""What happened to each photo: kept (with its crop) or rejected (with a machine code and advice)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Machine codes of rejected photos -> what a user should do about them (shown in docs and error messages).
REJECTION_ADVICE: dict[str, str] = {
    "empty_file": "the upload has no bytes; upload the photo again",
    "file_too_large": "the file exceeds the size limit; export it at a smaller size or higher compression",
    "not_an_image": "the bytes are not an image Pillow can read; upload a JPEG, PNG or WebP",
    "unsupported_format": "the format is recognised but cannot be decoded here; export it as JPEG or PNG",
    "truncated": "the file ends early (interrupted upload or copy); upload the original again",
    "corrupt": "the image data is damaged; re-export the photo from its source",
    "decompression_bomb": "the image claims more pixels than allowed; downscale it before uploading",
    "too_small": "the photo is too small to train on; use a larger original",
    "duplicate_of": "a near-identical photo is already in the set; replace it with a different shot",
}


class PhotoRejected(Exception):
    """Raised inside the per-photo pipeline; becomes a rejected PhotoReport, never reaches callers."""

    def __init__(self, code: str, detail: str) -> None:
        base_code = code.split(":", 1)[0]
        if base_code not in REJECTION_ADVICE:
            raise ValueError(f"unknown rejection code {code!r}")
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    @property
    def reason(self) -> str:
        """`<code>: <what is wrong>; <what to do>`; the code comes first so it can be parsed."""
        return f"{self.code}: {self.detail}; {REJECTION_ADVICE[self.code.split(':', 1)[0]]}"


@dataclass
class PhotoReport:
    """Outcome for one input photo.

    `reason` is empty for kept photos, else `<code>: <explanation and advice>` where `code` (also in its
    own field) is one of REJECTION_ADVICE's keys, or `duplicate_of:<name>`. `crop_box` is (left, top,
    right, bottom) in the coordinates of the original after EXIF orientation, as is `face_box` (the detected
    face a "face" crop was built around). `notes` carries non-fatal
    observations (upscaling, no face found, colour profile converted).
    """

    name: str
    status: str
    reason: str = ""
    code: str = ""
    original_size: tuple[int, int] = (0, 0)
    original_format: str = ""
    original_mode: str = ""
    exif_rotated: bool = False
    crop_box: tuple[int, int, int, int] | None = None
    crop_method: str = ""
    face_box: tuple[int, int, int, int] | None = None
    output_name: str = ""
    caption: str = ""
    phash: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def kept(self) -> bool:
        return self.status == "kept"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["original_size"] = list(self.original_size)
        data["crop_box"] = list(self.crop_box) if self.crop_box else None
        data["face_box"] = list(self.face_box) if self.face_box else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhotoReport:
        values = dict(data)
        values["original_size"] = tuple(values.get("original_size") or (0, 0))
        box = values.get("crop_box")
        values["crop_box"] = tuple(box) if box else None
        face = values.get("face_box")
        values["face_box"] = tuple(face) if face else None
        values["notes"] = list(values.get("notes") or [])
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in values.items() if key in known})


def summarize_rejections(reports: list[PhotoReport]) -> str:
    """One line per rejected photo, for error messages: `name: code: explanation`."""
    return "; ".join(f"{report.name}: {report.reason}" for report in reports if not report.kept)
