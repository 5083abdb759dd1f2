"""Bad input never gets a 500: example requests with one member replaced by arbitrary JSON."""

import copy

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.hostile import json_paths, set_member
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
    set_member(request, data.draw(st.sampled_from(json_paths(request))), data.draw(JSON))
    response = client.post(f"/cds-services/{load_example(name)[0]['hook']}", json=request)
    assert response.status_code in (200, 400, 404, 412), response.text
    body = response.json()
    assert (
        ("cards" in body)
        if response.status_code == 200
        else body["resourceType"] == "OperationOutcome"
    )
