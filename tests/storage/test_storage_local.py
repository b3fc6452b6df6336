"""LocalStorage specifics: opening, unwritable roots, crash leftovers, rename-based publishing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import likeness.storage.local as local_module
from likeness.errors import AlreadyExists, InvalidArgument, Unavailable
from likeness.storage import LocalStorage, open_storage, open_storage_from_env
from likeness.storage.base import INTERNAL_NAME_PREFIX


def hidden_entries(root: Path) -> list[str]:
    return [
        os.path.join(dirpath, name)
        for dirpath, dirnames, filenames in os.walk(root)
        for name in dirnames + filenames
        if name.startswith(INTERNAL_NAME_PREFIX)
    ]


def test_open_storage_accepts_paths_and_file_urls(tmp_path: Path) -> None:
    by_path = open_storage(str(tmp_path / "a" / "b"))
    assert isinstance(by_path, LocalStorage)
    assert by_path.root == tmp_path / "a" / "b" and by_path.root.is_dir(), "a missing root is created"
    by_url = open_storage((tmp_path / "with space").as_uri())
    assert isinstance(by_url, LocalStorage) and by_url.root == tmp_path / "with space"
    assert by_url.root_url == (tmp_path / "with space").as_uri()


@pytest.mark.parametrize("url", ["gs://bucket/x", "http://example.com/x", "", "   ", "file://otherhost/x"])
def test_open_storage_rejects_unknown_urls(url: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        open_storage(url)
    assert caught.value.field == "storage_url"


def test_open_storage_from_env_prefers_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIKENESS_STORAGE_URL", str(tmp_path / "from-env"))
    assert open_storage_from_env(str(tmp_path / "default")).root_url.endswith("/from-env")
    monkeypatch.delenv("LIKENESS_STORAGE_URL")
    assert open_storage_from_env(str(tmp_path / "default")).root_url.endswith("/default")


def test_root_that_is_a_file_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    with pytest.raises(Unavailable, match="not a directory"):
        open_storage(str(blocker))
    with pytest.raises(Unavailable, match="cannot create storage root"):
        open_storage(str(blocker / "below"))


_OPEN_AS_UNPRIVILEGED = """
import sys
from likeness.errors import Unavailable
from likeness.storage import open_storage
try:
    open_storage(sys.argv[1])
except Unavailable as error:
    print(error)
else:
    print("opened")
"""


def test_read_only_root_is_unavailable(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        root = tmp_path / "ro"
        root.mkdir()
        root.chmod(0o500)
        try:
            with pytest.raises(Unavailable, match="permission denied"):
                open_storage(str(root))
        finally:
            root.chmod(0o700)
        return
    # Root bypasses file permissions, so the check runs as `nobody` on a root-owned folder it may only read.
    setpriv = shutil.which("setpriv")
    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable] if setpriv else []
    if not as_nobody or subprocess.run([*as_nobody, "-c", "import likeness"], capture_output=True).returncode:
        pytest.skip("running as root, and `nobody` cannot run this checkout's Python (setpriv or permissions)")
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="likeness-ro-"))  # not under tmp_path, whose parents are root-only
    try:
        shared.chmod(0o755)
        root = shared / "ro"
        root.mkdir(mode=0o755)
        result = subprocess.run(
            [*as_nobody, "-c", _OPEN_AS_UNPRIVILEGED, str(root)], capture_output=True, text=True, timeout=60
        )
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert "permission denied" in result.stdout, result.stdout + result.stderr


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    for i in range(5):
        storage.write_bytes("a/b.json", str(i).encode())
        storage.create_bytes(f"a/events/{i:012d}.json", b"{}")
    with pytest.raises(AlreadyExists):
        storage.create_bytes("a/events/000000000000.json", b"{}")
    assert hidden_entries(storage.root) == []
    assert storage.read_bytes("a/b.json") == b"4"


def test_materialize_returns_the_real_folder_without_copying(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    source = tmp_path / "m"
    source.mkdir()
    (source / "manifest.json").write_bytes(b"{}")
    storage.publish_dir(source, "tenants/default/models/m")
    assert storage.materialize("tenants/default/models/m") == storage.root / "tenants/default/models/m"


def test_failed_publish_leaves_nothing_and_can_be_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path / "root")
    source = tmp_path / "m"
    (source / "samples").mkdir(parents=True)
    for name in ["manifest.json", "a.bin", "samples/0.png"]:
        (source / name).write_bytes(name.encode())
    real_copyfile = shutil.copyfile
    copies = []

    def copy_then_crash(src: str, dst: str) -> str:
        copies.append(src)
        if len(copies) == 2:
            raise OSError(5, "simulated I/O error")
        return real_copyfile(src, dst)

    monkeypatch.setattr(local_module.shutil, "copyfile", copy_then_crash)
    with pytest.raises(Unavailable, match="simulated"):
        storage.publish_dir(source, "models/m")
    monkeypatch.setattr(local_module.shutil, "copyfile", real_copyfile)
    assert not storage.is_published("models/m") and storage.list() == []
    assert hidden_entries(storage.root) == [], "the staging folder is removed after a failure"
    storage.publish_dir(source, "models/m")
    assert storage.list("models/m") == ["models/m/a.bin", "models/m/manifest.json", "models/m/samples/0.png"]


def test_stale_temporaries_from_crashes_are_swept(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    storage.write_bytes("jobs/j/job.json", b"{}")
    folder = storage.root / "jobs" / "j"
    (folder / ".likeness-tmp-abc").write_bytes(b"partial")
    (folder / ".likeness-staging-ckpt-1").mkdir()
    (folder / ".likeness-staging-ckpt-1" / "w.bin").write_bytes(b"w")
    fresh = folder / ".likeness-tmp-fresh"
    fresh.write_bytes(b"being written")
    old = time.time() - 7200
    for path in [folder / ".likeness-tmp-abc", folder / ".likeness-staging-ckpt-1"]:
        os.utime(path, (old, old))
    assert storage.list() == ["jobs/j/job.json"], "leftovers are invisible before the sweep"
    assert storage.remove_stale_temporaries(older_than_s=3600) == 2
    assert hidden_entries(storage.root) == [str(fresh)], "entries younger than the cutoff are kept"


def test_local_storage_does_not_import_s3fs(tmp_path: Path) -> None:
    code = (
        "import sys; from likeness.storage import open_storage; "
        f"s = open_storage({str(tmp_path)!r}); s.write_json('k.json', {{}}); "
        "assert 's3fs' not in sys.modules and 'botocore' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
