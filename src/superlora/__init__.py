"""superlora: LoRA fine-tuning guided by the super weights of language models."""

__version__ = "0.1.0"
