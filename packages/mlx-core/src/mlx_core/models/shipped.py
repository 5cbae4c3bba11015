"""The small demo model (and its draft) shipped as package data, found without network."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEMO_MODEL = "demo"
DEMO_DRAFT_MODEL = "demo_draft"


def demo_model_path(draft: bool = False) -> Path:
    """Directory of the shipped demo model (``draft=True``: its smaller draft, same tokenizer)."""
    root = resources.files("mlx_core.models") / (DEMO_DRAFT_MODEL if draft else DEMO_MODEL)
    path = Path(str(root))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the shipped demo model is missing from {path}; "
            "run packages/mlx-core/scripts/train_demo_model.py to create it"
        )
    return path
