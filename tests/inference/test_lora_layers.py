"""`read_lora_file`: diffusers/PEFT and kohya LoRA files become per-layer factors whose `up @ down * scale` is the
delta a plain diffusers pipeline applies after `load_lora_weights`, and bad files are refused by name."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from likeness.errors import InvalidArgument
from likeness.inference.lora_layers import LoraLayers, read_lora_file
from likeness.models.tiny import create_tiny_pipeline
from likeness.trainer.config import LoraSettings
from likeness.trainer.training.export import export_kohya
from likeness.trainer.training.lora import LORA_WEIGHTS_NAME, add_lora, save_lora

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def bases() -> dict:
    return {arch: create_tiny_pipeline(arch) for arch in ("sd15", "sdxl")}


def _randomize_up(module: torch.nn.Module, seed: int) -> None:
    """PEFT starts lora_B at zero (no delta); random up-projections make every layer's delta visible."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def _trainer_file(base, directory: Path, *, rank: int = 4, alpha: float = 12.0) -> Path:
    """A LoRA written by the trainer's own `save_lora` (UNet and text encoders, alpha != rank, with metadata)."""
    pipeline = copy.deepcopy(base)
    settings = LoraSettings(rank=rank, alpha=alpha)
    add_lora(pipeline.unet, settings)
    encoders = [pipeline.text_encoder] + ([pipeline.text_encoder_2] if hasattr(pipeline, "text_encoder_2") else [])
    for seed, encoder in enumerate(encoders, start=1):
        add_lora(encoder, settings, text_encoder=True)
        _randomize_up(encoder, seed)
    _randomize_up(pipeline.unet, 0)
    directory.mkdir(parents=True, exist_ok=True)
    save_lora(pipeline, directory)
    return directory / LORA_WEIGHTS_NAME


def _diffusers_deltas(arch: str, file: Path) -> dict[str, torch.Tensor]:
    """The weight delta of every adapted layer after a plain `load_lora_weights` on a fresh base pipeline."""
    pipeline = create_tiny_pipeline(arch)
    pipeline.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name="imported")
    deltas = {}
    for component in COMPONENTS:
        module = getattr(pipeline, component, None)
        if module is None:
            continue
        for name, layer in module.named_modules():
            if isinstance(layer, BaseTunerLayer) and "imported" in layer.lora_A:
                down = layer.lora_A["imported"].weight.detach()
                up = layer.lora_B["imported"].weight.detach()
                delta = up.flatten(1) @ down.flatten(1) * layer.scaling["imported"]
                deltas[f"{component}.{name}"] = delta.reshape(up.shape[0], *down.shape[1:])
    return deltas


def _deltas(layers: LoraLayers) -> dict[str, torch.Tensor]:
    return {
        key: (layer.up.flatten(1) @ layer.down.flatten(1) * layer.scale).reshape(
            layer.up.shape[0], *layer.down.shape[1:]
        )
        for key, layer in layers.layers.items()
    }


def _assert_same_deltas(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert sorted(ours) == sorted(theirs)
    for key, delta in theirs.items():
        torch.testing.assert_close(ours[key], delta, rtol=1e-5, atol=1e-6, msg=key)
        assert delta.abs().max() > 0, key


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_trainer_file_matches_diffusers_load_and_its_kohya_export(arch: str, bases, tmp_path: Path) -> None:
    file = _trainer_file(bases[arch], tmp_path / "diffusers", rank=4, alpha=12.0)
    layers = read_lora_file(file, bases[arch])
    assert layers.source_format == "diffusers" and layers.rank == 4
    assert {layer.scale for layer in layers.layers.values()} == {3.0}
    assert {key.split(".")[0] for key in layers.layers} == (
        {"unet", "text_encoder", "text_encoder_2"} if arch == "sdxl" else {"unet", "text_encoder"}
    )
    assert layers.nbytes == sum(x.down.nbytes + x.up.nbytes for x in layers.layers.values())
    _assert_same_deltas(_deltas(layers), _diffusers_deltas(arch, file))

    # The trainer's own kohya export (SGM names on SDXL) reads back as the very same layers.
    unet_config = bases[arch].unet.config
    kohya = tmp_path / "lora_kohya.safetensors"
    export_kohya(file, kohya, alpha=12.0, sdxl=arch == "sdxl", layers_per_block=unet_config.layers_per_block)
    from_kohya = read_lora_file(kohya, bases[arch])
    assert from_kohya.source_format == "kohya"
    assert sorted(from_kohya.layers) == sorted(layers.layers)
    for key, layer in layers.layers.items():
        other = from_kohya.layers[key]
        assert torch.equal(other.down, layer.down) and torch.equal(other.up, layer.up), key
        assert other.scale == pytest.approx(layer.scale), key


def test_rank_and_alpha_patterns_match_diffusers(bases, tmp_path: Path) -> None:
    base = bases["sd15"]
    unet = copy.deepcopy(base.unet)
    config = LoraConfig(
        r=4,
        lora_alpha=4,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        rank_pattern={"^down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": 2},
        alpha_pattern={"attn2.to_k": 10},
        init_lora_weights="gaussian",
    )
    unet.add_adapter(config)
    _randomize_up(unet, 3)
    type(base).save_lora_weights(
        str(tmp_path),
        unet_lora_layers=get_peft_model_state_dict(unet),
        unet_lora_adapter_metadata=config.to_dict(),
        safe_serialization=True,
    )
    file = tmp_path / LORA_WEIGHTS_NAME
    layers = read_lora_file(file, base)
    q = layers.layers["unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"]
    assert q.rank == 2 and q.scale == 2.0
    assert layers.layers["unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k"].scale == 2.5
    assert layers.layers["unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_k"].scale == 1.0
    assert layers.rank == 4
    _assert_same_deltas(_deltas(layers), _diffusers_deltas("sd15", file))


def _kohya_pair(state: dict, name: str, shape_down: tuple, shape_up: tuple, alpha: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    state[f"{name}.lora_down.weight"] = torch.randn(shape_down, generator=generator).to(torch.float16)
    state[f"{name}.lora_up.weight"] = torch.randn(shape_up, generator=generator).to(torch.float16)
    state[f"{name}.alpha"] = torch.tensor(alpha, dtype=torch.float16)


def _hand_built_kohya(modules: dict[str, tuple[str, torch.nn.Module]], rank: int, alphas: dict[str, float]) -> dict:
    """Kohya keys written from the format's documentation: `<kohya name>.lora_down.weight` [rank, in(, kh, kw)],
    `.lora_up.weight` [out, rank(, 1, 1)], `.alpha` a scalar; the delta is up @ down * alpha / rank."""
    state: dict[str, torch.Tensor] = {}
    for seed, (kohya_name, (_, layer)) in enumerate(sorted(modules.items())):
        if isinstance(layer, torch.nn.Conv2d):
            down, up = (rank, layer.in_channels, *layer.kernel_size), (layer.out_channels, rank, 1, 1)
        else:
            down, up = (rank, layer.in_features), (layer.out_features, rank)
        _kohya_pair(state, kohya_name, down, up, alphas.get(kohya_name, 2.0), seed)
    return state


def _expected_from_kohya(state: dict, modules: dict[str, tuple[str, torch.nn.Module]], rank: int) -> dict:
    expected = {}
    for kohya_name, (key, _) in modules.items():
        down = state[f"{kohya_name}.lora_down.weight"].float()
        up = state[f"{kohya_name}.lora_up.weight"].float()
        alpha = float(state[f"{kohya_name}.alpha"])
        expected[key] = (up.flatten(1) @ down.flatten(1) * alpha / rank).reshape(up.shape[0], *down.shape[1:])
    return expected


def test_hand_built_kohya_sd15_matches_its_definition_and_diffusers(bases, tmp_path: Path) -> None:
    base = bases["sd15"]
    unet, encoder = dict(base.unet.named_modules()), dict(base.text_encoder.named_modules())
    unet_paths = [
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
        "mid_block.attentions.0.transformer_blocks.0.ff.net.2",
        "up_blocks.0.attentions.1.proj_in",
        "down_blocks.0.resnets.0.conv1",  # a 3x3 convolution (LoCon-style kohya layer)
    ]
    encoder_paths = [
        "encoder.layers.0.self_attn.q_proj",
        "encoder.layers.0.self_attn.out_proj",
        "encoder.layers.1.mlp.fc1",
    ]
    # Kohya names: the diffusers module path with "_" for "."; text-encoder paths under `text_model`.
    modules = {"lora_unet_" + p.replace(".", "_"): (f"unet.{p}", unet[p]) for p in unet_paths}
    modules |= {"lora_te_text_model_" + p.replace(".", "_"): (f"text_encoder.{p}", encoder[p]) for p in encoder_paths}
    # Per-layer alphas on the UNet (diffusers turns them into an alpha pattern); one alpha on the text encoder.
    alphas = {"lora_unet_" + unet_paths[0].replace(".", "_"): 8.0, "lora_unet_" + unet_paths[4].replace(".", "_"): 1.0}
    state = _hand_built_kohya(modules, 4, alphas)
    file = tmp_path / "civitai_style.safetensors"
    save_file(state, str(file), metadata={"ss_network_module": "networks.lora"})

    layers = read_lora_file(file, base)
    assert layers.source_format == "kohya" and layers.rank == 4
    ours = _deltas(layers)
    expected = _expected_from_kohya(state, modules, 4)
    assert sorted(ours) == sorted(expected)
    for key, delta in expected.items():
        torch.testing.assert_close(ours[key], delta, rtol=1e-5, atol=1e-5, msg=key)
    # diffusers applies per-layer kohya alphas wrongly (see `_kohya_alphas`): compare with it at one alpha.
    uniform = {key: torch.tensor(3.0) if key.endswith(".alpha") else value for key, value in state.items()}
    save_file(uniform, str(tmp_path / "uniform.safetensors"))
    same_alpha = read_lora_file(tmp_path / "uniform.safetensors", base)
    assert {layer.scale for layer in same_alpha.layers.values()} == {0.75}
    _assert_same_deltas(_deltas(same_alpha), _diffusers_deltas("sd15", tmp_path / "uniform.safetensors"))

    # Without an out_proj layer diffusers' own loader drops kohya's q_proj layer; it is read all the same.
    q_proj = "lora_te_text_model_" + encoder_paths[0].replace(".", "_")
    partial = {key: value for key, value in state.items() if key.startswith(q_proj)}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    alone = _deltas(read_lora_file(tmp_path / "partial.safetensors", base))
    assert list(alone) == [f"text_encoder.{encoder_paths[0]}"]
    torch.testing.assert_close(alone[f"text_encoder.{encoder_paths[0]}"], expected[f"text_encoder.{encoder_paths[0]}"])


def test_hand_built_kohya_sdxl_with_sgm_names(bases, tmp_path: Path) -> None:
    base = bases["sdxl"]
    unet = dict(base.unet.named_modules())
    # The tiny SDXL UNet has one layer per block and blocks (Down, CrossAttnDown) / (CrossAttnUp, Up), so in the
    # original SGM layout input_blocks.3.1 is down_blocks.1's attention, middle_block.1 the mid attention and
    # output_blocks.1.1 up_blocks.0's second attention (each up block has layers_per_block + 1 layers).
    sgm = {
        "input_blocks_3_1_transformer_blocks_0_attn1_to_q": "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        "middle_block_1_transformer_blocks_0_attn2_to_v": "mid_block.attentions.0.transformer_blocks.0.attn2.to_v",
        "output_blocks_1_1_proj_out": "up_blocks.0.attentions.1.proj_out",
    }
    modules = {f"lora_unet_{k}": (f"unet.{path}", unet[path]) for k, path in sgm.items()}
    first = dict(base.text_encoder.named_modules())
    second = dict(base.text_encoder_2.named_modules())["text_model.encoder.layers.1.self_attn.out_proj"]
    for name in ("k_proj", "out_proj"):
        path = f"encoder.layers.0.self_attn.{name}"
        modules[f"lora_te1_text_model_{path.replace('.', '_')}"] = (f"text_encoder.{path}", first[path])
    modules["lora_te2_text_model_encoder_layers_1_self_attn_out_proj"] = (
        "text_encoder_2.text_model.encoder.layers.1.self_attn.out_proj",
        second,
    )
    state = _hand_built_kohya(modules, 2, {})
    file = tmp_path / "sdxl_kohya.safetensors"
    save_file(state, str(file))

    layers = read_lora_file(file, base)
    ours = _deltas(layers)
    expected = _expected_from_kohya(state, modules, 2)
    assert sorted(ours) == sorted(expected)
    for key, delta in expected.items():
        torch.testing.assert_close(ours[key], delta, rtol=1e-5, atol=1e-5, msg=key)
    _assert_same_deltas(ours, _diffusers_deltas("sdxl", file))

    # The same file on an SD 1.x base: refused as an SDXL LoRA.
    with pytest.raises(InvalidArgument, match="SDXL") as error:
        read_lora_file(file, bases["sd15"], field="header.file")
    assert error.value.field == "header.file"


def test_bad_files_are_refused_with_the_reason(bases, tmp_path: Path) -> None:
    base = bases["sd15"]
    good = _trainer_file(bases["sdxl"], tmp_path / "sdxl", rank=2, alpha=2.0)

    def refused(path: Path, match: str, pipeline=base) -> InvalidArgument:
        with pytest.raises(InvalidArgument, match=match) as error:
            read_lora_file(path, pipeline)
        assert error.value.field == "file"
        return error.value

    pickled = tmp_path / "lora.ckpt"
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(pickled))
    refused(pickled, "pickle.*safetensors")
    raw_pickle = tmp_path / "lora.pt"
    torch.save({"x": torch.zeros(1)}, str(raw_pickle), _use_new_zipfile_serialization=False)
    refused(raw_pickle, "pickle")

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    refused(truncated, "truncated")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 definitely not a LoRA")
    refused(garbage, "not a safetensors")
    empty = tmp_path / "empty.safetensors"
    save_file({}, str(empty))
    refused(empty, "no tensors")

    # A diffusers-format SDXL LoRA on the SD 1.x base.
    refused(good, "SDXL")

    # One layer of the wrong width: named, with both shapes.
    to_k = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    state = {
        f"lora_unet_{to_k.replace('.', '_')}.lora_down.weight": torch.zeros(4, 77),
        f"lora_unet_{to_k.replace('.', '_')}.lora_up.weight": torch.zeros(64, 4),
    }
    mismatch = tmp_path / "mismatch.safetensors"
    save_file(state, str(mismatch))
    message = str(refused(mismatch, f"unet.{to_k}"))
    assert "[4, 77]" in message and "[4, 32]" in message

    loha = tmp_path / "loha.safetensors"
    save_file({"lora_unet_a.hada_w1_a": torch.zeros(2, 2), "lora_unet_a.hada_w1_b": torch.zeros(2, 2)}, str(loha))
    refused(loha, "LoHa")
    dora = tmp_path / "dora.safetensors"
    save_file({**state, f"lora_unet_{to_k.replace('.', '_')}.dora_scale": torch.zeros(1, 32)}, str(dora))
    refused(dora, "DoRA")
    missing = tmp_path / "missing.safetensors"
    save_file(
        {
            "lora_unet_no_such_block.lora_down.weight": torch.zeros(2, 4),
            "lora_unet_no_such_block.lora_up.weight": torch.zeros(4, 2),
        },
        str(missing),
    )
    refused(missing, "does not exist")
