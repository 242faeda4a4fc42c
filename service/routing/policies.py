"""Read policies: which of the eligible replicas serves the next read.

Each takes the eligible candidates (never empty) and returns one; eligibility (health,
staleness, consistency) is decided before, by the router.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Protocol

from service.routing.nodes import Node
from service.settings import ReadPolicy


class Chooser(Protocol):
    def choose(self, candidates: Sequence[Node]) -> Node: ...


class RoundRobin:
    def __init__(self) -> None:
        self._turn = itertools.count()

    def choose(self, candidates: Sequence[Node]) -> Node:
        return candidates[next(self._turn) % len(candidates)]


class RandomChoice:
    def choose(self, candidates: Sequence[Node]) -> Node:
        return random.choice(candidates)


class Weighted:
    def choose(self, candidates: Sequence[Node]) -> Node:
        weights = [node.weight for node in candidates]
        if not any(weights):
            return random.choice(candidates)
        return random.choices(candidates, weights=weights)[0]


class LeastLag:
    """The replica with the fewest unreplayed bytes (then seconds); ties take turns."""

    def __init__(self) -> None:
        self._ties = RoundRobin()

    def choose(self, candidates: Sequence[Node]) -> Node:
        def key(node: Node) -> tuple[float, float]:
            return (
                float("inf") if node.lag_bytes is None else node.lag_bytes,
                float("inf") if node.lag_seconds is None else node.lag_seconds,
            )

        best = min(key(node) for node in candidates)
        return self._ties.choose([node for node in candidates if key(node) == best])


def make_chooser(policy: ReadPolicy) -> Chooser:
    """The chooser for ``policy``; ``primary`` never reaches it (the router short-cuts it)."""
    if policy is ReadPolicy.RANDOM:
        return RandomChoice()
    if policy is ReadPolicy.WEIGHTED:
        return Weighted()
    if policy is ReadPolicy.LEAST_LAG:
        return LeastLag()
    return RoundRobin()
