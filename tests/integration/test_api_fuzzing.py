"""Property-based tests of the whole HTTP API against a real uvicorn on the real cluster.

Two properties. First, the API does what its OpenAPI description says: schemathesis runs every
one of its checks (status codes, content types, headers and bodies as declared, valid data
accepted and invalid refused, 405 with an exact ``Allow`` for undeclared methods, deletes that
stick...) in all its phases, following the description's links with real ids and tokens.

Second, whatever a client sends, the answer is not a server error (no 5xx), and every
error has the body ``{"error": {"code", "message", "details"}}``. Inputs come from the service's
own OpenAPI description (schemathesis, positive and negative), plus what the service reads but
does not declare there: the consistency header, the LSN header and cookie, real ids, delete
tokens, ETags and cursors mixed with garbage. Raw multipart bodies (boundaries, filenames, part
headers) and methods the API does not allow are generated separately.

Reproducible: every test runs with the same seed (``REPLIKIT_FUZZ_SEED``, printed) and writes
no example database; ``REPLIKIT_FUZZ_EXAMPLES`` scales the run (default sized for CI, about a
minute on 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import string
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from replication.cluster import Cluster
from service.routing.consistency import CONSISTENCY_HEADER, LSN_COOKIE, LSN_HEADER, Consistency
from tests.cursor_forms import CALENDAR_ENDS, legacy_cursor, position_cursor
from tests.integration.live_service import LiveService, live_service
from tests.integration.service_fixtures import image_bytes

FUZZ_SEED = int(os.environ.get("REPLIKIT_FUZZ_SEED", "20261129"))
EXAMPLES = int(os.environ.get("REPLIKIT_FUZZ_EXAMPLES", "50"))
MAX_UPLOAD_BYTES = 64 * 1024
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ example store: every run is the seeded run
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)


@dataclass(frozen=True)
class SeededImage:
    id: str
    delete_token: str
    sha256: str


@dataclass(frozen=True)
class FuzzTarget:
    service: LiveService
    images: list[SeededImage]
    cursor: str  # a real next_cursor, for the fuzzer to replay and mangle


@pytest.fixture(scope="module")
def target(migrated: Cluster) -> Iterator[FuzzTarget]:
    """The live service (reads on the replicas) with a few real images to aim at."""
    print(f"\nfuzz seed={FUZZ_SEED} examples={EXAMPLES} (REPLIKIT_FUZZ_SEED to change)")
    # A short read-your-writes wait: fuzzed LSN tokens far ahead of every node would otherwise
    # spend the default 0.2 s each before falling back to the primary. The path is the same.
    with live_service(migrated, ryw_wait="0.02", max_upload_bytes=str(MAX_UPLOAD_BYTES)) as service:
        images: list[SeededImage] = []
        with httpx.Client(base_url=service.url, timeout=10) as client:
            for fmt, size in (("PNG", (5, 4)), ("JPEG", (6, 6)), ("GIF", (3, 3))):
                created = client.post(
                    "/api/v1/images/upload",
                    files={"file": (f"seed.{fmt.lower()}", image_bytes(fmt, size), "image/*")},
                    headers={CONSISTENCY_HEADER: "strong"},
                )
                assert created.status_code == 201, created.text
                body = created.json()
                images.append(SeededImage(body["id"], body["delete_token"], body["sha256"]))
            listed = client.get(
                "/api/v1/images", params={"limit": 1}, headers={CONSISTENCY_HEADER: "strong"}
            )
            assert listed.status_code == 200, listed.text
            cursor = listed.json()["next_cursor"]
            assert cursor
            try:
                yield FuzzTarget(service, images, cursor)
            finally:
                for image in images:  # what the fuzzer did not delete itself
                    client.delete(
                        f"/api/v1/images/{image.id}",
                        headers={"X-Delete-Token": image.delete_token},
                    )


# --- what every answer must satisfy ----------------------------------------------------------


def check_answer(
    target: FuzzTarget, method: str, url: str, status: int, content: bytes, reproduce: str
) -> None:
    """No 5xx; an error's body has the documented shape (HEAD answers carry no body)."""
    where = f"{method} {url[:300]} -> {status} (seed {FUZZ_SEED})\nreproduce: {reproduce[:2000]}"
    if status >= 500:
        log = target.service.log_text()[-3000:]
        pytest.fail(f"server error: {where}\nbody: {content[:500]!r}\nservice log:\n{log}")
    if status < 400 or method == "HEAD":
        return
    try:
        body = json.loads(content)
    except ValueError:
        pytest.fail(f"error body is not JSON: {where}\nbody: {content[:500]!r}")
    assert isinstance(body, dict), where
    assert set(body) == {"error"}, f"error body shape: {where}\nbody: {body}"
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, f"error shape: {where}\nbody: {body}"
    assert isinstance(error["code"], str), where
    assert isinstance(error["message"], str), where
    assert isinstance(error["details"], dict), where


def reached(seen: Counter[int], statuses: set[int]) -> None:
    """The run got past the front door: each of ``statuses`` answered at least once. Without
    this, a generator that only ever produced rejected input would pass without testing much."""
    missing = statuses - set(seen)
    assert not missing, f"no {sorted(missing)} answer in {dict(seen)} (seed {FUZZ_SEED})"


# --- inputs the OpenAPI description does not declare -----------------------------------------

# Header values a client library will put on the wire: visible ASCII and Latin-1, inner spaces.
HEADER_TEXT = st.text(
    alphabet=st.characters(
        codec="latin-1", min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=["Cc"]
    ),
    max_size=80,
).map(str.strip)
LSN_LIKE = st.one_of(
    st.builds(lambda hi, lo: f"{hi:X}/{lo:X}", st.integers(0, 2**40), st.integers(0, 2**36)),
    st.sampled_from(
        ["0/0", "-1/0", "1/-5", "FFFFFFFF/FFFFFFFF", "/", "0/", "0x1/0x2", "1_0/2", "0/1/2"]
    ),
    HEADER_TEXT,
)
CONSISTENCY = st.one_of(
    st.sampled_from([mode.value for mode in Consistency]),
    st.sampled_from(["STRONG", "Eventual", "read-your-writes", "bounded,strong"]),
    HEADER_TEXT,
)
COOKIE_VALUE = st.one_of(LSN_LIKE, st.text(alphabet='0123456789ABCDEF/;="\\ ,', max_size=30))
# Path segments: random and very long text, unicode, and near-misses of a real UUID.
ODD_IDS = st.one_of(
    st.text(min_size=1, max_size=40),
    st.text(alphabet=string.hexdigits + "-{}:", min_size=30, max_size=45),
    st.text(min_size=500, max_size=4000),
    st.sampled_from(["..", ".", "%00", "urn:uuid:" + str(uuid.UUID(int=0)), "\u0661" * 32]),
)


def cursor_payloads() -> st.SearchStrategy[str]:
    """Cursors of the declared form with hostile contents (the ends of the 64-bit range and of
    the calendar), and the JSON cursors of earlier versions, right and wrong inside."""
    first, last = CALENDAR_ENDS
    micros = st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.sampled_from([-(2**63), 2**63 - 1, first - 1, first, last, last + 1, 0, -1]),
        st.integers(first - 10**6, first + 10**6),
        st.integers(last - 10**6, last + 10**6),
    )
    positions = st.builds(position_cursor, micros, st.uuids())
    offsets = st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
    )
    # The calendar's ends, where an offset can push the UTC time out of range.
    edges = st.one_of(
        st.datetimes(max_value=datetime(1, 1, 1, 12)),
        st.datetimes(min_value=datetime(9999, 12, 31, 12)),
    )

    def aware(moment: datetime, offset: timedelta) -> str:
        return moment.replace(tzinfo=timezone(offset)).isoformat()

    stamps = st.one_of(
        st.builds(aware, st.datetimes(), offsets),
        st.datetimes().map(datetime.isoformat),  # naive
        st.text(max_size=40),
    )
    values = st.one_of(
        st.none(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.lists(st.integers(), max_size=3),
    )
    ids = st.one_of(st.uuids().map(str), values)
    payload = st.one_of(
        st.fixed_dictionaries({"t": st.builds(aware, edges, offsets), "id": st.uuids().map(str)}),
        st.fixed_dictionaries({"t": stamps, "id": ids}),
        st.dictionaries(st.text(max_size=5), values, max_size=3),
        values,
    )
    legacy = payload.map(legacy_cursor)
    return st.one_of(positions, positions, legacy)


@dataclass(frozen=True)
class Extras:
    headers: dict[str, str]
    image_id: str | None
    cursor: str | None
    owner: SeededImage | None  # aim at this image, with its own token or a wrong one
    own_token: bool


def extras(target: FuzzTarget) -> st.SearchStrategy[Extras]:
    real = st.sampled_from(target.images)
    real_ids = real.map(lambda image: image.id)
    ids = st.one_of(real_ids, real_ids.map(str.upper), real_ids.map(lambda i: f"{{{i}}}"), ODD_IDS)
    etags = st.one_of(
        st.just(OWN_ETAG),
        real.map(lambda image: f'"{image.sha256}"'),
        real.map(lambda image: f'W/"{image.sha256}", "other"'),
        st.just("*"),
        HEADER_TEXT,
    )
    tokens = st.one_of(real.map(lambda image: image.delete_token), HEADER_TEXT)
    headers = st.fixed_dictionaries(
        {},
        optional={
            CONSISTENCY_HEADER: CONSISTENCY,
            LSN_HEADER: LSN_LIKE,
            "Cookie": COOKIE_VALUE.map(lambda value: f"{LSN_COOKIE}={value}"),
            "If-None-Match": etags,
            "X-Delete-Token": tokens,
        },
    )
    cursors = st.one_of(st.just(target.cursor), cursor_payloads(), st.text(max_size=600))
    return st.builds(
        Extras,
        headers=headers,
        image_id=st.one_of(st.none(), ids),
        cursor=st.one_of(st.none(), cursors),
        owner=st.one_of(st.none(), real),
        own_token=st.booleans(),
    )


# Replaced by the ETag of the image the case aims at (if any): an ETag drawn on its own matches
# the case's image too rarely for the run to be sure of reaching a 304.
OWN_ETAG = '"own-etag"'


def with_extras(case: schemathesis.Case[Any], extra: Extras) -> schemathesis.Case[Any]:
    case.headers.update(extra.headers)
    if case.headers.get("If-None-Match") == OWN_ETAG:
        aimed = extra.owner.sha256 if extra.owner is not None else "0" * 64
        case.headers["If-None-Match"] = f'"{aimed}"'
    if extra.image_id is not None and "image_id" in case.path_parameters:
        case.path_parameters = {**case.path_parameters, "image_id": extra.image_id}
    if extra.owner is not None and "image_id" in case.path_parameters:
        case.path_parameters = {**case.path_parameters, "image_id": extra.owner.id}
        token = extra.owner.delete_token
        # A well-formed token of the wrong image reaches the constant-time comparison (403).
        case.headers["X-Delete-Token"] = token if extra.own_token else token[::-1]
    if extra.cursor is not None and case.path == "/api/v1/images":
        case.query = {**(case.query or {}), "cursor": extra.cursor}
    return case


# --- the tests -------------------------------------------------------------------------------


def test_every_operation_answers_without_server_error(target: FuzzTarget) -> None:
    """Each operation, positive and negative data from the schema, plus the undeclared inputs."""
    schema = schemathesis.openapi.from_url(f"{target.service.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    # Deletes last: they remove the seeded images the other operations aim at.
    operations.sort(key=lambda operation: operation.method.upper() == "DELETE")
    names = {f"{operation.method.upper()} {operation.path}" for operation in operations}
    assert "POST /api/v1/images/upload" in names
    assert "DELETE /api/v1/images/{image_id}" in names
    started = time.monotonic()
    seen: Counter[int] = Counter()
    for operation in operations:
        for mode in GenerationMode:
            strategy = st.tuples(operation.as_strategy(generation_mode=mode), extras(target))

            @seed(FUZZ_SEED)
            @FUZZ_SETTINGS
            @given(drawn=strategy)
            def answers(drawn: tuple[schemathesis.Case[Any], Extras]) -> None:
                case = with_extras(*drawn)
                response = case.call(base_url=target.service.url, timeout=15)
                seen[response.status_code] += 1
                check_answer(
                    target,
                    case.method.upper(),
                    response.request.url or case.path,
                    response.status_code,
                    response.content,
                    case.as_curl_command(),
                )

            try:
                answers()
            except Unsatisfiable:
                # Operations without parameters (e.g. /health) have no invalid input to send.
                assert mode is GenerationMode.NEGATIVE
    print(f"fuzzed {len(operations)} operations in {time.monotonic() - started:.1f} s: {seen}")
    reached(seen, {200, 204, 304, 400, 401, 403, 404, 422})


LIMITS = st.one_of(
    st.integers(-5, 105).map(str),
    st.sampled_from(["", "0x10", "1e2", "20.0", " 5", "9" * 30, "-0", "\u0661"]),
)


def test_list_cursor_and_limit_answer_without_server_error(target: FuzzTarget) -> None:
    """The list's query parameters alone, with many more cursors than the schema run sends."""
    seen: Counter[int] = Counter()
    # Mostly cursors of the right form: their contents are where the database gets involved.
    cursors = st.one_of(
        cursor_payloads(), cursor_payloads(), st.just(target.cursor), st.text(max_size=600)
    )

    @seed(FUZZ_SEED)
    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES * 4)
    @given(
        cursor=st.one_of(cursors, st.none()),
        limit=st.one_of(st.none(), LIMITS),
        consistency=st.one_of(st.none(), CONSISTENCY),
    )
    def answers(cursor: str | None, limit: str | None, consistency: str | None) -> None:
        params = {
            name: value
            for name, value in (("cursor", cursor), ("limit", limit))
            if value is not None
        }
        headers = (
            {CONSISTENCY_HEADER.encode(): consistency.encode("latin-1")} if consistency else {}
        )
        with httpx.Client(base_url=target.service.url, timeout=15) as client:
            response = client.get("/api/v1/images", params=params, headers=headers)
        seen[response.status_code] += 1
        check_answer(
            target,
            "GET",
            str(response.request.url),
            response.status_code,
            response.content,
            f"params={params!r} headers={headers!r}",
        )

    answers()
    print(f"statuses: {seen}")
    reached(seen, {200, 400, 422})


# Boundaries: RFC 2046 characters, every printable one, empty, and longer than any parser takes.
RFC_BOUNDARIES = (
    st.text(
        alphabet=string.ascii_letters + string.digits + "'()+_,-./:=? ", min_size=1, max_size=70
    )
    .map(str.strip)
    .filter(bool)
)
BOUNDARIES = st.one_of(
    RFC_BOUNDARIES,
    RFC_BOUNDARIES,
    RFC_BOUNDARIES,
    st.text(
        alphabet=st.characters(codec="latin-1", min_codepoint=0x21, exclude_characters="\x7f"),
        max_size=120,
    ),
    st.integers(250, 2000).map(lambda n: "b" * n),
    st.just(""),
)
FILENAMES = st.one_of(
    st.none(),
    st.text(max_size=300),
    st.sampled_from(["../../etc/passwd", "a\\b\\c.png", "", ".", "\u202egnp.exe", "x" * 5000]),
)


@st.composite
def multipart_requests(draw: st.DrawFn, target: FuzzTarget) -> tuple[dict[str, str], bytes]:
    """A multipart upload built by hand: boundary, quoting, part headers, payload, framing.

    Six in ten are well-formed forms (hostile only in boundary text, filename and payload), so
    that they reach image validation and storage; the rest get the framing wrong as well.
    """
    well_formed = draw(st.integers(0, 9)) < 6
    form = "multipart/form-data"
    boundary = draw(RFC_BOUNDARIES if well_formed else BOUNDARIES)
    needs_quotes = any(char in boundary for char in ' ()<>@,;:\\"/[]?=')
    if well_formed:
        quoted, media, params, name, ending = needs_quotes, form, "", "file", "proper"
    else:
        quoted = draw(st.booleans())
        media = draw(st.sampled_from([form, "Multipart/Form-Data", "multipart/mixed"]))
        params = draw(st.sampled_from(["", "; charset=utf-8", "; boundary=other", ";;"]))
        name = draw(st.sampled_from(["file", "File", "other", ""]))
        ending = draw(st.sampled_from(["proper", "missing", "truncated", "extra-part"]))
    shown = f'"{boundary}"' if quoted else boundary
    content_type = f"{media}; boundary={shown}{params}"
    filename = draw(FILENAMES)
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    payload = draw(
        st.one_of(
            st.binary(max_size=2048),
            st.sampled_from([image_bytes("PNG", (2, 2)), image_bytes("GIF", (2, 2))]),
            st.integers(MAX_UPLOAD_BYTES - 2, MAX_UPLOAD_BYTES + 2).map(lambda n: b"\0" * n),
        )
    )
    part_headers = [f"Content-Disposition: {disposition}"]
    part_headers += draw(
        st.lists(
            st.sampled_from(
                [
                    "Content-Type: image/png",
                    "Content-Type: ",
                    "Content-Transfer-Encoding: base64",
                    "X-Ünïcode: ✓",
                    ": no name",
                    "no colon",
                ]
            ),
            max_size=0 if well_formed else 2,
        )
    )
    head = "\r\n".join(part_headers).encode("utf-8")
    body = b"--" + boundary.encode("latin-1") + b"\r\n" + head + b"\r\n\r\n" + payload
    closing = b"\r\n--" + boundary.encode("latin-1")
    if ending == "proper":
        body += closing + b"--\r\n"
    elif ending == "truncated":
        body = body[: draw(st.integers(0, len(body)))]
    elif ending == "extra-part":
        body += (
            closing
            + b'\r\nContent-Disposition: form-data; name="file"\r\n\r\nmore'
            + closing
            + b"--"
        )
    headers = {"Content-Type": content_type}
    # On a successful upload the service merges the LSN cookie it got into the one it sets.
    routing = st.fixed_dictionaries(
        {},
        optional={
            # Valid modes only: a bad one is refused before the body is looked at.
            CONSISTENCY_HEADER: st.sampled_from([mode.value for mode in Consistency]),
            LSN_HEADER: LSN_LIKE,
            "Cookie": COOKIE_VALUE.map(lambda value: f"{LSN_COOKIE}={value}"),
        },
    )
    headers.update(draw(routing))
    return headers, body


def test_hand_built_multipart_uploads_answer_without_server_error(target: FuzzTarget) -> None:
    """Schemathesis encodes multipart bodies itself (sane boundaries); these are hostile."""
    seen: Counter[int] = Counter()

    @seed(FUZZ_SEED)
    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES * 4)
    @given(request=multipart_requests(target))
    def answers(request: tuple[dict[str, str], bytes]) -> None:
        headers, body = request
        with httpx.Client(base_url=target.service.url, timeout=15) as client:
            response = client.post(
                "/api/v1/images/upload",
                headers={name.encode(): value.encode("latin-1") for name, value in headers.items()},
                content=body,
            )
        seen[response.status_code] += 1
        check_answer(
            target,
            "POST",
            "/api/v1/images/upload",
            response.status_code,
            response.content,
            f"headers={headers!r} body={body[:1500]!r}",
        )
        if response.status_code == 201:
            created = response.json()
            assert created["id"], created

    answers()
    print(f"statuses: {seen}")
    reached(seen, {201, 400, 413, 415})


# Methods the HTTP parser (llhttp, in uvicorn) accepts; others, and CONNECT's authority form,
# get uvicorn's own plain-text 400 before the app is called.
METHODS = st.sampled_from(
    [
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "PATCH",
        "DELETE",
        "OPTIONS",
        "TRACE",
        "PROPFIND",
        "MKCOL",
        "COPY",
        "MOVE",
        "LOCK",
        "UNLOCK",
        "SEARCH",
        "PURGE",
        "REPORT",
        "QUERY",
        "LINK",
    ]
)


def test_any_method_on_any_path_answers_without_server_error(target: FuzzTarget) -> None:
    """Methods the API does not allow get a 405 (or 404/400), in the error shape."""
    seen: Counter[int] = Counter()
    paths = st.one_of(
        st.sampled_from(
            ["/health", "/ready", "/api/v1/images", "/api/v1/images/upload", "/nowhere", "/"]
        ),
        st.sampled_from(target.images).map(lambda image: f"/api/v1/images/{image.id}"),
        st.sampled_from(target.images).map(lambda image: f"/api/v1/images/{image.id}/file"),
        ODD_IDS.map(lambda odd: "/api/v1/images/" + quote(odd, safe="")),
    )

    @seed(FUZZ_SEED)
    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES * 2)
    @given(method=METHODS, path=paths, body=st.binary(max_size=64))
    def answers(method: str, path: str, body: bytes) -> None:
        with httpx.Client(base_url=target.service.url, timeout=15) as client:
            response = client.request(method, path, content=body)
        seen[response.status_code] += 1
        check_answer(
            target, method, path, response.status_code, response.content, f"{method} {path}"
        )
        if method in {"PUT", "PATCH", "TRACE"} and not path.startswith("/nowhere"):
            assert response.status_code in {404, 405}, (method, path, response.status_code)

    answers()
    print(f"statuses: {seen}")
    reached(seen, {200, 404, 405})


# --- the API does what its description says --------------------------------------------------

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

# What schemathesis cannot know from the description, each with its reason. No check is turned
# off: the only widening is of one operation's expected statuses, where the description cannot
# say what makes a request valid.
CONFORMANCE_CONFIG = """
# An upload whose part is any non-empty bytes is valid by the description, but only bytes that
# decode as an image pass: 415 UNSUPPORTED_IMAGE (not an image), 413 IMAGE_TOO_LARGE (too many
# pixels) and 422 DECODE_BUDGET_EXCEEDED (decoding too costly). JSON Schema has no way to say
# "decodes as a JPEG, PNG, GIF or WEBP within these limits", so these three are accepted
# answers to schema-valid uploads; every other check still runs on the upload.
[[operations]]
include-operation-id = "upload_image"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "429", "413", "415", "422",
]

# Only the description's own links drive the stateful phase: links schemathesis infers by
# itself would reach the same operations and hide a declared link that leads nowhere (the
# delete, for one, is reached only by the upload's link that carries its token).
[phases.stateful]
inference.algorithms = []
generation.max-examples = {stateful_examples}
"""


def schemathesis_run(url: str, workdir: Path) -> list[str]:
    """The command line: every check, every phase, seeded, one worker (the machine has two
    cores and the service one), no example database, reports in ``workdir``."""
    config = workdir / "schemathesis.toml"
    config.write_text(CONFORMANCE_CONFIG.format(stateful_examples=EXAMPLES * 2))
    return [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--seed",
        str(FUZZ_SEED),
        "--max-examples",
        str(EXAMPLES),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "15",
        "--continue-on-failure",
        "--report",
        "har",
        "--report-har-path",
        str(workdir / "exchanges.har"),
    ]


def exchanged_statuses(har: Path) -> Counter[int]:
    entries = json.loads(har.read_text())["log"]["entries"]
    return Counter(int(entry["response"]["status"]) for entry in entries)


def test_the_api_does_what_its_openapi_description_says(target: FuzzTarget, tmp_path: Path) -> None:
    """Every schemathesis check (``--checks all``) in every phase: the description's examples,
    coverage (boundary values, missing parameters, the methods a path does not list, which
    must be 405 with an exact ``Allow``), fuzzing (positive and negative), and the stateful
    phase that follows the description's links from real uploads and listings to the get,
    file and delete operations. Any disagreement between answer and description fails."""
    started = time.monotonic()
    run = subprocess.run(
        schemathesis_run(target.service.url, tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    print(f"schemathesis ran in {time.monotonic() - started:.1f} s\n{run.stdout[-4000:]}")
    if run.returncode != 0:
        log = target.service.log_text()[-3000:]
        pytest.fail(
            f"the API and its description disagree (seed {FUZZ_SEED}; "
            f"reproduce: {' '.join(run.args)}):\n{run.stdout[-20000:]}\n{run.stderr[-3000:]}\n"
            f"service log:\n{log}"
        )
    seen = exchanged_statuses(tmp_path / "exchanges.har")
    print(f"statuses: {seen}")
    # 201 and then 204: an upload, and a delete that only the upload's link (id and token)
    # can reach; 405: the methods the description does not list were tried.
    reached(seen, {200, 201, 204, 404, 405})
    # Every link of the description was followed at least once.
    declared = declared_links(target.service.url)
    coverage = re.search(r"API Links:\s+(\d+) covered / \d+ selected / (\d+) total", run.stdout)
    assert coverage, f"no link coverage in schemathesis's summary:\n{run.stdout[-3000:]}"
    assert (int(coverage[1]), int(coverage[2])) == (declared, declared), coverage[0]


def declared_links(url: str) -> int:
    description = httpx.get(f"{url}/openapi.json", timeout=10).json()
    return sum(
        len(response.get("links", {}))
        for operations in description["paths"].values()
        for operation in operations.values()
        for response in operation["responses"].values()
    )
