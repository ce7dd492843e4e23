"""Assertions shared by the API tests."""


def assert_error(response, status: int, field: str | None = None) -> dict:
    """A refused API request: the status, a JSON body {"error", "detail", "fields"?} with
    non-empty texts, and, when `field` is given, an error for that field."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["detail"], str) and body["detail"]
    if "fields" in body:
        assert isinstance(body["fields"], dict) and body["fields"], body
    if field is not None:
        assert field in body.get("fields", {}), body
    return body
