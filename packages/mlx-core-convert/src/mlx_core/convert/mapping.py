"""WeightMapping: declarative renames, drops and per-tensor transforms applied while streaming."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np

from .errors import ConvertError

Transform = Callable[[mx.array], Any]
"""``fn(array) -> array`` (an ``mx.array`` or a numpy array) applied to one tensor."""


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConvertError(f"invalid regex {pattern!r} in WeightMapping.{what}: {exc}") from exc


@dataclass(frozen=True)
class WeightMapping:
    """How source tensor names become output names, which tensors are dropped and which are transformed.

    For a source name, in order:

    1. ``drop``: regexes; if any is found in the name (``re.search``) the tensor is skipped.
    2. ``exact``: ``{old: new}``; an exact hit gives the final name.
    3. otherwise ``prefix``: ``{old_prefix: new_prefix}``, the longest matching prefix is replaced, then
       ``regex``: ``[(pattern, replacement)]``, each applied in turn with ``re.sub``.

    ``transforms``: ``[(regex, fn)]`` matched against the *output* name; every matching ``fn(array)`` runs
    in order (e.g. transpose a conv weight). Transforms run before the dtype cast and quantization.
    """

    exact: Mapping[str, str] = field(default_factory=dict)
    prefix: Mapping[str, str] = field(default_factory=dict)
    regex: Sequence[tuple[str, str]] = ()
    drop: Sequence[str] = ()
    transforms: Sequence[tuple[str, Transform]] = ()

    def __post_init__(self) -> None:
        if isinstance(self.drop, str):
            raise TypeError("WeightMapping.drop must be a sequence of regexes, not a single string")
        object.__setattr__(self, "_drop", [_compile(p, "drop") for p in self.drop])
        object.__setattr__(self, "_regex", [(_compile(p, "regex"), r) for p, r in self.regex])
        object.__setattr__(self, "_prefix", sorted(self.prefix.items(), key=lambda kv: -len(kv[0])))
        for pattern, fn in self.transforms:
            if not callable(fn):
                raise TypeError(
                    f"WeightMapping.transforms[{pattern!r}] must be callable, got {type(fn).__name__}"
                )
        object.__setattr__(
            self, "_transforms", [(_compile(p, "transforms"), fn) for p, fn in self.transforms]
        )

    def rename(self, name: str) -> str | None:
        """The output name of source tensor ``name``, or None when it is dropped."""
        if any(r.search(name) for r in self._drop):  # type: ignore[attr-defined]
            return None
        if name in self.exact:
            return self.exact[name]
        for old, new in self._prefix:  # type: ignore[attr-defined]
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        for regex, replacement in self._regex:  # type: ignore[attr-defined]
            name = regex.sub(replacement, name)
        if not name:
            raise ConvertError("a WeightMapping rule produced an empty tensor name")
        return name

    def transform(self, name: str, array: mx.array) -> mx.array:
        """Apply every transform whose regex is found in the output ``name``."""
        for regex, fn in self._transforms:  # type: ignore[attr-defined]
            if regex.search(name):
                result = fn(array)
                if isinstance(result, np.ndarray):
                    result = mx.array(result)
                if not isinstance(result, mx.array):
                    raise TypeError(
                        f"transform for {regex.pattern!r} returned {type(result).__name__} for {name!r}; "
                        "it must return an mx.array or numpy array"
                    )
                array = result
        return array

    @property
    def is_identity(self) -> bool:
        """True when the mapping renames, drops and transforms nothing."""
        return not (self.exact or self.prefix or self.regex or self.drop or self.transforms)
