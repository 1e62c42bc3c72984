"""The embedded default provider: GGUF models run in process by llama-cpp-python.

`provider` streams replies, `options` declares model ids and options from llama-cpp-python's
signatures, `cache` keeps llama.cpp's context between calls.
"""

from .options import model_path, smollm2_path
from .provider import LlamaCppProvider, completion_kwargs, to_llama_messages

__all__ = [
    "LlamaCppProvider",
    "completion_kwargs",
    "model_path",
    "smollm2_path",
    "to_llama_messages",
]
