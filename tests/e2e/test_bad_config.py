"""Bad configuration fails fast with one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "likeness.cli.main", "serve", *args, "--port", "0", "--metrics-port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("likeness: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_storage_root_that_is_a_file(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert_one_line_error(serve("gallery", "--storage-url", str(not_a_dir)), "not a directory")


def test_unsupported_storage_scheme():
    assert_one_line_error(serve("gallery", "--storage-url", "ftp://host/x"), "storage_url", "s3://")


@pytest.mark.parametrize("suffix", [".ckpt", ".bin"])
def test_pickle_base_model_is_refused(tmp_path, suffix):
    checkpoint = tmp_path / f"model{suffix}"
    checkpoint.write_bytes(b"\x80\x04not really a pickle")
    result = serve(
        "inference",
        "--storage-url", str(tmp_path / "s"), "--cache-dir", str(tmp_path / "c"),
        "--base-models", f"mine={checkpoint}", "--default-base-model", "mine", "--preload-base-models", "mine",
    )  # fmt: skip
    assert_one_line_error(result, "safetensors")


def test_missing_base_model_path(tmp_path):
    result = serve(
        "inference",
        "--storage-url", str(tmp_path / "s"), "--cache-dir", str(tmp_path / "c"),
        "--base-models", f"mine={tmp_path / 'nowhere'}", "--default-base-model", "mine", "--preload-base-models", "mine",
    )  # fmt: skip
    assert_one_line_error(result, "nowhere")


def test_unreachable_database_is_one_line_naming_the_host_but_not_the_password(tmp_path):
    result = serve(
        "trainer",
        "--storage-url", str(tmp_path / "storage"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
        "--database-url", "postgresql://likeness:hunter2-secret@127.0.0.1:1/likeness",
    )  # fmt: skip
    assert_one_line_error(result, "127.0.0.1:1", "unreachable")
    assert "hunter2-secret" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--role", "leader", "role"),
        ("--database-url", "mysql://x@y/z", "database_url"),
        ("--lease-seconds", "1", "lease"),
    ],
)
def test_bad_control_plane_settings(flag, value, fragment):
    assert_one_line_error(serve("trainer", flag, value), fragment)
