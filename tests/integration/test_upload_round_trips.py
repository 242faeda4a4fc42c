"""What an upload costs the primary in round trips: the rate limit's statement, one statement
that inserts the row and its bytes, and the WAL position for the client's token. No BEGIN, no
COMMIT, no ORM flush of its own (each would be another write on the socket)."""

from __future__ import annotations

from replication.cluster import Cluster
from tests.integration.service_fixtures import (
    count_socket_writes,
    image_bytes,
    service_client,
    service_settings,
    upload,
)


async def test_an_upload_is_three_statements_on_the_primary(migrated: Cluster) -> None:
    settings = service_settings(migrated, upload_rate_limit=1000)
    async with service_client(settings, client_ip="192.0.2.31") as client:
        router = client._transport.app.state.router  # type: ignore[attr-defined]
        sent = count_socket_writes([router.nodes[0]])
        # Each pooled connection prepares each statement once (Parse, Describe: a write of its
        # own); the pool size is 10, so a dozen uploads in turn prepare them on what is used.
        for index in range(12):
            assert (await upload(client, image_bytes("PNG", (8 + index, 8)))).status_code == 201
        sent.clear()
        created = await upload(client, image_bytes("JPEG", (40, 30)))
        assert created.status_code == 201, created.text
        assert len(sent) == 3, sent
        # Bind + Execute + Sync of a prepared statement each; a BEGIN or COMMIT would be a Query.
        assert [message[:1] for message in sent] == [b"B", b"B", b"B"], sent
        assert created.headers["X-Replikit-LSN"]
        image_id = created.json()["id"]
    # The row and its bytes are both there, committed together (reads on the primary).
    async with service_client(service_settings(migrated)) as client:
        file = await client.get(f"/api/v1/images/{image_id}/file")
        assert file.status_code == 200
        assert file.content == image_bytes("JPEG", (40, 30))
