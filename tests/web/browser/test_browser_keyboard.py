"""The review form completed with the keyboard alone: Tab, Space, Enter, arrow keys and typing, no mouse.

The test only reads where the focus is (document.activeElement); every action is a key press. Each
element reached shows a visible focus indicator (WCAG 2.4.7).
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page

from .conftest import CHROMIUM, NO_CHROMIUM
from .live import LiveGateway
from .pages import POINT_OF_VIEW_TEXT, open_link

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]
MAX_TABS = 80

FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const s = getComputedStyle(e);
  const indicator = (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== 'none';
  return {id: e.id, tag: e.tagName.toLowerCase(), type: e.type || null, name: e.getAttribute('name'),
          value: e.value ?? null, checked: e.checked ?? null, indicator};
}"""


class Keyboard:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.path: list[str] = []
        self.without_indicator: list[str] = []

    def focused(self) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.page.evaluate(FOCUSED)
        return found

    def tab_to(self, element_id: str) -> dict[str, Any]:
        """Press Tab until the element with this id has the focus."""
        for _ in range(MAX_TABS):
            self.page.keyboard.press("Tab")
            now = self.focused()
            if now is None:
                continue
            name = now["id"] or f"{now['tag']}[name={now['name']}]"
            self.path.append(name)
            if not now["indicator"]:
                self.without_indicator.append(name)
            if now["id"] == element_id:
                return now
        raise AssertionError(f"#{element_id} not reached with {MAX_TABS} Tabs; focus went: {self.path}")

    def press(self, key: str) -> None:
        self.page.keyboard.press(key)


def test_the_review_form_is_completed_and_withdrawn_with_the_keyboard_alone(live: LiveGateway, page: Page) -> None:
    made = live.decide("kk")
    decision_id = made["decision_id"]
    open_link(page, made["links"]["citizen"] + "&next=review")
    page.locator("form#review-form").wait_for()
    keys = Keyboard(page)

    # The skip link is the first stop and takes the focus into the main content.
    page.keyboard.press("Tab")
    first = keys.focused()
    assert first is not None and first["tag"] == "a" and "skip" in (page.evaluate(
        "() => document.activeElement.className") or ""), first
    keys.press("Enter")
    assert page.url.endswith("#main")

    keys.tab_to("point_of_view")
    page.keyboard.type(POINT_OF_VIEW_TEXT["kk"])
    ground = keys.tab_to("ground-wrong_data")
    assert ground["checked"] is False
    keys.press("Space")
    assert keys.focused()["checked"] is True  # type: ignore[index]

    savings = keys.tab_to("corrected-savings")
    assert savings["tag"] == "select" and savings["value"] == "", savings
    for _ in range(10):  # arrow keys move through the options of a closed select
        if keys.focused()["value"] == "500_to_1000":  # type: ignore[index]
            break
        keys.press("ArrowDown")
    assert keys.focused()["value"] == "500_to_1000", keys.focused()  # type: ignore[index]

    submit = None
    for _ in range(MAX_TABS):
        keys.press("Tab")
        now = keys.focused()
        if now and now["tag"] == "button" or (now and now["type"] == "submit"):
            submit = now
            break
    assert submit is not None and submit["type"] == "submit", keys.path
    with page.expect_navigation():
        keys.press("Enter")
    page.locator("#review-sent").wait_for()

    review = live.decision(decision_id)["reviews"]
    assert len(review) == 1 and review[0]["status"] == "queued", review
    held = page.request.get(f"{live.url}/d/{decision_id}/data.json").json()["reviews"]  # what the person sent
    assert len(held) == 1 and held[0]["point_of_view"] == POINT_OF_VIEW_TEXT["kk"], held
    assert held[0]["contest_grounds"] == ["wrong_data"] and held[0]["corrected_data"] == {"savings": "500_to_1000"}, held

    # Withdrawing, still by keyboard: the open review's withdraw link, then the confirmation button.
    page.goto(f"{live.url}/d/{decision_id}/review")
    page.locator("section#open-review").wait_for()
    keys.tab_to("withdraw-link")
    with page.expect_navigation():
        keys.press("Enter")
    page.locator("form#withdraw-form").wait_for()
    keys.tab_to("confirm-withdraw")
    with page.expect_navigation():
        keys.press("Enter")
    page.locator("#review-withdrawn").wait_for()
    assert live.decision(decision_id)["reviews"][0]["status"] == "withdrawn"

    assert not keys.without_indicator, f"focused without a visible focus indicator: {keys.without_indicator}"
