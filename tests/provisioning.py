"""For tests of templates with an app-owned table (``dataverse.table``): create the tables in the Dataverse emulator
the way ``python -m shared.cli provision`` does, with every key Active at once (no wait)."""

from __future__ import annotations

import requests

from shared.dataverse.metadata import MetadataClient
from shared.provision import Outcome, Provisioner, app_owned
from shared.runtime import Runtime


def provision_app_tables(runtime: Runtime, dataverse_url: str, *templates: str) -> Outcome:
    """Provision the app-owned tables of ``templates`` (default: every template that declares one). Idempotent: a
    second call only reads. Asserts that nothing was refused."""
    answer = requests.post(f"{dataverse_url}/_emulator/keys", json={"activation_polls": 0}, timeout=10)
    answer.raise_for_status()
    try:
        chosen = app_owned(runtime.catalog, templates or None)
        provisioner = Provisioner(MetadataClient(runtime.dataverse.core), chosen, runtime.settings.dataverse_solution,
                                  sleep=lambda _: None)
        outcome = provisioner.apply(provisioner.plan())
    finally:
        requests.post(f"{dataverse_url}/_emulator/keys", json={"activation_polls": answer.json()["previous"]},
                      timeout=10).raise_for_status()
    assert outcome.problems == [], outcome.problems
    return outcome
