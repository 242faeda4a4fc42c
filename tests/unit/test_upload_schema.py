"""The upload route answers with a prebuilt JSON body; its OpenAPI entry must still name it."""

from __future__ import annotations

from service.app import create_app
from service.settings import Settings


def test_the_upload_is_documented_as_image_created() -> None:
    settings = Settings(_env_file=None, primary_url="postgresql+asyncpg://app@127.0.0.1/replikit")
    schema = create_app(settings).openapi()
    created = schema["paths"]["/api/v1/images/upload"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ImageCreated"
    }
    assert "delete_token" in schema["components"]["schemas"]["ImageCreated"]["properties"]
