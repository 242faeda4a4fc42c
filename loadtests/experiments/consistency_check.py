"""Count consistency anomalies in a request log: a plain function, no servers.

An image's true history is simple: absent, then (from its upload's commit) present, then (from
its delete's commit) absent for ever; ids are never reused. Each client makes one request at a
time, so its reads form a sequence, and each read *observes* images present or absent:

* a metadata read: 200 is present, 404 absent;
* a listing (first page, newest first): every image on it is present; an image the client
  already knows of (it has seen or uploaded it) is absent when its key (created_at, id) lies in
  the range the page covers yet it is not on the page. A full page covers only keys at or
  above its last row's (older images fell off the page, they did not disappear); a page with
  no next page covers every key.

Against that history, per client, in request order (all counted per consistency mode):

* **read-your-writes violation**: an image the client's own upload was acknowledged for is
  observed absent (and no delete of it had started), or an image the client's own delete was
  acknowledged for is observed present;
* **monotonic-read violations**, of three kinds:
  - ``seen_then_404``: an image the client observed present is answered 404 later, and no
    delete of it had started before that read ended;
  - ``listing_lost_row``: the same, observed absent from a listing that covers its key;
  - ``deleted_seen_again``: an image observed present, then absent while a delete of it was
    under way or done, then present again. Absence after a delete is final, so one of the two
    later reads went back in time, whichever it was;
* **acknowledged writes lost**: after the run a strong read on the primary (``verify``)
  finds an acknowledged upload absent though no delete of it was ever attempted, or an
  acknowledged delete's image present.

A delete "under way" is one that had *started* before the read ended: its commit may precede
the read's snapshot even if its answer came later. So the checker never blames a read on a
delete it cannot order, and every count it reports is a real anomaly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from loadtests.experiments.consistency_records import ImageKey, Op, RequestRecord, image_key

EXAMPLES_PER_MODE = 5
# The anomaly kinds each mode rules out for a client carrying its token. Lost writes are no
# read mode's promise: durability across a failover is the replication mode's (--sync on).
PROMISES: dict[str, tuple[str, ...]] = {
    "eventual": (),
    "bounded": (),
    "read_your_writes": ("ryw_violations",),
    "monotonic": ("ryw_violations", "monotonic_violations"),
    "strong": ("ryw_violations", "monotonic_violations"),
}


@dataclass
class ModeAnomalies:
    mode: str
    requests: int = 0
    reads: int = 0  # metadata reads and listings that answered 200 or 404
    ryw_violations: int = 0
    seen_then_404: int = 0
    listing_lost_row: int = 0
    deleted_seen_again: int = 0
    writes_acknowledged: int = 0  # uploads answered 201 and deletes answered 204
    writes_verified: int = 0  # of those, how many a verify read checked
    lost_writes: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def monotonic_violations(self) -> int:
        return self.seen_then_404 + self.listing_lost_row + self.deleted_seen_again

    @property
    def broken_promises(self) -> int:
        """Anomalies of the kinds this mode promises to rule out (0 when it keeps its word)."""
        return sum(int(getattr(self, kind)) for kind in PROMISES.get(self.mode, ()))

    def note(self, kind: str, record: RequestRecord, image_id: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < EXAMPLES_PER_MODE:
            self.examples.append(
                f"{kind}: client {record.client} {record.op.value} of {image_id[:8]} on "
                f"{record.node} via instance {record.instance} (token in {record.token_in})"
            )

    def to_json(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "reads": self.reads,
            "ryw_violations": self.ryw_violations,
            "monotonic_violations": self.monotonic_violations,
            "broken_promises": self.broken_promises,
            "seen_then_404": self.seen_then_404,
            "listing_lost_row": self.listing_lost_row,
            "deleted_seen_again": self.deleted_seen_again,
            "writes_acknowledged": self.writes_acknowledged,
            "writes_verified": self.writes_verified,
            "lost_writes": self.lost_writes,
            "examples": self.examples,
        }


@dataclass
class _ClientView:
    """What one client has learned so far."""

    keys: dict[str, ImageKey] = field(default_factory=dict)
    uploaded: set[str] = field(default_factory=set)  # acknowledged own uploads
    deleted: set[str] = field(default_factory=set)  # acknowledged own deletes
    seen: set[str] = field(default_factory=set)  # observed present at least once
    gone: set[str] = field(default_factory=set)  # seen, then absent with a delete under way

    def learn(self, image_id: str | None, created_at: str | None) -> None:
        if image_id and created_at and image_id not in self.keys:
            self.keys[image_id] = image_key(image_id, created_at)


def _covers(record: RequestRecord, key: ImageKey) -> bool:
    listed = record.listed or []
    if record.complete or not listed:
        return bool(record.complete)
    last = listed[-1]
    return key >= image_key(last.id, last.created_at)


def _observations(record: RequestRecord, view: _ClientView) -> list[tuple[str, bool]]:
    """(image id, present?) for every image this read tells the client about."""
    if record.op is Op.GET and record.image_id and record.status in (200, 404):
        return [(record.image_id, record.status == 200)]
    if record.op is Op.LIST and record.status == 200 and record.listed is not None:
        on_page = {item.id for item in record.listed}
        absent = [
            (image_id, False)
            for image_id, key in view.keys.items()
            if image_id not in on_page and _covers(record, key)
        ]
        return [(item.id, True) for item in record.listed] + absent
    return []


class _Checker:
    def __init__(self, records: list[RequestRecord]) -> None:
        self.records = records
        self.delete_started: dict[str, float] = {}
        for record in records:
            if record.op is Op.DELETE and record.image_id:
                first = self.delete_started.get(record.image_id, math.inf)
                self.delete_started[record.image_id] = min(first, record.started)

    def delete_under_way(self, image_id: str, record: RequestRecord) -> bool:
        return self.delete_started.get(image_id, math.inf) < record.ended

    def client(self, anomalies: ModeAnomalies, records: list[RequestRecord]) -> None:
        view = _ClientView()
        for record in records:
            if record.op is Op.UPLOAD and record.status == 201 and record.image_id:
                view.uploaded.add(record.image_id)
                view.learn(record.image_id, record.created_at)
            elif record.op is Op.DELETE and record.status == 204 and record.image_id:
                view.deleted.add(record.image_id)
            observations = _observations(record, view)
            if observations:
                anomalies.reads += 1
            for image_id, present in observations:
                self.observe(anomalies, view, record, image_id, present)
            if record.op is Op.GET and record.status == 200:
                view.learn(record.image_id, record.created_at)
            for item in record.listed or []:
                view.learn(item.id, item.created_at)

    def observe(
        self,
        anomalies: ModeAnomalies,
        view: _ClientView,
        record: RequestRecord,
        image_id: str,
        present: bool,
    ) -> None:
        if present:
            if image_id in view.deleted:
                anomalies.note("ryw_violations", record, image_id)
            elif image_id in view.gone:
                anomalies.note("deleted_seen_again", record, image_id)
            view.gone.discard(image_id)
            view.seen.add(image_id)
            return
        deleting = self.delete_under_way(image_id, record)
        if image_id in view.uploaded and not deleting:
            anomalies.note("ryw_violations", record, image_id)
        if image_id in view.seen and image_id not in view.gone:
            if deleting:
                view.gone.add(image_id)
            else:
                kind = "seen_then_404" if record.op is Op.GET else "listing_lost_row"
                anomalies.note(kind, record, image_id)

    def lost_writes(self, anomalies: ModeAnomalies, records: list[RequestRecord]) -> None:
        uploaded = {
            r.image_id for r in records if r.op is Op.UPLOAD and r.status == 201 and r.image_id
        }
        deleted = {
            r.image_id for r in records if r.op is Op.DELETE and r.status == 204 and r.image_id
        }
        anomalies.writes_acknowledged = len(uploaded) + len(deleted)
        for record in records:
            if record.op is not Op.VERIFY or record.status not in (200, 404):
                continue
            image_id = record.image_id or ""
            anomalies.writes_verified += (image_id in uploaded) + (image_id in deleted)
            lost_upload = (
                record.status == 404
                and image_id in uploaded
                and image_id not in self.delete_started
            )
            lost_delete = record.status == 200 and image_id in deleted
            if lost_upload or lost_delete:
                anomalies.note("lost_writes", record, image_id)


def check_history(records: Iterable[RequestRecord]) -> dict[str, ModeAnomalies]:
    """Anomalies per consistency mode (in the order the modes first appear in the log)."""
    ordered = sorted(records, key=lambda r: (r.started, r.ended))
    checker = _Checker(ordered)
    by_mode: dict[str, dict[int, list[RequestRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in ordered:
        by_mode[record.mode][record.client].append(record)
    result: dict[str, ModeAnomalies] = {}
    for mode, clients in by_mode.items():
        anomalies = ModeAnomalies(mode=mode)
        everything = [r for records_of in clients.values() for r in records_of]
        anomalies.requests = sum(r.op is not Op.VERIFY for r in everything)
        for client_records in clients.values():
            checker.client(anomalies, [r for r in client_records if r.op is not Op.VERIFY])
        checker.lost_writes(anomalies, everything)
        result[mode] = anomalies
    return result
