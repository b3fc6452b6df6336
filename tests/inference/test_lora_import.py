"""ImportLora through the real gRPC server with API keys: kohya and diffusers files become subject models and styles
of the caller's tenant, published in the canonical layout; bad files and headers are INVALID_ARGUMENT naming the
field; other tenants cannot see them; the subject-model quota counts them."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from inference_helpers import TINY_CATALOG
from PIL import Image
from safetensors.torch import load_file, save_file

from likeness.cli.main import main
from likeness.controlplane.database import Database
from likeness.controlplane.migrate import migrate
from likeness.errors import FailedPrecondition, InvalidArgument
from likeness.identity.keys import ApiKeys
from likeness.identity.quotas import QuotaLimits, Quotas
from likeness.inference.lora_layers import read_lora_file
from likeness.inference.testing import BackgroundInferenceServer
from likeness.models.tiny import create_tiny_pipeline
from likeness.storage.layout import model_prefix
from likeness.storage.manifest import SubjectModelManifest
from likeness.trainer.config import LoraSettings
from likeness.trainer.training.lora import LORA_WEIGHTS_NAME, add_lora, save_lora
from likeness_client import LikenessClient
from likeness_client.errors import NotFound
from likeness_client.v1 import inference_service_pb2 as pb
from likeness_client.v1 import types_pb2

TO_Q = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
CONV = "down_blocks.0.resnets.0.conv1"


@pytest.fixture(scope="module")
def keyed(catalog, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BackgroundInferenceServer, dict]]:
    """A server that tells tenants apart by API key: acme and globex, and initech with room for one model."""
    from likeness.storage.local import LocalStorage

    root = tmp_path_factory.mktemp("lora-import")
    url = f"sqlite:///{root / 'likeness.db'}"
    database = Database(url)
    migrate(database)
    keys = {tenant: ApiKeys(database).create(tenant)[1] for tenant in ("acme", "globex", "initech")}
    Quotas(database, QuotaLimits()).set_override("initech", max_subject_models=1)
    database.dispose()
    running = BackgroundInferenceServer(
        LocalStorage(root / "storage"),
        catalog,
        base_models=TINY_CATALOG,
        batch_window_ms=0,
        auth="api-key",
        auth_cache_seconds=0,
        database_url=url,
        cache_dir=str(root / "cache"),
    ).start()
    yield running, keys
    running.stop()


@pytest.fixture(scope="module")
def sd15():
    return create_tiny_pipeline("sd15")


def _kohya_file(path: Path, sd15, *, alpha: float = 6.0, rank: int = 4, in_features: int | None = None) -> Path:
    """A kohya-layout LoRA on two UNet layers and one text-encoder layer, alpha != rank."""
    modules = dict(sd15.unet.named_modules())
    generator = torch.Generator().manual_seed(1)
    state = {}
    to_q = modules[TO_Q]
    conv = modules[CONV]
    encoder = dict(sd15.text_encoder.named_modules())["encoder.layers.0.self_attn.q_proj"]
    for name, down, up in [
        (f"lora_unet_{TO_Q.replace('.', '_')}", (rank, in_features or to_q.in_features), (to_q.out_features, rank)),
        (f"lora_unet_{CONV.replace('.', '_')}", (rank, conv.in_channels, 3, 3), (conv.out_channels, rank, 1, 1)),
        (
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
            (rank, encoder.in_features),
            (encoder.out_features, rank),
        ),
    ]:
        state[f"{name}.lora_down.weight"] = torch.randn(down, generator=generator).half()
        state[f"{name}.lora_up.weight"] = torch.randn(up, generator=generator).half()
        state[f"{name}.alpha"] = torch.tensor(alpha)
    save_file(state, str(path))
    return path


def _diffusers_sdxl_file(folder: Path) -> Path:
    """A LoRA saved by the trainer for the tiny SDXL base (UNet and both text encoders, alpha 2 x rank)."""
    pipeline = copy.deepcopy(create_tiny_pipeline("sdxl"))
    settings = LoraSettings(rank=2, alpha=4.0)
    add_lora(pipeline.unet, settings)
    add_lora(pipeline.text_encoder, settings, text_encoder=True)
    add_lora(pipeline.text_encoder_2, settings, text_encoder=True)
    with torch.no_grad():
        for module in (pipeline.unet, pipeline.text_encoder, pipeline.text_encoder_2):
            for name, parameter in module.named_parameters():
                if "lora_B" in name:
                    parameter.normal_()
    folder.mkdir(parents=True, exist_ok=True)
    save_lora(pipeline, folder)
    return folder / LORA_WEIGHTS_NAME


def _client(running: BackgroundInferenceServer, key: str) -> LikenessClient:
    return LikenessClient(running.address, api_key=key)


def _published(running: BackgroundInferenceServer, tmp_path: Path, tenant: str, model_id: str) -> Path:
    """A copy of the weights file the import published."""
    prefix = model_prefix(tenant, model_id)
    manifest = SubjectModelManifest.from_json(running.storage.read_bytes(f"{prefix}/manifest.json"))
    assert manifest.weights == [LORA_WEIGHTS_NAME] and manifest.training_config["file_name"] == "civitai.safetensors"
    target = tmp_path / f"{model_id}.safetensors"
    target.write_bytes(running.storage.read_bytes(f"{prefix}/{LORA_WEIGHTS_NAME}"))
    return target


def test_kohya_and_diffusers_files_import_as_subjects_and_styles(keyed, sd15, tmp_path: Path, capsys) -> None:
    running, keys = keyed
    kohya = _kohya_file(tmp_path / "civitai.safetensors", sd15)
    with _client(running, keys["acme"]) as acme:
        imported = acme.import_lora(
            kohya, base_model="tiny-sd15", identifier="ohwx", class_noun="person", chunk_bytes=4096
        )
        model = imported.model.model
        assert imported.source_format == pb.LORA_FORMAT_KOHYA and imported.layer_count == 3
        assert (model.kind, model.origin) == (types_pb2.SUBJECT_KIND_SUBJECT, types_pb2.MODEL_ORIGIN_IMPORTED)
        assert (model.identifier, model.class_noun, model.base_model) == ("ohwx", "person", "tiny-sd15")
        assert model.method == types_pb2.TRAINING_METHOD_LORA and model.lora_rank == 4 and model.size_bytes > 0

        # Published once, canonical: the scale (alpha 6 / rank 4) is folded in and the file reads back as exactly
        # the layers published, with the original's deltas.
        copy_path = _published(running, tmp_path, "acme", model.model_id)
        published = read_lora_file(copy_path, sd15)
        original = read_lora_file(kohya, sd15)
        assert published.source_format == "diffusers" and sorted(published.layers) == sorted(original.layers)
        for key, layer in original.layers.items():
            assert layer.scale == 1.5
            again = published.layers[key]
            assert again.scale == 1.0 and torch.equal(again.down, layer.down)
            assert torch.equal(again.up, layer.up * layer.scale), key

        # A plain diffusers pipeline applies the very same deltas from the published file.
        plain = create_tiny_pipeline("sd15")
        plain.load_lora_weights(str(copy_path.parent), weight_name=copy_path.name, adapter_name="imported")
        for key, layer in published.layers.items():
            component, name = key.split(".", 1)
            peft_layer = dict(getattr(plain, component).named_modules())[name]
            down, up = peft_layer.lora_A["imported"].weight, peft_layer.lora_B["imported"].weight
            assert peft_layer.scaling["imported"] == 1.0
            assert torch.equal(down.detach(), layer.down) and torch.equal(up.detach(), layer.up), key

        # A style needs no identifier; an SDXL file from the trainer imports onto the SDXL base.
        style = acme.import_lora(_diffusers_sdxl_file(tmp_path / "sdxl"), base_model="tiny-sdxl", kind="style")
        assert style.source_format == pb.LORA_FORMAT_DIFFUSERS
        assert style.model.model.kind == types_pb2.SUBJECT_KIND_STYLE and style.model.model.identifier == ""

        ids = lambda **kind: {status.model.model_id for status in acme.list_subject_models(**kind)}  # noqa: E731
        assert ids(kind="style") == {style.model.model.model_id}
        assert ids(kind="subject") == {model.model_id}
        assert ids() == {model.model_id, style.model.model.model_id}
        assert acme.get_subject_model(model.model_id).model.origin == types_pb2.MODEL_ORIGIN_IMPORTED

    with _client(running, keys["globex"]) as globex:
        assert globex.list_subject_models() == []
        with pytest.raises(NotFound):
            globex.get_subject_model(model.model_id)

    # The CLI: `likeness subjects import FILE --base-model ... --identifier ... --class-noun ...`.
    code = main([
        "subjects", "import", str(kohya), "--base-model", "tiny-sd15", "--identifier", "zwx", "--class-noun", "dog",
        "--address", running.address, "--api-key", keys["globex"],
    ])  # fmt: skip
    assert code == 0 and "kohya layout, 3 layers" in capsys.readouterr().out


def _refused(client: LikenessClient, path: Path, field: str, match: str, **header) -> None:
    header = {"base_model": "tiny-sd15", "identifier": "ohwx", "class_noun": "person"} | header
    with pytest.raises(InvalidArgument, match=match) as error:
        client.import_lora(path, **header)
    assert error.value.field == field


def test_bad_files_and_headers_are_invalid_argument_naming_the_field(keyed, sd15, tmp_path: Path) -> None:
    running, keys = keyed
    good = _kohya_file(tmp_path / "good.safetensors", sd15)
    pickled = tmp_path / "lora.safetensors"
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(pickled))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    wrong_width = _kohya_file(tmp_path / "wrong.safetensors", sd15, in_features=48)
    sdxl = _diffusers_sdxl_file(tmp_path / "sdxl")
    with _client(running, keys["acme"]) as acme:
        _refused(acme, pickled, "file", "pickle")
        _refused(acme, truncated, "file", "truncated")
        _refused(acme, wrong_width, "file", f"unet.{TO_Q}.*\\[4, 48\\]")
        _refused(acme, sdxl, "file", "SDXL")
        ckpt = tmp_path / "lora.ckpt"
        ckpt.write_bytes(b"x")
        _refused(acme, ckpt, "header.file_name", "pickle")
        _refused(acme, good, "header.identifier", "token", identifier="")
        _refused(acme, good, "header.identifier", "one token", identifier="two words")
        _refused(acme, good, "header.class_noun", "class", class_noun="")
        _refused(acme, good, "header.base_model", "unknown base model", base_model="sd-99")
        before = {status.model.model_id for status in acme.list_subject_models()}

    stub = running.stub
    metadata = (("authorization", f"Bearer {keys['acme']}"),)
    style = types_pb2.SUBJECT_KIND_STYLE
    header = pb.ImportLoraRequest(header=pb.ImportLoraHeader(base_model="tiny-sd15", kind=style))
    chunk = pb.ImportLoraRequest(chunk=good.read_bytes())
    oversized = pb.ImportLoraHeader(base_model="tiny-sd15", kind=style, size_bytes=good.stat().st_size + 1)
    for messages, field in [
        ([chunk], "header"),  # no header first
        ([header], "file"),  # no bytes
        ([header, chunk, header], "header"),  # a second header
        ([pb.ImportLoraRequest(header=oversized), chunk], "header.size_bytes"),  # fewer bytes than announced
    ]:
        with pytest.raises(grpc.RpcError) as error:
            stub.ImportLora(iter(messages), metadata=metadata, timeout=60)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
        assert error.value.details().startswith(field + ":"), (field, error.value.details())
    # Nothing refused was published.
    with _client(running, keys["acme"]) as acme:
        assert {status.model.model_id for status in acme.list_subject_models()} == before


def test_imported_models_count_against_the_subject_model_quota(keyed, sd15, tmp_path: Path) -> None:
    running, keys = keyed
    good = _kohya_file(tmp_path / "good.safetensors", sd15)
    data = good.read_bytes()
    requests = [
        pb.ImportLoraRequest(header=pb.ImportLoraHeader(base_model="tiny-sd15", kind=types_pb2.SUBJECT_KIND_STYLE)),
        pb.ImportLoraRequest(chunk=data),
    ]
    metadata = (("authorization", f"Bearer {keys['initech']}"),)
    # A bare stub: the SDK's retry policy would wait out the quota's retry delay.
    first = running.stub.ImportLora(iter(requests), metadata=metadata, timeout=60)
    with pytest.raises(grpc.RpcError) as error:
        running.stub.ImportLora(iter(requests), metadata=metadata, timeout=60)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "quota is 1" in error.value.details()
    with _client(running, keys["initech"]) as initech:
        assert [status.model.model_id for status in initech.list_subject_models()] == [first.model.model.model_id]


def test_manifests_of_styles_and_of_older_versions() -> None:
    fields = dict(
        model_id="m1",
        tenant="acme",
        identifier="",
        class_noun="",
        base_model="tiny-sd15",
        arch="sd15",
        method="lora",
        training_config={},
        metrics={},
        created_at="2025-01-31T12:00:00Z",
        sample_images=[],
        weights=[LORA_WEIGHTS_NAME],
        lora_rank=4,
    )
    style = SubjectModelManifest(**fields, kind="style", origin="imported", source_format="kohya")
    assert SubjectModelManifest.from_json(style.to_json()) == style
    with pytest.raises(InvalidArgument) as error:
        SubjectModelManifest(**fields)  # a subject still needs its identifier
    assert error.value.field == "identifier"
    with pytest.raises(InvalidArgument) as error:
        SubjectModelManifest(**fields, kind="texture")
    assert error.value.field == "kind"
    # A manifest written before kinds and origins existed reads as a trained subject.
    old = SubjectModelManifest.from_dict(fields | {"identifier": "sks", "class_noun": "dog"})
    assert (old.kind, old.origin, old.source_format) == ("subject", "trained", "")
    with pytest.raises(FailedPrecondition, match="origin"):
        SubjectModelManifest.from_dict(fields | {"identifier": "sks", "class_noun": "dog", "origin": "stolen"})


def test_an_imported_kohya_lora_generates_what_diffusers_generates_with_it(keyed, sd15, catalog, tmp_path) -> None:
    """The hand-built kohya file (an independent route: keys written from the kohya format's documentation),
    imported and served, gives diffusers' own image for that file (`load_lora_weights`, diffusers' kohya converter)
    within 2 8-bit levels. UNet attention and conv layers and text-encoder layers are all adapted."""
    running, keys = keyed
    kohya = _kohya_file(tmp_path / "civitai.safetensors", sd15, alpha=2.0)
    # diffusers reads a kohya text encoder's q/k/v layers only beside its out_proj: give it one.
    state = load_file(str(kohya))
    width = sd15.text_encoder.config.hidden_size
    name = "lora_te_text_model_encoder_layers_0_self_attn_out_proj"
    generator = torch.Generator().manual_seed(5)
    state[f"{name}.lora_down.weight"] = torch.randn((4, width), generator=generator).half()
    state[f"{name}.lora_up.weight"] = torch.randn((width, 4), generator=generator).half()
    state[f"{name}.alpha"] = torch.tensor(2.0)
    save_file(state, str(kohya))
    with _client(running, keys["globex"]) as globex:
        model_id = globex.import_lora(kohya, base_model="tiny-sd15", identifier="ohwx", class_noun="person")
        model_id = model_id.model.model.model_id
        parameters = types_pb2.GenerationParameters(num_inference_steps=3, guidance_scale=6.0, width=64, height=64)
        parameters.seed, parameters.lora_scale = 11, 0.7
        result = globex.generate(subject_model_id=model_id, prompt="a photo of {subject}", parameters=parameters)
    pipeline = catalog.load("tiny-sd15", device="cpu", dtype=torch.float32)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.load_lora_weights(str(kohya.parent), weight_name=kohya.name, adapter_name="kohya")
    pipeline.set_adapters(["kohya"], [0.7])
    expected = pipeline(
        "a photo of ohwx person", num_inference_steps=3, guidance_scale=6.0, width=64, height=64,
        generator=torch.Generator().manual_seed(11),
    ).images[0]  # fmt: skip
    served = np.asarray(Image.open(io.BytesIO(result.images[0].data)).convert("RGB"), dtype=np.int16)
    assert np.abs(served - np.asarray(expected, dtype=np.int16)).max() <= 2
    pipeline.disable_lora()
    bare = pipeline(
        "a photo of ohwx person", num_inference_steps=3, guidance_scale=6.0, width=64, height=64,
        generator=torch.Generator().manual_seed(11),
    ).images[0]  # fmt: skip
    assert np.abs(served - np.asarray(bare, dtype=np.int16)).max() > 10  # the LoRA did change the image
