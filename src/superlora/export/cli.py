"""``superlora export``: registers the verb; the work is ``superlora.export.export`` (imported when it runs)."""

from __future__ import annotations

import argparse

from superlora.verb import add_verb

FORMATS = ("safetensors", "gguf", "adapter", "space")
DTYPES = ("f32", "f16", "bf16", "q8_0")

EPILOG = """examples:
  superlora export runs/e2e-lora --format gguf                 # -> runs/e2e-lora/export-gguf-f16/
  superlora export runs/e2e-lora --format gguf --dtype q8_0 --out models/e2e-q8
  ollama create e2e -f runs/e2e-lora/export-gguf-f16/Modelfile  # then: ollama run e2e "name[The Eagle], ..."
  superlora export runs/e2e-lora --format safetensors --dtype bf16
  superlora export runs/chat-lora --format adapter --push-to-hub me/smollm2-chat-lora
  superlora export runs/e2e-lora --format space                # -> runs/e2e-lora/export-space/
  (cd runs/e2e-lora/export-space && pip install -r requirements.txt && python app.py)  # http://127.0.0.1:7860
  superlora export runs/chat-lora --format space --push-to-hub me/smollm2-chat   # a Gradio Space on the Hub

GGUF: Llama-architecture (SmolLM2, Llama) and Qwen2 models with byte-level BPE tokenizers; the folder holds
the .gguf, an Ollama Modelfile (the run's prompt template, its stop tokens) and a model card (README.md).
Space: app.py (Gradio, needs no superlora), prompt.json (the run's prompt template, stop strings, the task's
decoding), requirements.txt, a README.md with the Spaces header, and the merged model in model/.
The output folder appears whole or not at all."""


def run(args: argparse.Namespace) -> int:
    from superlora.export.export import export

    folder, url = export(args.run, args.format, args.dtype, args.out, args.model, args.push_to_hub, args.private)
    files = ", ".join(sorted(p.name for p in folder.iterdir()))
    print(f"exported ({args.format}): {folder} ({files})")
    if url:
        print(f"pushed to the Hub: {url}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers,
        "export",
        help="export a run for other tools: merged safetensors, GGUF + Ollama Modelfile, a Gradio Space, or the "
        "adapter",
        description="Fold RUN/adapter into the base model it was trained on (in fp32; a QLoRA run's base "
        "dequantised) and write it for tools that know no peft: a plain Hugging Face folder (safetensors), or "
        "one GGUF file for llama.cpp / Ollama with a Modelfile that prompts as training did, or a Hugging Face "
        "Space (a Gradio app on CPU that prompts as training did); or copy the adapter itself. Every export has "
        "a model card; --push-to-hub uploads the folder in one commit.",
        epilog=EPILOG,
    )
    parser.add_argument("run", help="a run directory written by `superlora train`")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        help="weights of the export: GGUF default f16 (norms stay f32; q8_0: 8-bit blocks); safetensors and space "
        "default the base model's dtype",
    )
    parser.add_argument("--out", help="output folder (default: RUN/export-FORMAT[-DTYPE]); must be new or empty")
    parser.add_argument("--model", help="base model to merge into (default: the run's model); must be the same")
    parser.add_argument(
        "--push-to-hub", metavar="REPO", help="upload the export to this Hub repository (a Space for --format space)"
    )
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    parser.set_defaults(func=run)
