"""The decision and the explanation printed on paper (web.css's print stylesheet), in Chromium.

Printed as an A4 sheet (210 mm less 10 mm margins each side: 718 CSS px of line): the navigation, the
language switch, the skip link and the buttons are left off; what the person is owed stays (the outcome,
the system, the reviews, the factors and the chart); the text is black, at least 11 pt, and nothing is
wider than the sheet. The PDF Chromium prints is kept in tests/artifacts/print/ (git-ignored).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from .conftest import ARTIFACTS, CHROMIUM, NO_CHROMIUM
from .live import LiveGateway
from .pages import open_link

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]
A4_LINE_PX = 718  # 190 mm at 96 CSS px per inch
PT_11_PX = 11 * 96 / 72
LEFT_OFF = ("a.skip-link", "nav#language", "nav.decision-nav", "footer.site")
KEPT = {
    "": ("section#outcome", "section#system", "#notices", "#reviews", "#access-log"),
    "explanation": ("ol#factors", "figure#chart svg", "#confidential"),
}

LAYOUT = """() => {
  const body = getComputedStyle(document.body);
  const small = [...document.querySelectorAll('main#main p, main#main li, main#main dd, main#main td')]
    .filter(e => e.innerText.trim() && parseFloat(getComputedStyle(e).fontSize) < %s)
    .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + ' ' + getComputedStyle(e).fontSize);
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
    .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : ''));
  return {color: body.color, size: parseFloat(body.fontSize), small: small.slice(0, 10), wide: wide.slice(0, 10),
          scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth};
}""" % (PT_11_PX - 0.05)


@pytest.fixture
def sheet(browser: Browser) -> Iterator[Page]:
    """A page as wide as an A4 sheet's line, rendered for print."""
    context = browser.new_context(viewport={"width": A4_LINE_PX, "height": 1000})
    page = context.new_page()
    yield page
    context.close()


@pytest.mark.parametrize(("lang", "next_page"), [("kk", ""), ("ru", ""), ("kk", "explanation"), ("ru", "explanation")])
def test_the_decision_and_explanation_print_legibly(live: LiveGateway, sheet: Page, lang: str, next_page: str) -> None:
    made = live.decide(lang)
    open_link(sheet, made["links"]["citizen"] + (f"&next={next_page}" if next_page else ""))
    what = f"the {next_page or 'decision'} page in {lang}, printed"
    for selector in LEFT_OFF:  # on screen first: the check below is not vacuous
        assert sheet.locator(selector).first.is_visible(), f"{selector} is not on the screen page"
    sheet.emulate_media(media="print")
    for selector in LEFT_OFF:
        assert not sheet.locator(selector).first.is_visible(), f"{what}: {selector} is printed"
    for selector in KEPT[next_page]:
        assert sheet.locator(selector).first.is_visible(), f"{what}: {selector} is not printed"
    layout = sheet.evaluate(LAYOUT)
    assert layout["color"] == "rgb(0, 0, 0)", f"{what}: text is {layout['color']}"
    assert layout["size"] >= PT_11_PX - 0.05 and not layout["small"], f"{what}: text under 11 pt: {layout}"
    assert layout["scroll"] <= layout["client"] and not layout["wide"], f"{what}: wider than the sheet: {layout}"
    (ARTIFACTS / "print").mkdir(parents=True, exist_ok=True)
    pdf = sheet.pdf(path=str(ARTIFACTS / "print" / f"{next_page or 'decision'}-{lang}.pdf"), format="A4",
                    margin={"top": "10mm", "bottom": "10mm", "left": "10mm", "right": "10mm"})
    assert pdf.startswith(b"%PDF-") and len(pdf) > 10_000, len(pdf)
