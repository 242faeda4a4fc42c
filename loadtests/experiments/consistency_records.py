"""One line of the consistency experiment's request log (``requests.jsonl``).

Every request a client made, as the client saw it: which instance it asked, which node the
service says served it, the token it sent and the one it got back, what it learned about which
image. The checker (:mod:`loadtests.experiments.consistency_check`) needs nothing else.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any


class Op(StrEnum):
    UPLOAD = "upload"
    DELETE = "delete"
    GET = "get"  # an image's metadata
    LIST = "list"  # the first page of the listing, newest first
    VERIFY = "verify"  # after the run: a strong read on the primary of an image written


@dataclass(frozen=True)
class ListedImage:
    id: str
    created_at: str


ImageKey = tuple[datetime, uuid.UUID]


def image_key(image_id: str, created_at: str) -> ImageKey:
    """The listing's order: (created_at, id), as the service's keyset pagination sorts it."""
    return datetime.fromisoformat(created_at), uuid.UUID(image_id)


@dataclass
class RequestRecord:
    mode: str  # the consistency the request asked for
    client: int
    instance: int  # index of the service URL it went to
    op: Op
    started: float  # wall clock (time.time())
    ended: float
    status: int  # 0: no HTTP answer (connection refused, timeout)
    node: str | None = None  # X-Replikit-Node
    token_in: str | None = None  # X-Replikit-LSN sent
    token_out: str | None = None  # X-Replikit-LSN received
    image_id: str | None = None
    created_at: str | None = None  # of image_id, when the answer told it
    listed: list[ListedImage] | None = None  # LIST: the page, newest first
    complete: bool | None = None  # LIST: no next page (the page holds every image)
    error: str | None = None

    @property
    def ms(self) -> float:
        return round((self.ended - self.started) * 1000, 2)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ms": self.ms}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["op"] = Op(values["op"])
        if values.get("listed") is not None:
            values["listed"] = [ListedImage(**item) for item in values["listed"]]
        return cls(**values)


def write_log(path: Path, records: Iterable[RequestRecord]) -> None:
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record.to_json()) + "\n")


def read_log(path: Path) -> Iterator[RequestRecord]:
    with path.open() as handle:
        for line in handle:
            if line.strip():
                yield RequestRecord.from_json(json.loads(line))
