"""A synthetic prompt collection in the style of public Stable Diffusion prompts, built on demand.

The vocabulary below was written for this project and is released with it under CC0 1.0 (no rights reserved);
no prompt of any third-party collection is copied. Prompts follow the shape people write ("subject, setting,
medium, lighting, modifiers") with the parameters they are usually generated with, so searches, imports and
benchmarks meet realistic word frequencies: a few words in a third of all prompts, most in well under 1 %.
`generate(n, seed)` is deterministic; prompt `i` is the same for every `n > i`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from likeness.api import generation

SUBJECTS = (
    "an old fisherman",
    "a young woman with red hair",
    "a corgi puppy",
    "a tabby cat",
    "a golden retriever",
    "a red fox",
    "a snowy owl",
    "a majestic lion",
    "a baby elephant",
    "a humpback whale",
    "a koi fish",
    "a samurai warrior",
    "a medieval knight",
    "an astronaut",
    "a cyberpunk hacker",
    "a steampunk inventor",
    "a wizard with a long beard",
    "an elven archer",
    "a viking shieldmaiden",
    "a ballet dancer",
    "a street musician",
    "a chef in a busy kitchen",
    "a grandmother knitting",
    "a little girl with a balloon",
    "a portrait of a man with glasses",
    "a portrait of an elderly woman",
    "a portrait of a boy",
    "a robot",
    "a giant mech",
    "a vintage car",
    "a red sports car",
    "a steam locomotive",
    "a sailing ship",
    "a hot air balloon",
    "a lighthouse",
    "a castle",
    "a treehouse",
    "a wooden cabin",
    "a greenhouse",
    "a floating island",
    "a dragon",
    "a phoenix",
    "a unicorn",
    "a kraken",
    "a mushroom house",
    "a bowl of ramen",
    "a cup of coffee",
    "a stack of pancakes",
    "a bouquet of sunflowers",
    "a cherry tree",
    "a bonsai tree",
    "a sneaker",
    "a leather backpack",
    "a perfume bottle",
    "a wristwatch",
    "a ceramic vase",
    "a teddy bear",
    "a pair of boots",
    "a rubber duck",
    "a chess set",
    "a lantern",
    "a city skyline",
    "a mountain village",
    "a desert oasis",
    "a waterfall",
    "a glacier",
    "a volcano",
    "a coral reef",
    "a bamboo forest",
    "a lavender field",
)
SETTINGS = (
    "on a beach at sunset",
    "in a misty forest",
    "in the snow",
    "on a rainy street at night",
    "in outer space",
    "on the surface of mars",
    "under the sea",
    "in a neon lit alley",
    "in a cozy living room",
    "in a library",
    "on a mountain top",
    "in a field of flowers",
    "in a futuristic city",
    "in a medieval market",
    "in the desert",
    "in a jungle",
    "on a frozen lake",
    "in a cathedral",
    "in a subway station",
    "on a rooftop",
    "in a cafe",
    "in a garden",
    "by a river",
    "in an abandoned factory",
    "at a carnival",
    "in a spaceship cockpit",
    "on a pirate ship",
    "in a japanese temple",
    "in a victorian mansion",
    "in a science lab",
    "in a boxing ring",
    "at a train station",
    "on the moon",
    "in a candy land",
    "inside a snow globe",
    "on a floating rock",
    "in a thunderstorm",
    "during autumn",
    "in spring",
    "at dawn",
)
MEDIUMS = (
    "oil painting",
    "watercolor",
    "digital art",
    "concept art",
    "pencil sketch",
    "charcoal drawing",
    "studio photograph",
    "35mm film photo",
    "polaroid",
    "3d render",
    "octane render",
    "unreal engine",
    "pixel art",
    "low poly",
    "isometric",
    "anime style",
    "studio ghibli style",
    "comic book style",
    "art nouveau",
    "ukiyo-e woodblock print",
    "stained glass",
    "claymation",
    "paper cutout",
    "vector illustration",
    "impressionist painting",
    "cubist painting",
    "surrealist painting",
    "pop art",
    "synthwave",
    "vaporwave",
    "fantasy illustration",
    "children's book illustration",
    "matte painting",
    "macro photograph",
    "aerial photograph",
    "long exposure photograph",
    "tilt shift photo",
    "infrared photo",
)
LIGHTING = (
    "golden hour",
    "soft lighting",
    "dramatic lighting",
    "volumetric light",
    "rim light",
    "neon glow",
    "cinematic lighting",
    "studio lighting",
    "backlit",
    "moonlight",
    "candlelight",
    "overcast",
    "god rays",
    "bioluminescent",
    "harsh shadows",
    "foggy",
)
MODIFIERS = (
    "highly detailed",
    "intricate",
    "sharp focus",
    "8k",
    "4k",
    "trending on artstation",
    "masterpiece",
    "best quality",
    "award winning",
    "ultra realistic",
    "hyperrealistic",
    "bokeh",
    "depth of field",
    "wide angle",
    "close up",
    "symmetrical",
    "vibrant colors",
    "muted colors",
    "pastel colors",
    "high contrast",
    "minimalist",
    "epic composition",
    "whimsical",
    "moody",
    "dreamy",
    "gritty",
    "elegant",
    "cute",
)
NEGATIVES = ("", "", "blurry, low quality", "deformed, extra limbs, bad anatomy", "watermark, text, signature")
#: Every explicit scheduler of the Scheduler enum (likeness.api.generation).
SCHEDULERS = generation.SCHEDULERS
SIZES = ((512, 512), (512, 768), (768, 512), (768, 768), (1024, 1024))


@dataclass(frozen=True)
class SamplePrompt:
    """One generated entry: prompt, negative prompt, parameters and tags (the medium and the lighting)."""

    prompt: str
    negative_prompt: str
    params: dict[str, Any]
    tags: list[str]


def sample(index: int, seed: int = 0) -> SamplePrompt:
    """Entry `index` of the collection for `seed`."""
    rng = random.Random(f"{seed}:{index}")
    medium, lighting = rng.choice(MEDIUMS), rng.choice(LIGHTING)
    parts = [f"{rng.choice(SUBJECTS)} {rng.choice(SETTINGS)}", medium, lighting]
    parts.extend(rng.sample(MODIFIERS, rng.randint(1, 4)))
    width, height = rng.choice(SIZES)
    params = {
        "steps": rng.choice((20, 25, 30, 30, 40, 50)),
        "guidance": rng.choice((5.0, 6.0, 7.0, 7.5, 7.5, 8.0, 9.0, 12.0)),
        "scheduler": rng.choice(SCHEDULERS),
        "width": width,
        "height": height,
        "seed": rng.randrange(2**32),
    }
    tags = [medium.replace("'", ""), lighting]
    return SamplePrompt(", ".join(parts), rng.choice(NEGATIVES), params, tags)


def generate(count: int, seed: int = 0) -> Iterator[SamplePrompt]:
    """The first `count` entries of the collection for `seed`."""
    for index in range(count):
        yield sample(index, seed)
