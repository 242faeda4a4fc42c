"""The OpenAPI description states what the server takes and how its operations connect: the
list cursor's exact form, and links from an upload and a listing to the image operations."""

from __future__ import annotations

import re
from typing import Any

import pytest

from service.app import create_app
from service.images.pagination import CURSOR_LENGTH, CURSOR_PATTERN
from service.settings import Settings


@pytest.fixture(scope="module")
def description() -> dict[str, Any]:
    settings = Settings(_env_file=None, primary_url="postgresql+asyncpg://app@127.0.0.1:1/x")
    schema: dict[str, Any] = create_app(settings).openapi()
    return schema


def operations(description: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every operation by its operationId, with its path and method."""
    found = {}
    for path, methods in description["paths"].items():
        for method, operation in methods.items():
            found[operation["operationId"]] = {**operation, "path": path, "method": method}
    return found


def test_the_cursor_is_declared_as_the_server_parses_it(description: dict[str, Any]) -> None:
    (cursor,) = [
        parameter
        for parameter in description["paths"]["/api/v1/images"]["get"]["parameters"]
        if parameter["name"] == "cursor"
    ]
    assert cursor["in"] == "query"
    assert cursor["required"] is False
    schema = cursor["schema"]
    assert schema["type"] == "string"
    assert schema["pattern"] == CURSOR_PATTERN
    assert schema["maxLength"] == CURSOR_LENGTH
    # The empty string is the first page, and the pattern says so.
    assert schema["default"] == ""
    assert re.fullmatch(schema["pattern"], "")


# Where each operation's answer leads, and with what: (link, target, parameters).
EXPECTED_LINKS = {
    ("upload_image", "201"): {
        "GetImage": ("get_image", {"image_id": "$response.body#/id"}),
        "GetImageFile": ("get_image_file", {"image_id": "$response.body#/id"}),
        "HeadImageFile": ("head_image_file", {"image_id": "$response.body#/id"}),
        "DeleteImage": (
            "delete_image",
            {
                "image_id": "$response.body#/id",
                "header.X-Delete-Token": "$response.body#/delete_token",
            },
        ),
    },
    ("list_images", "200"): {
        "GetImage": ("get_image", {"image_id": "$response.body#/items/0/id"}),
        "GetImageFile": ("get_image_file", {"image_id": "$response.body#/items/0/id"}),
        "HeadImageFile": ("head_image_file", {"image_id": "$response.body#/items/0/id"}),
        "NextPage": ("list_images", {"query.cursor": "$response.body#/next_cursor"}),
    },
    ("get_image", "200"): {
        "GetImageFile": ("get_image_file", {"image_id": "$response.body#/id"}),
        "HeadImageFile": ("head_image_file", {"image_id": "$response.body#/id"}),
    },
}


@pytest.mark.parametrize(("source", "status"), sorted(EXPECTED_LINKS))
def test_answers_link_to_the_operations_they_lead_to(
    description: dict[str, Any], source: str, status: str
) -> None:
    links = operations(description)[source]["responses"][status]["links"]
    found = {name: (link["operationId"], link["parameters"]) for name, link in links.items()}
    assert found == EXPECTED_LINKS[source, status]


def test_every_link_names_a_real_operation_and_its_parameters(description: dict[str, Any]) -> None:
    """A link to an operation id that does not exist, or to a parameter the target does not
    take (or takes elsewhere), would send a generic client nowhere."""
    by_id = operations(description)
    assert {"upload_image", "delete_image", "get_image_file"} <= set(by_id)
    for operation in by_id.values():
        for response in operation["responses"].values():
            for name, link in response.get("links", {}).items():
                target = by_id[link["operationId"]]
                declared = {(p["in"], p["name"]) for p in target.get("parameters", [])}
                for parameter in link["parameters"]:
                    location, _, bare = parameter.rpartition(".")
                    places = {place for place, known in declared if known == bare}
                    assert places, f"{name}: {target['operationId']} takes no {bare}"
                    assert not location or location in places, f"{name}: {parameter}"
                    expression = link["parameters"][parameter]
                    pointer = expression.removeprefix("$response.body#")
                    assert pointer != expression, expression  # from the answer's body
                    assert pointer.startswith("/"), expression


def test_the_delete_token_header_is_declared_by_its_name(description: dict[str, Any]) -> None:
    """The upload's link sets ``X-Delete-Token``; the delete must declare it by that name."""
    delete = description["paths"]["/api/v1/images/{image_id}"]["delete"]
    headers = [p["name"] for p in delete["parameters"] if p["in"] == "header"]
    assert headers == ["X-Delete-Token"]
