"""Bad input never gets a 500: example requests with one member replaced by arbitrary JSON."""

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import example_names, load_example

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every member's path in a JSON document."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


@pytest.mark.slow  # 300 generated requests through the app
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_one_member_replaced_never_gives_a_server_error(
    client: TestClient, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(example_names()))
    request = copy.deepcopy(load_example(name)[0])
    path = data.draw(st.sampled_from(_paths(request)))
    target = request
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = data.draw(JSON)
    response = client.post(f"/cds-services/{load_example(name)[0]['hook']}", json=request)
    assert response.status_code in (200, 400, 404, 412), response.text
    body = response.json()
    assert (
        ("cards" in body)
        if response.status_code == 200
        else body["resourceType"] == "OperationOutcome"
    )
