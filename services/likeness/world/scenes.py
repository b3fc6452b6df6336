"""A procedurally drawn, captioned world: five kinds of object in five kinds of place, at 32 px.

Every picture is one object (`ObjectLook`: class, shape proportions, colour, surface pattern) placed somewhere
(`Scene`: context, position, size, mirroring). Drawing happens at 4x the output size with anti-aliased PIL
primitives and is box-filtered down, so small shapes keep smooth edges. Nothing here is random by itself: the
`random_*` helpers take a numpy Generator, and `world_sample(seed, index)` derives one from the pair, so sample
`index` of a seed is the same picture and caption on every machine, in any order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
SUPERSAMPLE = 4
CANVAS = IMAGE_SIZE * SUPERSAMPLE

CLASSES: tuple[str, ...] = ("toy", "cup", "ball", "box", "dog")
# Context key -> the phrase captions and prompts use for it.
CONTEXT_PHRASES: dict[str, str] = {
    "plain": "on a plain background",
    "beach": "on the beach",
    "snow": "in the snow",
    "floor": "on a wooden floor",
    "jungle": "in the jungle",
}
CONTEXTS: tuple[str, ...] = tuple(CONTEXT_PHRASES)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 30),
    "green": (40, 165, 55),
    "blue": (35, 75, 215),
    "purple": (135, 55, 185),
    "pink": (245, 125, 185),
    "black": (30, 30, 34),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
# Surface patterns of pretraining objects (they appear in captions as adjectives, "solid" as nothing).
WORLD_PATTERNS: tuple[str, ...] = ("solid", "striped", "two-tone")
# Patterns reserved for subjects: the base model never sees them, so a subject looks like nothing it knows.
SUBJECT_PATTERNS: tuple[str, ...] = ("checkered", "dotted", "diagonal", "quartered")
PATTERN_WORDS = {"solid": "", "striped": "striped", "two-tone": "two-tone"}
CAPTION_PREFIXES = ("a photo of a ", "a photo of ", "a ", "")

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ObjectLook:
    """What an object looks like, independently of where it is.

    `proportions` are per-class shape parameters in [-1, 1] (head size, aspect, handle size...), so two toys of
    the same colour can still differ. `colour_name` is the caption word for `colour` ("" when the colour has
    no name, as for subjects). `accent` is the second colour of two-colour patterns.
    """

    cls: str
    colour: RGB
    colour_name: str = ""
    pattern: str = "solid"
    accent: RGB = (255, 255, 255)
    proportions: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Scene:
    """One picture: an object in a context. `x`, `y` are the object's centre and `size` its half-height, in
    output pixels; `variant` seeds the context's own details (where the leaves and snowflakes fall)."""

    look: ObjectLook
    context: str
    x: float = 16.0
    y: float = 17.0
    size: float = 10.0
    mirrored: bool = False
    variant: int = 0


@dataclass(frozen=True)
class WorldSample:
    """A drawn scene with its caption and the labels a judge is trained on."""

    image: Image.Image
    caption: str
    scene: Scene
    labels: dict[str, int] = field(default_factory=dict)


def _clip(value: float) -> int:
    return max(0, min(255, round(value)))


def shade(colour: RGB, factor: float) -> RGB:
    """Darker (factor < 1) or lighter (factor > 1, towards white) version of a colour."""
    if factor <= 1:
        return tuple(_clip(c * factor) for c in colour)  # type: ignore[return-value]
    mix = factor - 1
    return tuple(_clip(c + (255 - c) * mix) for c in colour)  # type: ignore[return-value]


def _jitter(colour: tuple[float, float, float], rng: np.random.Generator, amount: float) -> RGB:
    return tuple(_clip(c + rng.uniform(-amount, amount)) for c in colour)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------
# Contexts


def draw_context(context: str, variant: int) -> Image.Image:
    """The background of `context` at canvas size; `variant` picks its random details."""
    if context not in CONTEXT_PHRASES:
        raise ValueError(f"unknown context {context!r}; contexts are {', '.join(CONTEXTS)}")
    rng = np.random.default_rng([variant, CONTEXTS.index(context), 77])
    image = Image.new("RGB", (CANVAS, CANVAS))
    draw = ImageDraw.Draw(image)
    painter = {
        "plain": _plain,
        "beach": _beach,
        "snow": _snow,
        "floor": _floor,
        "jungle": _jungle,
    }[context]
    painter(draw, rng)
    return image


def _vertical_gradient(draw: ImageDraw.ImageDraw, top: int, bottom: int, start: RGB, end: RGB) -> None:
    for row in range(top, bottom):
        t = (row - top) / max(1, bottom - top - 1)
        colour = tuple(_clip(a + (b - a) * t) for a, b in zip(start, end, strict=True))
        draw.line([(0, row), (CANVAS, row)], fill=colour)


def _plain(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    # A pale, low-saturation colour: uniform, like a studio backdrop.
    hue = rng.uniform(0, 1)
    base = np.array([math.cos(2 * math.pi * (hue + k / 3)) for k in range(3)])
    colour = tuple(_clip(205 + 25 * value + rng.uniform(-8, 8)) for value in base)
    draw.rectangle([0, 0, CANVAS, CANVAS], fill=colour)


def _beach(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    horizon = int(CANVAS * rng.uniform(0.3, 0.42))
    sea_depth = int(CANVAS * rng.uniform(0.08, 0.13))
    _vertical_gradient(draw, 0, horizon, _jitter((120, 185, 240), rng, 12), _jitter((190, 225, 250), rng, 8))
    draw.rectangle([0, horizon, CANVAS, horizon + sea_depth], fill=_jitter((30, 110, 190), rng, 12))
    # A bright foam line where the sea meets the sand.
    draw.rectangle([0, horizon + sea_depth - 3, CANVAS, horizon + sea_depth + 2], fill=(235, 245, 250))
    sand = _jitter((232, 205, 140), rng, 10)
    _vertical_gradient(draw, horizon + sea_depth + 2, CANVAS, sand, shade(sand, 0.9))


def _snow(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    horizon = int(CANVAS * rng.uniform(0.3, 0.45))
    _vertical_gradient(draw, 0, horizon, _jitter((150, 160, 180), rng, 10), _jitter((195, 202, 215), rng, 8))
    _vertical_gradient(draw, horizon, CANVAS, (250, 251, 253), _jitter((220, 228, 240), rng, 6))
    for _ in range(int(rng.integers(28, 40))):
        x, y = rng.uniform(0, CANVAS, size=2)
        radius = rng.uniform(2.0, 4.0)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 255, 255))


def _floor(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    wall = int(CANVAS * rng.uniform(0.2, 0.35))
    draw.rectangle([0, 0, CANVAS, wall], fill=_jitter((225, 215, 195), rng, 10))
    wood = _jitter((150, 95, 50), rng, 12)
    draw.rectangle([0, wall, CANVAS, CANVAS], fill=wood)
    plank = int(rng.integers(14, 19))
    row = wall
    while row < CANVAS:
        tone = shade(wood, rng.uniform(0.88, 1.12))
        draw.rectangle([0, row + 2, CANVAS, row + plank], fill=tone)
        draw.rectangle([0, row, CANVAS, row + 2], fill=shade(wood, 0.55))
        seam = rng.uniform(0, CANVAS)
        draw.line([(seam, row), (seam, row + plank)], fill=shade(wood, 0.6), width=2)
        row += plank


def _jungle(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    draw.rectangle([0, 0, CANVAS, CANVAS], fill=_jitter((25, 75, 30), rng, 10))
    for _ in range(int(rng.integers(2, 4))):
        x = rng.uniform(0, CANVAS)
        width = rng.uniform(6, 12)
        draw.rectangle([x, 0, x + width, CANVAS], fill=_jitter((85, 60, 35), rng, 10))
    for _ in range(int(rng.integers(45, 60))):
        x, y = rng.uniform(-10, CANVAS + 10, size=2)
        length = rng.uniform(10, 22)
        angle = rng.uniform(0, math.pi)
        dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
        green = _jitter((rng.uniform(40, 90), rng.uniform(120, 190), rng.uniform(40, 70)), rng, 10)
        # A leaf: a thick line with a round middle.
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=green, width=int(rng.integers(4, 7)))
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=green)


# ---------------------------------------------------------------------------------------------------------
# Objects: each is drawn as a mask (where the surface is) plus dark details drawn on top.


@dataclass
class _Frame:
    """Maps object coordinates (unit box, y down, bottom edge at y = 1) to canvas pixels."""

    cx: float
    cy: float
    scale: float
    mirrored: bool

    def x(self, u: float) -> float:
        return self.cx + (-u if self.mirrored else u) * self.scale

    def y(self, v: float) -> float:
        return self.cy + v * self.scale

    def box(self, u0: float, v0: float, u1: float, v1: float) -> list[float]:
        xa, xb = sorted((self.x(u0), self.x(u1)))
        return [xa, self.y(v0), xb, self.y(v1)]

    def points(self, pairs: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(self.x(u), self.y(v)) for u, v in pairs]

    def width(self, fraction: float) -> int:
        return max(1, round(fraction * self.scale))


DETAIL = (25, 22, 22)


def _toy(mask: ImageDraw.ImageDraw, detail: ImageDraw.ImageDraw, f: _Frame, p: tuple[float, ...]) -> None:
    # A teddy-like figure: round head with ears, a body, stubby arms and legs.
    head = 0.36 + 0.06 * p[0]
    body_w = 0.48 + 0.08 * p[1]
    head_y = -0.62
    mask.ellipse(f.box(-head, head_y - head, head, head_y + head), fill=255)
    for side in (-1, 1):
        ear_x = side * head * 0.8
        mask.ellipse(f.box(ear_x - 0.15, head_y - head - 0.1, ear_x + 0.15, head_y - head + 0.2), fill=255)
        mask.ellipse(f.box(side * body_w - 0.15, -0.2, side * (body_w + 0.22), 0.35), fill=255)
        mask.rounded_rectangle(f.box(side * 0.08, 0.6, side * 0.4, 1.0), radius=f.width(0.1), fill=255)
    mask.rounded_rectangle(f.box(-body_w, -0.3, body_w, 0.75), radius=f.width(0.25), fill=255)
    for side in (-1, 1):
        eye = (side * head * 0.4, head_y - 0.05)
        detail.ellipse(f.box(eye[0] - 0.07, eye[1] - 0.07, eye[0] + 0.07, eye[1] + 0.07), fill=DETAIL)


def _cup(mask: ImageDraw.ImageDraw, detail: ImageDraw.ImageDraw, f: _Frame, p: tuple[float, ...]) -> None:
    top = 0.62 + 0.08 * p[0]
    bottom = 0.45 + 0.06 * p[1]
    handle = 0.34 + 0.06 * p[2]
    mask.polygon(f.points([(-top, -0.75), (top, -0.75), (bottom, 1.0), (-bottom, 1.0)]), fill=255)
    centre_u = (top + bottom) / 2 - 0.02
    mask.ellipse(
        f.box(centre_u - 0.05, 0.1 - handle, centre_u + 2 * handle - 0.05, 0.1 + handle),
        outline=255,
        width=f.width(0.16),
    )
    detail.ellipse(f.box(-top + 0.06, -0.85, top - 0.06, -0.65), fill=DETAIL)


def _ball(mask: ImageDraw.ImageDraw, detail: ImageDraw.ImageDraw, f: _Frame, p: tuple[float, ...]) -> None:
    radius = 0.9 + 0.05 * p[0]
    squash = 1.0 + 0.05 * p[1]
    mask.ellipse(f.box(-radius * squash, 1.0 - 2 * radius, radius * squash, 1.0), fill=255)
    # A highlight that makes it read as a sphere.
    centre_v = 1.0 - radius
    highlight = (-0.4 * radius, centre_v - 0.45 * radius)
    detail.ellipse(
        f.box(highlight[0] - 0.13, highlight[1] - 0.13, highlight[0] + 0.13, highlight[1] + 0.13),
        fill=(250, 250, 250),
    )


def _box(mask: ImageDraw.ImageDraw, detail: ImageDraw.ImageDraw, f: _Frame, p: tuple[float, ...]) -> None:
    half = 0.7 + 0.1 * p[0]
    depth = 0.3 + 0.08 * p[1]
    front_top = -0.5 + 0.12 * p[2]
    mask.rectangle(f.box(-half, front_top, half, 1.0), fill=255)
    mask.polygon(
        f.points(
            [
                (-half, front_top),
                (half, front_top),
                (half + depth, front_top - depth),
                (-half + depth, front_top - depth),
            ]
        ),
        fill=255,
    )
    mask.polygon(
        f.points([(half, front_top), (half + depth, front_top - depth), (half + depth, 1.0 - depth), (half, 1.0)]),
        fill=255,
    )
    detail.line(f.points([(-half, front_top), (half, front_top), (half, 1.0)]), fill=DETAIL, width=f.width(0.06))


def _dog(mask: ImageDraw.ImageDraw, detail: ImageDraw.ImageDraw, f: _Frame, p: tuple[float, ...]) -> None:
    body_len = 0.75 + 0.08 * p[0]
    leg = 0.45 + 0.08 * p[1]
    body_top, body_bottom = 0.0, 1.0 - leg + 0.1
    mask.ellipse(f.box(-body_len, body_top, body_len * 0.85, body_bottom), fill=255)
    head_u, head_v, head_r = body_len * 0.85, -0.25, 0.32 + 0.05 * p[2]
    mask.ellipse(f.box(head_u - head_r, head_v - head_r, head_u + head_r, head_v + head_r), fill=255)
    mask.ellipse(f.box(head_u + 0.1, head_v - 0.02, head_u + head_r + 0.22, head_v + 0.22), fill=255)
    mask.polygon(
        f.points([(head_u - 0.5 * head_r, body_top + 0.15), (head_u, head_v), (head_u - 0.1, body_top + 0.35)]),
        fill=255,
    )
    for leg_u in (-body_len * 0.7, -body_len * 0.4, body_len * 0.3, body_len * 0.6):
        mask.rectangle(f.box(leg_u - 0.08, body_bottom - 0.2, leg_u + 0.08, 1.0), fill=255)
    mask.line(
        f.points([(-body_len * 0.9, body_top + 0.25), (-body_len - 0.3, body_top - 0.3)]), fill=255, width=f.width(0.1)
    )
    detail.ellipse(f.box(head_u - 0.16, head_v - 0.6 * head_r - 0.1, head_u + 0.04, head_v + 0.05), fill=DETAIL)
    nose = (head_u + head_r + 0.18, head_v + 0.05)
    detail.ellipse(f.box(nose[0] - 0.07, nose[1] - 0.07, nose[0] + 0.07, nose[1] + 0.07), fill=DETAIL)


_DRAWERS = {"toy": _toy, "cup": _cup, "ball": _ball, "box": _box, "dog": _dog}


def _pattern_fill(look: ObjectLook, frame: _Frame) -> Image.Image:
    """The object's surface, painted over the whole canvas in the object's own coordinates (it moves with it)."""
    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32)
    u = (xs - frame.cx) / frame.scale * (-1 if frame.mirrored else 1)
    v = (ys - frame.cy) / frame.scale
    base = np.array(look.colour, dtype=np.float32)
    accent = np.array(look.accent, dtype=np.float32)
    dark = np.array(shade(look.colour, 0.55), dtype=np.float32)
    pattern = look.pattern
    if pattern == "solid":
        select = np.zeros_like(u, dtype=bool)
        second = base
    elif pattern == "striped":
        select = np.floor((v + 1.0) / 0.34) % 2 == 1
        second = dark
    elif pattern == "two-tone":
        select = v > 0.25
        second = dark
    elif pattern == "checkered":
        select = (np.floor((u + 4) / 0.42) + np.floor((v + 4) / 0.42)) % 2 == 1
        second = accent
    elif pattern == "dotted":
        cu = np.round(u / 0.45) * 0.45
        cv = np.round(v / 0.45) * 0.45
        select = (u - cu) ** 2 + (v - cv) ** 2 < 0.12**2
        second = accent
    elif pattern == "diagonal":
        select = np.floor((u + v + 8) / 0.3) % 2 == 1
        second = accent
    elif pattern == "quartered":
        select = (u > 0) ^ (v > 0.1)
        second = accent
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    pixels = np.where(select[..., None], second, base)
    # Soft top-left lighting: the lower right of every object is a little darker.
    light = 1.0 - 0.12 * np.clip((u + v) / 2, -1, 1)
    pixels = np.clip(pixels * light[..., None], 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def draw_scene(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """The scene as a `size` x `size` RGB image (32 px, the world's size, unless asked otherwise; at most 128)."""
    if not 1 <= size <= CANVAS:
        raise ValueError(f"scenes are drawn at {CANVAS} px and scaled down: size must be 1 to {CANVAS}, got {size}")
    look = scene.look
    if look.cls not in _DRAWERS:
        raise ValueError(f"unknown object class {look.cls!r}; classes are {', '.join(CLASSES)}")
    canvas = draw_context(scene.context, scene.variant)
    # Object coordinates run from about -1 (top) to 1 (bottom edge): (x, y) is the object's centre.
    frame = _Frame(scene.x * SUPERSAMPLE, scene.y * SUPERSAMPLE, scene.size * SUPERSAMPLE, scene.mirrored)
    mask = Image.new("L", (CANVAS, CANVAS), 0)
    details = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    _DRAWERS[look.cls](ImageDraw.Draw(mask), ImageDraw.Draw(details), frame, look.proportions)
    # A soft contact shadow grounds the object.
    shadow = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(shadow).ellipse(frame.box(-0.9, 0.9, 0.9, 1.12), fill=90)
    canvas.paste((0, 0, 0), mask=shadow)
    canvas.paste(_pattern_fill(look, frame), mask=mask)
    canvas.paste(details, mask=details)
    return canvas.resize((size, size), Image.Resampling.BOX)


# ---------------------------------------------------------------------------------------------------------
# Random worlds


def random_look(
    rng: np.random.Generator, cls: str | None = None, patterns: tuple[str, ...] = WORLD_PATTERNS
) -> ObjectLook:
    """A random pretraining object: named colour (with small jitter), a world pattern, random proportions."""
    cls = cls or CLASSES[int(rng.integers(len(CLASSES)))]
    colour_name = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
    # Most objects are plain-coloured, so colour words stay tied to colours.
    pattern = patterns[0] if rng.uniform() < 0.6 else patterns[int(rng.integers(len(patterns)))]
    accent = tuple(int(c) for c in rng.integers(0, 256, size=3))
    return ObjectLook(
        cls=cls,
        colour=_jitter(COLOURS[colour_name], rng, 14),
        colour_name=colour_name,
        pattern=pattern,
        accent=accent,  # type: ignore[arg-type]
        proportions=tuple(float(value) for value in rng.uniform(-1, 1, size=3)),  # type: ignore[arg-type]
    )


def random_scene(rng: np.random.Generator, look: ObjectLook, context: str | None = None) -> Scene:
    """Places `look` at a random position and size in a random (or the given) context."""
    context = context or CONTEXTS[int(rng.integers(len(CONTEXTS)))]
    size = float(rng.uniform(8.0, 11.0))
    return Scene(
        look=look,
        context=context,
        x=float(rng.uniform(12.5, 19.5)),
        y=float(rng.uniform(15.0, 18.5)),
        size=size,
        mirrored=bool(rng.integers(2)),
        variant=int(rng.integers(2**31)),
    )


def caption_for(scene: Scene, rng: np.random.Generator) -> str:
    """A caption naming the class, usually the colour and context, sometimes the pattern, in varied phrasing.

    Leaving words out at random teaches the model what to do when a prompt does not say (any colour, any place).
    """
    look = scene.look
    words: list[str] = []
    if look.colour_name and rng.uniform() < 0.8:
        words.append(look.colour_name)
    pattern_word = PATTERN_WORDS.get(look.pattern, "")
    if pattern_word and rng.uniform() < 0.7:
        words.append(pattern_word)
    words.append(look.cls)
    if rng.uniform() < 0.8:
        words.append(CONTEXT_PHRASES[scene.context])
    prefix = CAPTION_PREFIXES[int(rng.integers(len(CAPTION_PREFIXES)))]
    if prefix.endswith(" a ") or prefix == "a ":
        prefix = prefix[:-2] + ("an " if words[0][0] in "aeiou" else "a ")
    return (prefix + " ".join(words)).strip()


def scene_labels(scene: Scene) -> dict[str, int]:
    """Class, context and colour indices (colour -1 when the object's colour has no name)."""
    look = scene.look
    colour = COLOUR_NAMES.index(look.colour_name) if look.colour_name in COLOURS else -1
    return {"class": CLASSES.index(look.cls), "context": CONTEXTS.index(scene.context), "colour": colour}


def world_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, 6])


def world_sample(seed: int, index: int) -> WorldSample:
    """Sample `index` of the pretraining world of `seed`: the same image and caption on every call."""
    rng = world_rng(seed, index)
    scene = random_scene(rng, random_look(rng))
    return WorldSample(draw_scene(scene), caption_for(scene, rng), scene, scene_labels(scene))


def with_context(scene: Scene, context: str) -> Scene:
    return replace(scene, context=context)
