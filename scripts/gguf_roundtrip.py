"""Load an exported GGUF back with transformers and compare it with the run's merged model on real E2E text.

    python scripts/gguf_roundtrip.py RUN EXPORT_DIR [--data ../shared/data/e2e] [--mrs 20]

Prints the largest logit difference, the share of positions with the same greedy token, and greedy
descriptions of the first MRs from both models (they should read the same).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from superlora.training.merge import merged_model
from superlora.training.rundir import open_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("export")
    parser.add_argument("--data", default="../shared/data/e2e")
    parser.add_argument("--mrs", type=int, default=20)
    args = parser.parse_args()
    folder = Path(args.export)
    name = next(folder.glob("*.gguf")).name
    gguf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    merged, loaded, _ = merged_model(args.run)
    merged.eval()
    template = open_run(Path(args.run)).template()
    with open(Path(args.data) / "original" / "testset_w_refs.csv", newline="", encoding="utf-8") as f:
        mrs = list(dict.fromkeys(row["mr"] for row in csv.DictReader(f)))[: args.mrs]
    worst, same, total, equal_text = 0.0, 0, 0, 0
    for mr in mrs:
        ids = torch.tensor([template.prompt_ids(loaded.tokenizer, mr)])  # the prompt as training and evaluate see it
        assert template.prompt_ids(tok, mr) == ids[0].tolist(), "the GGUF's tokenizer cuts the prompt differently"
        with torch.no_grad():
            a, b = merged(input_ids=ids).logits, gguf(input_ids=ids).logits
            worst = max(worst, float((a - b).abs().max()))
            same += int((a.argmax(-1) == b.argmax(-1)).sum())
            total += ids.shape[1]
            outs = [
                m.generate(ids, max_new_tokens=40, do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id)
                for m in (merged, gguf)
            ]
        texts = [loaded.tokenizer.decode(o[0, ids.shape[1] :], skip_special_tokens=True).split("\n")[0] for o in outs]
        equal_text += texts[0] == texts[1]
    print(f"GGUF {name}: {len(mrs)} MRs, {total} positions")
    print(f"largest |logit difference| vs the merged model: {worst:.4f}")
    print(f"same greedy next token: {same}/{total} positions ({100 * same / total:.1f}%)")
    print(f"same greedy description (40 new tokens, first line): {equal_text}/{len(mrs)}")
    print(f"example: {mrs[0]} -> {texts[0]!r}")


if __name__ == "__main__":
    main()
