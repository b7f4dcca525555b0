"""The export stage's building blocks: HF folder → GGUF (llama.cpp's converter), quantize, inspect."""

from edgetune.export.convert import convert_to_gguf
from edgetune.export.inspect import inspect_gguf
from edgetune.export.quantize import quantize_gguf

__all__ = ["convert_to_gguf", "inspect_gguf", "quantize_gguf"]
