"""Tiny self-contained MLX models (float32, random weights) and statistics helpers for the spec tests."""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np


class TinyAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)

    def __call__(self, x: mx.array, cache: Any) -> mx.array:
        B, L, _ = x.shape
        q = self.q(x).reshape(B, L, self.n_heads, -1).transpose(0, 2, 1, 3)
        k = self.k(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        offset = cache.offset if cache is not None else 0
        mask = cache.make_mask(L) if cache is not None else ("causal" if L > 1 else None)
        q = mx.fast.rope(q, self.head_dim, traditional=False, base=10000.0, scale=1.0, offset=offset)
        k = mx.fast.rope(k, self.head_dim, traditional=False, base=10000.0, scale=1.0, offset=offset)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5, mask=mask)
        return self.o(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class TinyBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        self.attn = TinyAttention(dim, n_heads, n_kv_heads)
        self.norm1 = nn.RMSNorm(dim)
        self.norm2 = nn.RMSNorm(dim)
        self.up = nn.Linear(dim, 2 * dim, bias=False)
        self.down = nn.Linear(2 * dim, dim, bias=False)

    def __call__(self, x: mx.array, cache: Any) -> mx.array:
        x = x + self.attn(self.norm1(x), cache)
        return x + self.down(nn.silu(self.up(self.norm2(x))))


class TinyLM(nn.Module):
    """A 2-layer llama-like decoder: model(tokens [B, L], cache=caches) -> logits [B, L, V]."""

    def __init__(
        self, vocab_size: int = 64, dim: int = 32, n_layers: int = 2, seed: int = 0, scale: float = 3.0
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, dim)
        self.layers = [TinyBlock(dim, 4, 2) for _ in range(n_layers)]
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.scale = scale
        mx.random.seed(seed)
        params = self.parameters()
        from mlx.utils import tree_flatten, tree_unflatten

        flat = [
            (k, mx.random.normal(v.shape) * (0.3 if v.ndim > 1 else 0.0) + (1.0 if v.ndim == 1 else 0.0))
            for k, v in tree_flatten(params)
        ]
        self.update(tree_unflatten(flat))
        mx.eval(self.parameters())

    def __call__(self, tokens: mx.array, cache: list[Any] | None = None) -> mx.array:
        h = self.embed(tokens)
        caches = cache if cache is not None else [None] * len(self.layers)
        for layer, c in zip(self.layers, caches, strict=True):
            h = layer(h, c)
        return self.head(self.norm(h)) * self.scale


class PrefixMeanLayer(nn.Module):
    """Stores one-hot tokens in its cache; the output at each position is the mean of the cached prefix."""

    def __call__(self, onehot: mx.array, cache: Any) -> mx.array:
        L = onehot.shape[1]
        x = onehot[:, None]  # [B, 1, L, V]
        mask = cache.make_mask(L) if cache is not None else ("causal" if L > 1 else None)
        k = v = x
        if cache is not None:
            k, v = cache.update_and_fetch(x, x)
        zeros = mx.zeros_like(x)  # equal scores: softmax = uniform over the allowed (prefix) keys
        return mx.fast.scaled_dot_product_attention(zeros, k, v, scale=1.0, mask=mask)[:, 0]


class LookupLM(nn.Module):
    """Tiny-vocabulary model with enumerable sequence probabilities.

    logits_t = A[x_t] + mean(onehot(x_0..x_t)) @ C: a bigram table plus a dependence on the whole history
    through the KV cache, so a cache that is not rolled back correctly changes the distribution.
    """

    def __init__(self, vocab_size: int = 4, seed: int = 0, scale: float = 1.5) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.vocab_size = vocab_size
        self.A_np = rng.normal(size=(vocab_size, vocab_size)) * scale
        self.C_np = rng.normal(size=(vocab_size, vocab_size)) * scale
        self.A = mx.array(self.A_np.astype(np.float32))
        self.C = mx.array(self.C_np.astype(np.float32))
        self.layers = [PrefixMeanLayer()]

    def __call__(self, tokens: mx.array, cache: list[Any] | None = None) -> mx.array:
        onehot = (tokens[..., None] == mx.arange(self.vocab_size)).astype(mx.float32)
        ctx = self.layers[0](onehot, cache[0] if cache is not None else None)
        return self.A[tokens] + ctx @ self.C

    def logits_np(self, seq: list[int]) -> np.ndarray:
        """float64 reference: next-token logits after ``seq``."""
        counts = np.bincount(seq, minlength=self.vocab_size) / len(seq)
        return self.A_np[seq[-1]] + counts @ self.C_np


def filtered_probs_np(
    logits: np.ndarray, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> np.ndarray:
    """float64 reference of the sampler's distribution (mlx-lm order: top-p then top-k, then temperature)."""
    logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    probs = np.exp(logp)
    keep = np.ones_like(probs, dtype=bool)
    if top_p < 1.0:
        order = np.argsort(-probs)
        mass_above = np.concatenate([[0.0], np.cumsum(probs[order])[:-1]])
        keep[order[mass_above >= top_p]] = False
    if 0 < top_k < len(probs):
        ranked = np.argsort(-np.where(keep, logp, -np.inf))
        keep[ranked[top_k:]] = False
    z = np.where(keep, logp / temperature, -np.inf)
    z = np.exp(z - z.max())
    return z / z.sum()


def sequence_probs_np(model: LookupLM, prompt: list[int], length: int, **sampler: Any) -> dict[tuple, float]:
    """Exact probability of every continuation of ``length`` tokens (enumerated)."""
    out: dict[tuple, float] = {(): 1.0}
    for _ in range(length):
        nxt: dict[tuple, float] = {}
        for seq, pr in out.items():
            p = filtered_probs_np(model.logits_np(prompt + list(seq)), **sampler)
            for tok, pt in enumerate(p):
                if pt > 0:
                    nxt[(*seq, tok)] = pr * pt
        out = nxt
    return out


def _gammq(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (Numerical Recipes' series / continued fraction)."""
    if x <= 0:
        return 1.0
    gln = math.lgamma(a)
    if x < a + 1:
        ap, s, d = a, 1.0 / a, 1.0 / a
        for _ in range(10_000):
            ap += 1
            d *= x / ap
            s += d
            if abs(d) < abs(s) * 1e-15:
                break
        return 1.0 - s * math.exp(-x + a * math.log(x) - gln)
    b, c, d = x + 1 - a, 1e300, 1 / (x + 1 - a)
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - gln) * h


def chi_square_pvalue(
    counts: dict[tuple, int], probs: dict[tuple, float], min_expected: float = 5.0
) -> float:
    """Pearson chi-square goodness-of-fit p-value; bins with expected count < min_expected are pooled.

    An observed outcome with zero reference probability gives p = 0.
    """
    n = sum(counts.values())
    if any(probs.get(k, 0.0) == 0.0 for k in counts):
        return 0.0
    stat, dof = 0.0, -1
    pooled_o, pooled_e = 0.0, 0.0
    for key, pr in probs.items():
        e, o = n * pr, counts.get(key, 0)
        if e < min_expected:
            pooled_o, pooled_e = pooled_o + o, pooled_e + e
        else:
            stat += (o - e) ** 2 / e
            dof += 1
    if pooled_e > 0:
        stat += (pooled_o - pooled_e) ** 2 / pooled_e
        dof += 1
    return _gammq(dof / 2, stat / 2)
