"""When a key missing from a range's Commerce read is known to be absent from Commerce (and needs no look-up)."""

from __future__ import annotations

from shared.sync.baseline.compare import CommerceCache, plain


def test_plain_keys_are_ascii_letters_and_digits() -> None:
    assert plain(("52100000001",)) and plain(("usmf", "Gold"))
    assert not plain(("CARD-1",)) and not plain(("",)) and not plain(("Gold ",)) and not plain(("Göld",))


def test_a_key_is_absent_only_where_the_read_was_complete_and_every_key_involved_is_plain() -> None:
    cache = CommerceCache({("b",): {}}, after=("A",), last=("M",))
    assert cache.absent(("C",)) and cache.absent(("m",))  # inside (A, M], compared case-insensitively
    assert not cache.absent(("B",))  # in the read
    assert not cache.absent(("A",)) and not cache.absent(("N",))  # outside what the read covers
    assert not cache.absent(("C-1",))  # Commerce may order it elsewhere: looked up
    assert CommerceCache({}, after=None, last=None).absent(("Z9",))  # the read ran to the end
    assert not CommerceCache({}, after=("A-",), last=None).absent(("Z9",))  # a bound that is not plain
