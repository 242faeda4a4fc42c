"""TLS on a local cluster (the default): plain text refused on every port, replicas logging in
with their client certificate, verify-full clients, the service end to end over TLS, failover
and rejoin with pg_rewind over TLS, bad certificates refused before anything starts, and a
rotation picked up by a reload with no request dropped."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from replication.admin import fetchval
from replication.cluster import Cluster, rotate_certificates
from replication.pgbin import find_pg_binaries
from replication.server_user import ServerUser
from replication.tls.authority import issue_all, issue_server
from replication.tls.files import CertificateLayout, ServerIdentity
from replication.tls.provision import cluster_layout
from service import migrate
from tests.integration.clusters import (
    free_base_port,
    reachable_temp_dir,
    replikit,
    running_cluster,
)
from tests.integration.conftest import wait_until
from tests.integration.service_fixtures import (
    image_bytes,
    service_client,
    service_settings,
    upload,
)

PLAIN_REFUSED = "no encryption"


def psql(
    cluster: Cluster, conninfo: str, sql: str, *, password: str = "", as_server: bool = False
) -> subprocess.CompletedProcess[str]:
    """``psql`` against the primary, as the servers' account when it must read their keys."""
    argv = [
        find_pg_binaries(cluster.state.pg_bin).program("psql"),
        f"host={cluster.state.host} port={cluster.state.primary_node.port} {conninfo}",
        "-XAtw",
        "-c",
        sql,
    ]
    env = {"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    if as_server:
        return ServerUser.detect().run(argv, env=env, what="psql", check=False, timeout=30)
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env={**env, "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=30,
    )


def identify_system(
    cluster: Cluster, user: str, options: str, *, password: str = "", as_server: bool = False
) -> subprocess.CompletedProcess[str]:
    """A replication connection as ``user`` (``IDENTIFY_SYSTEM``), with libpq ``options``."""
    conninfo = f"user={user} replication=true {options}"
    return psql(cluster, conninfo, "IDENTIFY_SYSTEM", password=password, as_server=as_server)


def assert_refused(answer: subprocess.CompletedProcess[str], reason: str) -> None:
    assert answer.returncode != 0, answer.stdout
    assert reason in answer.stderr


def layout_of(cluster: Cluster) -> CertificateLayout:
    return cluster_layout(cluster.state)


def test_plain_tcp_is_refused_and_tls_is_accepted(cluster: Cluster) -> None:
    state = cluster.state
    login = f"user={state.app_user} dbname={state.database}"
    plain = psql(cluster, f"{login} sslmode=disable", "SELECT 1", password=state.passwords.app)
    assert_refused(plain, PLAIN_REFUSED)
    verified = psql(
        cluster,
        f"{login} sslmode=verify-full sslrootcert={layout_of(cluster).ca_cert}",
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        password=state.passwords.app,
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip() == "t"


def test_a_replication_connection_needs_the_client_certificate(cluster: Cluster) -> None:
    state, layout = cluster.state, layout_of(cluster)
    role = state.replication_user
    verify = f"sslmode=verify-full sslrootcert={layout.ca_cert}"
    # The password that streaming used to need opens nothing any more.
    password = state.passwords.replication
    refused = identify_system(cluster, role, verify, password=password)
    assert_refused(refused, "requires a valid client certificate")
    plain = identify_system(cluster, role, "sslmode=disable", password=password)
    assert_refused(plain, PLAIN_REFUSED)
    certificate = f"sslcert={layout.client_cert(role)} sslkey={layout.client_key(role)}"
    certified = identify_system(cluster, role, f"{verify} {certificate}", as_server=True)
    assert certified.returncode == 0, certified.stderr
    # And every replica streams over TLS as the replicator, by its certificate's CN.
    streams = fetchval(
        state,
        state.primary_node,
        "SELECT array_agg(DISTINCT s.ssl::text || ' ' || s.client_dn) "
        "FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
    )
    assert streams == ["true /O=replikit/CN=replicator"]


async def test_a_client_trusting_another_ca_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    other = CertificateLayout(tmp_path / "other", ())
    issue_all(other)
    state = cluster.state
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(
            host=state.host,
            port=state.primary_node.port,
            user=state.app_user,
            password=state.passwords.app,
            database=state.database,
            ssl=ssl.create_default_context(cafile=str(other.ca_cert)),
            timeout=5,
        )
    answer = psql(
        cluster,
        f"user={state.app_user} dbname={state.database} sslmode=verify-full "
        f"sslrootcert={other.ca_cert}",
        "SELECT 1",
        password=state.passwords.app,
    )
    assert_refused(answer, "certificate verify failed")


async def test_the_service_uploads_and_reads_over_verified_tls(migrated: Cluster) -> None:
    settings = service_settings(migrated, replicas=True)
    assert settings.db_ssl_root_cert == layout_of(migrated).ca_cert
    data = image_bytes("PNG")
    async with service_client(settings) as client:
        created = await upload(client, data)
        assert created.status_code == 201, created.text
        url = created.json()["url"]
        served_by: set[str] = set()

        async def read_from_every_node() -> bool:
            answer = await client.get(url)
            if answer.status_code == 200:
                assert answer.content == data
                served_by.add(answer.headers["X-Replikit-Node"])
            return len(served_by) == len(migrated.state.replicas)

        await wait_until(read_from_every_node, within=10, what="reads from both replicas")
        # The monitor verified each node's certificate and exports when it expires.
        exported = {
            sample.labels["node"]: sample.value
            for family in text_string_to_metric_families((await client.get("/metrics")).text)
            for sample in family.samples
            if sample.name == "replikit_node_certificate_expiry_timestamp_seconds"
        }
        layout = layout_of(migrated)
        assert exported == {
            node.name: x509.load_pem_x509_certificate(
                layout.server_cert(node.name).read_bytes()
            ).not_valid_after_utc.timestamp()
            for node in migrated.state.nodes
        }
        # Every connection the service holds to every node is TLS.
        for node in migrated.state.nodes:
            sessions = await asyncio.to_thread(
                fetchval,
                migrated.state,
                node,
                "SELECT array_agg(DISTINCT s.ssl) FROM pg_stat_activity a "
                "JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1",
                migrated.state.app_user,
            )
            assert sessions == [True], node.name


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[Cluster]:
    with running_cluster(replicas=2, name="tls", tls=True) as built:
        migrate.upgrade(built.state.owner_url(built.state.primary_node))
        yield built


@pytest.mark.destructive
def test_failover_and_rejoin_with_pg_rewind_over_tls(tls_cluster: Cluster) -> None:
    data_dir = tls_cluster.data_dir
    old = tls_cluster.state.primary
    assert replikit("cluster", "kill", old, "--data-dir", str(data_dir)).returncode == 0
    failed_over = replikit("cluster", "failover", "--data-dir", str(data_dir))
    assert failed_over.returncode == 0, failed_over.stderr
    rejoined = replikit("cluster", "rejoin", old, "--data-dir", str(data_dir), "--json")
    assert rejoined.returncode == 0, rejoined.stderr
    assert '"method": "rewound"' in rejoined.stdout
    cluster = Cluster.open(data_dir)
    cluster.wait_streaming()
    rows = cluster.status()
    assert sorted(row.state or "" for row in rows if row.role == "replica") == ["streaming"] * 2
    assert all(row.cert_days_left is not None and row.cert_days_left >= 364 for row in rows)


@pytest.mark.destructive
async def test_a_rotation_is_picked_up_by_a_reload_with_no_request_dropped(
    tls_cluster: Cluster,
) -> None:
    cluster = Cluster.open(tls_cluster.data_dir)
    layout = layout_of(cluster)
    primary = cluster.state.primary_node
    before = layout.server_cert(primary.name).read_bytes()
    settings = service_settings(cluster, replicas=True)
    failures: list[str] = []
    answered = 0
    async with service_client(settings) as client:
        created = await upload(client, image_bytes("PNG"))
        assert created.status_code == 201, created.text
        url = created.json()["url"]
        done = asyncio.Event()

        async def keep_reading() -> None:
            nonlocal answered
            while not done.is_set():
                answer = await client.get(url)
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")
                answered += 1

        readers = [asyncio.create_task(keep_reading()) for _ in range(4)]
        try:
            await asyncio.sleep(0.3)
            reloaded = await asyncio.to_thread(rotate_certificates, cluster.data_dir)
            await asyncio.sleep(0.3)
            # New connections (a fresh upload's session may reuse one; the check below opens
            # its own) meet the new certificate.
            written = await upload(client, image_bytes("PNG", size=(10, 10)))
            assert written.status_code == 201, written.text
        finally:
            done.set()
            await asyncio.gather(*readers)
    assert reloaded == [node.name for node in cluster.state.nodes]
    assert not failures, failures[:3]
    assert answered > 20
    after = layout.server_cert(primary.name).read_bytes()
    assert after != before
    connection = await asyncpg.connect(
        host=cluster.state.host,
        port=primary.port,
        user=cluster.state.app_user,
        password=cluster.state.passwords.app,
        database=cluster.state.database,
        ssl=ssl.create_default_context(cafile=str(layout.ca_cert)),
        timeout=5,
    )
    try:
        served = connection._transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        await connection.close()
    assert served == ssl.PEM_cert_to_DER_cert(after.decode())
    assert await asyncio.to_thread(Cluster.open(cluster.data_dir).wait_streaming)


@pytest.mark.destructive
def test_certificates_from_another_ca_replace_the_kit_ca_with_a_reload(
    tls_cluster: Cluster,
) -> None:
    data_dir = tls_cluster.data_dir
    theirs = reachable_temp_dir("replikit-certs-") / "theirs"
    issued = replikit("certs", "issue", "--out", str(theirs))
    assert issued.returncode == 0, issued.stderr
    rotated = replikit("certs", "rotate", "--data-dir", str(data_dir), "--from", str(theirs))
    assert rotated.returncode == 0, rotated.stderr
    cluster = Cluster.open(data_dir)
    layout = layout_of(cluster)
    assert layout.ca_cert.read_bytes() == (theirs / "ca.crt").read_bytes()
    assert not layout.ca_key.exists()  # the kit's key signs nothing these clients trust
    assert cluster.state.tls is not None
    assert cluster.state.tls.kit_ca is False
    # Replicas reconnect with the new client certificate against the new CA.
    for replica in cluster.state.replicas:
        cluster.driver.stop(replica)
    assert cluster.start_all() == []
    cluster.wait_streaming()
    # The kit can no longer issue: its refusal says what to do instead.
    again = replikit("certs", "rotate", "--data-dir", str(data_dir))
    assert again.returncode == 2
    assert "were brought by you" in again.stderr
    assert "--from DIR' with new ones from your CA." in again.stderr


@pytest.mark.destructive
def test_with_tls_off_the_cluster_is_plain_text_with_passwords() -> None:
    """``--tls off``, for comparison: plain TCP, and replication logs in with its password."""
    with running_cluster(replicas=1, name="plain", tls=False) as plain:
        state = plain.state
        assert state.tls is None
        assert not (plain.data_dir / "tls").exists()
        role, password = state.replication_user, state.passwords.replication
        right = identify_system(plain, role, "sslmode=disable", password=password)
        assert right.returncode == 0, right.stderr
        wrong = identify_system(plain, role, "sslmode=disable", password="not-the-password")
        assert_refused(wrong, "password authentication failed")
        app = identify_system(
            plain, state.app_user, "sslmode=disable", password=state.passwords.app
        )
        assert_refused(app, "no pg_hba.conf entry")
        assert "REPLIKIT_DB_SSL_ROOT_CERT" not in "".join(
            Cluster.open(plain.data_dir).manager.env_lines()
        )


SERVERS = (ServerIdentity("pg0", ("127.0.0.1",)), ServerIdentity("pg1", ("127.0.0.1",)))


def _missing(directory: Path) -> str:
    (directory / "client-replicator.key").unlink()
    return "client-replicator.key is missing"


def _expired(directory: Path) -> str:
    long_ago = datetime.now(UTC) - timedelta(days=3)
    issue_server(CertificateLayout(directory, SERVERS), SERVERS[1], days=1, now=long_ago)
    return "server-pg1.crt expired on"


def _wrong_name(directory: Path) -> str:
    issue_server(CertificateLayout(directory, SERVERS), ServerIdentity("pg0", ("192.0.2.7",)))
    return "server-pg0.crt does not name 127.0.0.1 in its subjectAltName"


def _key_mismatch(directory: Path) -> str:
    shutil.copy(directory / "server-pg0.key", directory / "server-pg1.key")
    return "server-pg1.key is not the key of"


@pytest.mark.parametrize("spoil", [_missing, _expired, _wrong_name, _key_mismatch])
def test_bad_certificates_are_refused_before_anything_starts(
    spoil: Callable[[Path], str],
) -> None:
    root = reachable_temp_dir("replikit-certs-")
    certs, data_dir = root / "certs", root / "cluster"
    issued = replikit("certs", "issue", "--out", str(certs), "--nodes", "pg0,pg1")
    assert issued.returncode == 0, issued.stderr
    expected = spoil(certs)
    answer = replikit(
        "cluster", "up", "--replicas", "1", "--base-port", str(free_base_port(2)),
        "--data-dir", str(data_dir), "--tls-dir", str(certs),
    )  # fmt: skip
    assert answer.returncode == 2, answer.stdout + answer.stderr
    message = answer.stderr.strip()
    assert expected in message
    assert "\n" not in message
    assert message.endswith("or drop --tls-dir to let replikit issue its own.")
    # Nothing was started or left behind.
    assert not data_dir.exists()
