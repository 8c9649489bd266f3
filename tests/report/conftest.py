from __future__ import annotations

import pytest
from report_synthetic import make_results


@pytest.fixture
def synthetic():
    return make_results()
