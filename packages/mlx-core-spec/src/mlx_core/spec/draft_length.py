"""How many tokens to draft each round: fixed, or adapted to the recent acceptance."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["AdaptiveDraftLength", "DraftLengthPolicy", "FixedDraftLength"]


@runtime_checkable
class DraftLengthPolicy(Protocol):
    """Chooses ``k`` for the next round and learns from the round's outcome."""

    def next_length(self) -> int: ...

    def update(self, drafted: int, accepted: int) -> None: ...


class FixedDraftLength:
    """Always draft ``num_draft_tokens``."""

    def __init__(self, num_draft_tokens: int) -> None:
        if not isinstance(num_draft_tokens, int) or num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens must be an int >= 1, got {num_draft_tokens!r}")
        self.num_draft_tokens = num_draft_tokens

    def next_length(self) -> int:
        return self.num_draft_tokens

    def update(self, drafted: int, accepted: int) -> None:
        return None

    def __repr__(self) -> str:
        return f"FixedDraftLength({self.num_draft_tokens})"


class AdaptiveDraftLength:
    """Grow ``k`` by one after a fully accepted round, shrink it after an early rejection.

    A rejection in the first half of the draft (``accepted < drafted / 2``) means most of the tail was
    wasted work, so ``k`` drops by one (not below ``minimum``). Rounds where the drafter proposed nothing
    (prompt lookup without a match) leave ``k`` unchanged. Mirrors the heuristic of HF's assisted generation.
    """

    def __init__(self, initial: int = 4, minimum: int = 1, maximum: int = 16) -> None:
        if not (isinstance(minimum, int) and isinstance(maximum, int) and isinstance(initial, int)):
            raise TypeError("initial, minimum and maximum must be ints")
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError(
                f"need 1 <= minimum <= initial <= maximum, got minimum={minimum}, initial={initial}, "
                f"maximum={maximum}"
            )
        self.minimum, self.maximum = minimum, maximum
        self.current = initial

    def next_length(self) -> int:
        return self.current

    def update(self, drafted: int, accepted: int) -> None:
        if drafted == 0:
            return
        if accepted == drafted:
            self.current = min(self.maximum, self.current + 1)
        elif 2 * accepted < drafted:
            self.current = max(self.minimum, self.current - 1)

    def __repr__(self) -> str:
        return f"AdaptiveDraftLength(current={self.current}, minimum={self.minimum}, maximum={self.maximum})"
