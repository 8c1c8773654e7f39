"""The explorer page in a real headless browser: Debian's ``chromium`` driven by Playwright.

Playwright's own browser download (``playwright install``) is never used: the tests launch the system
``chromium`` (``.ci/run`` installs it with apt, ``pip install -e '.[dev]'`` installs playwright).  They skip,
saying why, where either is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from entropy_lens.cli import main
from tests.view.stores import write_store

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no system chromium on PATH (apt-get install -y chromium)")

GROUP = 4


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    """A page of 4 steps × 6 prompts × 4 responses showing 3 responses a step: some prompts have none shown."""
    root = tmp_path_factory.mktemp("browser")
    store = write_store(root / "store", n_prompts=6, group=GROUP)
    out = root / "page.html"
    assert main(["view", str(store), "--out", str(out), "--samples-per-step", "3"]) == 0
    return out


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Loaded:
    """A page opened from its file:// URL, every request routed: only the file itself, data:, blob: and
    about: are let through; console errors, page errors and any other request are recorded."""

    def __init__(self, browser, path: Path):
        self.url = path.as_uri()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.context = browser.new_context(accept_downloads=True)
        self.page = self.context.new_page()
        self.context.route("**/*", self._route)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"console {m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.goto(self.url)
        self.page.wait_for_selector("#tokens .resp")

    def _allowed(self, url: str) -> bool:
        return url == self.url or url.split(":", 1)[0] in ("data", "blob", "about")

    def _route(self, route):
        if self._allowed(route.request.url):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def token_colours(self) -> list[str]:
        return self.page.eval_on_selector_all("#tokens span[data-j]", "ss => ss.map(s => getComputedStyle(s).backgroundColor)")

    def text(self, sel: str) -> str:
        return self.page.inner_text(sel)


@pytest.fixture
def loaded(browser, page_file):
    pg = Loaded(browser, page_file)
    yield pg
    pg.context.close()


def test_loads_from_file_with_no_console_or_page_error_and_no_network_request(loaded):
    loaded.page.hover("#tokens span[data-j]")  # exercise the hover, the sort, the filters, the CSV export
    loaded.page.click("#ptable th:has-text('accuracy')")
    loaded.page.select_option("#fcorr", "mixed")
    loaded.page.fill("#fent", "0.5")
    with loaded.page.expect_download() as dl:
        loaded.page.click("#csv")
    assert dl.value.suggested_filename.endswith(".csv")
    loaded.page.click("#heat table th[title='step 2']")
    assert loaded.errors == []
    assert loaded.blocked == []
    assert all(loaded._allowed(u) for u in loaded.requests), loaded.requests
    assert loaded.requests[0] == loaded.url


def test_rendered_text_holds_the_stored_responses(loaded):
    # the first step's shown responses: their tokens, and their groups' stored text in the group view
    body = loaded.text("body")
    assert "showing 12 of 96 responses" in body
    assert "showing 3 of 24 responses of step 0" in body
    assert loaded.page.locator("#tokens .resp").count() == 3
    loaded.page.click("#ptable tbody tr:not(:has(td:nth-child(3):text-is('0')))")
    assert "resp s0 p" in loaded.text("#group")
    tokens = loaded.text("#tokens")
    assert any(t in tokens for t in (" so", " wait", "\\frac", " erot"))


def test_clicking_a_step_changes_what_is_shown(loaded):
    before = loaded.text("#tokens"), loaded.text("#steptitle"), loaded.text("#shown")
    marker = loaded.page.locator("#curves line.cur >> nth=0")
    x0 = float(marker.get_attribute("x1"))
    loaded.page.click("#curves circle[data-step='2']")
    assert float(marker.get_attribute("x1")) > x0  # the open step's marker moved right
    after = loaded.text("#tokens"), loaded.text("#steptitle"), loaded.text("#shown")
    assert after[1] == "step 2" and "of step 2" in after[2]
    assert after[0] != before[0]
    assert loaded.page.input_value("#stepsel") == "2"
    loaded.page.select_option("#stepsel", "3")
    assert loaded.text("#steptitle") == "step 3"
    assert loaded.errors == []


def test_switching_the_metric_recolours_tokens(loaded):
    first = loaded.page.locator("#tokens span[data-j]").first
    colour = first.evaluate("s => getComputedStyle(s).backgroundColor")
    before = loaded.token_colours()
    loaded.page.select_option("#metric", "logprob")
    after = loaded.token_colours()
    assert len(after) == len(before) > 0
    assert after != before
    assert first.evaluate("s => getComputedStyle(s).backgroundColor") != colour or after[1:] != before[1:]
    loaded.page.select_option("#metric", "entropy")
    assert loaded.token_colours() == before


def test_hover_shows_every_value_of_a_token(loaded):
    loaded.page.hover("#tokens span[data-j]")
    tip = loaded.text("#tip")
    for label in ("entropy H", "log p", "Σp²", "‖∇ logit‖", "Δlog p", "realized ΔH", "predicted ΔH", "varentropy"):
        assert label in tip


def test_group_view_shows_every_sample_of_the_group(loaded):
    for step in (0, 1):
        loaded.page.select_option("#stepsel", str(step))
        rows = loaded.page.locator("#ptable tbody tr")
        for i in range(rows.count()):
            row = rows.nth(i)
            pid, shown = row.get_attribute("data-prompt"), int(row.locator("td").nth(2).inner_text())
            row.click()
            group = loaded.text("#group")
            if shown == 0:
                assert "none of this prompt's responses is in the page's sample" in group
                continue
            cards = loaded.page.locator("#group .resp")
            assert cards.count() == GROUP
            assert sorted(cards.evaluate_all("cs => cs.map(c => +c.dataset.sample)")) == list(range(GROUP))
            for s in range(GROUP):
                assert f"sample {s} · reward" in group
            assert f"gold {pid}" in group and "answer " in group
            assert loaded.page.locator("#group .resp span[data-j]").count() == 10 * shown  # tokens of shown ones
    assert loaded.errors == []


def test_top_tokens_are_findable_in_the_text(loaded):
    loaded.page.click("#topk a >> nth=0")
    assert loaded.page.locator("#tokens span.hit").count() == 1


def test_a_store_without_updates_or_vocabulary_loads_too(browser, tmp_path):
    store = write_store(tmp_path / "bare", updates=False, vocab=False)
    out = tmp_path / "bare.html"
    assert main(["view", str(store), "--out", str(out)]) == 0
    pg = Loaded(browser, out)
    try:
        assert pg.errors == [] and pg.blocked == []
        assert "#" in pg.text("#tokens")  # token ids stand in for the missing vocabulary
        options = pg.page.eval_on_selector_all("#metric option", "os => os.map(o => o.value)")
        assert "delta_logp" not in options and "entropy" in options
    finally:
        pg.context.close()


def test_a_sweep_with_its_training_run_opens_the_stores_nearest_step(browser, tmp_path):
    """Curves from a training run of steps 0–8, a sweep of steps 0, 4, 8: a curve point between sweep steps
    opens the nearest sweep step, and the step menu lists only the sweep's steps."""
    run = write_store(tmp_path / "run", kind="train", steps=list(range(9)), updates=False)
    sweep = write_store(run / "sweep", steps=[0, 4, 8], seed=1)
    out = tmp_path / "train.html"
    assert main(["view", str(sweep), "--train-run", str(run), "--out", str(out)]) == 0
    pg = Loaded(browser, out)
    try:
        assert pg.page.locator("#curves svg >> nth=0").locator("circle[data-step]").count() >= 9
        assert pg.page.eval_on_selector_all("#stepsel option", "os => os.map(o => o.value)") == ["0", "4", "8"]
        pg.page.click("#curves circle[data-step='3']")
        assert pg.text("#steptitle").startswith("step 4")
        assert "of step 4" in pg.text("#shown") and "showing 12 of 12 responses of step 4" in pg.text("#shown")
        assert pg.page.locator("#tokens .resp").count() == 12
        assert pg.errors == [] and pg.blocked == []
    finally:
        pg.context.close()
