"""Tab 4: the training runs in the --runs folder: a summary table, loss curves, each run's config.

The browser selects a run by its name in that folder; the server maps names to folders itself, so
no path ever comes from the page.
"""

from __future__ import annotations

import gradio as gr

from superlora.app.plots import loss_figure
from superlora.app.runs import TABLE_COLUMNS, find_runs, read_run, table_row
from superlora.app.state import AppState
from superlora.app.tabs.common import guard


def build(state: AppState, demo: gr.Blocks) -> None:
    served = {a.run.resolve() for a in state.adapters if a.run is not None}
    where = f"`{state.runs_dir}`" if state.runs_dir else "no folder (start with `--runs DIR`)"
    gr.Markdown(f"Training runs in {where}. Runs still training show what they have logged so far.")
    refresh = gr.Button("Refresh", size="sm", elem_id="runs-refresh")
    runs_table = gr.Dataframe(headers=TABLE_COLUMNS, interactive=False, elem_id="runs-table", label="runs")
    compare = gr.Plot(label="loss of all runs", elem_id="runs-compare")
    select = gr.Dropdown([], label="run", elem_id="runs-select")
    with gr.Row():
        config = gr.Code(language="yaml", label="config.yaml", elem_id="runs-config", interactive=False)
        summary = gr.JSON(label="summary.json", elem_id="runs-summary")
    curve = gr.Plot(label="loss and learning rate", elem_id="runs-plot")

    @guard
    def list_runs(current: str | None):
        runs = [read_run(name, path) for name, path in find_runs(state.runs_dir).items()]
        rows = [table_row(run, served) for run in runs]
        fig = loss_figure({run.name: run.log for run in runs if run.log}, "training loss, all runs") if runs else None
        names = [run.name for run in runs]
        chosen = current if current in names else (names[0] if names else None)
        return rows, fig, gr.update(choices=names, value=chosen)

    @guard
    def show(name: str | None):
        path = find_runs(state.runs_dir).get(name or "")
        if path is None:
            return "", None, None
        run = read_run(name, path)
        figure = loss_figure({run.name: run.log}, f"{run.name}: training loss", with_lr=True)
        return run.config_text, run.summary, figure

    listing = {"inputs": select, "outputs": [runs_table, compare, select]}
    details = {"fn": show, "inputs": select, "outputs": [config, summary, curve], "api_visibility": "private"}
    demo.load(list_runs, **listing, api_name="runs_list").then(**details)
    refresh.click(list_runs, **listing, api_visibility="private").then(**details)
    select.input(show, select, [config, summary, curve], api_name="runs_show")
