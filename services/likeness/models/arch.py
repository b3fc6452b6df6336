"""Facts about the supported architectures, importable without torch or diffusers."""

from __future__ import annotations

from dataclasses import dataclass, replace

from likeness.errors import InvalidArgument

ARCHS: tuple[str, ...] = ("sd15", "sd2", "sdxl")
TINY_ARCHS: tuple[str, ...] = ("sd15", "sdxl")
# Tiny test models (likeness.models.tiny) make 64 px images; above 256 px a CPU step takes many seconds.
TINY_RESOLUTION = 64
TINY_MIN_RESOLUTION = 32
TINY_MAX_RESOLUTION = 256
# Below this native resolution a base model is one of the tiny test models, not a real one.
TINY_RESOLUTION_LIMIT = 256
# Bump when the tiny architecture or initialisation changes, so caches of materialised tiny models are rebuilt.
TINY_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ArchInfo:
    """What callers need to know about an architecture to validate requests and build pipelines."""

    arch: str
    default_resolution: int
    min_resolution: int
    max_resolution: int
    # Width and height must be multiples of this (the real VAE's downsampling factor).
    resolution_multiple: int
    two_text_encoders: bool
    pipeline_class_name: str


_ARCH_INFOS = {
    "sd15": ArchInfo("sd15", 512, 256, 1024, 8, False, "StableDiffusionPipeline"),
    "sd2": ArchInfo("sd2", 768, 256, 1536, 8, False, "StableDiffusionPipeline"),
    "sdxl": ArchInfo("sdxl", 1024, 512, 2048, 8, True, "StableDiffusionXLPipeline"),
}


def check_arch(arch: str) -> str:
    if arch not in _ARCH_INFOS:
        raise InvalidArgument(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}", field="arch")
    return arch


def check_tiny_arch(arch: str) -> str:
    if arch not in TINY_ARCHS:
        raise InvalidArgument(
            f"unknown tiny architecture {arch!r}; choose one of {', '.join(TINY_ARCHS)}", field="arch"
        )
    return arch


def arch_info(arch: str, *, tiny: bool = False) -> ArchInfo:
    """Resolutions and text-encoder layout of `arch` ("sd15" | "sd2" | "sdxl"); `tiny` for the tiny test models.

    Defaults: sd15 512 px, sd2 768 px, sdxl 1024 px, tiny 64 px.
    """
    info = _ARCH_INFOS[check_arch(arch)]
    if not tiny:
        return info
    return replace(
        info,
        default_resolution=TINY_RESOLUTION,
        min_resolution=TINY_MIN_RESOLUTION,
        max_resolution=TINY_MAX_RESOLUTION,
    )
