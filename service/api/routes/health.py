"""Liveness, readiness, and (for operators, see service/api/operations.py) the router's view
and metrics.

``/ready`` is green while *any* database node answers the monitor: a load balancer must keep
sending reads to an instance whose replicas can serve them even when the primary is gone. The
body says whether the writer is up.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import MetricsDep, RouterDep
from service.api.errors import error_response
from service.api.operations import require_operations_access
from service.api.schemas import ErrorBody, Health, Readiness

router = APIRouter(tags=["health"])
# Not in the public API description: they answer on the operations listener only.
operations = APIRouter(
    tags=["routing"], dependencies=[Depends(require_operations_access)], include_in_schema=False
)


@router.get("/health", response_model=Health)
async def health() -> Health:
    return Health()


@router.get("/ready", response_model=Readiness, responses={503: {"model": ErrorBody}})
async def ready(router: RouterDep) -> Readiness | JSONResponse:
    nodes = {node.name: "up" if node.usable else "down" for node in router.nodes}
    writer = "up" if router.writer is not None else "down"
    if "up" not in nodes.values():
        return error_response(
            503, "NOT_READY", "No database node answers.", {"nodes": nodes, "writer": writer}
        )
    return Readiness(writer=writer, nodes=nodes)


@operations.get("/cluster")
async def cluster(router: RouterDep) -> dict[str, Any]:
    """The router's view: every node's role, timeline, health, lag and rotation status."""
    return router.view()


@operations.get("/metrics", response_class=Response)
async def metrics(service_metrics: MetricsDep) -> Response:
    return Response(service_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
