"""Acceptance metrics of a speculative decoding run."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SpecMetrics"]


@dataclass
class SpecMetrics:
    """Counters updated once per verification round (one target forward).

    A round verifies its draft left to right and stops at the first rejection, so draft position ``i`` is
    *reached* only when positions ``0..i-1`` were accepted. ``per_position_acceptance[i]`` is the
    conditional acceptance ``accepted_per_position[i] / reached_per_position[i]`` (for a draft model whose
    distributions match the target it tends to ``Σ min(p, q)``); ``drafted_per_position`` counts every
    proposal made, reached or not.
    """

    drafted: int = 0
    accepted: int = 0
    target_forwards: int = 0
    emitted: int = 0
    elapsed_s: float = 0.0
    drafted_per_position: list[int] = field(default_factory=list)
    accepted_per_position: list[int] = field(default_factory=list)
    reached_per_position: list[int] = field(default_factory=list)

    def record(self, drafted: int, accepted: int) -> None:
        """Record one round: ``drafted`` proposals, the first ``accepted`` kept, ``accepted + 1`` emitted."""
        if not 0 <= accepted <= drafted:
            raise ValueError(f"accepted must be in [0, drafted={drafted}], got {accepted}")
        self.drafted += drafted
        self.accepted += accepted
        self.target_forwards += 1
        self.emitted += accepted + 1
        grow = drafted - len(self.drafted_per_position)
        if grow > 0:
            self.drafted_per_position.extend([0] * grow)
            self.accepted_per_position.extend([0] * grow)
            self.reached_per_position.extend([0] * grow)
        for i in range(drafted):
            self.drafted_per_position[i] += 1
        for i in range(min(accepted + 1, drafted)):
            self.reached_per_position[i] += 1
        for i in range(accepted):
            self.accepted_per_position[i] += 1

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted tokens (0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per target forward, including the correction/bonus token (≥ 1)."""
        return self.emitted / self.target_forwards if self.target_forwards else 0.0

    @property
    def per_position_acceptance(self) -> list[float]:
        """Acceptance of draft position ``i`` among the rounds that reached it (all earlier ones accepted)."""
        return [
            a / r if r else 0.0
            for a, r in zip(self.accepted_per_position, self.reached_per_position, strict=True)
        ]

    @property
    def tokens_per_second(self) -> float:
        """Emitted tokens per second of decoding (prefill excluded)."""
        return self.emitted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """One line for logs and benchmarks."""
        return (
            f"drafted={self.drafted} accepted={self.accepted} rate={self.acceptance_rate:.3f} "
            f"mean_len={self.mean_accepted_length:.2f} forwards={self.target_forwards} "
            f"tok/s={self.tokens_per_second:.1f}"
        )
