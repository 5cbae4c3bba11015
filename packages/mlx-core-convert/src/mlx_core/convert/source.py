"""Where a checkpoint comes from: a local directory or a Hugging Face Hub repo id (safetensors only).

Hub access goes through ``huggingface_hub.snapshot_download`` restricted to safetensors, JSON and
tokenizer files, so pickle weights are never even downloaded. ``HF_HUB_OFFLINE``, ``HF_HOME`` and
``HF_HUB_CACHE`` are read when ``convert`` is called (not only when huggingface_hub was imported).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ConvertError, HubUnavailableError

HUB_ALLOW_PATTERNS = (
    "*.safetensors",
    "*.json",
    "tokenizer.model",
    "tiktoken.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
)
"""Files fetched from the Hub: weights in safetensors, configs, tokenizer and chat-template files."""

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_TRUE = {"1", "true", "yes", "on", "y", "t"}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set now (or was when huggingface_hub was imported)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path | None:
    """The Hub cache from ``HF_HUB_CACHE`` or ``HF_HOME``, read now; None for huggingface_hub's default."""
    if cache := os.environ.get("HF_HUB_CACHE"):
        return Path(cache).expanduser()
    if home := os.environ.get("HF_HOME"):
        return Path(home).expanduser() / "hub"
    return None


def resolve_source(source: str | os.PathLike[str], revision: str | None = None) -> Path:
    """The local directory holding the checkpoint ``source`` (a directory, or a Hub repo id to fetch)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConvertError(f"source {str(source)!r} is a file; pass the model directory that contains it")
        if revision is not None:
            raise ConvertError(
                f"revision={revision!r} only applies to Hub repo ids, but {source!r} is a directory"
            )
        return path
    text = os.fspath(source)
    if not _REPO_ID.fullmatch(text):
        raise ConvertError(f"source {text!r} is neither an existing directory nor a Hub repo id ('org/name')")
    return _download(text, revision)


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = hub_offline()
    cache_dir = hub_cache_dir()
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                allow_patterns=list(HUB_ALLOW_PATTERNS),
                local_files_only=offline,
            )
        )
    except LocalEntryNotFoundError as exc:
        cache = cache_dir or "the default Hugging Face cache"
        if offline:
            raise HubUnavailableError(
                f"{where} is not in {cache} and HF_HUB_OFFLINE is set, so it cannot be downloaded: unset "
                "HF_HUB_OFFLINE (or run `hf download` on a connected machine) or pass a local directory"
            ) from exc
        raise HubUnavailableError(
            f"{where} could not be reached on the Hub and is not in {cache}: check the network connection "
            "or pass a local directory"
        ) from exc
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise HubUnavailableError(
            f"{where}: the repo does not exist or needs access (log in with `hf auth login`): {exc}"
        ) from exc
    except RevisionNotFoundError as exc:
        raise HubUnavailableError(f"{where}: revision {revision!r} does not exist") from exc
    except HFValidationError as exc:
        raise ConvertError(f"{repo_id!r} is not a valid Hub repo id: {exc}") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise HubUnavailableError(f"{where}: could not download from the Hub: {exc}") from exc
