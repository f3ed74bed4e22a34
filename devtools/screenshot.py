"""The status page's screenshot in docs/operations.md (docs/dashboard.png), taken as the browser test sees the page.

    .venv/bin/python -m devtools.screenshot [--out docs/dashboard.png]

Starts Azurite, both emulators and the local Functions host, syncs every template through its timer, then
leaves what an operator meets on a bad day: a record parked (a reward point in a currency Dataverse lacks), a
template paused with its reason, a poison message, deletes held by the mass-delete guard, a failed run; opens
``/api/ops/dashboard`` in headless Chromium and saves the whole page.

``chromium()`` is the one way this project drives a browser: Debian's ``chromium`` through Debian's
``chromedriver`` (``./dev setup`` installs both), named explicitly so that Selenium Manager never runs and
nothing is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
INSTALL_HINT = "./dev setup installs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
OUT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"


class BrowserMissing(RuntimeError):
    """Chromium or its driver is not installed: the message says what is missing and how to install it."""


def chromium_binary() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissing(f"no chromium on PATH; {INSTALL_HINT}")


def chromium(width: int = 1600, height: int = 1000) -> Any:
    """A headless Chromium WebDriver on Debian's binaries (``BrowserMissing`` when they are not installed)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = chromium_binary()
    if not Path(CHROMEDRIVER).is_file():
        raise BrowserMissing(f"no {CHROMEDRIVER}; {INSTALL_HINT}")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--force-device-scale-factor=1", "--lang=en-US",
                     "--no-first-run", "--disable-extensions", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--metrics-recording-only"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def full_page(driver: Any, path: Path, width: int = 1600) -> None:
    """Resize the window to the page's height and save it as a PNG."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": width, "height": min(height, 4000),
                                                                   "deviceScaleFactor": 1, "mobile": False})
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))


def bad_day(runtime: Any, dataverse_url: str, commerce_url: str) -> None:
    """What the page should show: each kind of trouble once."""
    import requests
    from azure.storage.queue import TextBase64EncodePolicy

    from devtools.demo import bearer
    from shared.state.queues import POISON_SUFFIX, QueueKind

    # A reward point in a currency Dataverse does not know: its sync parks it (lookup_missing).
    requests.post(f"{commerce_url}/data/RetailLoyaltyRewardPoints", headers=bearer(), timeout=10, json={
        "RewardPointId": "XTS-AMOUNT", "RewardPointType": "Amount", "RewardPointCurrency": "XTS",
        "Redeemable": "Yes", "RedeemRanking": 1, "ExpirationTimeValue": 0, "ExpirationTimeUnit": "Day",
        "VestingTimeValue": 0, "VestingTimeUnit": "Day", "MaximumLoyaltyRewardPoints": 0}).raise_for_status()
    runtime.scan("loyalty_reward_points").run()
    runtime.state.callbacks.set_paused("loyalty_cards", True, by="auto-pause",
                                       reason="112 failures in 15 min; last: Dataverse 503 Service Unavailable")
    # A callback the worker failed on five times: the host moved it to the poison queue, base64 as it came.
    poison = runtime.queues.service.get_queue_client(
        runtime.queues.name("loyalty_cards", QueueKind.CALLBACKS) + POISON_SUFFIX,
        message_encode_policy=TextBase64EncodePolicy())
    poison.create_queue()
    poison.send_message('{"template": "loyalty_cards", "key": {"CardNumber": "LC-000042"}, "event_id": '
                        '"5D1C7A1E-0B7A-4C4E-9E57-4E0F1B6B2C11", "control_number": 5637611083}', time_to_live=-1)
    levels = sorted({m.scope for m in runtime.state.watermarks.all()
                     if (m.template, m.direction) == ("loyalty_levels", "fo_to_dataverse")})
    if levels:
        mark = runtime.state.watermarks.get("loyalty_levels", "fo_to_dataverse", levels[-1])
        mark.last_status, mark.held_deletes, mark.held_states = "deletes_held", 3, 9
        mark.held_run, mark.held_at = mark.last_run_id or "run-1", mark.last_run_finished
        runtime.state.watermarks.save(mark)
    if len(levels) > 1:
        mark = runtime.state.watermarks.get("loyalty_levels", "fo_to_dataverse", levels[0])
        mark.last_status, mark.last_error = "failed", "Commerce answered 503 Service Unavailable (LoyaltyLevels, 5 attempts)"
        mark.last_failed_at = mark.last_run_finished
        runtime.state.watermarks.save(mark)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from devtools.azurite import start_azurite
    from devtools.demo import emulator_settings, environment
    from devtools.functions_host import LocalFunctionsHost, QueuePump, invoke_timer
    from emulators.commerce.server import start_commerce
    from emulators.dataverse.server import start_dataverse

    try:
        chromium_binary()
    except BrowserMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with ExitStack() as stack:
        azurite = start_azurite()
        stack.callback(azurite.stop)
        dataverse = start_dataverse(port=0)
        stack.callback(dataverse.stop)
        commerce = start_commerce(port=0, cards=40, reward_points=6, levels_per_company=3)
        stack.callback(commerce.stop)
        settings = emulator_settings(dataverse.url, commerce.url, azurite.connection_string, "shot")
        stack.enter_context(environment({**settings, "SYNC_DASHBOARD_AUTH": "local"}))
        import function_app
        from shared.runtime import get_runtime

        runtime = get_runtime()
        pump = QueuePump(function_app.app, azurite.connection_string)
        for template in ("loyalty_cards", "loyalty_levels", "loyalty_reward_points"):
            invoke_timer(function_app.app, f"timer_{template}")
            invoke_timer(function_app.app, f"timer_inbound_{template}")
        pump.drain(timeout_s=120)
        bad_day(runtime, dataverse.url, commerce.url)
        host = LocalFunctionsHost(function_app.app).start()
        stack.callback(host.stop)
        driver = chromium()
        stack.callback(driver.quit)
        driver.get(f"{host.url}/api/ops/dashboard")
        full_page(driver, args.out)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
