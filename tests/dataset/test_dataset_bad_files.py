"""Each kind of broken or unusual upload gets its documented outcome (docs/dataset.md, per-photo outcomes)."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_photos import encode, png_bomb, scene
from PIL import Image

from likeness.dataset import NotEnoughPhotos, PhotoInput, PrepareOptions, prepare_photos
from likeness.dataset.decode import to_rgb
from likeness.errors import InvalidArgument

OPTIONS = PrepareOptions(resolution=256, min_photos=3)
QUADRANT_COLOURS = {
    "top_left": (220, 30, 30),
    "top_right": (30, 180, 60),
    "bottom_left": (30, 60, 200),
    "bottom_right": (240, 220, 40),
}


def quadrants(side: int = 400) -> np.ndarray:
    half = side // 2
    image = np.zeros((side, side, 3), np.uint8)
    image[:half, :half] = QUADRANT_COLOURS["top_left"]
    image[:half, half:] = QUADRANT_COLOURS["top_right"]
    image[half:, :half] = QUADRANT_COLOURS["bottom_left"]
    image[half:, half:] = QUADRANT_COLOURS["bottom_right"]
    return image


def exif_rotated_jpeg() -> bytes:
    """An upright 300x400 portrait (red top, blue bottom) stored sideways with EXIF orientation 6."""
    upright = np.zeros((400, 300, 3), np.uint8)
    upright[:200] = (200, 20, 20)
    upright[200:] = (20, 20, 200)
    stored = Image.fromarray(upright).rotate(90, expand=True)  # counter-clockwise; orientation 6 undoes it
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", exif=exif.tobytes())


def sixteen_bit_png() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 400).astype(np.uint16), (400, 1))
    image = Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    return encode(image, "PNG")


def transparent_png() -> bytes:
    rgba = np.zeros((400, 400, 4), np.uint8)
    rgba[..., :3] = (0, 0, 0)  # invisible black must not leak through
    rgba[100:300, 100:300] = (20, 40, 220, 255)
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


@pytest.fixture(scope="module")
def bad_set_result():
    good = scene(1)
    full_jpeg = encode(scene(4), quality=90)
    near_duplicate = encode(Image.fromarray(good).resize((432, 324), Image.Resampling.BICUBIC), quality=70)
    photos = [
        PhotoInput("good1.jpg", encode(good)),
        PhotoInput("good2.png", encode(scene(2), "PNG")),
        PhotoInput("good3.webp", encode(scene(3), "WEBP", quality=90)),
        PhotoInput("truncated.jpg", full_jpeg[: len(full_jpeg) * 6 // 10]),
        PhotoInput("empty.jpg", b""),
        PhotoInput("notes.jpg", b"Shopping list:\n- milk\n- eggs\n"),
        PhotoInput("heic.jpg", b"\x00\x00\x00\x18ftypheic" + bytes(64)),  # the header of a HEIC, cut short
        PhotoInput("avif.jpg", b"\x00\x00\x00\x1cftypavif" + bytes(64)),
        PhotoInput("tiny.png", encode(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG")),
        PhotoInput("bomb.png", png_bomb(100_000, 100_000)),
        PhotoInput("bomb_81mp.png", png_bomb(9_000, 9_000)),
        PhotoInput("cmyk.jpg", encode(Image.fromarray(quadrants()).convert("CMYK"), "JPEG", quality=95)),
        PhotoInput("deep.png", sixteen_bit_png()),
        PhotoInput("alpha.png", transparent_png()),
        PhotoInput("rotated.jpg", exif_rotated_jpeg()),
        PhotoInput("near_duplicate.jpg", near_duplicate),
    ]
    dataset = prepare_photos(photos, PrepareOptions(resolution=256, min_photos=3, max_photos=20))
    reports = {report.name: report for report in dataset.reports}
    images = {
        report.name: image
        for report, (_, image) in zip([r for r in dataset.reports if r.kept], dataset.images, strict=True)
    }
    return dataset, reports, images


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("truncated.jpg", "truncated"),
        ("empty.jpg", "empty_file"),
        ("notes.jpg", "not_an_image"),
        ("heic.jpg", "corrupt"),
        ("avif.jpg", "unsupported_format"),
        ("tiny.png", "too_small"),
        ("bomb.png", "decompression_bomb"),
        ("bomb_81mp.png", "decompression_bomb"),
        ("near_duplicate.jpg", "duplicate_of:good1.jpg"),
    ],
)
def test_rejected_with_documented_code(bad_set_result, name, code):
    _, reports, _ = bad_set_result
    report = reports[name]
    assert report.status == "rejected"
    assert report.code == code
    assert report.reason.startswith(f"{code}: ")
    assert report.output_name == ""


def test_rejection_texts_explain(bad_set_result):
    _, reports, _ = bad_set_result
    assert "text" in reports["notes.jpg"].reason
    assert "HEIC" in reports["heic.jpg"].reason and "damaged" in reports["heic.jpg"].reason
    assert "AVIF" in reports["avif.jpg"].reason
    assert "1x1" in reports["tiny.png"].reason
    assert "100000x100000" in reports["bomb.png"].reason or "pixels" in reports["bomb.png"].reason
    assert "81 MP" in reports["bomb_81mp.png"].reason


def test_every_kept_image_is_square_rgb_at_resolution(bad_set_result):
    dataset, reports, _ = bad_set_result
    kept = {"good1.jpg", "good2.png", "good3.webp", "cmyk.jpg", "deep.png", "alpha.png", "rotated.jpg"}
    assert {name for name, report in reports.items() if report.kept} == kept
    assert [report.name for report in dataset.reports] == list(reports)  # input order
    assert len(dataset.images) == len(kept)
    for output_name, image in dataset.images:
        assert output_name.endswith(".png")
        assert image.mode == "RGB" and image.size == (256, 256)


def test_cmyk_jpeg_keeps_its_colours(bad_set_result):
    _, reports, images = bad_set_result
    assert reports["cmyk.jpg"].original_mode == "CMYK"
    pixels = np.asarray(images["cmyk.jpg"]).astype(int)
    samples = {"top_left": (64, 64), "top_right": (64, 192), "bottom_left": (192, 64), "bottom_right": (192, 192)}
    for quadrant, (row, col) in samples.items():
        assert np.abs(pixels[row, col] - QUADRANT_COLOURS[quadrant]).max() <= 16, quadrant


def test_sixteen_bit_png_keeps_its_brightness(bad_set_result):
    _, reports, images = bad_set_result
    assert reports["deep.png"].original_mode.startswith("I;16")
    grey = np.asarray(images["deep.png"]).astype(float)
    assert abs(grey.mean() - 127.5) < 6  # clipping at 255 would give ~250
    assert grey[:, :4].mean() < 12 and grey[:, -4:].mean() > 243


def test_transparency_is_flattened_on_white(bad_set_result):
    _, reports, images = bad_set_result
    assert reports["alpha.png"].original_mode == "RGBA"
    pixels = np.asarray(images["alpha.png"]).astype(int)
    assert (pixels[:10, :10] >= 250).all()  # transparent corner -> white, not the hidden black
    assert np.abs(pixels[128, 128] - (20, 40, 220)).max() <= 6


def test_exif_orientation_is_applied(bad_set_result):
    _, reports, images = bad_set_result
    report = reports["rotated.jpg"]
    assert report.exif_rotated
    assert report.original_size == (300, 400)
    pixels = np.asarray(images["rotated.jpg"]).astype(int)
    top, bottom = pixels[:20].mean(axis=(0, 1)), pixels[-20:].mean(axis=(0, 1))
    assert top[0] > 150 and top[2] < 80  # red on top, as the camera held it
    assert bottom[2] > 150 and bottom[0] < 80


def test_too_few_usable_photos_lists_every_reason():
    photos = [
        PhotoInput("ok.jpg", encode(scene(5))),
        PhotoInput("empty.jpg", b""),
        PhotoInput("tiny.png", encode(Image.new("RGB", (8, 8)), "PNG")),
        PhotoInput("twin.jpg", encode(scene(5), quality=80)),
    ]
    with pytest.raises(InvalidArgument) as caught:
        prepare_photos(photos, OPTIONS)
    error = caught.value
    assert isinstance(error, NotEnoughPhotos) and error.field == "photos"
    assert "only 1 of 4" in error.message
    for fragment in ("empty.jpg: empty_file", "tiny.png: too_small", "twin.jpg: duplicate_of:ok.jpg"):
        assert fragment in error.message
    assert [report.status for report in error.reports] == ["kept", "rejected", "rejected", "rejected"]


@pytest.mark.parametrize(
    ("photos", "options", "field", "fragment"),
    [
        ([], OPTIONS, "photos", "no photos"),
        (
            [PhotoInput(f"{i}.jpg", b"x") for i in range(4)],
            PrepareOptions(max_photos=3, min_photos=1),
            "photos",
            "at most 3",
        ),
        ([PhotoInput("a.jpg", b"x"), PhotoInput("a.jpg", b"y")], OPTIONS, "photos", "used twice"),
        ([PhotoInput("a.jpg", b"x")], PrepareOptions(captions={"b.jpg": "x"}, min_photos=1), "captions", "b.jpg"),
        ([PhotoInput("a.jpg", b"x")], PrepareOptions(resolution=500), "resolution", "multiple of 8"),
        ([PhotoInput("a.jpg", b"x")], PrepareOptions(max_photos=101), "max_photos", "100"),
        ([PhotoInput("a.jpg", b"x")], PrepareOptions(subject_type="pet"), "subject_type", "auto"),
    ],
)
def test_invalid_requests_name_the_field(photos, options, field, fragment):
    with pytest.raises(InvalidArgument) as caught:
        prepare_photos(photos, options)
    assert caught.value.field == field
    assert fragment in caught.value.message


def test_captions_follow_kept_photos():
    photos = [
        PhotoInput("a.jpg", encode(scene(11)), caption="  a photo of sks dog on grass "),
        PhotoInput("b.jpg", encode(scene(12))),
        PhotoInput("c.jpg", encode(scene(13))),
    ]
    options = PrepareOptions(resolution=256, captions={"b.jpg": "sks dog asleep", "a.jpg": "overridden"})
    dataset = prepare_photos(photos, options)
    names = [name for name, _ in dataset.images]
    assert dataset.captions == {names[0]: "a photo of sks dog on grass", names[1]: "sks dog asleep"}
    assert names == ["00_a.png", "01_b.png", "02_c.png"]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("LA", (4, 4), (0, 0)), (255, 255, 255)),
        (Image.new("P", (4, 4), 0), (0, 0, 0)),
        (Image.fromarray(np.full((4, 4), 40000, np.int32)), (156, 156, 156)),
        (Image.fromarray(np.full((4, 4), 0.5, np.float32)), (128, 128, 128)),
        (Image.new("1", (4, 4), 1), (255, 255, 255)),
    ],
)
def test_other_modes_become_rgb(image, expected):
    converted, _ = to_rgb(image)
    assert converted.mode == "RGB"
    assert converted.getpixel((1, 1)) == expected


def test_palette_transparency_is_flattened():
    image = Image.new("P", (4, 4), 3)
    image.info["transparency"] = 3
    converted, notes = to_rgb(image)
    assert converted.getpixel((0, 0)) == (255, 255, 255)
    assert "transparency flattened onto white" in notes
