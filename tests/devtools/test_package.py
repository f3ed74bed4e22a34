"""The deployment package, built as Azure/functions-action builds it with respect-funcignore: true."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devtools.package import REPO, build, checkout_files, core_tools_files, kept_by_action

LEFT_OUT = ("emulators/", "devtools/", "tests/", "bench/", "infra/", "docs/", ".github/", "node_modules/", ".venv/",
            "dist/")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package") / "app.zip"
    build(out)
    return out


def names(package: Path) -> list[str]:
    with zipfile.ZipFile(package) as archive:
        return archive.namelist()


def test_package_holds_the_app_its_templates_and_its_requirements(package: Path) -> None:
    files = set(names(package))
    assert {"function_app.py", "host.json", "requirements.txt", "shared/__init__.py", "shared/runtime.py"} <= files
    assert {f"mappings/{p.name}" for p in (REPO / "mappings").glob("*.json")} <= files


def test_package_leaves_out_the_development_folders(package: Path) -> None:
    shipped = [name for name in names(package) if name.startswith(LEFT_OUT)]
    assert shipped == []


def test_package_leaves_out_local_settings_and_caches(package: Path) -> None:
    files = names(package)
    assert not [n for n in files if n.startswith("local.settings") or "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in files if n in ("requirements-dev.txt", "package.json", "pyproject.toml", "dev")]


def test_packaged_app_indexes_its_functions_without_the_folders_left_out(package: Path, tmp_path: Path) -> None:
    """The deployed code must not import emulators/, devtools/ or tests/: the package alone loads every function."""
    with zipfile.ZipFile(package) as archive:
        archive.extractall(tmp_path)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, '.'); import function_app; "
                             "print(sorted(f.get_function_name() for f in function_app.app.get_functions()))"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    functions = ast.literal_eval(result.stdout)
    assert "callback_loyalty_cards" in functions and any(name.startswith("ops_") for name in functions)


# What azd, Azurite and editors leave in a working folder, beside the app's own files: none of it may ship,
# whichever tool builds the package (functions-action and azd read .funcignore as gitignore rules, Core Tools
# with its own root-anchored prefix matcher).
LEFT_IN_THE_FOLDER = [
    ".azure/prod/.env",  # azd's environments: subscription ids and every `azd env set` value
    ".azure/prod/config.json",
    ".azure/dev/.env",
    ".azure/config.json",
    ".azurite/__azurite_db_table__.json",  # Azurite's --location folder
    "__azurite_db_table__.json",  # Azurite started in the repository root
    "__azurite_db_queue_extent__.json",
    "__blobstorage__/abc",
    "__queuestorage__/abc",
    ".env",
    ".env.local",
    ".envrc",
    "dev",
    "shared/__pycache__/cli.cpython-311.pyc",
    "local.settings.json",
]
APP_FILES = ["function_app.py", "host.json", "requirements.txt", "shared/cli.py", "mappings/loyalty_cards.json",
             "shared/dev/helper.py"]  # a folder named dev below the root is the app's (/dev is the root's only)

BUILDERS = {"functions-action and azd": kept_by_action, "Core Tools": core_tools_files}


@pytest.mark.parametrize("builder", BUILDERS, ids=list(BUILDERS))
@pytest.mark.parametrize("path", LEFT_IN_THE_FOLDER)
def test_what_azd_azurite_and_dotenv_leave_in_the_folder_is_never_shipped(builder: str, path: str) -> None:
    assert BUILDERS[builder]([path, *APP_FILES]) == APP_FILES


@pytest.mark.parametrize("builder", BUILDERS, ids=list(BUILDERS))
def test_dev_is_left_out_at_the_root_only(builder: str) -> None:
    kept = BUILDERS[builder](["dev", "shared/dev/helper.py", "mappings/dev/x.json"])
    assert kept == ["shared/dev/helper.py", "mappings/dev/x.json"]


def test_core_tools_would_publish_the_app_and_leave_out_the_development_folders() -> None:
    """``func azure functionapp publish`` reads .funcignore from the root only: what it keeps of a checkout is
    what functions-action keeps (less .funcignore itself, which Core Tools never uploads)."""
    files = checkout_files()
    assert core_tools_files(files) == [name for name in kept_by_action(files) if name != ".funcignore"]
