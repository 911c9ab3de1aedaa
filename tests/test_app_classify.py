"""The web app over a classification run: a Classification tab instead of the generation tabs, each model's label and
probabilities as the run's own head computes them, and one line for adapters that cannot share a base."""

from __future__ import annotations

import pytest

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

import superlora.app.ui  # noqa: E402,F401  (sets the offline environment before Gradio loads)
from app_support import adapter_run, planted_model_dir, serve  # noqa: E402
from superlora.app.state import AppState  # noqa: E402
from superlora.config import load_config  # noqa: E402
from superlora.errors import SuperloraError  # noqa: E402
from superlora.training.config import TrainConfig  # noqa: E402
from test_sst2 import classifier_args, write_sst2  # noqa: E402

TEXT = "the food near paris is cheap"


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    from superlora.training.trainer import train
    from tiny import tiny_model, tiny_tokenizer

    root = tmp_path_factory.mktemp("classify")
    model_dir = root / "bert"
    tiny_model("bert").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    run = root / "runs" / "sst2"
    train(load_config(TrainConfig, None, classifier_args(model_dir, write_sst2(root / "data"), run)))
    return model_dir, run


def test_the_classification_tab_shows_what_the_runs_head_predicts(classifier_run):
    from superlora.data.templates import LabelTemplate
    from superlora.evaluation.classify import classify
    from superlora.evaluation.decode import attach_adapter
    from superlora.models import load_model

    model_dir, run = classifier_run
    state = AppState.load(str(model_dir), [str(run)])
    assert state.classifier and state.labels == ("negative", "positive") and state.targets == ["base", "sst2"]
    tuned = attach_adapter(load_model(str(model_dir), head="classifier").model, run)
    labels, probabilities = classify(tuned, state.loaded.tokenizer, [TEXT], LabelTemplate(state.labels))
    demo, url = serve(state)
    client = gradio_client.Client(url, verbose=False)
    try:
        page = client.predict(TEXT, ["sst2"], api_name="/classify")
        assert f'<div class="sl-output">{labels[0]}</div>' in page
        assert f"{labels[0]}: <b>{max(probabilities[0]):.1%}</b>" in page
        with pytest.raises(gradio_client.exceptions.AppError, match="text is empty"):
            client.predict("  ", ["base"], api_name="/classify")
        assert "/generate" not in str(client.view_api(return_format="dict"))  # no generation tab
    finally:
        client.close()
        demo.close()


def test_classification_and_generation_adapters_are_refused_together(classifier_run, tmp_path):
    model_dir, run = classifier_run
    lm_model = planted_model_dir(tmp_path / "lm")
    lm_run = adapter_run(lm_model, tmp_path / "lm-run")
    with pytest.raises(SuperloraError, match="mix classification and generation runs"):
        AppState.load(str(model_dir), [str(run), str(lm_run)])
