from __future__ import annotations

import pytest


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test, so a fixture can screenshot a failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
