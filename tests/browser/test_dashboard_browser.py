"""The status page in a real headless browser: Debian's Chromium driven by Selenium through Debian's chromedriver
(``./dev setup`` installs both), against the emulators, Azurite and the local Functions host. A sync parks a
record and a template is paused; the test reads the rows as an operator sees them, clicks an action and checks
the page and the storage behind it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from devtools.functions_host import LocalFunctionsHost
from devtools.screenshot import CHROMEDRIVER, BrowserMissing, chromium
from shared.runtime import Runtime
from shared.state.queues import QueueKind
from shared.state.store import encode_key
from tests.e2e.stores import Stores
from tests.shared.ops.poison_queues import poison_as_host
from tests.shared.sync.test_operations import add_currency, park_an_amount_point_in_unknown_currency

pytestmark = pytest.mark.browser
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module; skipped, saying how to install it, where it is missing."""
    from selenium.webdriver.common import selenium_manager

    started = time.monotonic()

    def never(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("Selenium Manager was asked for a driver: it must never download one")

    original = selenium_manager.SeleniumManager.binary_paths
    selenium_manager.SeleniumManager.binary_paths = never  # type: ignore[method-assign]
    try:
        driver = chromium()
    except BrowserMissing as exc:
        pytest.skip(f"the browser test needs Debian's chromium and chromium-driver: {exc}")
    finally:
        selenium_manager.SeleniumManager.binary_paths = original  # type: ignore[method-assign]
    TIMINGS["browser start"] = time.monotonic() - started
    yield driver
    driver.quit()
    print("\nbrowser test timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in TIMINGS.items()))


@pytest.fixture()
def host(runtime: Runtime) -> Iterator[LocalFunctionsHost]:
    import function_app

    served = LocalFunctionsHost(function_app.app).start()
    yield served
    served.stop()


@pytest.fixture()
def bad_day(runtime: Runtime, stores: Stores) -> Runtime:
    """A sync that parks a record (a reward point in a currency Dataverse lacks) and a paused template."""
    park_an_amount_point_in_unknown_currency(runtime, stores)
    runtime.state.callbacks.set_paused("loyalty_cards", True, by="auto-pause",
                                       reason="112 failures in 15 min; last: Dataverse 503")
    return runtime


def open_page(browser: Any, host: LocalFunctionsHost, label: str) -> None:
    started = time.monotonic()
    browser.get(f"{host.url}/api/ops/dashboard")
    TIMINGS[label] = time.monotonic() - started


def row(browser: Any, template: str, direction: str = "fo_to_dataverse", scope: str = "all") -> Any:
    return browser.find_element(
        By.CSS_SELECTOR, f'tr.status-row[data-template="{template}"][data-direction="{direction}"]'
                         f'[data-scope="{scope}"]')


def click(browser: Any, action: str, template: str, label: str) -> None:
    started = time.monotonic()
    browser.find_element(By.CSS_SELECTOR, f'td.actions form[data-action="{action}"][data-template="{template}"] '
                                          "button").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.ID, "flash"))  # the page after the redirect
    TIMINGS[label] = time.monotonic() - started


def test_the_browser_is_debians_chromium_through_debians_chromedriver(browser: Any) -> None:
    assert browser.service.path == CHROMEDRIVER
    assert browser.capabilities["browserName"] in ("chrome", "chromium")


def test_the_rows_show_the_parked_record_and_the_pause_with_its_reason(bad_day: Runtime, browser: Any,
                                                                      host: LocalFunctionsHost) -> None:
    open_page(browser, host, "first page load")
    points = row(browser, "loyalty_reward_points")
    assert points.find_element(By.CSS_SELECTOR, "td.state").text == "completed with parked"
    assert points.find_element(By.CSS_SELECTOR, "td.parked").text == "1 lookup_missing"
    cards = row(browser, "loyalty_cards", "-", "-")
    state = cards.find_element(By.CSS_SELECTOR, "td.state").text
    assert state.startswith("paused\nby auto-pause at ") and "112 failures in 15 min; last: Dataverse 503" in state
    assert [b.text for b in cards.find_elements(By.CSS_SELECTOR, "td.actions button")] == ["Resume"]


def test_clicking_replay_lands_the_parked_record(bad_day: Runtime, stores: Stores, browser: Any,
                                                 host: LocalFunctionsHost) -> None:
    add_currency(stores, "XTS")  # the cause is gone
    open_page(browser, host, "page load")
    click(browser, "replay", "loyalty_reward_points", "replay click to page")
    assert browser.find_element(By.ID, "flash").text == "loyalty_reward_points: replayed 1 parked: 1 written"
    assert browser.find_element(By.ID, "no-parked").text == "Nothing is parked."
    assert list(bad_day.state.parked.all("loyalty_reward_points")) == []
    assert ("XTS-AMOUNT",) in stores.actual("loyalty_reward_points")


def test_clicking_resume_unpauses_the_template(bad_day: Runtime, browser: Any, host: LocalFunctionsHost) -> None:
    open_page(browser, host, "page load")
    click(browser, "resume", "loyalty_cards", "resume click to page")
    assert browser.find_element(By.ID, "flash").text == "loyalty_cards resumed; 0 held callbacks back on the queue"
    assert "paused" not in row(browser, "loyalty_cards", "-", "-").find_element(By.CSS_SELECTOR, "td.state").text
    assert not bad_day.state.callbacks.is_paused("loyalty_cards")


def test_clicking_requeue_puts_the_poison_message_back_on_its_queue(runtime: Runtime, browser: Any,
                                                                    host: LocalFunctionsHost) -> None:
    poison_as_host(runtime.queues, "loyalty_cards", QueueKind.CALLBACKS, {"template": "loyalty_cards"})
    open_page(browser, host, "page load")
    click(browser, "requeue-poison", "loyalty_cards", "requeue click to page")
    assert browser.find_element(By.ID, "flash").text == "loyalty_cards: 1 poison message requeued"
    assert browser.find_element(By.ID, "no-poison").text == "No poison messages."
    assert runtime.queues.backlog("loyalty_cards")["callbacks"] == {"queued": 1, "poison": 0}


def test_a_script_in_a_parked_key_and_reason_is_shown_as_text_and_never_runs(runtime: Runtime, browser: Any,
                                                                           host: LocalFunctionsHost) -> None:
    key, reason = "<script>alert(1)</script>", "<img src=x onerror=alert(2)>"
    runtime.state.parked.park("loyalty_cards", encode_key((key,)), direction="fo_to_dataverse",
                              error_class="validation", error=reason, source="scan", correlation_id="c-1")
    open_page(browser, host, "page load")
    listed = browser.find_element(By.CSS_SELECTOR, "tr.parked-row")
    assert key in listed.find_element(By.CSS_SELECTOR, "td.key").text
    assert listed.find_element(By.CSS_SELECTOR, "td.reason").text == reason
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # noqa: B018  # reading it raises when no alert is open
    assert browser.find_elements(By.CSS_SELECTOR, "main script, main img") == []


def test_a_form_posted_from_another_site_is_refused_and_changes_nothing(runtime: Runtime, browser: Any,
                                                                        host: LocalFunctionsHost) -> None:
    open_page(browser, host, "page load")  # the operator's session cookie exists
    token = browser.find_element(By.CSS_SELECTOR, 'input[name="csrf"]').get_attribute("value")
    page = (f'<form method="post" action="{host.url}/api/ops/dashboard/actions/pause">'
            f'<input name="csrf" value="{token}"><input name="template" value="loyalty_cards">'
            '<button id="go">win a prize</button></form>')
    browser.get("data:text/html;charset=utf-8," + page)
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 10).until(lambda b: b.current_url.startswith(host.url))
    body = browser.find_element(By.TAG_NAME, "body").text
    assert body.startswith("forbidden: cross-site request refused (Sec-Fetch-Site: cross-site)")
    assert not runtime.state.callbacks.is_paused("loyalty_cards")


# -- a 1280 x 800 window: no sideways scrolling, every action in view -------------------------------------------

LONG_FAILURE = ("preflight failed: DATAVERSE_URL: cannot reach http://127.0.0.1:1 (ServiceRequestError: "
                "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /api/data/v9.2/WhoAmI "
                "(Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f0c>: Failed to "
                "establish a new connection: [Errno 111] Connection refused'))); check DATAVERSE_URL (e.g. "
                "https://<org>.crm.dynamics.com) and the network")


@pytest.fixture()
def worst_day(bad_day: Runtime) -> Runtime:
    """Everything the page can show at once, with long texts: a failed run with a long exception, held deletes
    with their approval, a long parked key and reason, a poison message, a paused template with a reason."""
    runtime = bad_day
    for template, scope in (("loyalty_levels", "usmf"), ("loyalty_levels", "demf"), ("loyalty_cards", "all")):
        mark = runtime.state.watermarks.get(template, "fo_to_dataverse", scope)
        mark.last_status, mark.last_error = "failed", LONG_FAILURE
        mark.last_failed_at = "2026-11-30T10:00:00+00:00"
        mark.held_deletes, mark.held_states, mark.held_run = 700, 1000, "run-" + "7" * 30
        runtime.state.watermarks.save(mark)
    runtime.state.parked.park("loyalty_cards", encode_key(("LC-" + "9" * 60,)), direction="fo_to_dataverse",
                              error_class="validation", error="The value " + "x" * 300 + " is too long",
                              source="scan", correlation_id="c-1")
    poison_as_host(runtime.queues, "loyalty_levels", QueueKind.PAGES, {"range": "A" * 400})
    return runtime


def test_the_page_fits_a_1280_px_window_with_every_action_in_view(worst_day: Runtime, browser: Any,
                                                                host: LocalFunctionsHost) -> None:
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800,
                                                                   "deviceScaleFactor": 1, "mobile": False})
    try:
        open_page(browser, host, "page load at 1280 px")
        inner, scroll_width, client_width = browser.execute_script(
            "return [window.innerWidth, document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert inner == 1280 and scroll_width <= client_width  # clientWidth: the window less its vertical scrollbar
        buttons = browser.find_elements(By.CSS_SELECTOR, "button")
        assert len(buttons) >= 6
        outside = [(b.text, right) for b in buttons
                   if (right := browser.execute_script("return arguments[0].getBoundingClientRect().right", b))
                   > client_width]
        assert outside == []
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_failed_state_shows_the_hint_first_and_folds_the_exception(worst_day: Runtime, browser: Any,
                                                                     host: LocalFunctionsHost) -> None:
    open_page(browser, host, "page load")
    state = row(browser, "loyalty_levels", scope="usmf").find_element(By.CSS_SELECTOR, "td.state")
    failure = state.find_element(By.CSS_SELECTOR, ".failure").text
    assert failure.startswith("preflight failed: DATAVERSE_URL: cannot reach http://127.0.0.1:1; check DATAVERSE_URL")
    assert "ServiceRequestError" not in failure
    details = state.find_element(By.CSS_SELECTOR, "details.exception")
    assert details.get_attribute("open") is None and "ServiceRequestError" in details.get_attribute("textContent")
