"""The consistency checker on crafted histories: each anomaly alone, and clean histories that
look like anomalies but are not (deletes, pages that moved on, lag before the first sighting)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.experiments.consistency_check import ModeAnomalies, check_history
from loadtests.experiments.consistency_records import (
    ListedImage,
    Op,
    RequestRecord,
    read_log,
    write_log,
)

MODE = "eventual"


def ids(count: int) -> list[str]:
    return [str(uuid.UUID(int=index + 1)) for index in range(count)]


X, Y, Z, W = ids(4)
# created_at of each image: X oldest, W newest.
CREATED = {image: f"2030-01-01T00:00:0{second}.000001+00:00" for second, image in enumerate(ids(4))}


class History:
    """Requests in order, each taking 10 ms, 10 ms apart."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self._clock: Iterator[int] = itertools.count()

    def add(self, op: Op, status: int, *, client: int = 0, **fields: object) -> RequestRecord:
        tick = next(self._clock)
        record = RequestRecord(
            mode=str(fields.pop("mode", MODE)),
            client=client,
            instance=tick % 2,
            op=op,
            started=tick * 0.02,
            ended=tick * 0.02 + 0.01,
            status=status,
            node=f"pg{tick % 3}",
            **fields,  # type: ignore[arg-type]
        )
        self.records.append(record)
        return record

    def upload(self, image: str, *, client: int = 0, status: int = 201) -> None:
        self.add(Op.UPLOAD, status, client=client, image_id=image, created_at=CREATED[image])

    def delete(self, image: str, *, client: int = 0, status: int = 204) -> None:
        self.add(Op.DELETE, status, client=client, image_id=image)

    def get(self, image: str, status: int, *, client: int = 0) -> None:
        created = CREATED[image] if status == 200 else None
        self.add(Op.GET, status, client=client, image_id=image, created_at=created)

    def list(self, *images: str, client: int = 0, complete: bool = True) -> None:
        page = sorted(images, key=lambda i: CREATED[i], reverse=True)
        listed = [ListedImage(i, CREATED[i]) for i in page]
        self.add(Op.LIST, 200, client=client, listed=listed, complete=complete)

    def verify(self, image: str, status: int) -> None:
        self.add(Op.VERIFY, status, client=-1, image_id=image)

    def check(self) -> ModeAnomalies:
        return check_history(self.records)[MODE]


KINDS = ("ryw_violations", "seen_then_404", "listing_lost_row", "deleted_seen_again", "lost_writes")


def counts(anomalies: ModeAnomalies) -> dict[str, int]:
    """The non-zero anomaly counts."""
    found = {kind: int(getattr(anomalies, kind)) for kind in KINDS}
    return {kind: value for kind, value in found.items() if value}


def test_a_clean_history_has_no_anomaly() -> None:
    h = History()
    h.get(X, 404, client=1)  # before it exists (client 1 guessed nothing: it is no sighting)
    h.upload(X)
    h.get(X, 200)
    h.list(X, Y, client=1)
    h.upload(Z, client=1)
    h.list(X, Y, Z)
    h.delete(Z, client=1)
    h.get(Z, 404)  # gone after its delete started: fine
    h.list(X, Y)  # and off the listing
    h.list(X, Y, client=1)
    h.verify(X, 200)
    h.verify(Z, 404)
    anomalies = h.check()
    assert counts(anomalies) == {}
    assert (anomalies.requests, anomalies.reads) == (10, 7)
    assert (anomalies.writes_acknowledged, anomalies.writes_verified) == (3, 3)


def test_an_image_seen_then_404_is_a_monotonic_read_violation() -> None:
    h = History()
    h.upload(X, client=1)
    h.list(X)
    h.get(X, 404)
    anomalies = h.check()
    assert counts(anomalies) == {"seen_then_404": 1}
    assert anomalies.monotonic_violations == 1
    assert anomalies.examples[0].startswith("seen_then_404: client 0 get of 00000000")


def test_a_listing_that_loses_a_row_an_earlier_one_showed() -> None:
    h = History()
    h.list(X, Y, Z)
    h.list(X, Z)
    assert counts(h.check()) == {"listing_lost_row": 1}


def test_a_full_page_only_answers_for_keys_at_or_above_its_last_row() -> None:
    h = History()
    h.list(X, Y, complete=False)
    h.list(Z, W, complete=False)  # newer images pushed X and Y off the page: no loss
    h.list(Y, W, complete=False)  # but Z lies inside Y..W and is missing: lost
    assert counts(h.check()) == {"listing_lost_row": 1}


def test_a_metadata_sighting_counts_for_later_listings() -> None:
    h = History()
    h.get(Y, 200)
    h.list(X, Z)  # complete page without Y
    assert counts(h.check()) == {"listing_lost_row": 1}


def test_a_deleted_image_seen_again() -> None:
    h = History()
    h.upload(X, client=1)
    h.get(X, 200)
    h.delete(X, client=1)
    h.get(X, 404)  # the delete: fine
    h.list(X)  # back again: a read older than the previous one
    h.get(X, 404)
    h.get(X, 200)  # and again
    assert counts(h.check()) == {"deleted_seen_again": 2}


def test_a_404_while_a_delete_is_under_way_excuses_nothing_after_it() -> None:
    h = History()
    h.get(X, 200)
    h.delete(X, client=1, status=503)  # answered 503, but it may have committed
    h.get(X, 404)
    assert counts(h.check()) == {}
    h.get(X, 200)
    assert counts(h.check()) == {"deleted_seen_again": 1}


def test_read_your_writes_violations_own_upload_missing_and_own_delete_seen() -> None:
    h = History()
    h.upload(X)
    h.get(X, 404)  # own upload missing
    h.upload(Y)
    h.list(X, Z)  # complete page without own Y
    h.delete(Z)
    h.list(X, Z)  # own delete seen, own Y still missing: RYW violations, not monotonic ones
    assert counts(h.check()) == {"ryw_violations": 4}


def test_another_clients_upload_seen_late_is_no_anomaly_but_seen_then_lost_is() -> None:
    h = History()
    h.upload(X, client=1)
    h.get(X, 404, client=0)  # client 0 has not seen X: lag, not a violation of its reads
    h.list(X, client=0)
    h.list(client=0)  # empty complete page after seeing X
    assert counts(h.check()) == {"listing_lost_row": 1}


def test_acknowledged_writes_lost_after_the_run() -> None:
    h = History()
    h.upload(X)
    h.upload(Y)
    h.delete(Y)
    h.upload(Z)
    h.delete(Z, status=503)  # not acknowledged, may have committed: Z may be absent
    h.verify(X, 404)  # lost upload
    h.verify(Y, 200)  # lost delete
    h.verify(Z, 404)
    anomalies = h.check()
    assert counts(anomalies) == {"lost_writes": 2}
    assert (anomalies.writes_acknowledged, anomalies.writes_verified) == (4, 4)


def test_modes_are_counted_apart() -> None:
    h = History()
    h.list(X, Y)
    h.add(Op.LIST, 200, mode="monotonic", listed=[ListedImage(X, CREATED[X])], complete=True)
    h.get(Y, 404)
    result = check_history(h.records)
    assert counts(result["eventual"]) == {"seen_then_404": 1}
    assert counts(result["monotonic"]) == {}
    assert list(result) == ["eventual", "monotonic"]


def test_failed_requests_observe_nothing() -> None:
    h = History()
    h.get(X, 200)
    h.get(X, 503)
    h.add(Op.LIST, 0, error="ConnectError")
    assert counts(h.check()) == {}


@pytest.mark.parametrize("complete", [True, False])
def test_the_log_round_trips_through_jsonl(tmp_path: Path, complete: bool) -> None:
    h = History()
    h.upload(X)
    h.list(X, Y, complete=complete)
    h.get(Z, 404)
    path = tmp_path / "requests.jsonl"
    write_log(path, h.records)
    assert list(read_log(path)) == h.records
    assert '"ms": 10.0' in path.read_text()


def test_broken_promises_count_only_what_the_mode_rules_out() -> None:
    h = History()
    for mode in ("eventual", "read_your_writes", "monotonic"):
        h.add(Op.UPLOAD, 201, client=0, mode=mode, image_id=X, created_at=CREATED[X])
        h.add(Op.GET, 404, client=0, mode=mode, image_id=X)  # own upload missing
        h.add(Op.GET, 200, client=1, mode=mode, image_id=Y, created_at=CREATED[Y])
        h.add(Op.GET, 404, client=1, mode=mode, image_id=Y)  # seen, then 404
    result = check_history(h.records)
    assert [result[m].broken_promises for m in ("eventual", "read_your_writes", "monotonic")] == [
        0,
        1,
        2,
    ]
    assert result["monotonic"].to_json()["broken_promises"] == 2
