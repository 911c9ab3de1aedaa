"""The app serves an exported model (safetensors folder or GGUF file) like any other model: its completion of a
prompt is the merged model's own greedy completion."""

from __future__ import annotations

import pytest

pytest.importorskip("gradio")

import superlora.app.ui  # noqa: E402,F401  (sets the offline environment before Gradio loads)
from superlora.app.generate import complete  # noqa: E402
from superlora.app.state import BASE, AppState  # noqa: E402
from superlora.cli import main  # noqa: E402
from test_export import E2E_TEXT, merged_reference, trained_run  # noqa: E402,F401  (the module's run fixture)

PROMPT = E2E_TEXT.split("\n")[0]


def greedy(model, tokenizer, prompt: str, new_tokens: int = 12) -> str:
    import torch

    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize("fmt", ["safetensors", "gguf"])
def test_the_app_loads_an_exported_model_and_completes_as_the_merge_does(fmt, trained_run, tmp_path):  # noqa: F811
    out = tmp_path / fmt
    assert main(["export", str(trained_run), "--format", fmt, "--dtype", "f32", "--out", str(out)]) == 0
    model_ref = str(next(out.glob("*.gguf"))) if fmt == "gguf" else str(out)
    state = AppState.load(model_ref)
    assert state.targets == [BASE] and state.loaded.arch.num_blocks > 0
    merged, tokenizer = merged_reference(trained_run)
    want = greedy(merged, tokenizer, PROMPT)
    with state.use(BASE) as model:
        got = greedy(model, state.loaded.tokenizer, PROMPT)
    assert got == want and want.strip()
    results = complete(state, PROMPT, [BASE], 1, 12)  # the Completion tab's own call
    assert results[0].output.strip() and results[0].target == BASE
