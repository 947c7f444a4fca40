"""Random identifiers (Call-ID, tags, branches, cnonces) from one injectable source.

Tests pass a seeded `random.Random` and get the same identifiers every run; a load run seeds from
os.urandom so that two generators never collide.
"""

from __future__ import annotations

import os
import random

BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 §8.1.1.7


class IdSource:
    __slots__ = ("_bits", "_rng")

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random(int.from_bytes(os.urandom(16), "big"))
        self._bits = self._rng.getrandbits

    def token(self, bits: int = 64) -> str:
        return f"{self._bits(bits):0{bits // 4}x}"

    def call_id(self) -> str:
        return f"{self._bits(96):024x}@sipload"

    def tag(self) -> str:
        return f"{self._bits(48):012x}"

    def branch(self) -> str:
        return f"{BRANCH_MAGIC}{self._bits(64):016x}"

    def cnonce(self) -> str:
        return f"{self._bits(64):016x}"

    def uniform(self, low: float, high: float) -> float:
        return self._rng.uniform(low, high)

    def random(self) -> float:
        return self._rng.random()
