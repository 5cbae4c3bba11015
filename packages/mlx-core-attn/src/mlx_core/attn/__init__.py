"""RoPE for every scaling scheme, attention masks and scaled dot-product attention with caches."""

__all__: list[str] = []
