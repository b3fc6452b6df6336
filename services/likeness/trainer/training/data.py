"""Training images: preprocessing, a stateless sampler, and cached VAE latents.

Everything random here is drawn from a generator seeded by (run seed, micro-step, process), never from a
running random state. A run resumed at step N therefore draws exactly the batches, flips and crops the
uninterrupted run drew, which is what makes a resumed loss curve match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from likeness.errors import InvalidArgument

_MASK63 = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (splitmix64 over them): cheap, stable across processes."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value = (value ^ (value >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & _MASK63


@dataclass
class TrainingData:
    """The images of one run. `instance_prompts[i]` is the (expanded) prompt or caption of instance image i."""

    instance_images: list[Image.Image]
    instance_prompts: list[str]
    class_images: list[Image.Image] = field(default_factory=list)
    class_prompt: str = ""

    def __post_init__(self) -> None:
        if not self.instance_images:
            raise InvalidArgument("the dataset has no images", field="spec.dataset_id")
        if len(self.instance_prompts) != len(self.instance_images):
            raise InvalidArgument("every instance image needs a prompt", field="spec.instance_prompt")
        if self.class_images and not self.class_prompt:
            raise InvalidArgument("class images need a class prompt", field="spec.prior_preservation.class_prompt")


def resize_short_side(image: Image.Image, resolution: int) -> Image.Image:
    """Scales so the shorter side equals `resolution` (no-op when it already does)."""
    image = image.convert("RGB")
    width, height = image.size
    if min(width, height) == resolution:
        return image
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (3, H, W) in [-1, 1], as the VAE expects."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class ImageSet:
    """Resized images of one kind (instance or class) with the fixed or random crop policy.

    With `fixed_crop` (every image already square at the resolution, or centre crop asked for) the crops never
    change, so `cache_latents` can encode each image once per orientation and training never runs the VAE.
    """

    def __init__(self, images: list[Image.Image], resolution: int, *, center_crop: bool) -> None:
        self.resolution = resolution
        self.original_sizes = [(image.height, image.width) for image in images]
        resized = [resize_short_side(image, resolution) for image in images]
        self.fixed_crop = center_crop or all(image.size == (resolution, resolution) for image in resized)
        # (top, left) of each fixed crop in the resized image: SDXL is conditioned on it.
        self.fixed_offsets = [((image.height - resolution) // 2, (image.width - resolution) // 2) for image in resized]
        if self.fixed_crop:
            resized = [_center_crop(image, resolution) for image in resized]
        self.pixels = [to_tensor(image) for image in resized]
        self.latent_mean: torch.Tensor | None = None
        self.latent_std: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.pixels)

    @torch.no_grad()
    def cache_latents(self, vae: torch.nn.Module, device: torch.device, dtype: torch.dtype, flips: bool) -> None:
        """Encodes every image (and its mirror when `flips`) once; keeps the posterior's mean and std, scaled.

        Sampling `mean + std * noise` later is exactly `latent_dist.sample()`, so caching changes nothing but speed.
        """
        scaling = float(vae.config.scaling_factor)  # type: ignore[union-attr,arg-type]  # diffusers config attribute
        shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        means, stds = [], []
        for pixels in self.pixels:
            batch = torch.stack([pixels, pixels.flip(-1)] if flips else [pixels]).to(device, dtype)
            posterior = vae.encode(batch).latent_dist  # type: ignore[operator]  # AutoencoderKL method
            means.append((posterior.mean.float() - shift) * scaling)
            stds.append(posterior.std.float() * scaling)
        self.latent_mean = torch.stack(means)
        self.latent_std = torch.stack(stds)


def _center_crop(image: Image.Image, resolution: int) -> Image.Image:
    left = (image.width - resolution) // 2
    top = (image.height - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


class StatelessSampler:
    """Which images micro-step k of process r trains on: epoch-wise permutations, derived from the seed.

    Every process covers different images of the same global order, and every image is seen once per epoch.
    """

    def __init__(self, count: int, batch_size: int, seed: int, salt: int, num_processes: int, rank: int) -> None:
        self.count = count
        self.batch_size = batch_size
        self.seed = seed
        self.salt = salt
        self.num_processes = num_processes
        self.rank = rank
        self._epoch = -1
        self._permutation = torch.arange(count)

    def indices(self, micro_step: int) -> list[int]:
        start = (micro_step * self.num_processes + self.rank) * self.batch_size
        result = []
        for position in range(start, start + self.batch_size):
            epoch, offset = divmod(position, self.count)
            if epoch != self._epoch:
                generator = torch.Generator().manual_seed(mix_seed(self.seed, self.salt, epoch))
                self._permutation = torch.randperm(self.count, generator=generator)
                self._epoch = epoch
            result.append(int(self._permutation[offset]))
        return result
