"""PrepareDataset's upload handling: chunks joined per file name, limits enforced while the stream arrives, photos
referenced by storage key only inside the caller's tenant."""

from __future__ import annotations

import pytest
from trainer_helpers import photo_bytes

from likeness import errors
from likeness.errors import InvalidArgument, ResourceExhausted
from likeness.storage.local import LocalStorage
from likeness.trainer.datasets import UploadCollector, photos_from_storage
from likeness_client.v1 import trainer_service_pb2 as pb


def test_chunks_are_joined_per_file_name_with_the_first_caption():
    collector = UploadCollector()
    collector.add("a.png", b"12", "first")
    collector.add("b.png", b"x")
    collector.add("a.png", b"34", "ignored")
    photos = {photo.name: photo for photo in collector.photos()}
    assert photos["a.png"].data == b"1234" and photos["a.png"].caption == "first"
    assert photos["b.png"].data == b"x" and photos["b.png"].caption is None


def test_upload_limits():
    with pytest.raises(ResourceExhausted):
        collector = UploadCollector(max_total_bytes=10)
        collector.add("a.png", b"123456")
        collector.add("b.png", b"123456")
    with pytest.raises(InvalidArgument, match="exceeds") as caught:
        UploadCollector(max_photo_bytes=4).add("a.png", b"12345")
    assert caught.value.field == "photos"
    with pytest.raises(InvalidArgument) as caught:
        collector = UploadCollector(max_photos=1)
        collector.add("a.png", b"1")
        collector.add("b.png", b"1")
    assert caught.value.field == "photos"
    with pytest.raises(InvalidArgument) as caught:
        UploadCollector().add("", b"1")
    assert caught.value.field == "photo_chunk.file_name"


def test_photos_by_storage_key_stay_inside_the_tenant(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.write_bytes("tenants/default/uploads/a.png", b"abc")
    storage.write_bytes("tenants/other/uploads/b.png", b"abc")
    collector = UploadCollector()
    photos_from_storage(storage, "default", ["tenants/default/uploads/a.png"], collector)
    assert [p.name for p in collector.photos()] == ["a.png"]
    with pytest.raises(InvalidArgument) as caught:
        photos_from_storage(storage, "default", ["tenants/other/uploads/b.png"], collector)
    assert caught.value.field == "options.photo_uris"


def test_prepare_dataset_from_storage_keys_and_chunked_upload(client, trainer):
    storage_root = trainer[1]
    storage = LocalStorage(storage_root)
    for index in range(2):
        storage.write_bytes(f"tenants/default/uploads/{index}.png", photo_bytes(index))
    options = pb.DatasetOptions(
        base_model="tiny-sd15",
        photo_uris=["tenants/default/uploads/0.png", "tenants/default/uploads/1.png"],
        display_name="from storage",
    )
    response = client.prepare_dataset([("2.png", photo_bytes(2))], options, chunk_bytes=1000)
    dataset = response.dataset
    assert dataset.image_count == 3 and dataset.display_name == "from storage"
    assert sorted(r.file_name for r in dataset.reports) == ["0.png", "1.png", "2.png"]
    assert response.contact_sheet.data.startswith(b"\xff\xd8")  # JPEG
    with pytest.raises(errors.InvalidArgument):
        client.prepare_dataset([], pb.DatasetOptions(photo_uris=["tenants/other/x.png"]))


def test_s3_uris_name_only_the_deployments_bucket_and_the_callers_folder():
    import fsspec

    from likeness.storage.objectstore import FsspecStorage
    from likeness.trainer.datasets import PhotoSources

    # The storage interface over an in-memory filesystem standing in for s3://likeness-test/deploy.
    storage = FsspecStorage(fsspec.filesystem("memory"), "likeness-test/deploy", protocol="s3")
    storage.write_bytes("tenants/acme/uploads/rex.png", b"png bytes")
    storage.write_bytes("tenants/beta/uploads/rex.png", b"theirs")
    sources = PhotoSources(storage)
    collector = UploadCollector()
    sources.collect("acme", ["s3://likeness-test/deploy/tenants/acme/uploads/rex.png"], collector)
    assert [(p.name, p.data) for p in collector.photos()] == [("rex.png", b"png bytes")]
    refused = {
        "s3://other-bucket/deploy/tenants/acme/uploads/rex.png": "not in this deployment's bucket",
        "s3://likeness-test/deployed/tenants/acme/uploads/rex.png": "not in this deployment's bucket",
        "s3://likeness-test/deploy/tenants/beta/uploads/rex.png": "not under your storage folder",
    }
    for uri, why in refused.items():
        with pytest.raises(InvalidArgument, match=why) as caught:
            sources.collect("acme", [uri], UploadCollector())
        assert caught.value.field == "options.photo_uris" and uri in caught.value.message
    with pytest.raises(errors.NotFound) as missing:
        sources.collect("acme", ["s3://likeness-test/deploy/tenants/acme/uploads/gone.png"], UploadCollector())
    assert missing.value.field == "options.photo_uris"
