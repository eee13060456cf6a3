"""BoundedDict: the maps clients can grow (token grants, storage URLs) keep at most `limit` entries."""

from __future__ import annotations

from bdn.bounded import BoundedDict


def test_the_oldest_set_entries_go_first() -> None:
    grants: BoundedDict[str, int] = BoundedDict(3)
    for index, key in enumerate("abcd"):
        grants[key] = index
    assert list(grants.items()) == [("b", 1), ("c", 2), ("d", 3)]
    grants["b"] = 9  # set again: newest now
    grants["e"] = 4
    assert list(grants) == ["d", "b", "e"]
    for key in range(10_000):
        grants[str(key)] = key
    assert len(grants) == 3
