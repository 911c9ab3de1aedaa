"""Samples -> input ids and labels; the loss mask follows from the sample's shape.

* a completion trains on its completion (and the eos after it), never on the prompt;
* a labeled text trains a classification head on its label (one per row, no token mask);
* a conversation trains on its assistant turns, each with its end-of-turn token, found by rendering the
  conversation's prefixes with the chat template (no ``{% generation %}`` markers needed: SmolLM2's
  template has none). ``loss_on`` chooses all assistant turns, the last one, or every token.

Labels are IGNORE_INDEX where no loss is taken; a row with no label left is dropped by the caller.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

from superlora.data.shapes import Completion, Conversation, Labeled
from superlora.errors import SuperloraError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from superlora.data.templates import ChatTemplate, CompletionTemplate, LabelTemplate

IGNORE_INDEX = -100  # label value that torch's cross-entropy skips
LossOn = Literal["assistant", "last", "all"]


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def tokenize_completion(
    tokenizer: PreTrainedTokenizerBase, template: CompletionTemplate, sample: Completion, max_length: int
) -> dict[str, list[int]]:
    """input_ids, attention_mask and labels for one completion, with loss on the completion only.

    Prompt and completion are tokenized separately and concatenated, so the boundary between them is
    exact; the completion ends with eos so the model learns to stop; if too long, it is cut from its end
    (losing the eos). A prompt that leaves no room for the completion is an error.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise SuperloraError("the tokenizer has no eos token, so the model could not learn to stop")
    prompt = template.prompt_ids(tokenizer, sample.prompt)
    if len(prompt) >= max_length:
        raise SuperloraError(
            f"prompt for {_quote(sample.prompt)} is {len(prompt)} tokens, which leaves no room "
            f"for the completion within max_length={max_length}"
        )
    target = list(tokenizer(template.target_text(sample.completion), add_special_tokens=False)["input_ids"]) + [eos]
    target = target[: max_length - len(prompt)]
    input_ids = prompt + target
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": [IGNORE_INDEX] * len(prompt) + target,
    }


def tokenize_labeled(
    tokenizer: PreTrainedTokenizerBase, template: LabelTemplate, sample: Labeled, max_length: int
) -> dict[str, list[int] | int]:
    """input_ids, attention_mask and the class index; a text longer than max_length is cut to it, keeping the
    tokenizer's closing special token (``truncated`` says so, for the count in the log)."""
    if not 0 <= sample.label < len(template.labels):
        raise SuperloraError(
            f"label {sample.label} of {_quote(sample.text)} is not one of 0..{len(template.labels) - 1}"
        )
    ids, truncated = text_ids(tokenizer, template, sample.text, max_length)
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "label": sample.label, "truncated": truncated}


def text_ids(
    tokenizer: PreTrainedTokenizerBase, template: LabelTemplate, text: str, max_length: int
) -> tuple[list[int], bool]:
    """A classifier's input ids, cut to ``max_length`` keeping the closing special token; and whether cut."""
    ids = template.prompt_ids(tokenizer, text)
    if len(ids) <= max_length:
        return ids, False
    closing = [ids[-1]] if ids[-1] in set(tokenizer.all_special_ids) else []
    return ids[: max_length - len(closing)] + closing, True


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, template: ChatTemplate, conversation: Conversation
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and, per assistant turn, the character span from its first character to
    the end of the template's text for that turn (content, end-of-turn token, separators).

    Found by rendering prefixes: the text up to turn i with the generation prompt, and up to turn i
    included. Both must be prefixes of the whole conversation's text, or the mask cannot be exact.
    """
    messages = template.with_system(conversation)
    full = template.render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = template.render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = template.render(tokenizer, messages[: i + 1])
        if not (full.startswith(before) and full.startswith(upto) and len(before) <= len(upto)):
            raise SuperloraError(
                "the chat template renders the first turns of a conversation differently from the whole, so "
                "the assistant tokens cannot be found by prefixes (set task.loss_on=all to train on every token)"
            )
        spans.append((len(before), len(upto)))
    return full, spans


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
    conversation: Conversation,
    max_length: int,
    loss_on: LossOn = "assistant",
) -> dict[str, list[int]] | None:
    """input_ids, attention_mask and labels of a conversation; None when no labelled token fits max_length.

    In each assistant turn the labels cover the tokens from the turn's first one up to and including the
    first end-of-turn token (``template.stop_ids``); what the template adds after it (a line break before
    the next turn) is not trained on. A turn without an end-of-turn token is an error: the model would
    never learn to stop.
    """
    full, spans = assistant_spans(tokenizer, template, conversation)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
    if loss_on == "all":
        labels = list(ids)
    else:
        labels = [IGNORE_INDEX] * len(ids)
        stops = set(template.stop_ids(tokenizer))
        for start, end in spans[-1:] if loss_on == "last" else spans:
            closed = False
            for t, (begin, _) in enumerate(offsets):
                if start <= begin < end:
                    labels[t] = ids[t]
                    if ids[t] in stops:
                        closed = True
                        break
            if not closed:
                raise SuperloraError(
                    f"the chat template ends an assistant turn without an end-of-turn token "
                    f"({_quote(full[start:end][-40:])}), so the model could not learn to stop"
                )
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels[1:]):
        return None
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def distinct_pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """A pad id that is not eos (SmolLM2 ships pad = eos = <|im_end|>): the tokenizer's own when it differs,
    else unk, else a special token meant for padding or end of text. Padding is masked by position, so any
    id other than eos is correct; a distinct one keeps pad and end-of-turn apart wherever ids are compared.
    """
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos:
        return tokenizer.pad_token_id
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id != eos:
        return tokenizer.unk_token_id
    vocab = tokenizer.get_vocab()
    for name in ("<|pad|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>", "<|endoftext|>", "</s>"):
        if name in vocab and vocab[name] != eos:
            return vocab[name]
    raise SuperloraError("the tokenizer has no token to pad with other than eos; give it a pad token")
