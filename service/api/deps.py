"""FastAPI dependencies, as ``Annotated`` aliases the routes declare.

``WriteSession`` always talks to the primary; ``ReadSession`` to a replica when one is
configured, else the primary. The routes never pick nodes themselves, so the router can change
how these two are served without touching a route.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.engines import Database
from service.images.storage import BlobStore
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_blob_store(request: Request) -> BlobStore:
    store: BlobStore = request.app.state.blob_store
    return store


async def write_session(request: Request) -> AsyncIterator[AsyncSession]:
    database = get_database(request)
    request.state.served_by = database.primary.name
    async with database.session(database.primary) as session:
        yield session


async def read_session(request: Request) -> AsyncIterator[AsyncSession]:
    database = get_database(request)
    node = database.choose_reader()
    request.state.served_by = node.name
    async with database.session(node) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
BlobStoreDep = Annotated[BlobStore, Depends(get_blob_store)]
WriteSession = Annotated[AsyncSession, Depends(write_session)]
ReadSession = Annotated[AsyncSession, Depends(read_session)]
