"""Who may read the operational endpoints (``/cluster``, ``/metrics``).

They show node addresses, WAL positions, lag and the text of the last connection error: for
operators, not for the public. ``replikit serve`` opens a second listener for them
(``--ops-port``, loopback by default) and the app answers them there only, telling the
listeners apart by the local port the request arrived on. Elsewhere they answer 404 (not
403: the public port does not admit they exist) unless the request carries the bearer token
``REPLIKIT_OPS_TOKEN``, or ``REPLIKIT_OPS_PUBLIC=true`` says a proxy in front gates them.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from starlette.exceptions import HTTPException

from service.settings import Settings


def operations_allowed(request: Request, settings: Settings) -> bool:
    if settings.ops_public:
        return True
    server = request.scope.get("server")
    if settings.ops_port is not None and server is not None and server[1] == settings.ops_port:
        return True
    if settings.ops_token is not None:
        expected = f"Bearer {settings.ops_token.get_secret_value()}".encode()
        supplied = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(supplied, expected)
    return False


async def require_operations_access(request: Request) -> None:
    """Dependency of the operational routes: a plain 404 for everyone else."""
    if not operations_allowed(request, request.app.state.settings):
        raise HTTPException(status_code=404, detail="Not Found")
