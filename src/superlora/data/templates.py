"""Templates turn samples into text and own their stop tokens, so generation stops where training taught.

A run records its template in run.json (``record``) and everything that prompts the adapter later
(``evaluate``, ``serve``, ``merge``) rebuilds it from there (``from_record``): the prompt at inference is
the prompt of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from superlora.data.shapes import Conversation
from superlora.errors import SuperloraError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# A plain ChatML template for models that ship none (GPT-2, tiny test models): the format SmolLM2 and Qwen use.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def line_end_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids whose text contains a line break; they end a one-line completion like eos does.

    Passing them as extra eos ids is far cheaper than ``stop_strings``, which re-scans the whole
    vocabulary on every ``generate`` call.
    """
    cached = getattr(tokenizer, "_superlora_line_end_ids", None)
    if cached is None:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        cached = [i for i, text in enumerate(texts) if "\n" in text]
        tokenizer._superlora_line_end_ids = cached
    return cached


@dataclass(frozen=True)
class CompletionTemplate:
    """``prompt_format`` around the prompt; the completion follows after ``target_prefix``.

    ``one_line``: the completion is one line, so a line break ends generation like eos (E2E descriptions;
    a base model that never learned eos would otherwise ramble for max_new_tokens).
    """

    prompt_format: str = "{prompt}"
    target_prefix: str = " "
    one_line: bool = False
    kind = "completion"

    def prompt_text(self, prompt: str) -> str:
        return self.prompt_format.format(prompt=prompt)

    def target_text(self, completion: str) -> str:
        return self.target_prefix + completion

    def prompt_ids(self, tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
        """Prompt ids exactly as training sees them (with the tokenizer's default special tokens, e.g. BOS)."""
        return list(tokenizer(self.prompt_text(prompt))["input_ids"])

    def stop_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        return [tokenizer.eos_token_id, *(line_end_ids(tokenizer) if self.one_line else [])]

    def pad_id(self, tokenizer: PreTrainedTokenizerBase) -> int:
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def clean(self, text: str) -> str:
        return text.split("\n", 1)[0].strip() if self.one_line else text.strip()

    def record(self, tokenizer: PreTrainedTokenizerBase | None = None) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "prompt_format": self.prompt_format,
            "target_prefix": self.target_prefix,
            "one_line": self.one_line,
        }


@dataclass(frozen=True)
class ChatTemplate:
    """The model's own chat template (``tokenizer.apply_chat_template``), or ``chat_template`` when given
    (a Jinja string, or ``chatml``); ``system`` is prepended to conversations that have no system turn."""

    chat_template: str | None = None
    system: str | None = None
    kind = "chat"

    def jinja(self, tokenizer: PreTrainedTokenizerBase) -> str:
        if self.chat_template == "chatml":
            return CHATML
        template = self.chat_template or getattr(tokenizer, "chat_template", None)
        if not template:
            raise SuperloraError(
                "the model's tokenizer has no chat template; set task.chat_template=chatml (or a Jinja template)"
            )
        return template

    def with_system(self, conversation: Conversation | list[dict[str, str]]) -> list[dict[str, str]]:
        messages = conversation.as_dicts() if isinstance(conversation, Conversation) else list(conversation)
        if self.system and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.system}, *messages]
        return messages

    def render(
        self, tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], add_generation_prompt: bool = False
    ) -> str:
        return tokenizer.apply_chat_template(
            messages, chat_template=self.jinja(tokenizer), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def end_of_turn_id(self, tokenizer: PreTrainedTokenizerBase) -> int:
        """The special token the template writes right after an assistant reply (SmolLM2: <|im_end|>)."""
        cache = tokenizer.__dict__.setdefault("_superlora_end_of_turn", {})
        key = self.jinja(tokenizer)
        if key not in cache:
            probe = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "REPLY"}]
            text = self.render(tokenizer, probe)
            tail = text[text.rindex("REPLY") + len("REPLY") :]
            ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
            special = set(tokenizer.all_special_ids) | {
                i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)
            }
            if not ids or ids[0] not in special:
                if tokenizer.eos_token_id is None:
                    raise SuperloraError("the chat template writes no end-of-turn token and the tokenizer has no eos")
                cache[key] = tokenizer.eos_token_id
            else:
                cache[key] = ids[0]
        return cache[key]

    def stop_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        eot, eos = self.end_of_turn_id(tokenizer), tokenizer.eos_token_id
        return [eot] if eos in (None, eot) else [eot, eos]

    def prompt_ids(self, tokenizer: PreTrainedTokenizerBase, prompt: Conversation | list[dict[str, str]]) -> list[int]:
        """The conversation so far (no trailing assistant turn) with the generation prompt, as ids."""
        messages = self.with_system(prompt)
        if messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        text = self.render(tokenizer, messages, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def pad_id(self, tokenizer: PreTrainedTokenizerBase) -> int:
        from superlora.data.tokenize import distinct_pad_id

        return distinct_pad_id(tokenizer)

    def clean(self, text: str) -> str:
        return text.strip()

    def record(self, tokenizer: PreTrainedTokenizerBase | None = None) -> dict[str, Any]:
        """Kept in run.json: the template text itself, so a later tokenizer change cannot alter the prompt."""
        return {
            "kind": self.kind,
            "chat_template": self.jinja(tokenizer) if tokenizer is not None else self.chat_template,
            "system": self.system,
        }


@dataclass(frozen=True)
class LabelTemplate:
    """A text for a classification head: the tokenizer's own special tokens around it (BERT: [CLS] ... [SEP]),
    no prompt words, nothing generated; ``labels`` names the classes in index order."""

    labels: tuple[str, ...] = ("negative", "positive")
    kind = "label"

    def prompt_ids(self, tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
        return list(tokenizer(text)["input_ids"])

    def stop_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        return []

    def pad_id(self, tokenizer: PreTrainedTokenizerBase) -> int:
        """The id the head skips when it looks for a decoder's last token (its config's pad_token_id)."""
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def clean(self, text: str) -> str:
        return text.strip()

    def record(self, tokenizer: PreTrainedTokenizerBase | None = None) -> dict[str, Any]:
        return {"kind": self.kind, "labels": list(self.labels)}


Template = CompletionTemplate | ChatTemplate | LabelTemplate


def from_record(record: dict[str, Any]) -> Template:
    """The template a run recorded in run.json."""
    kind = record.get("kind")
    if kind == "completion":
        return CompletionTemplate(record["prompt_format"], record["target_prefix"], bool(record["one_line"]))
    if kind == "chat":
        return ChatTemplate(record.get("chat_template"), record.get("system"))
    if kind == "label":
        return LabelTemplate(tuple(record["labels"]))
    raise SuperloraError(f"run.json records an unknown template kind {kind!r}")
