"""``superlora bench``: training throughput, side by side with a plain transformers Trainer recipe.

All arms run in one process, interleaved over repeats (the order rotates each repeat), on the same model,
examples, LoRA config and batch size, each on a freshly loaded model:

- ``ref``: the reference recipe, plain ``transformers.Trainer`` + peft LoRA with default settings (fp32,
  dynamic padding, logits at every position, the model's default attention, torch's default threads);
- ``off``: superlora's path with every speed switch off, then each switch alone (``bf16``, ``target``,
  ``group``, ``eager``), the recipe's settings (``recipe``), the recipe without each switch (``no-bf16``, ...),
  the recipe with the other thread count (``threads``) and with ``torch.compile`` (``compile``).

The machine is shared and noisy, so a repeat measures every arm once, ratios are taken within a repeat
and medians over repeats are reported. Model FLOPs count what a frozen-base LoRA step has to compute
(``FLOP_FORMULA``); the peak is a matmul measured in the same run.


One module per concern: ``arms`` (what is compared), ``flops`` (FLOP model and matmul peaks), ``measure``
(one arm on a fresh model), ``report`` (the table), ``runner`` (the whole bench), ``cli`` (the verb).
"""
