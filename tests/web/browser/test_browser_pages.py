"""Every person-facing page in kk, ru and en: axe-core finds no WCAG 2.1 A/AA violation, the language
switch gives the page in that language, nothing is fetched from another origin or refused by the CSP, and
at 360×740 nothing scrolls sideways.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page

from .conftest import ARTIFACTS, CHROMIUM, LANGUAGES, NO_CHROMIUM
from .live import LiveGateway
from .pages import STATES, html_lang

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]
CASES = [pytest.param(name, lang, id=f"{name}-{lang}") for name in STATES for lang in LANGUAGES]


@pytest.fixture
def narrow_page(browser: Browser) -> Iterator[Page]:
    """A phone-sized page: 360×740 CSS pixels, touch, as a small Android phone."""
    context = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    yield context.new_page()
    context.close()


def _structure(page: Page, lang: str) -> None:
    """The markup the pages promise: the language asked for, one h1, a skip link to main#main."""
    assert html_lang(page) == lang, f"{page.url}: <html lang={html_lang(page)!r}>, asked for {lang}"
    assert page.locator("h1").count() == 1, f"{page.url}: {page.locator('h1').count()} h1 elements"
    assert page.locator("main#main").count() == 1
    assert page.locator('a.skip-link[href="#main"]').count() == 1
    hrefs = page.locator("nav#language a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    for other in LANGUAGES:
        if other != lang:
            assert any(f"lang={other}" in (h or "") for h in hrefs), f"{page.url}: no switch to {other} in {hrefs}"


class Traffic:
    """What a page asks for and what its Content-Security-Policy refuses, as Chromium reports them."""

    def __init__(self, page: Page) -> None:
        self.requests: list[str] = []
        self.refused: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.refused.append(message.text)

    def check(self, origin: str, what: str) -> None:
        """Every request went to the gateway itself; the CSP (no 'unsafe-inline') refused nothing the page has."""
        assert self.requests, f"{what}: no request seen"
        elsewhere = [u for u in self.requests if not u.startswith(origin + "/")]
        assert not elsewhere, f"{what} asked another origin for {elsewhere}"
        assert not self.refused, f"{what}: the page's CSP refused:\n" + "\n".join(self.refused)


@pytest.mark.parametrize(("name", "lang"), CASES)
def test_axe_finds_no_wcag_violation(live: LiveGateway, page: Page, check_axe: Callable[[Page, str], None],
                                     name: str, lang: str) -> None:
    """axe-core's WCAG 2.1 A/AA rules; also, nothing from another origin and nothing the CSP had to refuse."""
    traffic = Traffic(page)
    STATES[name](page, live, lang)
    _structure(page, lang)
    check_axe(page, f"the {name} page in {lang}")
    traffic.check(live.url, f"the {name} page in {lang}")


@pytest.mark.parametrize(("name", "lang"), CASES)
def test_nothing_scrolls_sideways_at_360_px(live: LiveGateway, narrow_page: Page, name: str, lang: str) -> None:
    STATES[name](narrow_page, live, lang)
    (ARTIFACTS / "narrow").mkdir(parents=True, exist_ok=True)  # for people to look at; git-ignored
    narrow_page.screenshot(path=str(ARTIFACTS / "narrow" / f"{name}-{lang}.png"), full_page=True)
    sizes = narrow_page.evaluate(
        "() => ({scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth,"
        " body: document.body.scrollWidth})")
    assert sizes["client"] == 360, sizes
    if sizes["scroll"] > sizes["client"]:
        wide = narrow_page.evaluate(
            """() => [...document.querySelectorAll('body *')]
                 .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
                 .slice(0, 10)
                 .map(e => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\\s+/).join('.') : ''} right=${Math.round(e.getBoundingClientRect().right)}`)""")
        pytest.fail(f"the {name} page in {lang} is {sizes['scroll']} px wide at a 360 px viewport; "
                    f"too wide: {wide}")


# --- the checks themselves can fail ---------------------------------------------------------------------

def test_the_axe_check_reports_violations_it_is_shown(page: Page, check_axe: Callable[[Page, str], None]) -> None:
    page.set_content('<html><head><title>t</title></head><body><main><img src="data:,"><a href="#"></a>'
                     '<p style="color:#777;background:#888">low contrast</p></main></body></html>')
    with pytest.raises(AssertionError) as failed:
        check_axe(page, "a page built to fail")
    for rule in ("html-has-lang", "image-alt", "link-name", "color-contrast"):
        assert rule in str(failed.value), str(failed.value)


def test_the_sideways_check_sees_a_too_wide_element(live: LiveGateway, narrow_page: Page) -> None:
    narrow_page.goto(f"{live.url}/register")
    narrow_page.evaluate("() => { const d = document.createElement('div'); d.id = 'too-wide';"
                         " d.style.width = '500px'; d.style.height = '10px'; document.body.append(d); }")
    assert narrow_page.evaluate("() => document.documentElement.scrollWidth") > 360


def test_the_traffic_check_sees_another_origin_and_a_refused_inline_style(live: LiveGateway, page: Page) -> None:
    traffic = Traffic(page)
    page.goto(f"{live.url}/register")
    page.evaluate("() => { document.body.insertAdjacentHTML('beforeend',"
                  " '<p style=\"color:red\">inline</p><img alt=\"\" src=\"http://localhost:9/x.png\">'); }")
    page.wait_for_function("() => document.querySelector('img[src^=\"http://localhost\"]').complete")
    with pytest.raises(AssertionError) as failed:
        traffic.check(live.url, "a page built to fail")
    assert "CSP refused" in str(failed.value) or "another origin" in str(failed.value), str(failed.value)
    assert any("inline style" in r for r in traffic.refused), traffic.refused
