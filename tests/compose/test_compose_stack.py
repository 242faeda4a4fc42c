"""The default compose stack on a real Docker engine: healthy from empty volumes, an upload
through HAProxy readable from every app instance, streaming replicas with their slots, the
migration gate, scaling, the edge's rules, a Locust run and the monitoring profile."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from PIL import Image

from replication.compose.balancer import app_servers
from replication.compose.stack import ComposeStack
from tests.compose.stacks import ROOT, admin_url, api_url, containers_of, settings_of

pytestmark = pytest.mark.compose


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (seed % 256, (seed * 7) % 256, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def upload(stack: ComposeStack, seed: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{api_url(stack)}/api/v1/images/upload",
        files={"file": (f"t{seed}.png", png(seed), "image/png")},
        headers=headers or {},
        timeout=30,
    )


def superuser_fetch(stack: ComposeStack, node: str, query: str) -> list[asyncpg.Record]:
    settings = settings_of(stack)

    async def fetch() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(
            host="127.0.0.1",
            port=int(settings[f"REPLIKIT_{node.upper()}_PORT"]),
            user="postgres",
            password=settings["REPLIKIT_SUPERUSER_PASSWORD"],
            database="replikit",
            timeout=10,
        )
        try:
            return list(await connection.fetch(query))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def fetch_inside(container: str, path: str, headers: dict[str, str]) -> bytes:
    """GET from inside an app container, on that instance's own port (not through HAProxy)."""
    script = (
        "import sys, json, urllib.request; "
        "request = urllib.request.Request('http://127.0.0.1:8000' + sys.argv[1], "
        "headers=json.loads(sys.argv[2])); "
        "sys.stdout.buffer.write(urllib.request.urlopen(request, timeout=10).read())"
    )
    return subprocess.run(
        ["docker", "exec", container, "python3", "-c", script, path, json.dumps(headers)],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


def status_inside(container: str, url: str) -> int:
    """The HTTP status an app container gets for ``url`` from inside itself."""
    script = (
        "import sys, urllib.error, urllib.request\n"
        "try:\n"
        "    print(urllib.request.urlopen(sys.argv[1], timeout=10).status)\n"
        "except urllib.error.HTTPError as error:\n"
        "    print(error.code)\n"
    )
    result = subprocess.run(
        ["docker", "exec", container, "python3", "-c", script, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(result.stdout.strip())


def test_stack_comes_up_healthy_from_empty_volumes(stack: ComposeStack) -> None:
    states = {state.name: state for state in stack.containers()}
    services = sorted({state.service for state in states.values()})
    assert services == [
        "app", "backup", "lb", "migrate", "pg0", "pg1", "pg2", "pooler0", "pooler1", "pooler2",
    ]  # fmt: skip
    assert all(state.ready for state in states.values()), states
    assert len(containers_of(stack, "app")) == 2


def test_upload_through_the_load_balancer_reads_back_identical_from_every_app_instance(
    stack: ComposeStack,
) -> None:
    response = upload(stack, 1)
    assert response.status_code == 201, response.text
    image_id, lsn = response.json()["id"], response.headers["X-Replikit-LSN"]
    expected = hashlib.sha256(png(1)).hexdigest()
    apps = containers_of(stack, "app")
    assert len(apps) == 2
    token = {"X-Replikit-Consistency": "read_your_writes", "X-Replikit-LSN": lsn}
    for container in apps:
        body = fetch_inside(container, f"/api/v1/images/{image_id}/file", token)
        assert hashlib.sha256(body).hexdigest() == expected, container
    through_lb = httpx.get(f"{api_url(stack)}/api/v1/images/{image_id}/file", headers=token)
    assert through_lb.status_code == 200
    assert through_lb.content == png(1)


def test_both_replicas_stream_from_the_primary_over_their_slots(stack: ComposeStack) -> None:
    streaming = superuser_fetch(
        stack, "pg0", "SELECT application_name, state FROM pg_stat_replication"
    )
    assert sorted((r["application_name"], r["state"]) for r in streaming) == [
        ("pg1", "streaming"),
        ("pg2", "streaming"),
    ]
    slots = superuser_fetch(stack, "pg0", "SELECT slot_name, active FROM pg_replication_slots")
    assert sorted((r["slot_name"], r["active"]) for r in slots) == [("pg1", True), ("pg2", True)]


def test_psql_inside_a_node_is_the_superuser_through_the_peer_map(stack: ComposeStack) -> None:
    """`docker compose exec pg1 psql -U postgres`, as docs/compose.md says: the node's own account
    is mapped to the superuser on the local socket, with no password."""
    result = stack.run(
        "exec", "-T", "pg1", "psql", "-U", "postgres", "-Atc", "SELECT rolsuper FROM pg_roles "
        "WHERE rolname = current_user",
        what="psql in pg1",
    )  # fmt: skip
    assert result.stdout.strip() == "t"


def test_app_instances_start_only_after_the_migration_succeeded(stack: ComposeStack) -> None:
    def inspect(container: str) -> dict[str, Any]:
        output = subprocess.run(
            ["docker", "inspect", container], capture_output=True, text=True, check=True
        ).stdout
        state: dict[str, Any] = json.loads(output)[0]["State"]
        return state

    (migrate,) = containers_of(stack, "migrate")
    migrated = inspect(migrate)
    assert migrated["Status"] == "exited"
    assert migrated["ExitCode"] == 0
    for app in containers_of(stack, "app"):
        assert inspect(app)["StartedAt"] >= migrated["FinishedAt"]
    (version,) = superuser_fetch(stack, "pg0", "SELECT version_num FROM alembic_version")
    assert version["version_num"]
    # Running it again finds the primary by itself and changes nothing.
    stack.run("run", "--rm", "migrate", what="migrating again")


def test_operational_endpoints_are_off_the_public_port(stack: ComposeStack) -> None:
    for path in ("/cluster", "/metrics", "/%63luster", "/%6Detrics"):
        response = httpx.get(f"{api_url(stack)}{path}", timeout=10)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert httpx.get(f"{admin_url(stack)}/cluster", timeout=10).json()["writer"] == "pg0"
    assert "replikit_http_requests_total" in httpx.get(f"{admin_url(stack)}/metrics").text
    # Not only the proxy: each instance itself answers them on its operations listener only.
    app = containers_of(stack, "app")[0]
    assert status_inside(app, "http://127.0.0.1:8000/cluster") == 404
    assert status_inside(app, "http://127.0.0.1:8001/cluster") == 200


def test_the_load_balancer_limits_bodies_before_the_service_reads_them(
    stack: ComposeStack,
) -> None:
    too_large = int(settings_of(stack).get("REPLIKIT_LB_MAX_BODY_BYTES") or 12582912) + 1
    port = int(settings_of(stack)["REPLIKIT_HTTP_PORT"])
    # The declared length alone decides: the client sends no body before the answer comes.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            b"POST /api/v1/images/upload HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            + f"Content-Length: {too_large}\r\n\r\n".encode()
        )
        answer = connection.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert '"FILE_TOO_LARGE"' in answer

    def chunks() -> Any:
        yield png(2)

    chunked = httpx.post(f"{api_url(stack)}/api/v1/images/upload", content=chunks(), timeout=10)
    assert chunked.status_code == 411


def test_a_spoofed_forwarded_address_does_not_escape_the_rate_limit(stack: ComposeStack) -> None:
    limit = int(settings_of(stack)["REPLIKIT_UPLOAD_RATE_LIMIT"])
    codes = [
        upload(stack, 100 + i, headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
        for i in range(limit + 2)
    ]
    # Every attempt counts against the one real client address, whatever it claims to be.
    assert codes.count(429) >= 2, codes
    assert set(codes) <= {201, 429}, codes


def container_address(container: str) -> str:
    """The container's address on its stack's default network."""
    networks = json.loads(
        subprocess.run(
            ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", container],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    )  # fmt: skip
    (address,) = {n["IPAddress"] for name, n in networks.items() if name.endswith("_default")}
    return str(address)


def app_backends(stack: ComposeStack) -> dict[str, dict[str, int]]:
    """Per node: the app role's backends counted by the address they come from."""
    counts: dict[str, dict[str, int]] = {}
    for node in ("pg0", "pg1", "pg2"):
        rows = superuser_fetch(
            stack, node, "SELECT host(client_addr) AS source, count(*) AS n FROM pg_stat_activity "
            "WHERE usename = 'app' GROUP BY 1",
        )  # fmt: skip
        counts[node] = {str(row["source"]): int(row["n"]) for row in rows}
    return counts


async def _storm(base: str, seconds: float, concurrency: int) -> dict[int, int]:
    """Every status answered while ``concurrency`` clients read for ``seconds``: a listing
    from a replica and one from the primary (strong), so every pooler carries traffic. Reads
    only: the shared stack's per-address upload limit would answer uploads with 429."""
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    requests = [
        ("/api/v1/images?limit=5", {"X-Replikit-Consistency": "eventual"}),
        ("/api/v1/images?limit=5", {"X-Replikit-Consistency": "strong"}),
    ]

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            while time.monotonic() < deadline:
                for url, headers in requests:
                    try:
                        code = (await http.get(url, headers=headers)).status_code
                    except httpx.TransportError:
                        code = 0
                    statuses[code] = statuses.get(code, 0) + 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


def storm(stack: ComposeStack, seconds: float, concurrency: int = 40) -> dict[int, int]:
    return asyncio.run(_storm(api_url(stack), seconds, concurrency))


def test_eight_instances_reach_postgresql_only_through_the_poolers_with_bounded_backends(
    stack: ComposeStack,
) -> None:
    """``--scale app=8`` under load: no error, and each node's app backends are its own
    pooler's, at most REPLIKIT_POOLER_MAX_DB_CONNECTIONS of its 200 ``max_connections``."""
    stack.run("up", "-d", "--no-build", "--scale", "app=8", "app", what="scaling app")
    try:
        stack.wait_ready(services=["app", "lb"], timeout=240)
        statuses = storm(stack, seconds=15, concurrency=48)
        backends = app_backends(stack)
    finally:
        stack.run("up", "-d", "--no-build", "--scale", "app=2", "app", what="scaling back")
        stack.wait_ready(services=["app", "lb"], timeout=180)
    assert set(statuses) == {200}, statuses
    assert statuses[200] > 100, statuses
    for index, node in enumerate(("pg0", "pg1", "pg2")):
        pooler = container_address(containers_of(stack, f"pooler{index}")[0])
        assert set(backends[node]) <= {pooler}, (node, backends)
        assert sum(backends[node].values()) <= 100, (node, backends)


def pooler_login(stack: ComposeStack, user: str, password: str) -> subprocess.CompletedProcess[str]:
    """``psql`` as ``user`` through pooler0, from inside its container."""
    return subprocess.run(
        [
            "docker", "exec", "-e", f"PGPASSWORD={password}", containers_of(stack, "pooler0")[0],
            "psql", "-h", "127.0.0.1", "-p", "6432", "-U", user, "-d", "replikit", "-XAtc",
            "SELECT current_user, current_setting('statement_timeout')",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_poolers_let_ordinary_roles_in_with_their_own_password_and_no_privileged_role(
    stack: ComposeStack,
) -> None:
    settings = settings_of(stack)
    app = pooler_login(stack, "app", settings["REPLIKIT_APP_PASSWORD"])
    assert app.returncode == 0, app.stderr
    # Behind a transaction pooler the app role's own server-side default bounds statements.
    assert app.stdout.strip().split("|") == ["app", "30s"]
    wrong = pooler_login(stack, "app", "not-the-password")
    assert wrong.returncode != 0
    assert "authentication failed" in wrong.stderr, wrong.stderr
    for user, key in (
        ("postgres", "REPLIKIT_SUPERUSER_PASSWORD"),
        ("replicator", "REPLIKIT_REPLICATION_PASSWORD"),
    ):
        refused = pooler_login(stack, user, settings[key])
        assert refused.returncode != 0, (user, refused.stdout)
        assert "FATAL" in refused.stderr, (user, refused.stderr)
    (lookup,) = superuser_fetch(
        stack, "pg0", "SELECT rolsuper, rolreplication, "
        "has_table_privilege(oid, 'pg_catalog.pg_authid', 'SELECT') AS reads_authid "
        "FROM pg_roles WHERE rolname = 'pooler_auth'",
    )  # fmt: skip
    assert (lookup["rolsuper"], lookup["rolreplication"], lookup["reads_authid"]) == (
        False, False, False,
    )  # fmt: skip


def test_a_pooler_restarted_under_load_costs_no_server_error_but_honest_503s(
    stack: ComposeStack,
) -> None:
    """The primary's pooler restarts while clients read, half of them from the primary:
    requests it was serving are retried elsewhere or refused with 503, never a 500;
    afterwards the primary answers through it again."""

    async def run() -> dict[int, int]:
        load = asyncio.create_task(_storm(api_url(stack), seconds=12, concurrency=16))
        await asyncio.sleep(3)
        await asyncio.to_thread(
            stack.run, "restart", "pooler0", what="restarting the primary's pooler"
        )
        return await load

    statuses = asyncio.run(run())
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] > 50, statuses
    stack.wait_ready(services=["pooler0", "app"], timeout=60)
    strong = {"X-Replikit-Consistency": "strong"}
    assert httpx.get(f"{api_url(stack)}/api/v1/images", headers=strong).status_code == 200


def haproxy_servers(stack: ComposeStack) -> list[dict[str, str]]:
    return app_servers(settings_of(stack)["REPLIKIT_ADMIN_PORT"])


def test_scaling_app_to_three_puts_all_three_behind_the_load_balancer(
    stack: ComposeStack,
) -> None:
    stack.run("up", "-d", "--no-build", "--scale", "app=3", "app", what="scaling app")
    stack.wait_ready(services=["app"], timeout=120)
    assert len(containers_of(stack, "app")) == 3
    deadline = time.monotonic() + 60
    while True:
        up = [s for s in haproxy_servers(stack) if s["status"] == "UP"]
        if len(up) == 3:
            break
        assert time.monotonic() < deadline, [(s["svname"], s["status"]) for s in up]
        time.sleep(1)
    before = {s["svname"]: int(s["stot"]) for s in up}
    with httpx.Client(timeout=10) as client:
        for _ in range(30):
            assert client.get(f"{api_url(stack)}/api/v1/images?limit=1").status_code == 200
    after = {s["svname"]: int(s["stot"]) for s in haproxy_servers(stack) if s["svname"] in before}
    assert all(after[name] > before[name] for name in before), (before, after)
    stack.run("up", "-d", "--no-build", "--scale", "app=2", "app", what="scaling back")
    stack.wait_ready(services=["app"], timeout=120)


def test_the_loadtest_profile_runs_a_short_locust_run_without_failures(
    stack: ComposeStack,
) -> None:
    result = stack.load(scenario="MixedUser", users=4, spawn_rate=4, seconds=8)
    output = result.stdout + result.stderr
    aggregated = next(line for line in output.splitlines() if "Aggregated" in line)
    requests, failures = aggregated.split()[1:3]
    assert int(requests) > 0
    assert failures.startswith("0("), aggregated


# Panels that only have series once their event happened (a 5xx, a 503 for want of a node, a
# read fallback): for these the test asks that the service exposes the metric behind them.
EVENT_ONLY = {
    'status=~"5.."': "replikit_http_requests_total",
    "replikit_unavailable_total": "replikit_unavailable_total",
    "replikit_read_fallbacks_total": "replikit_read_fallbacks_total",
}


def dashboard_queries() -> list[str]:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/replikit.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if t.get("expr")]


NODES = ["pg0", "pg1", "pg2"]


def prometheus_nodes(client: httpx.Client, prometheus: str, query: str) -> list[str]:
    """The nodes with a series for ``query``, once Prometheus has one for each (or after 30 s:
    the exporters' first scrapes come a few seconds after their targets are up)."""
    deadline = time.monotonic() + 30
    while True:
        answer = client.get(f"{prometheus}/api/v1/query", params={"query": query}).json()
        nodes = sorted({series["metric"]["node"] for series in answer["data"]["result"]})
        if nodes == NODES or time.monotonic() > deadline:
            return nodes
        time.sleep(2)


def test_monitoring_profile_has_every_target_up_and_the_dashboard_queries_return_series(
    stack: ComposeStack,
) -> None:
    exporters = [f"{kind}{i}-exporter" for kind in ("pg", "pooler") for i in range(3)]
    monitoring = ["prometheus", *exporters]
    stack.up(profiles=["monitoring"], services=monitoring, timeout=120)
    prometheus = f"http://127.0.0.1:{settings_of(stack)['REPLIKIT_PROMETHEUS_PORT']}"
    with httpx.Client(timeout=10) as client:
        # Traffic for the request, routing and read-your-writes series (reads only: earlier
        # tests may have spent this minute's upload budget of the one client address).
        token = {"X-Replikit-Consistency": "read_your_writes", "X-Replikit-LSN": "0/1"}
        for _ in range(10):
            assert client.get(f"{api_url(stack)}/api/v1/images", headers=token).status_code == 200
        deadline = time.monotonic() + 90
        while True:
            try:
                answer = client.get(f"{prometheus}/api/v1/targets")
            except httpx.TransportError:
                # docker-proxy accepts on the published port before Prometheus listens, then
                # resets the connection (seen once in CI right after `up`).
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
                continue
            targets = answer.json()["data"]["activeTargets"]
            health = sorted((t["labels"]["job"], t["health"]) for t in targets)
            jobs = {job for job, _ in health}
            if jobs == {"replikit-service", "postgres", "pgbouncer"} and all(
                h == "up" for _, h in health
            ):
                break
            assert time.monotonic() < deadline, health
            time.sleep(2)
        assert len(targets) == 2 + 3 + 3  # two app instances, three node and three pooler exporters
        # The exporters log in as `monitor`: to PostgreSQL with pg_monitor's rights and nothing
        # more, to each pooler's admin console as a stats user.
        for metric in ("pg_up", "pgbouncer_up"):
            assert prometheus_nodes(client, prometheus, f"{metric} == 1") == NODES, metric
        # Each pooler's state, and every metric its alert rules watch, for every node.
        rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
        (pooler_group,) = [g for g in rules["groups"] if g["name"] == "replikit-poolers"]
        watched = {
            m for rule in pooler_group["rules"] for m in re.findall(r"pgbouncer_\w+", rule["expr"])
        }
        for metric in watched | {"pgbouncer_pools_server_active_connections"}:
            assert prometheus_nodes(client, prometheus, metric) == NODES, metric
        (role,) = superuser_fetch(
            stack, "pg0", "SELECT rolsuper, pg_has_role(oid, 'pg_monitor', 'MEMBER') AS monitor "
            "FROM pg_roles WHERE rolname = 'monitor'",
        )  # fmt: skip
        assert (role["rolsuper"], role["monitor"]) == (False, True)
        empty = []
        exposed = client.get(f"{admin_url(stack)}/metrics").text
        for expr in dashboard_queries():
            event_metrics = [metric for key, metric in EVENT_ONLY.items() if key in expr]
            if event_metrics:
                assert all(f"# TYPE {m}" in exposed for m in event_metrics), expr
                continue
            deadline = time.monotonic() + 30
            while True:
                result = client.get(f"{prometheus}/api/v1/query", params={"query": expr}).json()
                if result["data"]["result"] or time.monotonic() > deadline:
                    break
                time.sleep(2)
            if not result["data"]["result"]:
                empty.append(expr)
        assert not empty, empty


def test_grafana_provisioning_points_at_the_stack_prometheus() -> None:
    """Grafana's image is upstream and cannot be pulled here: its files are checked instead."""
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/replikit.yml").read_text()
    )
    folder = Path(providers["providers"][0]["options"]["path"])
    assert folder == Path("/var/lib/grafana/dashboards")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert (
        "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro"
        in (compose["services"]["grafana"]["volumes"])
    )
