"""``superlora serve``: the web app over one model and its adapters, local and offline."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from superlora.verb import add_verb

EPILOG = """examples:
  superlora serve                                        # smollm2-135m on http://127.0.0.1:7860
  superlora serve --adapter runs/e2e/lora runs/e2e/superweight --runs runs/e2e
  superlora serve --model ./my-hf-folder --superweights results/identify/x/superweights.json
  read -rsp 'USER:PASS: ' SUPERLORA_AUTH && export SUPERLORA_AUTH   # typed unseen, kept out of history
  superlora serve --host 0.0.0.0 --port 8080             # other machines, behind that login
  superlora serve --host 0.0.0.0 --auth alice:s3cret     # a login on the command line (and in shell history)
  superlora serve --host 0.0.0.0 --insecure-no-auth      # anyone who can reach this machine: think twice
  superlora serve --adapter runs/e2e/lora --api          # the app, and an OpenAI-compatible API under /v1
  superlora serve --adapter runs/e2e/lora --api-only     # only the API (no web UI)

OpenAI-compatible API (--api, --api-only), on the same host and port; the models are "base" and each adapter:
  curl http://127.0.0.1:7860/v1/models
  curl http://127.0.0.1:7860/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"model": "lora", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}'
  curl -N http://127.0.0.1:7860/v1/completions -u alice:s3cret -H 'Content-Type: application/json' \\
       -d '{"model": "base", "prompt": "The capital of France is", "max_tokens": 16, "stream": true}'
and in Python, with the openai client:
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:7860/v1", api_key="alice:s3cret")  # any key without a login
  for chunk in client.chat.completions.create(
      model="lora", messages=[{"role": "user", "content": "Hi"}], temperature=0, stream=True
  ):
      print(chunk.choices[0].delta.content or "", end="", flush=True)
Chat prompts with the adapter's recorded chat template (as the Chat tab), completions with its completion
template (as the Completion tab); temperature 0 is greedy; max_tokens is capped by --max-new-tokens;
top_p, stop (up to 4 strings) and seed are honoured. With a login, the API wants it in the Authorization
header: "Bearer USER:PASS" (the openai client's api_key) or basic auth (curl -u USER:PASS).

A --host other than 127.0.0.1/localhost/::1 is refused unless a login is set (--auth USER:PASS or
$SUPERLORA_AUTH=USER:PASS; --auth wins) or --insecure-no-auth is given. Plain http sends the login
in clear: on an untrusted network put the app behind an https proxy. The app takes no files: uploads
over 1 KB are refused, and Gradio's temp folder is a private one removed when the server stops.
Refused requests (a wrong login, a forbidden file, an oversized upload) are logged one line each.

Tabs: E2E generator (base vs adapters, slot check), Chat (streaming), Super-weight explorer
(zero/scale/restore a weight and regenerate), Runs (configs, metrics, loss curves).
The model loads once; requests queue and run one at a time (--concurrency), API requests included."""


def register(subparsers) -> None:
    p = add_verb(
        subparsers,
        "serve",
        help="web app: E2E generator, chat, super-weight explorer, training runs",
        description="Serve a local Gradio app over one model and its LoRA adapters (offline, 127.0.0.1).",
        epilog=EPILOG,
    )
    p.add_argument("--model", default="smollm2-135m", help="model reference (default: smollm2-135m)")
    p.add_argument(
        "--adapter",
        action="extend",
        nargs="+",
        default=[],
        metavar="RUN",
        help="training run folder or peft adapter folder (repeatable)",
    )
    p.add_argument("--runs", metavar="DIR", help="training runs for the Runs tab (default: ./runs if present)")
    p.add_argument("--superweights", metavar="FILE", help="superweights.json (default: results/identify/<model>/)")
    p.add_argument("--data", metavar="DIR", help="E2E data folder for the slot values (default: $SUPERLORA_E2E_DIR)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument(
        "--auth",
        metavar="USER:PASS",
        help="require this login (default: $SUPERLORA_AUTH if set); needed for a --host others can reach",
    )
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve a non-loopback --host without a login (anyone who can reach it can use the app)",
    )
    p.add_argument(
        "--api", action="store_true", help="also serve an OpenAI-compatible API under /v1 (same host, port and login)"
    )
    p.add_argument("--api-only", action="store_true", help="serve only the OpenAI-compatible API (no web UI)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per model call (default: 1)")
    p.add_argument("--concurrency", type=int, default=1, help="model requests running at once (default: 1)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="server-side cap on new tokens (default: 256)")
    p.add_argument("--max-input-chars", type=int, default=2000, help="server-side cap on a text input (default: 2000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from superlora.app.access import check_exposure, is_loopback, login_from
    from superlora.errors import SuperloraError

    if min(args.concurrency, args.threads, args.max_new_tokens, args.max_input_chars) < 1:
        raise SuperloraError("--threads, --concurrency, --max-new-tokens and --max-input-chars must be at least 1")
    login = login_from(args.auth, os.environ)
    check_exposure(args.host, login, args.insecure_no_auth)  # before anything slow loads
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from superlora.app.offline import offline_environment

    offline_environment()  # before Gradio and the Hugging Face libraries are imported
    from superlora.app.limits import Limits
    from superlora.app.state import AppState

    runs_dir = args.runs or ("runs" if Path("runs").is_dir() else None)
    limits = Limits(
        max_new_tokens=args.max_new_tokens,
        max_e2e_new_tokens=min(128, args.max_new_tokens),
        max_input_chars=args.max_input_chars,
        concurrency=args.concurrency,
    )
    started = time.perf_counter()
    state = AppState.load(args.model, args.adapter, runs_dir, args.superweights, args.data, limits, args.threads)
    print(f"loaded {args.model} with {len(state.adapters)} adapter(s) in {time.perf_counter() - started:.1f} s")
    if login is None and not is_loopback(args.host):
        print(f"warning: binding {args.host}: anyone who can reach this machine can use the app", file=sys.stderr)
    behind = f", login required as {login[0]!r}" if login else ""
    if args.api_only:
        from superlora.app import api

        print(f"serving the OpenAI-compatible API on {api_url(args.host, args.port)}  (Ctrl+C to stop{behind})")
        sys.stdout.flush()
        api.serve(state, args.host, args.port, login, block=True)
        return 0
    from superlora.app.ui import build_app, launch  # Gradio loads here, not for --api-only

    demo = build_app(state)
    extra = {}
    if args.api:
        from superlora.app import api

        extra["api"] = api.router(state, login)
    print(f"serving on http://{args.host}:{args.port}/  (Ctrl+C to stop{behind})", flush=True)
    if args.api:
        print(f"OpenAI-compatible API on {api_url(args.host, args.port)}", flush=True)
    launch(demo, args.host, args.port, block=True, auth=login, **extra)
    return 0


def api_url(host: str, port: int) -> str:
    """The API's base URL as a client writes it (an IPv6 host in brackets)."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"
