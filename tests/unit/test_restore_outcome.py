"""The restore experiment's verdict arithmetic: which acknowledged uploads had to come back,
which had to stay away, and the RPO, from when each was sent and acknowledged against T."""

from __future__ import annotations

from loadtests.benchmarks.acked_uploads import Receipt
from loadtests.experiments.restore import Outcome


def receipt(name: str, sent: float, acked: float) -> Receipt:
    return Receipt(
        image_id=name,
        node="pg0",
        lsn=0,
        sent_at=sent,
        acked_at=acked,
        sent_wall=sent,
        acked_wall=acked,
        delete_token="t",
    )


RECEIPTS = [
    receipt("early", 1.0, 1.1),
    receipt("late", 9.8, 9.9),
    receipt("straddling", 9.95, 10.05),
    receipt("after", 10.2, 10.3),
]


def test_every_upload_back_before_t_and_none_after_is_an_rpo_of_zero() -> None:
    outcome = Outcome.split(RECEIPTS, 10.0, missing={"after"})
    assert [r.image_id for r in outcome.before] == ["early", "late"]
    assert [r.image_id for r in outcome.in_flight] == ["straddling"]
    assert [r.image_id for r in outcome.after] == ["after"]
    assert outcome.lost() == outcome.resurrected() == []
    assert outcome.rpo_seconds(10.0) == 0.0
    summary = outcome.to_json(10.0)
    assert summary["newest_back_before_t_seconds"] == 0.1
    assert summary["in_flight_at_t"] == {"total": 1, "back": 1}


def test_a_lost_upload_sets_the_rpo_and_one_back_after_t_is_named() -> None:
    outcome = Outcome.split(RECEIPTS, 10.0, missing={"late", "straddling"})
    assert [r.image_id for r in outcome.lost()] == ["late"]
    assert [r.image_id for r in outcome.resurrected()] == ["after"]
    assert outcome.rpo_seconds(10.0) == 0.1
    summary = outcome.to_json(10.0)
    assert summary["before_t"] == {"total": 2, "back": 1, "lost": ["late"]}
    assert summary["after_t"] == {"total": 1, "absent": 0, "back": ["after"]}
