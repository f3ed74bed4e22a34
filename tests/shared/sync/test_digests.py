"""The outbound engine's building blocks that need no services: the digests of the keys a scan saw."""

from __future__ import annotations

import tracemalloc

from shared.sync.digests import KeyDigests


def digests_of(keys: list[str]) -> KeyDigests:
    seen = KeyDigests()
    for key in keys:
        seen.add(key)
    return seen


def test_frozen_digests_find_every_key_added_and_no_other() -> None:
    keys = [f"CARD-{n:06d}" for n in range(0, 40_000, 2)]
    seen = digests_of(keys)
    seen.freeze()

    assert all(key in seen for key in keys)
    assert not any(f"CARD-{n:06d}" in seen for n in range(1, 4_000, 2))
    assert len(seen) == len(keys)


def test_digests_survive_a_checkpoint_round_trip() -> None:
    restored = KeyDigests()
    restored.add_bytes(digests_of(["A", "B"]).to_bytes())
    restored.add_bytes(digests_of(["C"]).to_bytes())
    restored.freeze()

    assert ["A" in restored, "B" in restored, "C" in restored, "D" in restored] == [True, True, True, False]


def test_freezing_does_not_hold_every_digest_as_a_python_integer() -> None:
    seen = digests_of([f"CARD-{n:07d}" for n in range(200_000)])  # 1.6 MB of digests
    tracemalloc.start()
    try:
        seen.freeze()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 4_000_000  # sorting all at once as integers would take about 7 MB more
