"""Seeds derived from (base seed, prompt id, image index), so any single image can be regenerated."""

from __future__ import annotations

import hashlib


def image_seed(base_seed: int, prompt_id: str, index: int) -> int:
    """A 31-bit seed that depends only on its three inputs (not on batch size or order)."""
    digest = hashlib.sha256(f"{base_seed}\x1f{prompt_id}\x1f{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def image_seeds(base_seed: int, prompt_id: str, count: int) -> list[int]:
    return [image_seed(base_seed, prompt_id, i) for i in range(count)]
