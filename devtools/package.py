"""Build the deployment package the way ``Azure/functions-action`` does with ``respect-funcignore: true``.

The action (``src/utils/funcignore.ts``) reads ``.funcignore`` with the npm ``ignore`` package (gitignore
rules), lists every path under the package folder (``glob('**/*', {dot: true})``), deletes each path the
rules ignore, then zips what is left. This module does the same without deleting anything: it lists the
files a fresh checkout holds (``git ls-files``: tracked plus untracked-but-not-gitignored, so a new file
shows up before it is committed), asks the same ``ignore`` package (pinned in ``package.json`` to the major
version the action uses) which of them it ignores, and zips the rest.

``func azure functionapp publish`` (Core Tools) reads the same file with another matcher: ``GitIgnoreParser``
(``src/Azure.Functions.Cli/Common/GitIgnoreParser.cs``, a port of the ``gitignore-parser`` npm package) turns
each pattern into a regular expression anchored at the start of the file's relative path, matched as a prefix,
with ``*`` for one or more characters other than ``/`` and ``**`` for one or more of any. ``core_tools_denies``
is that matcher in Python; ``core_tools_files`` lists what Core Tools would publish, so a test holds the file to
both readers.

    .venv/bin/python -m devtools.package [--out dist/app.zip]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The action's own call, fed with our list: ignore().add(rules) then ignores(path) for each path.
_FILTER_JS = """
const ignore = require('ignore');
const fs = require('fs');
const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const rules = input.rules.split('\\n').filter(l => l.trim() !== '');
const parser = ignore().add(rules);
process.stdout.write(JSON.stringify(input.paths.filter(p => parser.ignores(p))));
"""


def checkout_files(root: Path = REPO) -> list[str]:
    """Relative paths a fresh checkout of ``root`` would hold (POSIX separators)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                         check=True, capture_output=True).stdout
    return sorted(p for p in out.decode().split("\0") if p and (root / p).is_file())


def with_parents(files: list[str]) -> list[str]:
    """The files and every folder above them, as the action's glob lists both."""
    paths = set(files)
    for name in files:
        parts = name.split("/")[:-1]
        paths.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(paths)


def ignored_paths(paths: list[str], root: Path = REPO) -> set[str]:
    """The paths that ``.funcignore`` removes, decided by the npm ``ignore`` package as the action does."""
    funcignore = root / ".funcignore"
    rules = funcignore.read_text() if funcignore.exists() else ""
    result = subprocess.run(["node", "-e", _FILTER_JS], cwd=root, input=json.dumps({"rules": rules, "paths": paths}),
                            check=True, capture_output=True, text=True)
    return set(json.loads(result.stdout))


def package_files(root: Path = REPO) -> list[str]:
    """The files the deployment package holds: a file is removed when it, or a folder above it, is ignored."""
    return kept_by_action(checkout_files(root), root)


def kept_by_action(files: list[str], root: Path = REPO) -> list[str]:
    """Of ``files`` (relative paths, which need not exist), those functions-action (and azd) would ship."""
    ignored = ignored_paths(with_parents(files), root)

    def kept(name: str) -> bool:
        parts = name.split("/")
        return not any("/".join(parts[: i + 1]) in ignored for i in range(len(parts)))

    return [name for name in files if kept(name)]


# -- Core Tools (func azure functionapp publish) -------------------------------------------------------------

CORE_TOOLS_SKIPPED_FOLDERS = (".git", ".vscode")  # GetLocalFiles leaves these out whatever .funcignore says
CORE_TOOLS_SKIPPED_FILES = (".funcignore", ".gitignore", "local.settings.json", "project.lock.json")


def _core_tools_pattern(pattern: str) -> str:
    """``GitIgnoreParser.PrepareRegexPattern``: escape, then ``**`` -> ``(.+)`` and ``*`` -> ``([^/]+)``."""
    escaped = re.sub(r"[\-\[\]/{}()+?.\\^$|]", lambda m: "\\" + m.group(0), pattern)
    return escaped.replace("**", "(.+)").replace("*", "([^\\/]+)")


def core_tools_denies(rules: str) -> re.Pattern[str] | None:
    """The positive regular expression Core Tools builds from ``.funcignore`` (None: it has no pattern); its
    ``Denies(path)`` is ``positive matches and no negative matches``. This file has no ``!`` rules (asserted)."""
    lines = [line.strip() for line in rules.split("\n")]
    patterns = [line for line in lines if line and not line.startswith("#")]
    if any(line.startswith("!") for line in patterns):
        raise ValueError(".funcignore: negated patterns are read differently by Core Tools; none are used here")
    patterns = sorted(line[1:] if line.startswith("/") else line for line in patterns)
    if not patterns:
        return None
    return re.compile("^((" + ")|(".join(_core_tools_pattern(p) for p in patterns) + "))")


def core_tools_files(files: list[str], root: Path = REPO) -> list[str]:
    """Of ``files`` (relative paths), those ``func azure functionapp publish`` would upload."""
    funcignore = root / ".funcignore"
    denies = core_tools_denies(funcignore.read_text() if funcignore.exists() else "")

    def kept(name: str) -> bool:
        parts = name.split("/")
        if any(part in CORE_TOOLS_SKIPPED_FOLDERS for part in parts[:-1]) or parts[-1] in CORE_TOOLS_SKIPPED_FILES:
            return False
        return denies is None or not denies.match(name)

    return [name for name in files if kept(name)]


def build(out: Path, root: Path = REPO) -> list[str]:
    """Write the package to ``out``; returns the files it holds."""
    files = package_files(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            archive.write(root / name, name)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the package functions-action would deploy.")
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "app.zip")
    args = parser.parse_args(argv)
    files = build(args.out)
    print(f"{args.out}: {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
