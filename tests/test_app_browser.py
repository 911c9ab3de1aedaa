"""The web app in a real browser: Debian chromium driven by Playwright, a tiny planted model and a tiny adapter.

Each tab is exercised as a person would and screenshotted into artifacts/screenshots/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed at /usr/bin/chromium")
pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

import superlora.app.ui  # noqa: E402,F401  (sets the offline environment before Gradio loads)
from app_support import PLANT_COORD, adapter_run, planted_model_dir, serve, superweights_report  # noqa: E402
from superlora.app.limits import Limits  # noqa: E402
from superlora.app.state import AppState  # noqa: E402

expect = sync_api.expect
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-sync",
]
TIMEOUT = 30_000  # ms; generations on the tiny model take well under a second


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    model = planted_model_dir(root / "model")
    run = adapter_run(model, root / "runs" / "lora-q-v")
    still_training(root / "runs" / "superweight-blocks")
    report = superweights_report(root / "superweights.json")
    limits = Limits(max_new_tokens=40, max_e2e_new_tokens=24)
    state = AppState.load(str(model), [str(run)], root / "runs", report, limits=limits)
    demo, url = serve(state)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT)
        # nothing may wait on the internet: only loopback requests go through
        page.route("**/*", lambda route: route.continue_() if _loopback(route.request.url) else route.abort())
        page.goto(url)
        page.wait_for_selector("#e2e-generate")
        yield page
        browser.close()
    demo.close()


def still_training(run: Path) -> None:
    """A run as a live trainer leaves it: config and part of a log (last line cut), no summary, no adapter."""
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("model: tiny\nlayers: superweight\nlora: {r: 4}\n", encoding="utf-8")
    lines = [json.dumps({"step": s, "loss": 4.2 / (1 + s / 6), "lr": 2e-4}) for s in range(0, 25, 5)]
    (run / "log.jsonl").write_text("\n".join(lines) + '\n{"step": 25, "lo', encoding="utf-8")


def _loopback(url: str) -> bool:
    return urlparse(url).hostname in {"127.0.0.1", "localhost"} or url.startswith(("data:", "blob:"))


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def choose(page, slot: str, value: str) -> None:
    """Pick ``value`` in the dropdown with element id ``slot``."""
    page.locator(f"#{slot} input").click()
    page.locator(f"#{slot} [role=option][aria-label='{value}']").click()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_e2e_form_generates_base_and_adapter_outputs_side_by_side(page):
    open_tab(page, "E2E generator")
    choose(page, "e2e-name", "Cotto")
    choose(page, "e2e-food", "French")
    choose(page, "e2e-area", "riverside")
    choose(page, "e2e-familyFriendly", "yes")
    beams = page.locator("#e2e-beams input[type=number]")
    beams.fill("1")  # greedy: the tiny random models' beam search prefers an empty output
    beams.press("Enter")
    page.locator("#e2e-generate").click()
    expect(page.locator("#e2e-mr textarea")).to_have_value(
        "name[Cotto], eatType[pub], food[French], priceRange[more than £30], customer rating[5 out of 5], "
        "area[riverside], familyFriendly[yes]"
    )
    for target in ("base", "lora-q-v"):
        card = page.locator(f"#e2e-results .sl-card[data-target='{target}']")
        expect(card).to_be_visible()
        expect(card.locator(".sl-output")).not_to_have_text(re.compile(r"^\s*(\(empty output\))?\s*$"))
        expect(card.locator(".sl-chip")).not_to_have_count(0)  # the slot check of this output
    shot(page, "1-e2e-generator")


def test_refused_input_shows_a_message_and_the_page_keeps_working(page):
    open_tab(page, "E2E generator")
    name = page.locator("#e2e-name input")
    name.fill("x" * 100)  # a custom value longer than the 80-character cap
    name.press("Enter")
    page.locator("#e2e-generate").click()
    toast = page.locator(".toast-body").filter(has_text="too long")
    expect(toast).to_contain_text("value of name is too long: 100 characters (the limit is 80)")
    shot(page, "1b-e2e-refused")
    toast.locator(".toast-close").click()
    choose(page, "e2e-name", "Aromi")
    page.locator("#e2e-generate").click()
    expect(page.locator("#e2e-mr textarea")).to_have_value(re.compile(r"^name\[Aromi\]"))


def test_chat_streams_a_reply(page):
    open_tab(page, "Chat")
    box = page.locator("#chat-input textarea")
    box.fill("the capital of france is")
    box.press("Enter")
    expect(page.locator("[data-testid='user']").first).to_contain_text("the capital of france is")
    bot = page.locator("[data-testid='bot']").first
    expect(bot).to_be_visible()
    expect(bot).not_to_have_text("")
    expect(page.locator(".stop-button")).to_have_count(0)  # streaming finished
    assert bot.inner_text().strip()
    shot(page, "2-chat")


def test_zeroing_a_super_weight_changes_the_output_and_restoring_brings_it_back(page):
    open_tab(page, "Super-weight explorer")
    expect(page.locator("#sw-table")).to_contain_text(PLANT_COORD)
    output, status = page.locator("#sw-output textarea"), page.locator("#sw-status")
    page.locator("#sw-restore").click()
    expect(status).to_contain_text("Original weights")
    original = output.input_value()
    assert original
    page.locator("#sw-zero").click()
    expect(status).to_contain_text("Zeroed")
    expect(status).to_contain_text("bit-for-bit equal")
    expect(page.locator("#sw-plot img")).to_be_visible()
    assert output.input_value() != original
    shot(page, "3-explorer-zeroed")
    page.locator("#sw-restore").click()
    expect(status).to_contain_text("Original weights")
    expect(output).to_have_value(original)
    shot(page, "3b-explorer-restored")


def test_runs_tab_shows_table_config_and_loss_curves(page):
    open_tab(page, "Runs")
    table = page.locator("#runs-table")
    expect(table).to_contain_text("lora-q-v")
    expect(table).to_contain_text("served")
    expect(table).to_contain_text("superweight-blocks")  # a run still training, half a log line at its end
    expect(page.locator("#runs-plot img")).to_be_visible()
    expect(page.locator("#runs-compare img")).to_be_visible()
    expect(page.locator("#runs-config")).to_contain_text("lora")
    shot(page, "4-runs")
