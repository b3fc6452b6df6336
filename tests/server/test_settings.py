"""Settings from flags and environment: precedence, validation, and one-line errors from the CLI."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from likeness.errors import InvalidArgument
from likeness.server.settings import Settings, add_arguments, load_settings


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_flag_beats_environment_beats_default():
    env = {"LIKENESS_PORT": "6000", "LIKENESS_SUBJECT_CACHE_MB": "512"}
    settings = load_settings(parse(["--port", "7000"]), environ=env)
    assert settings.port == 7000
    assert settings.subject_cache_mb == 512
    assert settings.grace_seconds == Settings().grace_seconds


def test_booleans_parse_from_env_and_flags():
    assert load_settings(parse([]), environ={"LIKENESS_GALLERY_SEMANTIC": "yes"}).gallery_semantic is True
    assert (
        load_settings(parse(["--no-gallery-semantic"]), environ={"LIKENESS_GALLERY_SEMANTIC": "1"}).gallery_semantic
        is False
    )


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"LIKENESS_PORT": "http"}, "LIKENESS_PORT"),
        ({"LIKENESS_PORT": "70000"}, "port"),
        ({"LIKENESS_DEVICE": "tpu"}, "device"),
        ({"LIKENESS_LOG_LEVEL": "LOUD"}, "log_level"),
        ({"LIKENESS_SUBJECT_CACHE_MB": "0"}, "subject_cache_mb"),
        ({"LIKENESS_TORCH_THREADS": "-1"}, "torch_threads"),
        ({"LIKENESS_STORAGE_ULR": "/tmp/x"}, "LIKENESS_STORAGE_ULR"),
        ({"LIKENESS_GALLERY_SEMANTIC": "maybe"}, "LIKENESS_GALLERY_SEMANTIC"),
        ({"LIKENESS_WEBHOOK_ALLOW_CIDRS": "10.0.0.0/8,intranet"}, "webhook_allow_cidrs"),
        ({"LIKENESS_FETCH_ALLOW_CIDRS": "300.1.1.1/32"}, "fetch_allow_cidrs"),
        ({"LIKENESS_EGRESS_DENY_CIDRS": "10.0.0.0/33"}, "egress_deny_cidrs"),
        ({"LIKENESS_WEBHOOK_MAX_ATTEMPTS": "0"}, "webhook_max_attempts"),
        ({"LIKENESS_FETCH_MAX_MB": "0"}, "fetch_max_mb"),
    ],
)
def test_bad_values_name_the_setting(env, field):
    with pytest.raises(InvalidArgument) as info:
        load_settings(parse([]), environ=env)
    assert info.value.field == field


def test_cli_reports_bad_settings_in_one_line_and_fails():
    result = subprocess.run(
        [sys.executable, "-m", "likeness.cli.main", "serve", "gallery", "--port", "not-a-port"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["likeness: error: --port: expected an integer, got 'not-a-port'"]


def test_cli_rejects_unknown_flags():
    result = subprocess.run(
        [sys.executable, "-m", "likeness.cli.main", "serve", "gallery", "--prot", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --prot" in result.stderr


def test_kubernetes_service_links_are_not_mistaken_for_settings():
    links = {
        "LIKENESS_INFERENCE_SERVICE_HOST": "10.0.0.12",
        "LIKENESS_INFERENCE_SERVICE_PORT": "50051",
        "LIKENESS_INFERENCE_SERVICE_PORT_GRPC": "50051",
        "LIKENESS_INFERENCE_PORT": "tcp://10.0.0.12:50051",
        "LIKENESS_INFERENCE_PORT_50051_TCP": "tcp://10.0.0.12:50051",
        "LIKENESS_INFERENCE_PORT_50051_TCP_PROTO": "tcp",
        "LIKENESS_INFERENCE_PORT_50051_TCP_ADDR": "10.0.0.12",
    }
    assert load_settings(parse([]), environ=links).port == 50051
    with pytest.raises(InvalidArgument):
        load_settings(parse([]), environ={"LIKENESS_GRPC_PORT": "oops"})
    # A link whose name is a setting's (the Services `likeness` and `likeness-studio`) is not that setting's value.
    same_names = {"LIKENESS_STUDIO_PORT": "tcp://10.0.0.7:8080", "LIKENESS_PORT": "tcp://10.0.0.5:50051"}
    settings = load_settings(parse([]), environ=same_names)
    assert settings.studio_port == Settings().studio_port and settings.port == 50051
    assert load_settings(parse([]), environ={"LIKENESS_STUDIO_PORT": "9090"}).studio_port == 9090


def test_variables_of_the_sdk_and_the_load_test_are_not_settings():
    environ = {
        "LIKENESS_ADDRESS": "127.0.0.1:50051",
        "LIKENESS_API_KEY": "lk_0123456789ab_x",
        "LIKENESS_TLS_CA_FILE": "/etc/ca.pem",
        "LIKENESS_LOAD_SUBJECTS": "sm-1,sm-2",
        "LIKENESS_LOAD_STEPS": "4",
        "LIKENESS_WEBHOOK_SECRET": "whsec-0123456789abcdef",  # `likeness train --webhook-secret`
    }
    assert load_settings(parse([]), environ=environ) == Settings()
