"""The ``data_event`` section of a template file: which virtual table an F&O data event names and which ``mserp_``
columns carry the template's key (inferred names, marked so), validated when the file loads; a fourth template's
data events need no Python change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from shared.mapping.catalog import DEFAULT_MAPPINGS_DIR, MappingFileError, load_catalog
from shared.runtime import Runtime
from shared.sync.callbacks import handle_callback
from tests.builders import as_body
from tests.data_events import data_event
from tests.shared.mapping.test_catalog import write_variant


def test_the_templates_name_their_virtual_tables_and_key_columns_as_inferred() -> None:
    sections = {t.name: t.data_event for t in load_catalog()}
    assert {name: (s.virtual_table, s.key_columns, s.basis) for name, s in sections.items() if s} == {
        "loyalty_cards": ("mserp_retailloyaltycardentity", {"CardNumber": "mserp_cardnumber"}, "inferred"),
        "loyalty_levels": ("mserp_smmloyaltylevelentity",
                           {"dataAreaId": "mserp_dataareaid", "LevelPhrase": "mserp_levelphrase"}, "inferred"),
        "loyalty_reward_points": ("mserp_retailloyaltyrewardpointentity",
                                  {"RewardPointId": "mserp_rewardpointid"}, "inferred"),
        "loyalty_card_balances": ("mserp_retailloyaltycardrewardpointtransactionentity",
                                  {"CardNumber": "mserp_cardnumber", "RewardPointId": "mserp_rewardpointid"}, "inferred"),
        "loyalty_card_tiers": ("mserp_retailloyaltycardtierv2entity",
                               {p: f"mserp_{p.lower()}" for p in ("LoyaltyCardNumber", "LoyaltyProgramName",
                                                                 "LoyaltyTierAffiliationName", "LoyaltyTierId",
                                                                 "ValidFrom", "ValidTo")}, "inferred"),
    }


BROKEN: list[tuple[str, str, Any, str]] = [
    ("a key property without a column", "loyalty_levels",
     lambda s: s["key_columns"].pop("dataAreaId"), "missing dataAreaId"),
    ("a column for a property that is no key", "loyalty_cards",
     lambda s: s["key_columns"].update(PartyNumber="mserp_partynumber"), "PartyNumber not in commerce.key"),
    ("a column that is no logical name", "loyalty_cards",
     lambda s: s["key_columns"].update(CardNumber="mserp_CardNumber"), "is not a logical name"),
    ("one column for two properties", "loyalty_levels",
     lambda s: s["key_columns"].update(dataAreaId="mserp_levelphrase"), "carries two key properties"),
    ("a table in upper case", "loyalty_cards", lambda s: s.update(virtual_table="MSERP_X"), "virtual_table"),
    ("no key columns", "loyalty_cards", lambda s: s.update(key_columns={}), "key_columns"),
    ("an unknown member", "loyalty_cards", lambda s: s.update(entity="x"), "entity"),
]


@pytest.mark.parametrize(("template", "change", "problem"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_a_broken_data_event_section_stops_the_load_naming_file_and_problem(tmp_path: Path, template: str,
                                                                           change: Any, problem: str) -> None:
    folder = write_variant(tmp_path, template, lambda data: change(data["data_event"]))
    with pytest.raises(MappingFileError, match=rf"{template}\.json") as raised:
        load_catalog(folder)
    assert problem in str(raised.value)


def test_a_template_without_the_section_loads_and_ignores_data_events(tmp_path: Path, runtime: Runtime) -> None:
    folder = write_variant(tmp_path, "loyalty_cards", lambda data: data.pop("data_event"))
    plan = load_catalog(folder).plan("loyalty_cards")
    answer = handle_callback(plan, runtime.queues, as_body(data_event(attributes={"mserp_cardnumber": "A"})))
    assert (answer.status, answer.body["status"]) == (200, "ignored")
    assert "no data_event section" in answer.body["reason"]


def test_a_fourth_template_takes_data_events_from_its_file_alone(tmp_path: Path, runtime: Runtime) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    card = json.loads((DEFAULT_MAPPINGS_DIR / "loyalty_cards.json").read_text(encoding="utf-8"))
    card["name"] = "gift_cards"
    card["data_event"] = {"virtual_table": "mserp_retailgiftcardentity", "key_columns": {"CardNumber": "mserp_giftcard"}}
    (folder / "gift_cards.json").write_text(json.dumps(card), encoding="utf-8")
    shutil.copy(DEFAULT_MAPPINGS_DIR / "loyalty_cards.json", folder / "loyalty_cards.json")
    plan = load_catalog(folder).plan("gift_cards")
    runtime.queues.ensure(["gift_cards"])
    event = data_event(table="mserp_retailgiftcardentity", attributes={"mserp_giftcard": "GC-1"})
    answer = handle_callback(plan, runtime.queues, as_body(event))
    assert (answer.status, answer.body["key"]) == (202, {"CardNumber": "GC-1"})
    other = handle_callback(plan, runtime.queues, as_body(data_event(attributes={"mserp_cardnumber": "A"})))
    assert (other.status, other.body["status"]) == (200, "ignored")
