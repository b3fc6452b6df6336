"""The storage contract, run against LocalStorage and a real S3 API (moto_server) alike."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from likeness.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from likeness.storage import Storage
from likeness.storage.base import INTERNAL_NAME_PREFIX

BAD_KEYS = [
    "",
    "/abs/key",
    "a//b",
    "a/b/",
    "../escape",
    "a/../b",
    "./a",
    "a/./b",
    "a\\b",
    "a\x00b",
    ".likeness-x",
]


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


# ---- objects -----------------------------------------------------------------------------------------------


def test_write_read_roundtrip_and_overwrite(storage: Storage) -> None:
    storage.write_bytes("a/b/c.bin", b"first")
    assert storage.read_bytes("a/b/c.bin") == b"first"
    storage.write_bytes("a/b/c.bin", b"second")
    assert storage.read_bytes("a/b/c.bin") == b"second"
    assert storage.exists("a/b/c.bin")
    assert not storage.exists("a/b/missing.bin")
    assert not storage.exists("a/b"), "exists() is about objects, not folders"


def test_missing_key_is_not_found_naming_the_key(storage: Storage) -> None:
    with pytest.raises(NotFound, match=re.escape("nothing/here.json")):
        storage.read_bytes("nothing/here.json")
    with pytest.raises(NotFound, match=re.escape("nothing/here.json")):
        storage.read_json("nothing/here.json")
    with pytest.raises(NotFound, match=re.escape("gone.bin")):
        storage.delete("gone.bin")
    storage.delete("gone.bin", missing_ok=True)


@pytest.mark.parametrize("bad_key", BAD_KEYS)
def test_invalid_keys_are_rejected(storage: Storage, bad_key: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        storage.write_bytes(bad_key, b"x")
    assert caught.value.field == "key"
    with pytest.raises(InvalidArgument):
        storage.read_bytes(bad_key)
    with pytest.raises(InvalidArgument):
        storage.exists(bad_key)
    assert storage.list() == [], "nothing may be written for an invalid key"


def test_list_is_recursive_sorted_and_relative_to_root(storage: Storage) -> None:
    for key in ["t/b/2.json", "t/a/1.json", "t/a/deep/3.json", "t/top.json", "tx/other.json", "u.json"]:
        storage.write_bytes(key, b"{}")
    assert storage.list("t") == ["t/a/1.json", "t/a/deep/3.json", "t/b/2.json", "t/top.json"]
    assert storage.list("t/") == storage.list("t"), "a trailing slash names the same folder"
    assert storage.list() == sorted(storage.list())
    assert len(storage.list()) == 6
    assert storage.list("t/a/1.json") == [], "a key is not a folder"
    assert storage.list("absent") == []
    assert storage.list_dirs("t") == ["a", "b"]
    assert storage.list_dirs() == ["t", "tx"]
    assert storage.list_dirs("absent") == []


def test_delete_and_delete_prefix(storage: Storage) -> None:
    for key in ["m/x/manifest.json", "m/x/w.bin", "m/x/samples/0.png", "m/y/manifest.json"]:
        storage.write_bytes(key, b"1")
    storage.delete("m/y/manifest.json")
    assert not storage.exists("m/y/manifest.json")
    assert storage.list_dirs("m") == ["x"], "a folder emptied by delete disappears, as on object storage"
    assert storage.delete_prefix("m/x") == 3
    assert storage.list("m") == []
    assert storage.delete_prefix("m/x") == 0
    with pytest.raises(InvalidArgument):
        storage.delete_prefix("")


def test_json_roundtrip_and_corrupt_json(storage: Storage) -> None:
    record = {"state": "RUNNING", "step": 3, "loss": 0.25, "name": "chien ü"}
    storage.write_json("jobs/j/job.json", record)
    assert storage.read_json("jobs/j/job.json") == record
    storage.write_bytes("jobs/j/broken.json", b'{"state": ')
    with pytest.raises(FailedPrecondition, match=re.escape("jobs/j/broken.json")):
        storage.read_json("jobs/j/broken.json")
    with pytest.raises(InvalidArgument):
        storage.write_json("jobs/j/bad.json", {"not": object()})


def test_create_bytes_writes_once(storage: Storage) -> None:
    storage.create_bytes("once/key.json", b"1")
    with pytest.raises(AlreadyExists, match=re.escape("once/key.json")):
        storage.create_bytes("once/key.json", b"2")
    assert storage.read_bytes("once/key.json") == b"1"


def test_url_names_the_object(storage: Storage) -> None:
    url = storage.url("tenants/default/jobs/j/job.json")
    assert url.startswith(storage.root_url + "/")
    assert url.endswith("/tenants/default/jobs/j/job.json")


def test_concurrent_reader_sees_old_or_new_never_partial(storage: Storage) -> None:
    size = 256 * 1024 if "file://" in storage.root_url else 64 * 1024
    rounds = 60 if "file://" in storage.root_url else 15
    versions = [bytes([65 + i % 2]) * size for i in range(2)]
    storage.write_bytes("hot/file.bin", versions[0])
    done = threading.Event()
    seen: list[bytes] = []

    def read_until_done() -> None:
        while not done.is_set():
            seen.append(storage.read_bytes("hot/file.bin"))

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for i in range(rounds):
            storage.write_bytes("hot/file.bin", versions[i % 2])
    finally:
        done.set()
        reader.join()
    assert seen, "the reader never ran"
    for content in seen:
        assert content in versions, f"reader saw a partial or mixed file ({len(content)} bytes)"
    assert storage.list("hot") == ["hot/file.bin"], "no temporary object may remain visible"


# ---- publishing folders ------------------------------------------------------------------------------------


def test_publish_dir_makes_the_whole_folder_visible(storage: Storage, tmp_path: Path) -> None:
    files = {"manifest.json": b'{"v": 1}', "weights.safetensors": b"w" * 1000, "samples/0.png": b"png"}
    folder = make_folder(tmp_path / "model", files)
    assert not storage.is_published("tenants/default/models/m1")
    storage.publish_dir(folder, "tenants/default/models/m1")
    assert storage.is_published("tenants/default/models/m1")
    assert storage.list("tenants/default/models/m1") == sorted(f"tenants/default/models/m1/{k}" for k in files)
    assert storage.read_bytes("tenants/default/models/m1/samples/0.png") == b"png"
    with pytest.raises(AlreadyExists, match="m1"):
        storage.publish_dir(folder, "tenants/default/models/m1")


def test_publish_dir_requires_the_marker(storage: Storage, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "model", {"weights.bin": b"w"})
    with pytest.raises(InvalidArgument, match=re.escape("manifest.json")):
        storage.publish_dir(folder, "models/m")
    with pytest.raises(InvalidArgument):
        storage.publish_dir(tmp_path / "absent", "models/m")
    storage.publish_dir(folder, "models/m", marker="weights.bin")
    assert storage.is_published("models/m", marker="weights.bin")
    assert storage.list("models") == ["models/m/weights.bin"]


def test_reader_never_sees_a_published_but_incomplete_folder(storage: Storage, tmp_path: Path) -> None:
    files = {f"images/{i:03d}.png": bytes([i]) * 2048 for i in range(24)}
    files["manifest.json"] = b"{}"
    folder = make_folder(tmp_path / "dataset", files)
    expected = sorted(f"ds/d1/{key}" for key in files)
    local = "file://" in storage.root_url
    observations: list[list[str]] = []
    publisher = threading.Thread(target=storage.publish_dir, args=(folder, "ds/d1"))
    publisher.start()
    while publisher.is_alive():
        published = storage.is_published("ds/d1")
        listed = storage.list("ds/d1")
        observations.append(listed)
        if published:
            assert listed == expected, "the marker appeared before the rest of the folder"
        if local:
            assert listed in ([], expected), "a local folder must appear in one rename"
    publisher.join()
    assert storage.is_published("ds/d1") and storage.list("ds/d1") == expected
    assert observations, "the poller never ran"


def test_download_dir_and_materialize(storage: Storage, tmp_path: Path) -> None:
    files = {"manifest.json": b'{"id": "m"}', "unet/lora.safetensors": b"weights"}
    storage.publish_dir(make_folder(tmp_path / "src", files), "tenants/default/models/m")
    copy = storage.download_dir("tenants/default/models/m", tmp_path / "copy")
    assert (copy / "unet" / "lora.safetensors").read_bytes() == b"weights"
    materialized = storage.materialize("tenants/default/models/m")
    assert (materialized / "manifest.json").read_bytes() == b'{"id": "m"}'
    assert (materialized / "unet" / "lora.safetensors").read_bytes() == b"weights"
    with pytest.raises(NotFound, match="not published"):
        storage.materialize("tenants/default/models/absent")
    with pytest.raises(NotFound):
        storage.download_dir("tenants/default/models/absent", tmp_path / "none")


def test_unpublished_leftovers_are_not_materialized(storage: Storage) -> None:
    storage.write_bytes("models/half/weights.bin", b"w")
    assert not storage.is_published("models/half")
    with pytest.raises(NotFound, match=r"no 'manifest.json'"):
        storage.materialize("models/half")


# ---- event logs --------------------------------------------------------------------------------------------


def test_event_log_orders_by_seq_and_replays_after_seq(storage: Storage) -> None:
    log = "tenants/default/jobs/j1/events"
    assert storage.read_events(log) == []
    assert storage.next_event_seq(log) == 0
    # Written out of order, and past 10 so that a non-padded name would sort "10" before "2".
    for seq in [3, 0, 11, 2, 1, 10, 4]:
        storage.append_event(log, seq, {"type": "progress", "seq": seq})
    events = storage.read_events(log)
    assert [seq for seq, _ in events] == [0, 1, 2, 3, 4, 10, 11]
    assert all(event == {"type": "progress", "seq": seq} for seq, event in events)
    assert [seq for seq, _ in storage.read_events(log, after_seq=3)] == [4, 10, 11]
    assert storage.read_events(log, after_seq=11) == []
    assert storage.next_event_seq(log) == 12
    assert storage.list(log)[0] == f"{log}/000000000000.json"


def test_duplicate_seq_is_already_exists(storage: Storage) -> None:
    log = "jobs/j/events"
    storage.append_event(log, 7, {"type": "first"})
    with pytest.raises(AlreadyExists):
        storage.append_event(log, 7, {"type": "second"})
    assert storage.read_events(log) == [(7, {"type": "first"})]


def test_concurrent_writers_of_one_seq_exactly_one_wins(storage: Storage) -> None:
    log = "jobs/race/events"
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def write(writer: int) -> None:
        barrier.wait()
        try:
            storage.append_event(log, 0, {"writer": writer})
            outcomes.append("won")
        except AlreadyExists:
            outcomes.append("lost")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]
    assert len(storage.read_events(log)) == 1


def test_event_log_validation_and_foreign_objects(storage: Storage) -> None:
    log = "jobs/j/events"
    storage.write_bytes(f"{log}/README.txt", b"not an event")
    storage.write_bytes(f"{log}/nested/000000000005.json", b"{}")
    storage.append_event(log, 1, {"ok": True})
    assert storage.read_events(log) == [(1, {"ok": True})], "objects that are not events are ignored"
    for bad_seq in (-1, 10**12, 1.5, True):
        with pytest.raises(InvalidArgument):
            storage.append_event(log, bad_seq, {})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        storage.append_event(log, 2, ["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        storage.append_event("", 2, {})
    storage.write_bytes(f"{log}/000000000002.json", b"[1, 2]")
    with pytest.raises(FailedPrecondition, match=re.escape("000000000002.json")):
        storage.read_events(log)


def test_internal_names_never_listed(storage: Storage, tmp_path: Path) -> None:
    storage.write_bytes("x/a.json", b"1")
    storage.publish_dir(make_folder(tmp_path / "f", {"manifest.json": b"{}"}), "x/f")
    assert not any(INTERNAL_NAME_PREFIX in key for key in storage.list())
    assert not any(name.startswith(INTERNAL_NAME_PREFIX) for name in storage.list_dirs("x"))
