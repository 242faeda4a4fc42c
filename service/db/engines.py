"""Engines and session factories for the writer (primary) and the readers (replicas).

The routes only see two dependencies, a write session and a read session (service/api/deps.py);
how a node is picked for each lives here so the router can replace it without touching them.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service.settings import Settings


@dataclass
class DatabaseNode:
    """One PostgreSQL server the service talks to."""

    name: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]


def node_name(url: str) -> str:
    parsed = make_url(url)
    return f"{parsed.host}:{parsed.port or 5432}"


def make_node(url: str, settings: Settings) -> DatabaseNode:
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        connect_args={
            "timeout": settings.db_connect_timeout,
            "server_settings": {
                "application_name": "replikit-service",
                "statement_timeout": str(settings.db_statement_timeout_ms),
            },
        },
    )
    return DatabaseNode(
        name=node_name(url),
        engine=engine,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
    )


@dataclass
class Database:
    """The primary and the replicas; reads rotate over the replicas, else use the primary."""

    primary: DatabaseNode
    replicas: list[DatabaseNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reader_cycle = itertools.cycle(self.replicas or [self.primary])

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(
            primary=make_node(settings.primary_url, settings),
            replicas=[make_node(url, settings) for url in settings.replica_urls],
        )

    @property
    def nodes(self) -> list[DatabaseNode]:
        return [self.primary, *self.replicas]

    def choose_reader(self) -> DatabaseNode:
        return next(self._reader_cycle)

    @asynccontextmanager
    async def session(self, node: DatabaseNode) -> AsyncIterator[AsyncSession]:
        async with node.sessions() as session:
            yield session

    async def dispose(self) -> None:
        for node in self.nodes:
            await node.engine.dispose()
