"""`likeness generate` against a real server, and RESOURCE_EXHAUSTED from a full queue."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import grpc
import pytest
from inference_helpers import TINY_CATALOG, request
from PIL import Image

from likeness.cli.main import main
from likeness.inference.encoding import read_parameters
from likeness.inference.testing import BackgroundInferenceServer, publish_lora_subject


def test_generate_cli_writes_images_and_prints_their_paths(server, tmp_path: Path, capsys) -> None:
    model_id = publish_lora_subject(server.storage).model_id
    out = tmp_path / "out"
    code = main(
        [
            "generate",
            "a photo of {subject} in a garden",
            "--subject", model_id,
            "-n", "2",
            "--steps", "3",
            "--seed", "21",
            "--scheduler", "euler",
            "--out", str(out),
            "--address", server.address,
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    paths = [Path(line) for line in captured.out.splitlines()]
    assert sorted(p.name.split("-", 1)[1] for p in paths) == ["0-seed21.png", "1-seed22.png"]
    for path in paths:
        assert path.parent == out and Image.open(io.BytesIO(path.read_bytes())).size == (64, 64)
    assert "Seed: 21," in read_parameters(paths[0].read_bytes())
    assert "accepted: 'a photo of sks dog in a garden'" in captured.err
    assert "step 3/3" in captured.err and "done in" in captured.err


def test_generate_cli_with_a_style_and_an_init_image(server, tmp_path: Path, capsys) -> None:
    subject = publish_lora_subject(server.storage, seed=3).model_id
    style = publish_lora_subject(server.storage, seed=4).model_id
    init = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(init)
    common = ["--subject", subject, "--steps", "4", "--seed", "5", "--address", server.address]
    code = main(["generate", "{subject}", *common, "--lora", f"{style}:0.5", "--init-image", str(init),
                 "--strength", "0.5", "--out", str(tmp_path / "a")])  # fmt: skip
    assert code == 0 and "step 2/2" in capsys.readouterr().err  # strength 0.5 of 4 steps
    code = main(["generate", "{subject}", *common, "--lora", f"{style}:9", "--out", str(tmp_path / "b")])
    assert code != 0 and "loras[0].weight" in capsys.readouterr().err


def test_generate_cli_reports_bad_input(server, tmp_path: Path, capsys) -> None:
    code = main(["generate", "a dog", "--steps", "500", "--out", str(tmp_path), "--address", server.address])
    assert code != 0
    assert "parameters.num_inference_steps" in capsys.readouterr().err


def test_subjects_cli_lists_loads_unloads_and_shows_memory(server, capsys) -> None:
    model_id = publish_lora_subject(server.storage, seed=5, identifier="zwx", class_noun="cat").model_id

    def run(*args: str) -> tuple[int, str]:
        code = main(["subjects", *args, "--address", server.address])
        return code, capsys.readouterr().out

    code, out = run("load", model_id)
    assert code == 0 and "zwx cat" in out and " loaded " in out
    code, out = run("list", "--loaded")
    assert code == 0 and model_id in out
    code, out = run("status")
    assert code == 0 and "tiny-sd15" in out and model_id in out and "subject cache:" in out
    code, out = run("unload", model_id)
    assert code == 0 and "not loaded" in out
    _, out = run("list", "--loaded")
    assert model_id not in out
    assert main(["subjects", "show", "sm-does-not-exist", "--address", server.address]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_full_queue_refuses_with_resource_exhausted(catalog, storage) -> None:
    running = BackgroundInferenceServer(
        storage, catalog, base_models=TINY_CATALOG, inference_queue_capacity=1, batch_window_ms=0
    ).start()
    try:
        stub = running.stub
        blocker = stub.GenerateImages(request(prompt="a dog", steps=150), timeout=120)
        assert next(blocker).WhichOneof("event") == "accepted"
        next(blocker)  # its first progress: it is running, the queue is empty
        waiting = stub.GenerateImages(request(prompt="a cat", steps=2), timeout=120)
        accepted = next(waiting).accepted
        assert accepted.queue_position == 0  # nothing waits ahead of it; it runs next
        with pytest.raises(grpc.RpcError) as caught:
            next(stub.GenerateImages(request(prompt="a bird"), timeout=120))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full" in caught.value.details()
        blocker.cancel()
        # The waiting request then runs to the end.
        kinds = [response.WhichOneof("event") for response in waiting]
        assert kinds[-1] == "summary" and "image_chunk" in kinds
    finally:
        running.stop()


def test_stopping_the_server_drains_running_requests(catalog, storage) -> None:
    # A drain period well above the generation's duration on a loaded 2-core machine (the default 2 s is not).
    running = BackgroundInferenceServer(storage, catalog, base_models=TINY_CATALOG, grace_seconds=60).start()
    stream = running.stub.GenerateImages(request(prompt="a dog", steps=20), timeout=120)
    events: list[str] = []
    first = threading.Event()

    def read() -> None:
        for response in stream:
            events.append(response.WhichOneof("event"))
            first.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert first.wait(60)
    running.stop()
    reader.join(60)
    assert events[-1] == "summary"
