"""Generation loop, samplers, logits processors, tokenizers and streaming text."""

from .compiled import (
    CompiledDecodeStep,
    clear_compiled_steps,
    compile_unsupported_reason,
    static_caches_for,
)
from .detokenizer import StreamingDetokenizer, WindowStreamingDetokenizer
from .errors import GenerateError, ModelOutputError, PromptError, SamplerConfigError, TokenizerFilesError
from .forward import forward_logits, prefill
from .loop import Generate, GenerateBuilder, TokenEventStream, default_caches, generate, stream_generate
from .processors import (
    LogitsProcessor,
    make_frequency_penalty,
    make_logit_bias,
    make_logits_processors,
    make_presence_penalty,
    make_repetition_penalty,
)
from .protocols import LanguageModel, ModelInput, ModelOutput
from .response import GenerationChunk, Response
from .sampling import DefaultSampler, Sampler, apply_min_p, apply_top_k, apply_top_p, apply_xtc, make_sampler
from .text import TextAssembler
from .tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "CompiledDecodeStep",
    "DefaultSampler",
    "Generate",
    "GenerateBuilder",
    "GenerateError",
    "GenerationChunk",
    "LanguageModel",
    "LogitsProcessor",
    "ModelInput",
    "ModelOutput",
    "ModelOutputError",
    "PromptError",
    "Response",
    "Sampler",
    "SamplerConfigError",
    "StreamingDetokenizer",
    "TextAssembler",
    "TokenEventStream",
    "Tokenizer",
    "TokenizerFilesError",
    "WindowStreamingDetokenizer",
    "apply_min_p",
    "apply_top_k",
    "apply_top_p",
    "apply_xtc",
    "clear_compiled_steps",
    "compile_unsupported_reason",
    "default_caches",
    "forward_logits",
    "generate",
    "load_tokenizer",
    "make_frequency_penalty",
    "make_logit_bias",
    "make_logits_processors",
    "make_presence_penalty",
    "make_repetition_penalty",
    "make_sampler",
    "prefill",
    "static_caches_for",
    "stream_generate",
]
