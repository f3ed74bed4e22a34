"""The main job on the embedded default: Azurite + both emulators, no tenant.

1. starts Azurite and the Dataverse and Commerce emulators on free loopback ports, seeded;
2. runs the initial sync of every template through its timer trigger (the real app object);
3. registers the callback trigger in the Commerce emulator as the HTTPS endpoint of the loyalty cards'
   F&O data events (a Dataverse webhook: no code in F&O), changes a loyalty card in Commerce, and lets
   the OnExternalUpdated event travel over HTTP to the callback trigger, through the storage queue to
   the worker trigger;
4. edits a card in Dataverse as an agent would and lets the inbound timer bring it to Commerce;
5. guard rails: an edit Commerce refuses is parked, then replayed once the cause is gone; a sync's dry run
   lists what it would write;
6. prints what landed in Dataverse, and stops everything; with ``--keep`` it leaves Azurite, both emulators
   and a local Functions host running (queues drained, timers fired every ``--timer-every`` seconds), prints
   the status page's URL and the CLI commands to try, and stops them on Ctrl-C.

    ./dev demo [--keep] [--cards N] [--reward-points N] [--levels-per-company N]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import requests

from devtools.azurite import start_azurite
from devtools.functions_host import LocalFunctionsHost, QueuePump, invoke_timer
from emulators.commerce.server import start_commerce
from emulators.dataverse.server import start_dataverse

STATIC_TOKEN = "local-emulator-token"  # the emulators check a bearer token is present, not what it says


def emulator_settings(dataverse_url: str, commerce_url: str, storage: str, prefix: str = "loyaltysync") -> dict[str, str]:
    """App settings that point the app at the local emulators and Azurite."""
    return {
        "DATAVERSE_URL": dataverse_url,
        "COMMERCE_URL": commerce_url,
        "AzureWebJobsStorage": storage,
        "SYNC_CREDENTIAL": "static",
        "SYNC_STATIC_TOKEN": STATIC_TOKEN,
        "SYNC_TABLE_PREFIX": prefix,
        "SYNC_QUEUE_PREFIX": prefix.lower(),
    }


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    from shared.runtime import get_runtime
    from shared.settings import get_settings

    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    get_settings.cache_clear()
    get_runtime.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
        get_runtime.cache_clear()


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {STATIC_TOKEN}", "Accept": "application/json", "OData-Version": "4.0"}


def count_rows(dataverse_url: str, entity_set: str) -> int:
    url: str | None = f"{dataverse_url}/api/data/v9.2/{entity_set}?$select=createdon"
    total = 0
    while url:
        body = requests.get(url, headers={**bearer(), "Prefer": "odata.maxpagesize=5000"}, timeout=30).json()
        total += len(body["value"])
        url = body.get("@odata.nextLink")
    return total


def card_in_dataverse(dataverse_url: str, card_number: str) -> dict[str, Any]:
    url = f"{dataverse_url}/api/data/v9.2/msdyn_loyaltycards(msdyn_cardnumber='{card_number}')"
    body: dict[str, Any] = requests.get(url, headers=bearer(), timeout=30).json()
    return body


WIDTH = 120  # every table the demo prints fits this many columns
CLI_WIDTH = ["--width", str(WIDTH)]


def status_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The status rows as the demo shows them: the columns a first look needs (``status`` has them all)."""
    return [{"template": r["template"], "direction": r["direction"], "scope": r["scope"], "status": r["status"],
             "seen": r["counts"].get("seen", ""), "written": r["counts"].get("written", ""), "parked": r["parked"]}
            for r in rows]


class ExpectedWarning(logging.Filter):
    """Marks the app's log lines that the demo provokes on purpose, so that nobody takes them for a fault."""

    def __init__(self, starts: str, why: str) -> None:
        super().__init__()
        self.starts, self.why = starts, why

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if str(record.msg).startswith("%s") and args and str(args[0]).startswith(self.starts):
            record.msg = f"(expected: {self.why}) " + str(record.msg)
        return True


@contextmanager
def expected_warning(starts: str, why: str) -> Iterator[None]:
    marker = ExpectedWarning(starts, why)
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(marker)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(marker)


def guard_rails(app: Any, runtime: Any, dataverse_url: str, commerce: Any) -> bool:
    """Step 4: a record Commerce refuses is parked with its reason, not lost, and replayed once the cause is gone;
    ``sync --dry-run`` lists what a sync would write and writes nothing. Returns whether the replay landed."""
    from shared.cli import main as cli

    print("\n4. Guard rails: a record Commerce refuses is parked, then replayed; a dry run writes nothing")
    second = requests.get(f"{commerce.url}/data/RetailLoyaltyCards?$top=2&$select=CardNumber", headers=bearer(),
                          timeout=10).json()["value"][1]["CardNumber"]
    commerce.set_validation_failures({"RetailLoyaltyCards": [second]})  # F&O's validateWrite refuses the card
    party = "AGENT-EDIT-2"
    requests.patch(f"{dataverse_url}/api/data/v9.2/msdyn_loyaltycards(msdyn_cardnumber='{second}')",
                   json={"msdyn_partynumber": party}, headers={**bearer(), "If-Match": "*"},
                   timeout=10).raise_for_status()
    print(f"   card {second}: an agent's edit that Commerce refuses (one WARNING 'record parked for retry' follows: "
          "expected)", flush=True)
    with expected_warning("record parked for retry", "the demo makes Commerce refuse this edit"):
        invoke_timer(app, "timer_inbound_loyalty_cards")
    sys.stderr.flush()
    print("   -> python -m shared.cli parked")
    sys.stdout.flush()
    cli([*CLI_WIDTH, "parked", "--direction", "inbound"])
    commerce.set_validation_failures({})  # the cause is gone
    print("   the cause fixed in Commerce -> python -m shared.cli replay loyalty_cards --all")
    sys.stdout.flush()
    cli([*CLI_WIDTH, "replay", "loyalty_cards", "--all"])
    landed = requests.get(f"{commerce.url}/data/RetailLoyaltyCards('{second}')", headers=bearer(),
                          timeout=10).json()["PartyNumber"]
    print(f"   PartyNumber in Commerce: {landed}")

    point = requests.get(f"{commerce.url}/data/RetailLoyaltyRewardPoints?$top=1&$select=RewardPointId,RedeemRanking",
                         headers=bearer(), timeout=10).json()["value"][0]
    requests.patch(f"{commerce.url}/data/RetailLoyaltyRewardPoints('{point['RewardPointId']}')",
                   json={"RedeemRanking": point["RedeemRanking"] + 1}, headers=bearer(), timeout=10).raise_for_status()
    print(f"   reward point {point['RewardPointId']}: RedeemRanking changed in Commerce -> "
          "python -m shared.cli sync loyalty_reward_points --dry-run")
    sys.stdout.flush()
    cli([*CLI_WIDTH, "sync", "loyalty_reward_points", "--dry-run"])
    return bool(landed == party and not list(runtime.state.parked.all("loyalty_cards")))


BALANCES = "loyalty_card_balances"
AGENT_COLUMNS = ("lsync_rewardpointid", "lsync_available", "lsync_unvested", "lsync_expired", "lsync_issued",
                 "lsync_used", "lsync_expiringsoon", "lsync_expiringsoondate", "lsync_nextchangedate",
                 "lsync_lasttransactiondate", "lsync_asof")
AGENT_LABELS = {"lsync_rewardpointid": "point", "lsync_expiringsoon": "expiring", "lsync_expiringsoondate": "expiring on",
                "lsync_nextchangedate": "next change", "lsync_lasttransactiondate": "last line", "lsync_asof": "as of"}


def agent_view(dataverse_url: str, card: str) -> list[dict[str, Any]]:
    """What an agent reads for a card: its balance rows in Dataverse."""
    url = (f"{dataverse_url}/api/data/v9.2/lsync_loyaltycardbalances?$select={','.join(AGENT_COLUMNS)}"
           f"&$filter=lsync_cardnumber eq '{card}'")
    rows: list[dict[str, Any]] = requests.get(url, headers=bearer(), timeout=10).json()["value"]
    return [{AGENT_LABELS.get(c, c.removeprefix("lsync_")): str(r.get(c)) for c in AGENT_COLUMNS} for r in rows]


class _MovedClock:
    """The app's clock moved ahead by ``days`` (the demo's "time passes")."""

    def __init__(self, base: Any, days: float) -> None:
        self.base, self.offset = base, days * 86_400.0

    def now(self) -> Any:
        from datetime import timedelta
        return self.base.now() + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return float(self.base.monotonic()) + self.offset


def points_balance(app: Any, runtime: Any, dataverse_url: str, commerce: Any) -> bool:
    """5. A card's points balance, as an agent reads it: after a redemption in Commerce, and after its points vest
    or expire (the app's clock moved to the card's next change date)."""
    from datetime import date, datetime

    from emulators.commerce.loyalty_activity import CommerceLoyaltyAdmin, LoyaltyActivityRefused
    from shared.cli import print_table

    if runtime.catalog.get(BALANCES) is None:
        return True
    print("\n5. Points balances (lsync_loyaltycardbalance, folded from Commerce's transaction lines; one-way)")
    rows = [r for r in requests.get(f"{dataverse_url}/api/data/v9.2/lsync_loyaltycardbalances?$select=lsync_cardnumber,"
                                    "lsync_rewardpointid,lsync_available,lsync_nextchangedate&$filter=lsync_available "
                                    "gt 20 and lsync_nextchangedate ne null", headers=bearer(), timeout=10).json()["value"]]
    if not rows:
        print("   no card with points and a next change date in the generated data")
        return False
    admin = CommerceLoyaltyAdmin(commerce.url)
    for row in rows:  # the first card Commerce lets redeem (not "No tender", "Blocked" or a non-redeemable point)
        card, point = row["lsync_cardnumber"], row["lsync_rewardpointid"]
        first = agent_view(dataverse_url, card)
        try:
            admin.redeem(card, 10, reward_point=point, at=datetime.now().astimezone())
        except LoyaltyActivityRefused:
            continue
        break
    else:
        print("   no card in the generated data may redeem")
        return False
    print(f"   card {card} as an agent reads it:")
    print_table(first)
    invoke_timer(app, f"timer_incremental_{BALANCES}")
    after = agent_view(dataverse_url, card)
    print(f"   after a redemption of 10 {point} points in Commerce (incremental timer):")
    print_table(after)
    changed = next(r for r in after if r["point"] == point)
    nxt = changed["next change"]
    days = (date.fromisoformat(nxt[:10]) - runtime.state.clock.now().date()).days if nxt != "None" else 0
    if days > 0:
        clock = runtime.state.clock
        runtime.state.clock = _MovedClock(clock, days)
        try:
            invoke_timer(app, f"timer_incremental_{BALANCES}")
        finally:
            runtime.state.clock = clock
        print(f"   {days} days later, on its next change date {nxt[:10]} (points vest or expire; no transaction):")
        print_table(agent_view(dataverse_url, card))
    return after != first  # the redemption reached the agent's view


def card_tiers(app: Any, runtime: Any, pump: QueuePump, dataverse_url: str, commerce_url: str) -> bool:
    """What an agent reads of a card's tiers, before and after a tier's last day passes (the app's clock moved)."""
    from datetime import UTC, datetime, timedelta

    from emulators.commerce.loyalty_activity import CommerceLoyaltyAdmin
    from shared.clock import Clock

    if runtime.catalog.get("loyalty_card_tiers") is None:
        return True

    class Moved(Clock):
        def __init__(self, now: datetime) -> None:
            self.at = now

        def now(self) -> datetime:
            return self.at

    card = requests.get(f"{commerce_url}/data/RetailLoyaltyCards?$top=1&$select=CardNumber", headers=bearer(),
                        timeout=10).json()["value"][0]["CardNumber"]
    today = datetime.now(UTC).date()
    program = "Contoso Rewards"

    def row(tier: str, valid_from: str, valid_to: str = "1900-01-01") -> dict[str, Any]:
        return {"LoyaltyProgramName": program, "LoyaltyTierAffiliationName": program, "LoyaltyTierId": tier,
                "ValidFrom": f"{valid_from}T00:00:00Z", "ValidTo": f"{valid_to}T00:00:00Z", "AffiliationType": "Loyalty"}

    def agent_view() -> dict[str, bool]:
        rows = requests.get(f"{dataverse_url}/api/data/v9.2/lsync_loyaltycardtiers", headers=bearer(), timeout=10,
                            params={"$filter": f"lsync_cardnumber eq '{card}'",
                                    "$select": "lsync_tierid,lsync_validto,lsync_iscurrent"}).json()["value"]
        for r in rows:
            until = "open" if str(r["lsync_validto"]).startswith("1900-01-01") else r["lsync_validto"]  # F&O's empty date
            print(f"   {card} {program:16} {r['lsync_tierid']:9} valid to {until:10}  "
                  f"{'CURRENT' if r['lsync_iscurrent'] else ''}")
        return {r["lsync_tierid"]: r["lsync_iscurrent"] for r in rows}

    print("\n4b. Card tiers: what an agent reads for a card (lsync_loyaltycardtiers, Current tier = current)")
    CommerceLoyaltyAdmin(commerce_url).set_card_tiers(card, [row("Silver", "2020-01-01"),
                                                             row("Gold", "2024-01-01", today.isoformat())])
    invoke_timer(app, "timer_loyalty_card_tiers")
    pump.drain(60)
    before = agent_view()
    clock = runtime.state.clock
    runtime.state.clock = Moved(datetime.now(UTC) + timedelta(days=1))  # Gold's last day has passed
    print("   ... the clock moves one day: Gold ended yesterday (no change in Commerce)")
    try:
        invoke_timer(app, "timer_loyalty_card_tiers")
        pump.drain(60)
        after = agent_view()
    finally:
        runtime.state.clock = clock
    return before == {"Silver": False, "Gold": True} and after == {"Silver": True, "Gold": False}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the sync end to end on Azurite and the local emulators.")
    parser.add_argument("--cards", type=int, default=500)
    parser.add_argument("--reward-points", type=int, default=12)
    parser.add_argument("--levels-per-company", type=int, default=4)
    parser.add_argument("-v", "--verbose", action="store_true", help="show the app's log lines")
    parser.add_argument("--keep", action="store_true",
                        help="leave everything running (status page, callbacks, queues, timers) until Ctrl-C")
    parser.add_argument("--timer-every", type=float, default=60.0, help="with --keep: seconds between timer runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")

    with ExitStack() as stack:
        print("Starting Azurite and the emulators ...")
        azurite = start_azurite()
        stack.callback(azurite.stop)
        dataverse = start_dataverse(port=0, key_activation_polls=1)  # a new key's index is Active at its first read
        stack.callback(dataverse.stop)
        commerce = start_commerce(port=0, cards=args.cards, reward_points=args.reward_points,
                                  levels_per_company=args.levels_per_company)
        stack.callback(commerce.stop)
        print(f"  Azurite tables  {azurite.connection_string.split('TableEndpoint=')[1].rstrip(';')}")
        print(f"  Dataverse       {dataverse.url}/api/data/v9.2/")
        print(f"  Commerce (F&O)  {commerce.url}/data/")
        stack.enter_context(environment(emulator_settings(dataverse.url, commerce.url, azurite.connection_string)))

        function_app = importlib.import_module("function_app")
        from shared.cli import print_table
        from shared.ops.queries import status_rows
        from shared.runtime import get_runtime

        runtime = get_runtime()
        from shared.provision import app_owned
        if app_owned(runtime.catalog):
            from shared.cli import main as cli_main
            print("\n0. The app-owned Dataverse tables the templates declare: python -m shared.cli provision")
            if cli_main([*CLI_WIDTH, "provision"]) != 0:
                return 1
        print("\n1. Initial sync: each template's timer plans key ranges and queues them; the page workers write them")
        started = time.monotonic()
        pump = QueuePump(function_app.app, azurite.connection_string)
        ranges = 0
        for template in runtime.catalog:  # in lookup order: the cards land before the tier rows that look them up
            invoke_timer(function_app.app, f"timer_{template.name}")
            ranges += pump.drain(300)
        print(f"   {ranges} key ranges done in {time.monotonic() - started:.1f} s")
        print_table(status_summary(status_rows(runtime)))

        print("\n2. A Commerce change reaches Dataverse: F&O data event (via Dataverse) -> callback trigger -> queue "
              "-> worker")
        host = LocalFunctionsHost(function_app.app).start()
        stack.callback(host.stop)
        endpoint = f"{host.url}/api/callbacks/loyalty_cards"
        requests.post(f"{commerce.url}/_emulator/business-events/endpoints",
                      json={"url": endpoint, "entity_sets": ["RetailLoyaltyCards"], "format": "data_event"},
                      timeout=10).raise_for_status()
        commerce.publisher.flush(10)
        first = requests.get(f"{commerce.url}/data/RetailLoyaltyCards?$top=1&$select=CardNumber,CardTenderType",
                             headers=bearer(), timeout=10).json()["value"][0]
        card = first["CardNumber"]
        new_type = "Blocked" if first["CardTenderType"] != "Blocked" else "AsCardTender"
        before = card_in_dataverse(dataverse.url, card)["msdyn_cardtendertype"]
        requests.patch(f"{commerce.url}/data/RetailLoyaltyCards('{card}')", json={"CardTenderType": new_type},
                       headers=bearer(), timeout=10).raise_for_status()
        commerce.publisher.flush(15)
        pump.drain(30)
        after = card_in_dataverse(dataverse.url, card)["msdyn_cardtendertype"]
        print(f"   card {card}: CardTenderType set to {new_type} in Commerce")
        print(f"   msdyn_cardtendertype in Dataverse: {before} -> {after}")

        print("\n3. An agent's edit in Dataverse reaches Commerce (change tracking, inbound timer trigger)")
        for template in runtime.catalog:  # the baseline: the timer takes the token and queues key ranges
            if template.aggregate is None:  # an aggregate (balances) is one-way: no inbound timer
                invoke_timer(function_app.app, f"timer_inbound_{template.name}")
        baseline_ranges = pump.drain(120)  # the page workers compare them: every row the initial sync wrote is equal
        print(f"   baseline: {baseline_ranges} key ranges compared by the page workers")
        agent_party = "AGENT-EDIT-1"
        requests.patch(f"{dataverse.url}/api/data/v9.2/msdyn_loyaltycards(msdyn_cardnumber='{card}')",
                       json={"msdyn_partynumber": agent_party}, headers={**bearer(), "If-Match": "*"},
                       timeout=10).raise_for_status()
        invoke_timer(function_app.app, "timer_inbound_loyalty_cards")
        in_commerce = requests.get(f"{commerce.url}/data/RetailLoyaltyCards('{card}')", headers=bearer(),
                                   timeout=10).json()["PartyNumber"]
        print(f"   card {card}: msdyn_partynumber set to {agent_party} in Dataverse")
        print(f"   PartyNumber in Commerce: {in_commerce}")
        invoke_timer(function_app.app, "timer_loyalty_cards")  # the next Commerce scan: no echo back
        pump.drain(60)
        marks = {m.direction: m for m in runtime.state.watermarks.all() if m.template == "loyalty_cards"}
        counts = marks["fo_to_dataverse"].counts
        print("   next Commerce -> Dataverse run: " + ", ".join(f"{k} {v}" for k, v in counts.items()))

        guarded = guard_rails(function_app.app, runtime, dataverse.url, commerce)
        tiers_ok = card_tiers(function_app.app, runtime, pump, dataverse.url, commerce.url)
        balances_ok = points_balance(function_app.app, runtime, dataverse.url, commerce)

        print("\n6. What landed in Dataverse")
        rows = [{"entity set": t.dataverse.entity_set, "rows": str(count_rows(dataverse.url, t.dataverse.entity_set))}
                for t in runtime.catalog]
        print_table(rows)
        parked = list(runtime.state.parked.all())
        print(f"   parked records (kept for retry, with reasons): {len(parked)}")
        for entry in parked[:5]:
            print(f"   - {entry['PartitionKey']} {entry['key']}: {entry['error_class']}: {entry['error'][:100]}")
        expected_after = next(e.dataverse for e in runtime.catalog.templates["loyalty_cards"]
                              .value_maps["RetailLoyaltyTenderTypeBase"].entries if e.member == new_type)
        ok = (after == expected_after and in_commerce == agent_party and guarded and tiers_ok and balances_ok)
        print("\nDemo " + ("succeeded." if ok else "FAILED: a change did not land (see above)."))
        if args.keep:
            settings = emulator_settings(dataverse.url, commerce.url, azurite.connection_string)
            keep_running(function_app.app, runtime, pump, host.url, commerce.url, dataverse.url, settings,
                         args.timer_every, card=card, by_event=["loyalty_cards"], page_url=host.dashboard_url)
        else:
            print("Next: ./dev demo --keep leaves all of it running (the status page, callbacks, queues and timers) "
                  "to try\nthe CLI and the page against it; Ctrl-C stops it.")
        return 0 if ok else 1


def env_file(settings: dict[str, str]) -> str:
    """The demo's settings as a file a shell can source, so the CLI in another terminal sees the same storage."""
    handle, path = tempfile.mkstemp(prefix="loyaltysync-demo-", suffix=".env")
    with os.fdopen(handle, "w") as out:
        out.writelines(f"export {name}={shlex.quote(value)}\n" for name, value in settings.items())
    return path


def keep_running(app: Any, runtime: Any, pump: QueuePump, host_url: str, commerce_url: str, dataverse_url: str,
                 settings: dict[str, str], timer_every: float, *, card: str, by_event: list[str],
                 page_url: str = "") -> None:
    """Play the Functions host until Ctrl-C: HTTP triggers served, queues drained, timers fired. ``page_url``: the
    status page with its local-mode token (open it once; the page keeps the session in a cookie)."""
    path = env_file(settings)
    stop = threading.Event()

    def host_loop() -> None:
        next_timers = time.monotonic() + timer_every
        while not stop.is_set():
            try:
                pump.run_once()
                if time.monotonic() >= next_timers:
                    for template in runtime.catalog:
                        invoke_timer(app, f"timer_{template.name}")
                        # a one-way aggregate (balances) has its incremental pass instead of an inbound timer
                        invoke_timer(app, f"timer_{'incremental' if template.aggregate else 'inbound'}_{template.name}")
                    next_timers = time.monotonic() + timer_every
            except Exception as exc:  # the host logs a failed invocation and carries on; so does this loop
                logging.getLogger("loyaltysync.demo").warning("invocation failed: %s", exc)
            stop.wait(0.5)

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # `kill` stops it as Ctrl-C does (background jobs of a script ignore SIGINT)

    signal.signal(signal.SIGTERM, interrupt)
    worker = threading.Thread(target=host_loop, name="demo-host", daemon=True)
    worker.start()
    cli = ".venv/bin/python -m shared.cli"
    names = [t.name for t in runtime.catalog]
    by_timer = [n for n in names if n not in by_event]
    two_way = [t.name for t in runtime.catalog if not t.one_way]  # tiers and balances are written from Commerce only
    print(f"""
Still running (Ctrl-C, or kill {os.getpid()}, stops everything):
  PID             {os.getpid()}
  Status page     {page_url or host_url + "/api/ops/dashboard"}
  Ops status      {host_url}/api/ops/status
  Callbacks       {host_url}/api/callbacks/<template>   (queues drained as they fill)
  Dataverse       {dataverse_url}/api/data/v9.2/
  Commerce (F&O)  {commerce_url}/data/

How Commerce changes arrive in Dataverse:
  By event        {', '.join(by_event)} (F&O data events to the callback endpoint, within seconds)
  By timer        {', '.join(by_timer)} (their timers, every {timer_every:g} s here)
  Edits in Dataverse  reach Commerce by the inbound timers ({', '.join(two_way)}), every {timer_every:g} s here

Try, in another terminal (the same settings):
  . {path}
  {cli} status
  {cli} parked
  {cli} sync loyalty_cards --dry-run
  {cli} pause loyalty_cards && {cli} resume loyalty_cards
  curl -s -X PATCH -H 'Authorization: Bearer {STATIC_TOKEN}' -H 'Content-Type: application/json' \\
    -d '{{"PartyNumber": "000999"}}' "{commerce_url}/data/RetailLoyaltyCards('{card}')"
""", flush=True)
    try:
        while worker.is_alive():
            worker.join(1.0)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
    finally:
        stop.set()
        worker.join(10)
        os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
