"""Core statements compiled once into the SQL text asyncpg runs (the read path).

The statements stay written in SQLAlchemy Core, next to the models they select from; only
their execution skips SQLAlchemy (service/db/driver_pools.py says why). The asyncpg dialect
compiles bound parameters to ``$1, $2, ...`` in the order ``positiontup`` lists them, so a
statement is its text plus that order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class DriverStatement:
    """SQL text for asyncpg and the names of its positional parameters, in order."""

    sql: str
    parameters: tuple[str, ...]

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional arguments for ``values`` given by name."""
        return [values[name] for name in self.parameters]


def for_driver(statement: ClauseElement) -> DriverStatement:
    compiled = statement.compile(dialect=DIALECT)
    assert isinstance(compiled, SQLCompiler)
    return DriverStatement(sql=str(compiled), parameters=tuple(compiled.positiontup or ()))
