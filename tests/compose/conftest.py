"""The compose tests' engine, images and shared stack (destructive tests make their own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from replication.compose.stack import ComposeStack, Variant
from tests.compose.stacks import build_images, compose_stack, docker_engine


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Building the images from nothing takes minutes: more than the default per-test timeout.
    for item in items:
        if "tests/compose/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.timeout(1500))


@pytest.fixture(scope="session")
def docker_images() -> Iterator[None]:
    with docker_engine():
        build_images()
        yield


@pytest.fixture(scope="module")
def stack(docker_images: None) -> Iterator[ComposeStack]:
    with compose_stack("shared", REPLIKIT_UPLOAD_RATE_LIMIT="8") as shared:
        yield shared


@pytest.fixture(scope="session")
def ha_images(docker_images: None) -> None:
    """The HA variant's own images (the Patroni node, etcd) over the default ones."""
    build_images(Variant.HA)
