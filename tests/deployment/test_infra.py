"""infra/main.bicep and infra/appsettings.bicep read as specifications: a redeployment keeps what operators set,
secrets are Key Vault references, and the platform's hardening guidance holds (no FTP, no basic publishing
credentials, data roles scoped to what the app uses, storage network rules as an option)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.settings import KEY_VAULT_REFERENCE, get_settings

REPO = Path(__file__).resolve().parents[2]
MAIN = (REPO / "infra" / "main.bicep").read_text()
APP_SETTINGS = (REPO / "infra" / "appsettings.bicep").read_text()

# The settings the deployment owns (docs: deployment, "Settings: deployment's and operator's"). Every other setting
# belongs to the operator and must survive a redeployment.
DEPLOYMENT_OWNED = {
    "AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId",
    "AZURE_CLIENT_ID", "APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "DATAVERSE_URL", "COMMERCE_URL", "SYNC_STORAGE_TABLE_ENDPOINT", "SYNC_STORAGE_QUEUE_ENDPOINT", "SYNC_QUEUE_PREFIX",
    "SYNC_CALLBACK_SECRET",  # the Key Vault reference; the secret itself is set in the vault
}
# Settings an operator sets in the portal or with `az functionapp config appsettings set` (a sample of them).
OPERATOR_SET = {"SYNC_PAUSED_TEMPLATES": "loyalty_levels", "SYNC_TWO_WAY": "false",
                "SYNC_DATAVERSE_CLIENT_IDS": "00000000-0000-0000-0000-000000000001", "SYNC_LEGAL_ENTITIES": "usmf",
                "SYNC_DELETE_POLICY": "ignore", "SYNC_PAGE_SIZE": "500", "SYNC_OPERATORS_ROLE": "Ops.Admin"}
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|CONNECTION_STRING$|_KEY$")


def code(text: str) -> str:
    """The Bicep without its ``//`` comments (a ``//`` inside a URL, as in ``https://``, is kept)."""
    return re.sub(r"(^|\s)//.*$", "", text, flags=re.M)


def block(text: str, opening: str) -> str:
    """The body of the ``{ ... }`` that follows ``opening`` (braces counted)."""
    start = text.index(opening)
    start = text.index("{", start)
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1:i]
    raise AssertionError(f"unclosed block after {opening!r}")


def object_entries(body: str) -> dict[str, str]:
    """``name: value`` lines of a Bicep object literal (one entry per line, comments dropped)."""
    entries = {}
    for line in body.splitlines():
        line = code(line).strip()
        match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(.+)$", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


DEPLOYED = object_entries(block(MAIN, "var deploymentOwnedSettings ="))
DEFAULTS = object_entries(block(MAIN, "var operatorDefaultSettings ="))


def redeploy(site: dict[str, str]) -> dict[str, str]:
    """What appsettings.bicep writes over a site that has ``site``: ARM's ``union`` (a later object wins), in the
    order the module gives it."""
    match = re.search(r"properties:\s*union\((\w+),\s*list\('\$\{app\.id\}/config/appsettings', '[\d-]+'\)"
                      r"\.properties,\s*(\w+)\)", APP_SETTINGS)
    assert match, "appsettings.bicep must write union(<defaults>, <the site's current settings>, <deployment-owned>)"
    objects = {"operatorDefaults": dict.fromkeys(DEFAULTS, "<first value>"), "deploymentOwned":
               dict.fromkeys(DEPLOYED, "<deployment value>")}
    return {**objects[match.group(1)], **site, **objects[match.group(2)]}


def test_the_site_itself_lists_no_app_settings_a_put_of_it_would_replace() -> None:
    site = code(block(MAIN, "resource app 'Microsoft.Web/sites@"))
    assert "appSettings" not in site
    assert "module appSettings 'appsettings.bicep'" in MAIN


def test_the_deployment_writes_only_the_settings_it_owns() -> None:
    assert set(DEPLOYED) == DEPLOYMENT_OWNED


@pytest.mark.parametrize("setting", sorted(OPERATOR_SET))
def test_a_redeployment_keeps_what_an_operator_set(setting: str) -> None:
    after = redeploy({**OPERATOR_SET, "DATAVERSE_URL": "https://old.crm.dynamics.com"})
    assert after[setting] == OPERATOR_SET[setting]


def test_the_first_deployment_writes_the_operators_first_values_and_the_deployments() -> None:
    after = redeploy({})
    assert (set(DEFAULTS) | DEPLOYMENT_OWNED) <= set(after)
    assert not set(DEFAULTS) & DEPLOYMENT_OWNED


def test_no_operator_owned_setting_is_a_literal_in_the_bicep() -> None:
    """Each first value comes from a parameter (fed from the azd environment), never a value written in the file."""
    params = set(re.findall(r"^param (\w+)", MAIN, re.M))
    for name, value in DEFAULTS.items():
        used = set(re.findall(r"\b(\w+)\b", value)) - {"string"}
        assert used and used <= params, f"{name}: {value}"


def test_every_secret_setting_is_a_key_vault_reference_read_with_the_apps_identity() -> None:
    secrets = {name: value for name, value in {**DEPLOYED, **DEFAULTS}.items() if SECRET_NAME.search(name)
               and name != "APPLICATIONINSIGHTS_CONNECTION_STRING"}  # no secret in it: ingestion is Entra-only
    assert "SYNC_CALLBACK_SECRET" in secrets
    for name, value in secrets.items():
        assert value.startswith(f"'{KEY_VAULT_REFERENCE}SecretUri=${{vault.properties.vaultUri}}secrets/"), name
    assert "keyVaultReferenceIdentity: identity.id" in block(MAIN, "resource app 'Microsoft.Web/sites@")
    vault = block(MAIN, "resource vault 'Microsoft.KeyVault/vaults@")
    assert "enableRbacAuthorization: true" in vault and "accessPolicies" not in vault
    role = block(MAIN, "resource vaultRoleAssignment ")
    assert "scope: vault" in role and "keyVaultSecretsUser" in role
    assert "var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'" in MAIN  # Key Vault Secrets User
    assert re.search(r"@secure\(\)\nparam callbackSecret string = ''", MAIN)


def test_an_unresolved_key_vault_reference_is_a_configuration_error_naming_the_setting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from shared.settings import describe

    monkeypatch.setenv("SYNC_CALLBACK_SECRET", "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/s/)")
    get_settings.cache_clear()
    try:
        with pytest.raises(ValidationError) as caught:
            get_settings()
    finally:
        get_settings.cache_clear()
    [line] = [line for line in describe(caught.value) if line.startswith("SYNC_CALLBACK_SECRET")]
    assert "Key Vault reference" in line and "vault.azure.net" not in line


def test_ftp_and_basic_publishing_credentials_are_off() -> None:
    assert "ftpsState: 'Disabled'" in block(MAIN, "siteConfig:")
    for kind in ("scm", "ftp"):
        policy = re.search(r"resource \w+ 'Microsoft\.Web/sites/basicPublishingCredentialsPolicies@[\d-]+' = \{"
                           rf"\s*parent: app\s*name: '{kind}'\s*properties: \{{ allow: false \}}", MAIN)
        assert policy, kind


def role_assignments() -> dict[str, str]:
    """Role assignment resource name -> its body."""
    found = {}
    for match in re.finditer(r"resource (\w+) 'Microsoft\.Authorization/roleAssignments@", MAIN):
        found[match.group(1)] = block(MAIN, match.group(0))
    return found


def test_no_data_role_is_granted_on_the_whole_storage_account() -> None:
    scopes = {name: re.search(r"scope: ([\w:\[\]]+)", body).group(1)  # type: ignore[union-attr]
              for name, body in role_assignments().items()}
    assert "storage" not in scopes.values()
    assert scopes["containerRoleAssignments"] == "containers[i]"
    assert scopes["queueRoleAssignments"] == "queues[i]"
    assert scopes["tableRoleAssignment"] == "storage::tableService"


def test_the_blob_role_covers_the_deployment_container_and_the_hosts_two_and_nothing_else() -> None:
    assert "var blobContainers = [deploymentContainer, 'azure-webjobs-hosts', 'azure-webjobs-secrets']" in MAIN


def test_every_queue_the_app_and_the_host_use_exists_with_its_role() -> None:
    from shared.state.queues import pages_queue_name, queue_name

    start = MAIN.index("var queueNames = flatten(map(templates, t =>")
    body = MAIN[start:MAIN.index("]))", start)].replace("${queuePrefix}", "loyaltysync")
    assert "var queuePrefix = 'loyaltysync'" in MAIN and "SYNC_QUEUE_PREFIX: queuePrefix" in MAIN
    templates = re.search(r"param templates array = \[(.*)\]", MAIN).group(1)  # type: ignore[union-attr]
    names = {f"{prefix}{suffix}" for t in re.findall(r"'(\w+)'", templates)
             for prefix in (queue_name("loyaltysync", t), pages_queue_name("loyaltysync", t))
             for suffix in ("", "-poison")}
    expanded = {line.strip().strip("'").replace("${replace(t, '_', '-')}", "{t}") for line in body.splitlines()
                if line.strip().startswith("'")}
    assert {e.format(t=t.replace("_", "-")) for e in expanded for t in re.findall(r"'(\w+)'", templates)} == names


def test_storage_network_rules_are_an_option_that_keeps_todays_behaviour_by_default() -> None:
    assert "param storageAllowedIpRules array = []" in MAIN and "param storageAllowedSubnetIds array = []" in MAIN
    acls = MAIN[MAIN.index("networkAcls: restrictStorageNetwork ?"):]
    assert re.match(r"networkAcls: restrictStorageNetwork \? \{\s*defaultAction: 'Deny'", acls)
    assert "} : { defaultAction: 'Allow', bypass: 'AzureServices' }" in acls
    assert "var restrictStorageNetwork = !empty(storageAllowedIpRules) || !empty(storageAllowedSubnetIds)" in MAIN


def test_every_template_in_mappings_has_its_queues_in_the_bicep() -> None:
    """The queue role is scoped per queue: a template file without its name in ``templates`` would get 403s."""
    templates = set(re.findall(r"'(\w+)'", re.search(r"param templates array = \[(.*)\]", MAIN).group(1)))  # type: ignore[union-attr]
    assert {p.stem for p in (REPO / "mappings").glob("*.json")} <= templates


def test_the_one_way_templates_are_named_so_the_alert_expects_no_reverse_run_of_them() -> None:
    from shared.mapping.catalog import load_catalog

    one_way = set(re.findall(r"'(\w+)'", re.search(r"param oneWayTemplates array = \[(.*)\]", MAIN).group(1)))  # type: ignore[union-attr]
    assert one_way == {t.name for t in load_catalog() if t.one_way}
    assert "contains(oneWayTemplates, t) ? ['fo_to_dataverse'] : directions" in MAIN
