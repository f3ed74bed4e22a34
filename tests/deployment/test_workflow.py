"""The GitHub workflow and the azd parameters file, read as Azure would read them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "deploy.yml"


def workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def steps_using(action: str) -> list[dict[str, Any]]:
    return [step for job in workflow()["jobs"].values() for step in job.get("steps", [])
            if str(step.get("uses", "")).startswith(action)]


def test_functions_action_deploys_only_what_funcignore_keeps() -> None:
    (deploy,) = steps_using("Azure/functions-action")
    assert deploy["with"]["respect-funcignore"] is True
    assert deploy["with"]["sku"] == "flexconsumption"


def test_functions_action_deploys_the_app_named_by_the_bicep_output() -> None:
    (deploy,) = steps_using("Azure/functions-action")
    assert deploy["with"]["app-name"] == "${{ needs.provision.outputs.function-app-name }}"
    assert "output AZURE_FUNCTION_APP_NAME string" in (REPO / "infra" / "main.bicep").read_text()
    provision = workflow()["jobs"]["provision"]
    assert "AZURE_FUNCTION_APP_NAME" in provision["steps"][-1]["run"]


def test_only_the_jobs_that_sign_in_to_azure_get_an_id_token() -> None:
    jobs = workflow()["jobs"]
    assert workflow()["permissions"] == {"contents": "read"}
    with_token = {name for name, job in jobs.items() if job.get("permissions", {}).get("id-token") == "write"}
    signing_in = {name for name, job in jobs.items()
                  if any(str(s.get("uses", "")).startswith(("azure/login", "Azure/setup-azd")) for s in job["steps"])}
    assert with_token == signing_in == {"provision", "deploy"}


def test_deployments_never_run_concurrently_or_get_cancelled_half_way() -> None:
    assert workflow()["concurrency"]["cancel-in-progress"] is False


def test_the_bicep_is_built_and_linted_before_anything_is_provisioned() -> None:
    jobs = workflow()["jobs"]
    runs = " ".join(step.get("run", "") for step in jobs["bicep"]["steps"])
    assert "az bicep build --file infra/main.bicep" in runs and "az bicep lint" in runs
    assert "bicep" in jobs["provision"]["needs"] and "test" in jobs["provision"]["needs"]


def bicep_params() -> dict[str, bool]:
    """Parameter name -> has a default, from infra/main.bicep."""
    found: dict[str, bool] = {}
    for line in (REPO / "infra" / "main.bicep").read_text().splitlines():
        match = re.match(r"param (\w+) \w+( =)?", line)
        if match:
            found[match.group(1)] = bool(match.group(2))
    return found


def test_azd_parameters_name_only_parameters_the_bicep_declares() -> None:
    given = json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"]
    assert set(given) <= set(bicep_params())


def test_azd_parameters_cover_every_parameter_without_a_default() -> None:
    given = json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"]
    required = {name for name, has_default in bicep_params().items() if not has_default}
    assert required <= set(given)


def test_ci_runs_the_tests_on_debian_where_setup_can_install_chromium_for_the_browser_test() -> None:
    job = workflow()["jobs"]["test"]
    assert str(job["container"]).startswith("python:3.11-") and "bookworm" in str(job["container"])
    assert [step["run"] for step in job["steps"] if "run" in step] == ["./dev test"]


SECRET_LIKE = re.compile(r"SECRET|TOKEN|PASSWORD|_KEY$")


def test_the_workflow_writes_no_app_setting_a_redeployment_would_then_overwrite() -> None:
    """App settings are the Bicep's (deployment-owned) or the operator's: no step sets one."""
    text = WORKFLOW.read_text()
    assert "appsettings set" not in text and "app-settings" not in text and "--settings" not in text


def test_secrets_reach_the_deployment_from_github_secrets_only() -> None:
    provision = workflow()["jobs"]["provision"]
    for name, value in provision["env"].items():
        if SECRET_LIKE.search(name):
            assert str(value).startswith("${{ secrets."), name
    given = json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"]
    assert given["callbackSecret"] == {"value": "${SYNC_CALLBACK_SECRET=}"}  # empty: the vault's secret stays
    assert "@secure()\nparam callbackSecret string" in (REPO / "infra" / "main.bicep").read_text()


def test_the_deployment_signs_in_with_entra_id_as_basic_publishing_credentials_are_off() -> None:
    """The Bicep turns off basic (scm and ftp) publishing credentials: a publish profile would no longer work, so
    the deploy step must use the OpenID Connect login, never a publish profile."""
    (deploy,) = steps_using("Azure/functions-action")
    assert "publish-profile" not in deploy["with"]
    job = workflow()["jobs"]["deploy"]
    assert any(str(s.get("uses", "")).startswith("azure/login") for s in job["steps"])
    assert "basicPublishingCredentialsPolicies" in (REPO / "infra" / "main.bicep").read_text()
