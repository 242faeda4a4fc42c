"""The consistency experiment's clients: each keeps its own token and alternates instances.

A client is one user: one request at a time, a token it sends with every request
(``X-Replikit-LSN``) and raises to whatever an answer hands back, the images it has learned of
(newest first) and the delete tokens of its own live uploads. Its next service instance is the
one after its last, so consecutive requests of one client go to different instances, and
whatever a token promises must hold across them. Every request becomes one
:class:`RequestRecord`.
"""

from __future__ import annotations

import asyncio
import io
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
from PIL import Image

from loadtests.experiments.consistency_records import ListedImage, Op, RequestRecord
from service.routing.consistency import CONSISTENCY_HEADER, LSN_HEADER
from service.routing.lsn import parse_lsn

API = "/api/v1/images"
NODE_HEADER = "X-Replikit-Node"
PAGE_SIZE = 20
RECENT_IMAGES = 12  # a metadata read picks one of the newest images the client knows
TIMEOUT = httpx.Timeout(10.0, connect=3.0)


@dataclass(frozen=True)
class OperationMix:
    """Relative weights of the operations a client picks from."""

    upload: float = 2
    delete: float = 1
    get: float = 4
    list: float = 3

    def pick(self, rng: random.Random, *, reader: bool = False) -> Op:
        """The next operation; a reader only reads (metadata and listings)."""
        ops = (Op.UPLOAD, Op.DELETE, Op.GET, Op.LIST)
        weights = (0 if reader else self.upload, 0 if reader else self.delete, self.get, self.list)
        return rng.choices(ops, weights=weights)[0]


@dataclass(frozen=True)
class Phase:
    """One consistency mode's turn: who runs, for how long, against which instances."""

    mode: str
    urls: list[str]
    clients: int
    readers: int  # the first this many clients never write: their tokens come from reads
    seconds: float
    think_seconds: float
    mix: OperationMix
    seed: int


def tiny_png(rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (rng.randrange(256), rng.randrange(256), 60)).save(buffer, "PNG")
    return buffer.getvalue()


def no_cookies() -> CookieJar:
    """Tokens travel in the header only: an httpx client would otherwise send the
    ``replikit_lsn`` cookie back, and a shared jar would mix the clients' tokens."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def error_code(response: httpx.Response) -> str | None:
    """The service's machine-readable ``error.code`` of a failed answer (404 aside: an
    absence is an observation), so a log of failures says what failed, not only its status."""
    if response.status_code < 400 or response.status_code == 404:
        return None
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


class ConsistencyClient:
    def __init__(
        self,
        index: int,
        phase: Phase,
        http: httpx.AsyncClient,
        record: Callable[[RequestRecord], None],
    ) -> None:
        self.index = index
        self.phase = phase
        self.http = http
        self.record = record
        self.rng = random.Random(phase.seed * 1000 + index)
        self.reader = index < phase.readers
        self.token: str | None = None
        self.turn = index  # clients start on different instances
        self.known: deque[str] = deque(maxlen=RECENT_IMAGES)
        self.delete_tokens: dict[str, str] = {}  # own uploads not deleted yet

    async def run(self, deadline: float) -> None:
        while time.time() < deadline:
            await self.step()
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.phase.think_seconds)

    async def step(self) -> None:
        op = self.phase.mix.pick(self.rng, reader=self.reader)
        if op is Op.DELETE and not self.delete_tokens:
            op = Op.UPLOAD
        if op is Op.GET and not self.known:
            op = Op.LIST
        action: dict[Op, Callable[[], Awaitable[None]]] = {
            Op.UPLOAD: self.upload,
            Op.DELETE: self.delete,
            Op.GET: self.get,
            Op.LIST: self.list,
        }
        await action[op]()

    def _learn(self, image_id: str) -> None:
        if image_id in self.known:
            self.known.remove(image_id)
        self.known.appendleft(image_id)

    async def _request(
        self,
        op: Op,
        method: str,
        path: str,
        *,
        image_id: str | None = None,
        headers: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
    ) -> tuple[RequestRecord, httpx.Response | None]:
        instance = self.turn % len(self.phase.urls)
        self.turn += 1
        sent = {CONSISTENCY_HEADER: self.phase.mode, **(headers or {})}
        if self.token:
            sent[LSN_HEADER] = self.token
        record = RequestRecord(
            mode=self.phase.mode,
            client=self.index,
            instance=instance,
            op=op,
            started=time.time(),
            ended=0.0,
            status=0,
            token_in=self.token,
            image_id=image_id,
        )
        response: httpx.Response | None = None
        try:
            response = await self.http.request(
                method, self.phase.urls[instance] + path, headers=sent, files=files
            )
        except httpx.HTTPError as error:
            record.error = type(error).__name__
        record.ended = time.time()
        if response is not None:
            record.status = response.status_code
            record.node = response.headers.get(NODE_HEADER)
            record.error = error_code(response)
            record.token_out = response.headers.get(LSN_HEADER)
            if record.token_out:
                self._raise_token(record.token_out)
        return record, response

    def _raise_token(self, token: str) -> None:
        try:
            if self.token is None or parse_lsn(token) > parse_lsn(self.token):
                self.token = token
        except ValueError:
            return

    async def upload(self) -> None:
        data = tiny_png(self.rng)
        record, response = await self._request(
            Op.UPLOAD, "POST", f"{API}/upload", files={"file": ("c.png", data, "image/png")}
        )
        if response is not None and response.status_code == 201:
            body = response.json()
            record.image_id, record.created_at = body["id"], body["created_at"]
            self.delete_tokens[body["id"]] = body["delete_token"]
            self._learn(body["id"])
        self.record(record)

    async def delete(self) -> None:
        image_id = self.rng.choice(sorted(self.delete_tokens))
        delete_token = self.delete_tokens.pop(image_id)
        record, _ = await self._request(
            Op.DELETE,
            "DELETE",
            f"{API}/{image_id}",
            image_id=image_id,
            headers={"X-Delete-Token": delete_token},
        )
        self.record(record)

    async def get(self) -> None:
        image_id = self.rng.choice(list(self.known))
        record, response = await self._request(
            Op.GET, "GET", f"{API}/{image_id}", image_id=image_id
        )
        if response is not None and response.status_code == 200:
            record.created_at = response.json()["created_at"]
        self.record(record)

    async def list(self) -> None:
        record, response = await self._request(Op.LIST, "GET", f"{API}?limit={PAGE_SIZE}")
        if response is not None and response.status_code == 200:
            body = response.json()
            record.listed = [ListedImage(i["id"], i["created_at"]) for i in body["items"]]
            record.complete = body["next_cursor"] is None
            for item in reversed(record.listed):
                self._learn(item.id)
        self.record(record)


async def run_phase(
    phase: Phase, records: list[RequestRecord] | None = None
) -> list[RequestRecord]:
    """Run ``phase.clients`` clients for ``phase.seconds``; every request, in the order
    answered, appended to ``records`` as it is answered (a new list by default), which a
    watcher in another thread may read while the phase runs."""
    records = [] if records is None else records
    deadline = time.time() + phase.seconds
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    clients = [
        httpx.AsyncClient(timeout=TIMEOUT, limits=limits, cookies=no_cookies())
        for _ in range(phase.clients)
    ]
    try:
        await asyncio.gather(
            *(
                ConsistencyClient(index, phase, http, records.append).run(deadline)
                for index, http in enumerate(clients)
            )
        )
    finally:
        for http in clients:
            await http.aclose()
    return records


async def warm_up(urls: list[str]) -> None:
    """One upload and one read per instance before anything is measured: the first upload of
    an instance starts its decode processes (a second or more), which is no mode's cost."""
    rng = random.Random(0)
    async with httpx.AsyncClient(timeout=TIMEOUT, cookies=no_cookies()) as http:
        for url in urls:
            png = tiny_png(rng)
            await http.post(f"{url}{API}/upload", files={"file": ("w.png", png, "image/png")})
            await http.get(f"{url}{API}?limit=1")


async def verify_writes(
    mode: str, url: str, records: list[RequestRecord], concurrency: int = 8
) -> list[RequestRecord]:
    """Strong reads (on the primary) of every image the phase uploaded or deleted."""
    written = sorted(
        {
            r.image_id
            for r in records
            if r.image_id and r.op in (Op.UPLOAD, Op.DELETE) and r.status in (201, 204)
        }
    )
    semaphore = asyncio.Semaphore(concurrency)
    verified: list[RequestRecord] = []
    async with httpx.AsyncClient(timeout=TIMEOUT, cookies=no_cookies()) as http:

        async def check(image_id: str) -> None:
            async with semaphore:
                record = RequestRecord(
                    mode=mode,
                    client=-1,
                    instance=0,
                    op=Op.VERIFY,
                    started=time.time(),
                    ended=0.0,
                    status=0,
                    image_id=image_id,
                )
                try:
                    response = await http.get(
                        f"{url}{API}/{image_id}", headers={CONSISTENCY_HEADER: "strong"}
                    )
                    record.status = response.status_code
                    record.node = response.headers.get(NODE_HEADER)
                except httpx.HTTPError as error:
                    record.error = type(error).__name__
                record.ended = time.time()
                verified.append(record)

        await asyncio.gather(*(check(image_id) for image_id in written))
    return verified
