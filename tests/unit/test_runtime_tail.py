"""`hda tail`'s resume position after a dropped connection (pure)."""

from __future__ import annotations

from hda.runtime.tail import resume_position


def test_resume_names_the_last_record_seen_of_each_partition() -> None:
    assert resume_position("0", {2: "9-0", 0: "7-1"}) == "0/7-1,2/9-0"


def test_partitions_not_seen_keep_their_start_position() -> None:
    assert resume_position("0/5-0,1/6-0", {0: "8-0"}) == "0/8-0,1/6-0"


def test_nothing_seen_resumes_where_it_started() -> None:
    assert resume_position("$", {}) == "$"
    assert resume_position("0", {}) == "0"
