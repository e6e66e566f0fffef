from __future__ import annotations

import pytest

from flint.common.ids import new_id


def test_ids_are_prefixed_and_time_sortable():
    ids = [new_id("ord") for _ in range(50)]
    assert all(i.startswith("ord_") and len(i) == 30 for i in ids)
    # Time-sortable at millisecond resolution: a later id never sorts before an
    # id from an earlier millisecond.
    assert sorted(ids)[0][:14] == ids[0][:14]


def test_unknown_prefix_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown id prefix"):
        new_id("xyz")
