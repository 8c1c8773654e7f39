"""The README's screenshot of the explorer page: ``python docs/view_screenshot.py PAGE.html OUT.png``.

Opens the page in the system chromium (headless, through Playwright, as tests/view/test_browser.py does),
opens the first step's first prompt that has a shown response (its group side by side) and saves the
top of the page.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(page: str, out: str, width: int = 1280, height: int = 1150) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"))
        pg = b.new_page(viewport={"width": width, "height": height})
        pg.goto(Path(page).resolve().as_uri())
        pg.wait_for_selector("#tokens .resp")
        step = pg.eval_on_selector_all("#stepsel option", "os => os.map(o => o.value)")
        pg.select_option("#stepsel", step[len(step) // 3])  # a step in the rising stage
        rows = pg.locator("#ptable tbody tr")
        for i in range(rows.count()):
            if rows.nth(i).locator("td").nth(2).inner_text() != "0":
                rows.nth(i).click()
                break
        pg.evaluate("window.scrollTo(0, 0)")
        pg.hover("#group .resp span[data-j] >> nth=3")
        pg.screenshot(path=out, full_page=True, clip={"x": 0, "y": 0, "width": width, "height": height})
        b.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
