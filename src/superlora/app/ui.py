"""Assemble the tabs into one Gradio app and launch it locally and offline.

Importing this module sets the offline environment before Gradio and the Hugging Face libraries load
(they read those switches at import time).
"""

from __future__ import annotations

from superlora.app.offline import offline_environment, sigterm_interrupts

offline_environment()

import gradio as gr  # noqa: E402
from fastapi import APIRouter  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from superlora.app.access import RequestLog  # noqa: E402
from superlora.app.state import AppState  # noqa: E402
from superlora.app.tabs import chat, classify, complete, e2e, explorer, runs  # noqa: E402

CSS = """
.sl-cards { display: flex; flex-wrap: wrap; gap: 12px; }
.sl-card { flex: 1 1 300px; border: 1px solid #d0d4da; border-radius: 8px; padding: 10px 12px; }
.sl-card-head { font-size: 0.9em; opacity: 0.85; margin-bottom: 6px; }
.sl-output { font-size: 1.05em; margin: 6px 0 10px; }
.sl-legend { font-size: 0.85em; margin-bottom: 8px; }
.sl-chip { display: inline-block; border-radius: 10px; padding: 1px 8px; margin: 2px 3px 2px 0; font-size: 0.85em;
           color: #1a1a1a; }
.sl-ok { background: #d6f5dd; }
.sl-missing { background: #ffc9c9; text-decoration: line-through; }
.sl-wrong { background: #ffe2a8; }
.sl-added { background: #e3d4ff; font-style: italic; }
"""
MAX_UPLOAD_BYTES = 1024  # the app has no file inputs, and Gradio has no switch to turn its upload route off


def build_app(state: AppState) -> gr.Blocks:
    """The tabs over one shared state; nothing here loads a model."""
    loaded = state.loaded
    adapters = ", ".join(a.name for a in state.adapters) or "none"
    with gr.Blocks(title="superlora", analytics_enabled=False) as demo:
        gr.Markdown(
            f"## superlora · `{loaded.name}` ({loaded.arch.model_type}, {loaded.arch.num_blocks} blocks) · "
            f"adapters: {adapters}"
        )
        with gr.Tabs():
            if state.classifier:  # a classification head: nothing to generate with
                with gr.Tab("Classification", id="classify", elem_id="tab-classify"):
                    classify.build(state)
            else:
                with gr.Tab("E2E generator", id="e2e", elem_id="tab-e2e"):
                    e2e.build(state)
                with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
                    chat.build(state)
                with gr.Tab("Completion", id="complete", elem_id="tab-complete"):
                    complete.build(state)
            if not state.classifier:  # it regenerates text to show the damage: not for a classification head
                with gr.Tab("Super-weight explorer", id="explorer", elem_id="tab-explorer"):
                    explorer.build(state)
            with gr.Tab("Runs", id="runs", elem_id="tab-runs"):
                runs.build(state, demo)
    demo.queue(max_size=state.limits.queue_size, default_concurrency_limit=state.limits.concurrency)
    return demo


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int | None = None,
    block: bool = True,
    auth: tuple[str, str] | None = None,
    api: APIRouter | None = None,
):
    """Serve locally: no share link, no SSR (it needs Node), no monitoring or run-history pages.

    ``auth`` is the one login Gradio then asks for. Uploads are capped at ``MAX_UPLOAD_BYTES`` (413
    beyond), and ``RequestLog`` gives each refused or failed request one log line. With ``block``,
    SIGTERM stops the server as Ctrl+C does, so the private temp folder is still removed at exit.

    ``api`` (``superlora.app.api.router``) adds the OpenAI-compatible routes to the very app Gradio serves:
    handed to FastAPI at construction, they come before Gradio's own routes and exist before the first
    request, on the same host and port. They check the login themselves (Gradio's guards only its own).
    """
    app_kwargs = {"middleware": [Middleware(RequestLog)]}  # a fresh dict: Gradio adds to it
    if api is not None:
        app_kwargs["routes"] = list(api.routes)
    settings = dict(
        server_name=host,
        server_port=port,
        auth=auth,
        max_file_size=MAX_UPLOAD_BYTES,
        app_kwargs=app_kwargs,
        share=False,
        inbrowser=False,
        show_error=True,
        quiet=True,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
        run_history=False,
        footer_links=["api"],
        css=CSS,
        theme=gr.themes.Soft(),
    )
    if not block:
        return demo.launch(prevent_thread_lock=True, **settings)
    with sigterm_interrupts():
        try:
            return demo.launch(prevent_thread_lock=False, **settings)  # returns after Ctrl+C (Gradio catches it)
        except KeyboardInterrupt:  # a Ctrl+C that lands while Gradio is still starting up
            demo.close()
            return None
