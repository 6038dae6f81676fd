from __future__ import annotations

import pytest

from tests.factories import client_for, make_key, make_tenant


@pytest.fixture
def api(cluster, loaded_models):
    return client_for(make_key(make_tenant())[1])
