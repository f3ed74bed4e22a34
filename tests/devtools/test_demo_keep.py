"""`./dev demo --keep`: after the demo everything stays up and working until the process is stopped."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devtools.demo import STATIC_TOKEN

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {STATIC_TOKEN}"}


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    process = subprocess.Popen([sys.executable, "-m", "devtools.demo", "--keep", "--cards", "20", "--timer-every", "2"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 240
    for line in process.stdout:
        match = re.match(r"\s+(Status page|Ops status|Dataverse|Commerce \(F&O\)|PID|By event|By timer|Edits in Dataverse)"
                         r"\s+(.+)", line)
        if match:
            urls[match.group(1)] = match.group(2).strip()
        if line.strip().startswith("curl "):
            urls["curl"] = line.strip()
        if "Try, in another terminal" in line or time.monotonic() > deadline:
            break
    for line in process.stdout:  # the commands to try, up to the curl example's URL
        if line.strip().startswith('-d '):
            urls["curl url"] = line.strip().split('"')[-2]
            break
    try:
        yield process, urls
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def test_the_demo_prints_where_the_status_page_and_the_services_are(demo: tuple[subprocess.Popen[str],
                                                                              dict[str, str]]) -> None:
    _, urls = demo
    assert {"Status page", "Ops status", "Dataverse", "Commerce (F&O)"} <= set(urls)
    assert "/api/ops/dashboard?token=" in urls["Status page"].split()[0]


def test_the_demo_prints_its_pid_and_which_templates_arrive_by_event_and_by_timer(
        demo: tuple[subprocess.Popen[str], dict[str, str]]) -> None:
    process, printed = demo
    assert printed["PID"] == str(process.pid)
    assert printed["By event"].startswith("loyalty_cards (F&O data events")
    assert printed["By timer"].startswith("loyalty_card_tiers, loyalty_levels, loyalty_reward_points, loyalty_card_balances "
                                          "(their timers, every 2 s here)")
    assert printed["Edits in Dataverse"].startswith(  # the one-way templates have no inbound timer
        "reach Commerce by the inbound timers (loyalty_cards, loyalty_levels, loyalty_reward_points)")


def test_the_curl_example_names_a_card_that_exists(demo: tuple[subprocess.Popen[str], dict[str, str]]) -> None:
    _, printed = demo
    url = printed["curl url"]
    assert "<CardNumber>" not in url
    assert requests.get(url, headers=AUTH, timeout=10).status_code == 200


def test_the_printed_status_page_url_opens_the_page_and_the_bare_page_is_refused(
        demo: tuple[subprocess.Popen[str], dict[str, str]]) -> None:
    _, urls = demo
    page = urls["Status page"].split()[0]
    with requests.Session() as browser:
        opened = browser.get(page, timeout=30)  # 303 to the page, the session in a cookie
        assert opened.status_code == 200 and "Loyalty sync" in opened.text and "token=" not in opened.url
    bare = requests.get(page.split("?")[0], timeout=30)
    assert bare.status_code == 403 and "token" in bare.text


def test_the_kept_host_answers_the_ops_endpoints(demo: tuple[subprocess.Popen[str], dict[str, str]]) -> None:
    _, urls = demo
    response = requests.get(urls["Ops status"], timeout=30)
    assert response.status_code == 200 and response.json()


def test_a_commerce_change_made_after_the_demo_still_reaches_dataverse(
        demo: tuple[subprocess.Popen[str], dict[str, str]]) -> None:
    _, urls = demo
    commerce, dataverse = urls["Commerce (F&O)"], urls["Dataverse"]
    card = requests.get(f"{commerce}RetailLoyaltyCards?$top=1&$select=CardNumber", headers=AUTH,
                        timeout=10).json()["value"][0]["CardNumber"]
    requests.patch(f"{commerce}RetailLoyaltyCards('{card}')", json={"PartyNumber": "KEPT-01"}, headers=AUTH,
                   timeout=10).raise_for_status()
    deadline = time.monotonic() + 60
    party = None
    while time.monotonic() < deadline:
        party = requests.get(f"{dataverse}msdyn_loyaltycards(msdyn_cardnumber='{card}')?$select=msdyn_partynumber",
                             headers=AUTH, timeout=10).json().get("msdyn_partynumber")
        if party == "KEPT-01":
            break
        time.sleep(0.5)
    assert party == "KEPT-01"


def test_stopping_the_demo_stops_every_server(demo: tuple[subprocess.Popen[str], dict[str, str]]) -> None:
    process, urls = demo
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    for url in (urls["Ops status"], urls["Dataverse"], urls["Commerce (F&O)"]):
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)
