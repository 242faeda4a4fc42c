"""The listeners ``replikit serve`` binds."""

from __future__ import annotations

import logging

from service.http_server import Listener, bind_sockets, build_config
from service.settings import Settings


def test_the_operations_listener_leaves_the_access_log_off() -> None:
    """uvicorn's protocol logs each request when the "uvicorn.access" logger has a handler;
    binding the operations socket once gave it one back."""
    config = build_config(
        Settings(_env_file=None, primary_url="postgresql+asyncpg://app@127.0.0.1/replikit"),
        public=Listener("127.0.0.1", 0),
        workers=1,
        forwarded_allow_ips=None,
    )
    sockets = bind_sockets(config, Listener("127.0.0.1", 0))
    try:
        assert len(sockets) == 2
        assert not logging.getLogger("uvicorn.access").hasHandlers()
    finally:
        for sock in sockets:
            sock.close()
