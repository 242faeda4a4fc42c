"""Service configuration: one pydantic-settings class, every knob prefixed ``REPLIKIT_``.

Values come from the environment or a ``.env`` file; ``.env.example`` lists them all and
docs/configuration.md explains each. Database URLs carry secrets, so they are never defaulted:
``replikit serve`` fills them from the local cluster's state when they are unset.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.routing.consistency import Consistency

MIB = 1024 * 1024


class BlobBackend(StrEnum):
    POSTGRES = "postgres"
    FILESYSTEM = "filesystem"


class ReadPolicy(StrEnum):
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"
    WEIGHTED = "weighted"
    LEAST_LAG = "least_lag"
    PRIMARY = "primary"


class ReadFallback(StrEnum):
    PRIMARY = "primary"
    ERROR = "error"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="REPLIKIT_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
    )

    primary_url: str = Field(description="SQLAlchemy asyncpg URL of the primary (writes).")
    replica_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated asyncpg URLs of the replicas (reads)."
    )
    blob_backend: BlobBackend = BlobBackend.POSTGRES
    blob_dir: Path = Path(".replikit/blobs")
    max_upload_bytes: int = Field(default=10 * MIB, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    max_image_frames: int = Field(default=1000, gt=0)
    # Image decoding budget and privacy (service/images/decoder.py): see docs/configuration.md.
    max_decoded_pixels: int = Field(
        default=200_000_000,
        gt=0,
        description="Pixels one decode may touch: canvas x frames, plus 24 per row per frame.",
    )
    decode_timeout: float = Field(default=5.0, gt=0, description="Wall-clock seconds per decode.")
    decode_workers: int = Field(default=2, gt=0, description="Decode processes per instance.")
    decode_worker_memory_mib: int = Field(
        default=1024, ge=0, description="Address-space limit of a decode process; 0 = none."
    )
    decode_queue_timeout: float = Field(
        default=10.0, ge=0, description="How long an upload waits for a free decode process."
    )
    keep_image_metadata: bool = Field(
        default=False, description="Store EXIF/XMP/comments as uploaded (trailing bytes still go)."
    )
    allowed_formats: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["JPEG", "PNG", "GIF", "WEBP"]
    )
    upload_rate_limit: int = Field(
        default=60, ge=0, description="Uploads per client IP per minute; 0 = off."
    )
    db_pool_size: int = Field(default=10, gt=0)
    db_max_overflow: int = Field(default=10, ge=0)
    db_connect_timeout: float = Field(default=3.0, gt=0)
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    # TLS to the nodes (docs/security.md): set, every connection checks the node's
    # certificate against this CA and the URL's host, as sslmode=verify-full does.
    db_ssl_root_cert: Path | None = Field(
        default=None, description="CA certificate (PEM) the nodes' certificates must chain to."
    )

    # Session router (service/routing): see docs/configuration.md.
    health_interval: float = Field(default=0.5, gt=0)
    read_policy: ReadPolicy = ReadPolicy.ROUND_ROBIN
    replica_weights: Annotated[list[int], NoDecode] = Field(default_factory=list)
    read_fallback: ReadFallback = ReadFallback.PRIMARY
    read_consistency: Consistency = Consistency.EVENTUAL
    max_lag_seconds: float = Field(default=1.0, ge=0)
    max_lag_bytes: int = Field(default=16 * MIB, ge=0)
    ryw_wait: float = Field(default=0.2, ge=0)
    write_timeout: float = Field(default=5.0, gt=0)
    # After a write found the primary's disk full, uploads are refused at once (503
    # STORAGE_FULL, before their body is read) for this long; then one tries again. 0 = off.
    storage_full_hold: float = Field(default=2.0, ge=0)

    # Hostile clients (docs/security.md). Connection hygiene, enforced by `replikit serve`:
    header_timeout: float = Field(default=10.0, gt=0)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    body_idle_timeout: float = Field(default=15.0, gt=0)
    body_timeout: float = Field(default=120.0, gt=0)
    send_timeout: float = Field(default=30.0, gt=0)
    keepalive_timeout: int = Field(default=5, ge=1)
    max_connections: int = Field(default=2000, gt=0)
    # Requests handled at once per worker: the static cap (0 = no bound), and under it an
    # adaptive limit from latency (service/api/adaptive_limit.py); past it a request waits
    # at most queue_timeout, then gets a 503 SERVER_BUSY.
    max_in_flight: int = Field(default=256, ge=0)
    # Off by default: on a machine shared with other work, their load reads as our queueing
    # and the limit refused load it could serve (docs/experiments.md, Overload).
    adaptive_concurrency: bool = False
    concurrency_min_limit: int = Field(default=4, ge=1)
    concurrency_initial_limit: int = Field(default=32, ge=1)
    concurrency_tolerance: float = Field(default=2.0, ge=1.0)
    concurrency_recalibrate: float = Field(default=10.0, gt=0)
    queue_timeout: float = Field(default=0.05, ge=0)
    # Seconds a request waits for a pooled database connection before 503 (or another node).
    db_pool_timeout: float = Field(default=2.0, gt=0)
    # Operational endpoints (/cluster, /metrics): on the operations listener only, unless
    # a bearer token is configured or they are explicitly made public (behind a gating proxy).
    ops_port: int | None = Field(default=None, ge=1, le=65535)
    ops_token: SecretStr | None = None
    ops_public: bool = False
    docs_enabled: bool = True

    @field_validator("replica_urls", "allowed_formats", "replica_weights", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        known = {"JPEG", "PNG", "GIF", "WEBP"}
        upper = [name.upper() for name in value]
        unknown = sorted(set(upper) - known)
        if unknown:
            raise ValueError(f"unsupported formats {unknown}; choose from {sorted(known)}")
        if not upper:
            raise ValueError("at least one format must be allowed")
        return upper

    @field_validator("primary_url", "replica_urls")
    @classmethod
    def _asyncpg_urls(cls, value: str | list[str]) -> str | list[str]:
        for url in [value] if isinstance(value, str) else value:
            if not url.startswith("postgresql+asyncpg://"):
                raise ValueError("database URLs must start with postgresql+asyncpg://")
        return value

    @field_validator("db_ssl_root_cert")
    @classmethod
    def _readable_ca(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(
                f"{value} is not a file; point it at the cluster's ca.crt ('replikit cluster "
                f"env' prints it) or unset it"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        self.blob_dir = self.blob_dir.absolute()
        if self.replica_weights:
            if len(self.replica_weights) != len(self.replica_urls):
                raise ValueError(
                    f"REPLIKIT_REPLICA_WEIGHTS has {len(self.replica_weights)} weights for "
                    f"{len(self.replica_urls)} replica URLs; give one weight per URL"
                )
            if any(weight < 0 for weight in self.replica_weights) or not any(self.replica_weights):
                raise ValueError("replica weights must be >= 0 with at least one above 0")
        return self

    def weight_of(self, replica_index: int) -> int:
        return self.replica_weights[replica_index] if self.replica_weights else 1
