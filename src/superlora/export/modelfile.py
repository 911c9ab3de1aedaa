"""An Ollama ``Modelfile`` next to the GGUF: ``ollama create NAME -f Modelfile`` then prompts as training did.

The prompt is the run's template (``data.templates``), rewritten in Ollama's Go-template syntax:

- a completion run (E2E) is the template's prompt text around ``{{ .Prompt }}``, so
  ``ollama run NAME "name[The Eagle], eatType[pub]"`` sees exactly the prompt ``evaluate`` gives the model;
- a chat run whose template is ChatML (SmolLM2, Qwen, ``chat_template: chatml``) is ChatML over
  ``.Messages``; a system prompt the template adds on its own (SmolLM2's) or the run's ``system:`` becomes
  ``SYSTEM``. Any other chat template has no faithful Go translation: the Modelfile then leaves TEMPLATE out
  and Ollama derives one from the GGUF's ``tokenizer.chat_template``, which says so in a comment.

Stops are the template's own: its end-of-turn and eos tokens, and a line break for one-line completions.
Temperature 0: superlora evaluates greedily, so that is how the numbers in the model card were made.
"""

from __future__ import annotations

from typing import Any

from superlora.data.templates import ChatTemplate, CompletionTemplate, Template
from superlora.errors import SuperloraError

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SENTINEL = "\x00PROMPT\x00"

CHATML_GO = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    '{{- range .Messages }}{{- if or (eq .Role "user") (eq .Role "assistant") }}'
    "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}{{- end }}<|im_start|>assistant\n"
)


def go_literal(text: str) -> str:
    """``text`` as literal output of a Go template: ``{{`` would open an action, so it is printed by one."""
    return text.replace("{{", '{{ "{{" }}')


def triple_quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise SuperloraError(f'the run\'s {what} contains """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def parameter_value(text: str) -> str:
    """A PARAMETER value: quoted, or triple-quoted when it holds a line break or a quote."""
    if "\n" in text or '"' in text:
        return triple_quoted(text, "stop string")
    return f'"{text}"'


def completion_template(template: CompletionTemplate) -> str:
    # the prompt text only, as ``evaluate`` prompts: the target prefix (E2E's " ") belongs to the completion's first
    # token in training (" The"), so ending the prompt with it would feed the model a lone space it never saw
    before, _, after = template.prompt_text(SENTINEL).partition(SENTINEL)
    return go_literal(before) + "{{ .Prompt }}" + go_literal(after)


def is_chatml(jinja: str) -> bool:
    return IM_START in jinja and IM_END in jinja


def default_system(template: ChatTemplate, tokenizer: Any) -> str | None:
    """The system prompt a ChatML template writes when the conversation has none (SmolLM2's), or the run's."""
    if template.system:
        return template.system
    text = template.render(tokenizer, [{"role": "user", "content": "Q"}], add_generation_prompt=False)
    head = f"{IM_START}system\n"
    if not text.startswith(head) or IM_END not in text:
        return None
    return text[len(head) : text.index(IM_END)]


def stop_strings(template: Template, tokenizer: Any) -> list[str]:
    """The texts that end a reply, as the template's stop tokens spell them (one line: also a line break)."""
    if isinstance(template, CompletionTemplate):
        ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        extra = ["\n"] if template.one_line else []
    else:
        ids, extra = template.stop_ids(tokenizer), []
    texts = [tokenizer.decode([i]) for i in ids if i is not None]
    return list(dict.fromkeys([t for t in texts if t] + extra))


def modelfile_text(template: Template, tokenizer: Any, gguf_name: str, run_name: str) -> str:
    """The whole Modelfile for ``gguf_name`` (in the same folder) of run ``run_name``."""
    lines = [
        f"# Ollama Modelfile for superlora run {run_name}: ollama create {run_name} -f Modelfile",
        f"FROM ./{gguf_name}",
        "",
    ]
    if isinstance(template, CompletionTemplate):
        lines.append("# completion task: the prompt exactly as training built it; the model writes the rest")
        lines.append(f"TEMPLATE {triple_quoted(completion_template(template), 'prompt template')}")
    else:
        jinja = template.jinja(tokenizer)
        if is_chatml(jinja):
            lines.append("# chat task: the run's ChatML chat template")
            lines.append(f"TEMPLATE {triple_quoted(CHATML_GO, 'chat template')}")
            system = default_system(template, tokenizer)
            if system:
                lines.append(f"SYSTEM {triple_quoted(system, 'system prompt')}")
        else:
            lines.append(
                "# chat task: the run's chat template is not ChatML and has no faithful Go-template form here;"
            )
            lines.append("# Ollama derives one from the GGUF's tokenizer.chat_template (the run's template)")
    lines.append("")
    lines.append("# superlora evaluates greedily")
    lines.append("PARAMETER temperature 0")
    for stop in stop_strings(template, tokenizer):
        lines.append(f"PARAMETER stop {parameter_value(stop)}")
    return "\n".join(lines) + "\n"
