"""The toy base model: Stable Diffusion 1.x's architecture in a 32 px configuration, and where its weights live.

Same components and data flow as SD 1.x (CLIP text encoder with OpenAI's 49,408-token vocabulary, a
cross-attention UNet predicting noise, a KL autoencoder, DDPM schedule), only narrower and shallower: a 2-level
convolutional VAE (32 px images <-> 16 x 16 x 4 latents) and a 3-level UNet (16, 8, 4) with cross-attention at the two lower
levels and in the middle. `likeness.world.pretrain` trains it on the synthetic world; the result is committed in
`weights/` next to this file and offered by the model catalog as `TOY_MODEL_ID`.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from likeness.errors import FailedPrecondition
from likeness.models.catalog import BuiltinModel, register_builtin
from likeness.world.scenes import IMAGE_SIZE

# mypy resolves diffusers' top-level exports to dummy placeholder classes: see the type: ignore comments.
if TYPE_CHECKING:
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

TOY_MODEL_ID = "toy-sd15"
# The catalog's `builtin:toy` source.
TOY_BUILTIN_NAME = "toy"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TRAINING_RECORD = "training.json"

TEXT_HIDDEN_SIZE = 32
UNET_CHANNELS = (32, 64, 64)
VAE_CHANNELS = (32, 32)
LATENT_SIZE = IMAGE_SIZE // 2
# Tokenizer files the pipeline folder keeps: CLIP's vocabulary and merges are enough to rebuild it offline;
# the 3.5 MB tokenizer.json transformers also writes is redundant.
TOKENIZER_KEEP = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def build_text_encoder() -> CLIPTextModel:
    from transformers import CLIPTextConfig, CLIPTextModel

    from likeness.models.tokenizer import CLIP_VOCAB_SIZE

    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=4 * TEXT_HIDDEN_SIZE,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=TEXT_HIDDEN_SIZE,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
    )
    return CLIPTextModel(config)


def build_unet() -> UNet2DConditionModel:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=UNET_CHANNELS,
        layers_per_block=1,
        norm_num_groups=16,
        cross_attention_dim=TEXT_HIDDEN_SIZE,
        # diffusers' legacy name for the number of heads: 16 channels per head at every level.
        attention_head_dim=tuple(channels // 16 for channels in UNET_CHANNELS),
    )


def build_vae() -> AutoencoderKL:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS),
        block_out_channels=VAE_CHANNELS,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
        # World pictures are simple: convolutions alone reconstruct them, and attention would double the cost.
        mid_block_add_attention=False,
    )


def assemble_pipeline(
    unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: CLIPTextModel
) -> StableDiffusionPipeline:
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from likeness.models.tiny import SCHEDULER_CONFIG
    from likeness.models.tokenizer import clip_tokenizer

    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=DDPMScheduler.from_config(SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]
    return pipeline


def save_pipeline_folder(pipeline: StableDiffusionPipeline, directory: str | Path) -> Path:
    """Writes a diffusers folder (safetensors only) that loads offline with any transformers version."""
    from likeness.models.loading import disable_progress_bars
    from likeness.models.tokenizer import TOKENIZER_FILES, clip_tokenizer_dir

    directory = Path(directory)
    disable_progress_bars()
    pipeline.save_pretrained(directory, safe_serialization=True)  # type: ignore[attr-defined]
    tokenizer_dir = directory / "tokenizer"
    for name in TOKENIZER_FILES:
        shutil.copyfile(clip_tokenizer_dir() / name, tokenizer_dir / name)
    for item in tokenizer_dir.iterdir():
        if item.name not in TOKENIZER_KEEP:
            item.unlink()
    return directory


def committed_weights_dir() -> Path:
    """The committed toy base model folder; FailedPrecondition with the command that makes it when missing."""
    if not (WEIGHTS_DIR / "model_index.json").is_file():
        raise FailedPrecondition(
            f"the toy base model is missing from {WEIGHTS_DIR}; create it with `make base-model` "
            "(python -m likeness.world.pretrain --out services/likeness/world/weights)"
        )
    return WEIGHTS_DIR


def toy_weights_version() -> int:
    """A number that changes whenever the committed weights do (from their training record), so catalog caches
    of an older copy are never reused; 0 when the weights are missing."""
    record = WEIGHTS_DIR / TRAINING_RECORD
    if not record.is_file():
        return 0
    return int(hashlib.sha256(record.read_bytes()).hexdigest()[:8], 16)


def write_toy_model(directory: str | Path) -> Path:
    """Copies the committed toy base model into `directory` (the catalog's materialisation hook)."""
    source = committed_weights_dir()
    directory = Path(directory)
    shutil.copytree(source, directory, dirs_exist_ok=True)
    return directory


# `builtin:toy` in a catalog imports this module (likeness.models.catalog.BUILTIN_PROVIDERS), which registers it.
register_builtin(BuiltinModel(TOY_BUILTIN_NAME, "sd15", toy_weights_version(), write_toy_model))
