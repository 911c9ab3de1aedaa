"""LoRA fine-tuning on E2E: layer selection, resumable training, merging (``superlora train``/``merge``)."""
