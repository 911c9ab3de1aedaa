"""superlora: LoRA fine-tuning guided by the super weights of language models."""

import logging

__version__ = "0.1.0"

# bitsandbytes 0.50 warns on import, on every CPU without the optional `kernels` package, that it falls back to
# its own 4-bit matmul; peft imports it whenever it is installed, so every command's stderr would start with it
# (and a one-line error would be two lines). The fallback is what superlora uses; nothing is lost by hiding it.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
