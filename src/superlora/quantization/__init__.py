"""``superlora quantize``: how much round-to-nearest quantisation costs a model, and what keeping its super weights
in full precision saves (the super-weight paper's second claim, Yu et al. 2024, section 4)."""
