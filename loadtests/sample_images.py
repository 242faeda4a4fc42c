"""Images for upload scenarios, generated in-process with Pillow (no files shipped).

Noise makes the encoded sizes realistic (a few KB to about 1 MB) instead of compressing to
nothing; a pool is built once per process so the load generator's CPU goes to requests.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image

FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
SIDES = (32, 96, 256, 512)


@dataclass(frozen=True)
class SampleImage:
    filename: str
    content_type: str
    data: bytes


def noise_png(seed: int = 13, side: int = 184) -> bytes:
    """A PNG of random pixels, which do not compress: ~100 KB at the default side (the
    benches' "100 KB file" reads)."""
    rng = random.Random(seed)
    noise = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    encoded = io.BytesIO()
    noise.save(encoded, format="PNG")
    return encoded.getvalue()


def make_image(fmt: str, side: int, seed: int) -> SampleImage:
    rng = random.Random(seed)
    noise = Image.effect_noise((side, side), rng.randint(20, 90)).convert("RGB")
    tint = Image.new("RGB", (side, side), (rng.randrange(256), rng.randrange(256), 90))
    picture = Image.blend(noise, tint, 0.4)
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **({"quality": 90} if fmt in {"JPEG", "WEBP"} else {}))
    return SampleImage(f"sample-{seed}.{fmt.lower()}", MIME[fmt], buffer.getvalue())


def image_pool(count: int = 16, seed: int = 7) -> list[SampleImage]:
    """``count`` images cycling through the formats and sizes (4 KB to ~1 MB)."""
    return [
        make_image(FORMATS[i % len(FORMATS)], SIDES[(i // len(FORMATS)) % len(SIDES)], seed + i)
        for i in range(count)
    ]
