"""``./dev``, the project's one entry point: its usage and what its setup says it installs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEV = REPO / "dev"


def header_block() -> list[str]:
    lines = DEV.read_text().splitlines()[1:]
    block = []
    for line in lines:
        if not line.startswith("#"):
            break
        block.append(re.sub(r"^# ?", "", line))
    return block


def test_dev_without_a_command_prints_its_whole_usage_and_exits_2() -> None:
    result = subprocess.run([str(DEV)], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stdout.splitlines() == header_block()
    assert any("./dev setup" in line for line in header_block()) and "Debian's chromium" in result.stdout


def test_dev_with_an_unknown_command_prints_the_usage_too() -> None:
    result = subprocess.run([str(DEV), "deploy"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout.splitlines()) == (2, header_block())


def test_every_install_step_of_setup_says_what_it_installs_first() -> None:
    """A first run installs for a minute or two: each pip, npm and apt-get call is announced on the line
    before it (a later run that finds everything in place runs none of them, so says nothing)."""
    lines = [line.strip() for line in DEV.read_text().splitlines()]
    installs = [i for i, line in enumerate(lines)
                if re.match(r'(\.venv/bin/python -m pip install|npm ci|"\$\(python_bin\)" -m venv|if ! \{ "\$\{sudo)',
                            line)]
    assert len(installs) == 4
    for i in installs:
        announced = lines[i - 1]
        assert announced.startswith('echo "setup: ') and ("install" in announced or "creating" in announced), (
            lines[i], announced)
