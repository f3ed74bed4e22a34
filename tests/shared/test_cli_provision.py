"""``python -m shared.cli provision`` and the preflight of templates with an app-owned table, against the emulators:
the preflight names a missing table, column or inactive key with the command that fixes it; provision fixes it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shared import cli
from shared.mapping.catalog import DEFAULT_MAPPINGS_DIR
from shared.runtime import Runtime

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "app_owned" / "card_snapshots.json"
TEMPLATE = "card_snapshots"
FIX = "python -m shared.cli provision"


@pytest.fixture()
def mappings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "mappings"
    shutil.copytree(DEFAULT_MAPPINGS_DIR, folder)
    shutil.copy(SAMPLE, folder / SAMPLE.name)
    monkeypatch.setenv("SYNC_MAPPINGS_DIR", str(folder))
    return folder


@pytest.fixture()
def app(mappings: Path, runtime: Runtime, dataverse_emulator: object) -> Iterator[Runtime]:
    url = dataverse_emulator.url  # type: ignore[attr-defined]
    requests.post(f"{url}/_emulator/metadata/reset", timeout=5).raise_for_status()
    # A key is Active at the first read after its create: the CLI's wait then never sleeps (the wait itself is
    # driven by the clock in tests/shared/test_provision.py).
    requests.post(f"{url}/_emulator/keys", json={"activation_polls": 1}, timeout=5).raise_for_status()
    requests.delete(f"{url}/_emulator/requests", timeout=5).raise_for_status()
    yield runtime
    requests.post(f"{url}/_emulator/metadata/reset", timeout=5).raise_for_status()


def problems(runtime: Runtime) -> list[str]:
    assert runtime.preflight is not None
    return [str(p) for p in runtime.preflight.problems([TEMPLATE], fresh=True)]


def methods(url: str) -> set[str]:
    return {r["method"] for r in requests.get(f"{url}/_emulator/requests", timeout=5).json()["value"]}


def test_preflight_names_a_missing_app_owned_table_and_the_command_that_creates_it(app: Runtime) -> None:
    assert problems(app) == [f"template {TEMPLATE}: dataverse.table: Dataverse has no table 'lsync_cardsnapshot' yet "
                             f"(the template declares it, app-owned): create it with {FIX}"]


def test_provision_creates_the_table_and_then_preflight_passes(app: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["provision", "--template", TEMPLATE]) == 0
    out = capsys.readouterr()
    assert "lsync_cardsnapshot" in out.out and "lsync_CardNumberKey Active" in out.out
    assert "10 metadata requests sent (solution LoyaltySync)" in out.err
    assert problems(app) == []


def test_a_second_provision_sends_no_metadata_write(app: Runtime, dataverse_emulator: object,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    url = dataverse_emulator.url  # type: ignore[attr-defined]
    assert cli.main(["provision"]) == 0
    requests.delete(f"{url}/_emulator/requests", timeout=5).raise_for_status()
    assert cli.main(["provision"]) == 0
    assert "0 metadata requests sent" in capsys.readouterr().err
    assert methods(url) == {"GET"}


def test_a_dry_run_lists_the_requests_and_writes_nothing(app: Runtime, dataverse_emulator: object,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["provision", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "POST    EntityDefinitions" in out
    assert "EntityMetadata SchemaName=lsync_CardSnapshot" in out
    assert "RelationshipDefinitions" in out and "Lookup=lsync_ReplacementCardId" in out
    assert "KeyAttributes=lsync_cardnumber" in out
    assert methods(dataverse_emulator.url) == {"GET"}  # type: ignore[attr-defined]


def test_preflight_names_a_column_added_to_the_template_until_provision_adds_it(app: Runtime, mappings: Path) -> None:
    assert cli.main(["provision"]) == 0
    path = mappings / SAMPLE.name
    path.write_text(path.read_text().replace(
        '"columns": [', '"columns": [{"schema_name": "lsync_Expiring", "type": "decimal", "display_name": "Expiring"}, ', 1))
    from shared.runtime import get_runtime
    get_runtime.cache_clear()
    fresh = get_runtime()
    assert problems(fresh) == [f"template {TEMPLATE}: dataverse.table: Dataverse table lsync_cardsnapshot lacks the "
                               f"column lsync_expiring the template declares: add it with {FIX}"]
    assert cli.main(["provision"]) == 0
    assert problems(fresh) == []


def test_preflight_names_a_key_whose_index_is_not_active(app: Runtime, dataverse_emulator: object,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    url = dataverse_emulator.url  # type: ignore[attr-defined]
    requests.post(f"{url}/_emulator/keys", json={"activation_polls": 1000}, timeout=5).raise_for_status()
    monkeypatch.setattr(app.settings, "provision_wait_s", 1.0)  # shorter than one poll: it reports, never sleeps
    assert cli.main(["provision"]) == cli.EXIT_FAILED
    assert "not Active yet: lsync_cardsnapshot.lsync_CardNumberKey" in capsys.readouterr().err
    found = problems(app)
    assert len(found) == 1
    assert "the index of key lsync_CardNumberKey on lsync_cardsnapshot is Pending, not Active" in found[0]
    assert FIX in found[0]


def test_a_solution_of_another_prefix_is_refused_with_what_to_do(app: Runtime, dataverse_emulator: object,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    url = dataverse_emulator.url  # type: ignore[attr-defined]
    requests.post(f"{url}/_emulator/solutions", json={"unique_name": "Partner", "prefix": "ctso"},
                  timeout=5).raise_for_status()
    monkeypatch.setattr(app.settings, "dataverse_solution", "Partner")
    assert cli.main(["provision"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "customization prefix is 'ctso'" in err and "set SYNC_DATAVERSE_SOLUTION" in err
    assert methods(url) == {"GET"}


def test_provision_of_a_template_without_a_table_block_is_a_usage_error(app: Runtime) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["provision", "--template", "loyalty_cards"])
    assert exc.value.code == 2


def test_a_provisioned_table_takes_a_templates_sync_like_the_microsoft_tables(app: Runtime, dataverse_emulator: object,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    url = dataverse_emulator.url  # type: ignore[attr-defined]
    assert cli.main(["provision"]) == 0
    assert cli.main(["sync", "loyalty_cards"]) == 0
    assert cli.main(["sync", TEMPLATE]) == 0
    cards = requests.get(f"{url}/_emulator/rows/msdyn_loyaltycards", timeout=5).json()["value"]
    snapshots = requests.get(f"{url}/_emulator/rows/lsync_cardsnapshots", timeout=5).json()["value"]
    assert sorted(r["lsync_cardnumber"] for r in snapshots) == sorted(r["msdyn_cardnumber"] for r in cards)
    replaced = [r for r in cards if r["msdyn_replacementcardnumber"]]
    assert replaced, "the seed has replaced cards: the lookup is exercised"
    by_number = {r["lsync_cardnumber"]: r for r in snapshots}
    ids = {r["msdyn_cardnumber"]: r["msdyn_loyaltycardid"] for r in cards}
    for card in replaced:
        assert by_number[card["msdyn_cardnumber"]]["_lsync_replacementcardid_value"] == ids[
            card["msdyn_replacementcardnumber"]]


def test_a_provisioned_table_with_a_mixed_case_lookup_is_read_back_by_the_lookups_logical_name(
        app: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    # The lookup's navigation property is lsync_ReplacementCardId; its value reads as _lsync_replacementcardid_value.
    assert cli.main(["provision"]) == 0
    assert cli.main(["sync", "loyalty_cards"]) == 0
    assert cli.main(["sync", TEMPLATE]) == 0
    assert cli.main(["sync", TEMPLATE, "--direction", "inbound"]) == 0
    capsys.readouterr()
    code = cli.main(["reconcile", TEMPLATE])
    assert code == 0, capsys.readouterr().out


def test_the_test_helper_provisions_idempotently(app: Runtime, dataverse_emulator: object) -> None:
    from tests.provisioning import provision_app_tables

    url = dataverse_emulator.url  # type: ignore[attr-defined]
    assert len(provision_app_tables(app, url, TEMPLATE).sent) == 10
    assert provision_app_tables(app, url, TEMPLATE).sent == []
    assert problems(app) == []


def test_preflight_names_a_failed_key_index_and_reactivate_entity_key(app: Runtime, dataverse_emulator: object) -> None:
    url = dataverse_emulator.url  # type: ignore[attr-defined]
    assert cli.main(["provision"]) == 0
    requests.post(f"{url}/_emulator/keys", json={"table": "lsync_cardsnapshot", "status": "Failed"},
                  timeout=5).raise_for_status()
    found = problems(app)
    assert len(found) == 1 and "failed to build" in found[0] and "ReactivateEntityKey" in found[0]


def test_check_prints_the_missing_table_with_the_fix_and_exits_6(app: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    """A table to create is something to set up, not a service that failed: a configuration error (6), on stderr."""
    assert cli.main(["check", "--template", TEMPLATE]) == cli.EXIT_CONFIG
    assert f"Dataverse has no table 'lsync_cardsnapshot' yet (the template declares it, app-owned): create it with {FIX}" \
        in capsys.readouterr().err
