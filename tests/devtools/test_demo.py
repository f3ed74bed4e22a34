"""``./dev demo`` (``python -m devtools.demo``) as a newcomer reads it: tables that fit 120 columns, the warning it
provokes marked as expected, and the next step at the end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devtools.demo", "--cards", "20"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_the_demo_succeeds(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "Demo succeeded." in demo.stdout


def test_every_line_the_demo_prints_fits_120_columns(demo: subprocess.CompletedProcess[str]) -> None:
    assert [line for line in demo.stdout.splitlines() if len(line) > 120] == []
    assert "template               direction        scope  status" in demo.stdout  # the status table is there


def test_the_warning_the_demo_provokes_is_marked_as_expected(demo: subprocess.CompletedProcess[str]) -> None:
    warnings = [line for line in demo.stderr.splitlines() if " WARNING " in line]
    assert warnings and all("(expected: " in line for line in warnings)
    assert "(one WARNING 'record parked for retry' follows: expected)" in demo.stdout


def test_the_demo_ends_with_the_next_step(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.stdout.splitlines()[-2].startswith("Next: ./dev demo --keep leaves all of it running")
