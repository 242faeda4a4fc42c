"""Liveness and readiness.

``/ready`` is green while *any* database node answers: a load balancer must keep sending
reads to an instance whose replicas can serve them even when the primary is gone. The body
says whether the writer is up, for those who care.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from service.api.deps import DatabaseDep, SettingsDep
from service.api.errors import error_response
from service.api.schemas import ErrorBody, Health, Readiness
from service.db.engines import DatabaseNode

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    return Health()


async def _in_recovery(node: DatabaseNode, within: float) -> bool | None:
    """True/False for a node that answered, None for one that did not in time."""
    try:
        async with asyncio.timeout(within), node.engine.connect() as connection:
            return bool(await connection.scalar(text("SELECT pg_is_in_recovery()")))
    except Exception:  # any failure means "not answering"; readiness reports, never raises
        return None


@router.get("/ready", response_model=Readiness, responses={503: {"model": ErrorBody}})
async def ready(database: DatabaseDep, settings: SettingsDep) -> Readiness | JSONResponse:
    answers = await asyncio.gather(
        *(_in_recovery(node, settings.ready_timeout) for node in database.nodes)
    )
    nodes = {
        node.name: "up" if answer is not None else "down"
        for node, answer in zip(database.nodes, answers, strict=True)
    }
    writer = "up" if answers[0] is False else "down"
    if all(answer is None for answer in answers):
        return error_response(
            503, "NOT_READY", "No database node answers.", {"nodes": nodes, "writer": writer}
        )
    return Readiness(writer=writer, nodes=nodes)
