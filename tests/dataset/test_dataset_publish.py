"""Publishing a prepared dataset is all-or-nothing, and the trainer can load it back."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from dataset_photos import encode, scene
from PIL import Image

from likeness.dataset import PhotoInput, PhotoReport, PrepareOptions, contact_sheet, contact_sheet_jpeg, prepare_photos
from likeness.dataset.publish import load_dataset_images, publish_dataset
from likeness.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from likeness.storage.layout import datasets_prefix
from likeness.storage.local import LocalStorage

OPTIONS = PrepareOptions(resolution=128, min_side=64)


@pytest.fixture(scope="module")
def prepared():
    photos = [
        PhotoInput("IMG_0001.JPG", encode(scene(21)), caption="sks mug on a desk"),
        PhotoInput("IMG_0002.png", encode(scene(22), "PNG")),
        PhotoInput("IMG_0003.jpg", encode(scene(23))),
        PhotoInput("broken.jpg", b"\xff\xd8\xff"),
    ]
    return prepare_photos(photos, OPTIONS)


def test_publish_then_load_round_trip(tmp_path, prepared):
    storage = LocalStorage(tmp_path / "store")
    manifest = publish_dataset(storage, "acme", prepared, OPTIONS, source="test upload")
    assert manifest.dataset_id.startswith("ds-")
    assert manifest.image_count == 3 and manifest.resolution == 128
    assert manifest.images == ["images/00_img-0001.png", "images/01_img-0002.png", "images/02_img-0003.png"]
    assert manifest.captions == {"images/00_img-0001.png": "sks mug on a desk"}

    prefix = f"tenants/acme/datasets/{manifest.dataset_id}"
    keys = set(storage.list(prefix))
    expected = {f"{prefix}/{name}" for name in ("manifest.json", "report.json", "contact_sheet.jpg", *manifest.images)}
    assert keys == expected

    report = storage.read_json(f"{prefix}/report.json")
    assert report["dataset_id"] == manifest.dataset_id and report["kept"] == 3 and report["rejected"] == 1
    assert [photo["status"] for photo in report["photos"]] == ["kept", "kept", "kept", "rejected"]
    assert report["photos"][3]["code"] == "corrupt"
    json.dumps(report)  # plain JSON, nothing Python-specific
    assert [PhotoReport.from_dict(photo) for photo in report["photos"]] == prepared.reports

    sheet = Image.open(io.BytesIO(storage.read_bytes(f"{prefix}/contact_sheet.jpg")))
    assert sheet.format == "JPEG" and sheet.width > 128

    loaded_manifest, images = load_dataset_images(storage, "acme", manifest.dataset_id)
    assert loaded_manifest == manifest
    assert len(images) == 3
    for image, (_, original) in zip(images, prepared.images, strict=True):
        assert image.mode == "RGB" and image.size == (128, 128)
        assert np.array_equal(np.asarray(image), np.asarray(original))  # PNG is lossless


def test_unknown_dataset_is_not_found(tmp_path):
    with pytest.raises(NotFound):
        load_dataset_images(LocalStorage(tmp_path), "acme", "ds-missing")


def test_existing_id_is_refused_and_left_intact(tmp_path, prepared):
    storage = LocalStorage(tmp_path / "store")
    first = publish_dataset(storage, "acme", prepared, OPTIONS, dataset_id="ds-fixed")
    before = {key: storage.read_bytes(key) for key in storage.list(datasets_prefix("acme"))}
    with pytest.raises(AlreadyExists):
        publish_dataset(storage, "acme", prepared, OPTIONS, dataset_id="ds-fixed")
    after = {key: storage.read_bytes(key) for key in storage.list(datasets_prefix("acme"))}
    assert after == before
    assert load_dataset_images(storage, "acme", "ds-fixed")[0] == first


class FailingStorage(LocalStorage):
    """A storage whose upload breaks (network, quota), to check that nothing partial stays behind."""

    def publish_dir(self, local_dir: Path, prefix: str, *, marker: str = "manifest.json") -> None:
        assert (local_dir / marker).exists() and (local_dir / "images").is_dir()
        raise Unavailable("object store is down")


def test_failed_publish_leaves_nothing(tmp_path, prepared):
    storage = FailingStorage(tmp_path / "store")
    staging_before = set(Path(tempfile.gettempdir()).glob("likeness-dataset-*"))
    with pytest.raises(Unavailable):
        publish_dataset(storage, "acme", prepared, OPTIONS)
    assert storage.list("") == []
    assert set(Path(tempfile.gettempdir()).glob("likeness-dataset-*")) == staging_before


def test_images_at_the_wrong_resolution_are_refused_before_writing(tmp_path, prepared):
    storage = LocalStorage(tmp_path / "store")
    with pytest.raises(InvalidArgument) as caught:
        publish_dataset(storage, "acme", prepared, PrepareOptions(resolution=256))
    assert "expected RGB 256x256" in caught.value.message
    assert storage.list("") == []


def test_too_few_photos_publish_nothing(tmp_path):
    storage = LocalStorage(tmp_path / "store")
    photos = [PhotoInput("a.jpg", encode(scene(31))), PhotoInput("b.jpg", b"")]
    with pytest.raises(InvalidArgument):
        publish_dataset(storage, "acme", prepare_photos(photos, OPTIONS), OPTIONS)
    assert storage.list("") == []


def test_contact_sheet_layout():
    tiles = [(f"{index}.png", Image.new("RGB", (64, 64), (index * 40, 0, 0))) for index in range(5)]
    sheet = contact_sheet(tiles, columns=3, thumb=32)
    assert sheet.size == (8 + 3 * 40, 8 + 2 * (32 + 14 + 8))
    assert sheet.getpixel((8 + 40 + 16, 8 + 16)) == (40, 0, 0)  # second tile, centre
    unlabelled = contact_sheet([image for _, image in tiles], thumb=32)
    assert unlabelled.size == (8 + 3 * 40, 8 + 2 * 40)  # 5 images -> 3 columns, no label row
    assert Image.open(io.BytesIO(contact_sheet_jpeg(tiles))).format == "JPEG"
