"""Fixed and adaptive draft-length policies."""

from __future__ import annotations

import pytest
from mlx_core.spec import AdaptiveDraftLength, DraftLengthPolicy, FixedDraftLength


def test_fixed() -> None:
    p = FixedDraftLength(5)
    p.update(5, 0)
    assert p.next_length() == 5
    assert isinstance(p, DraftLengthPolicy)
    with pytest.raises(ValueError, match="num_draft_tokens"):
        FixedDraftLength(0)


def test_adaptive_grows_on_full_acceptance_and_shrinks_on_early_rejection() -> None:
    p = AdaptiveDraftLength(initial=3, minimum=2, maximum=5)
    seen = []
    for drafted_accepted in [(3, 3), (4, 4), (5, 5), (5, 5), (5, 4), (5, 0), (4, 1), (3, 0), (2, 0), (0, 0)]:
        p.update(*drafted_accepted)
        seen.append(p.next_length())
    # grow ×2 to the cap, hold at cap, late rejection keeps, early rejections shrink to the floor
    assert seen == [4, 5, 5, 5, 5, 4, 3, 2, 2, 2]
    assert isinstance(p, DraftLengthPolicy)


def test_adaptive_validates() -> None:
    with pytest.raises(ValueError, match="minimum"):
        AdaptiveDraftLength(initial=1, minimum=2, maximum=4)
