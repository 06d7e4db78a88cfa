"""The bounded load generator, short: concurrent identify + enrolment with zero errors and zero lost
enrolments (the long run is `lrface bench load`, figures in RELIABILITY.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.load import run_load
from tests.model_fixtures import tiny_service_env
from tests.server import running_server


def test_short_load_has_no_errors_and_loses_nothing(tmp_path: Path) -> None:
    env = tiny_service_env(tmp_path, API_KEYS="load-admin:admin")
    with running_server(env) as url:
        report = run_load(url, duration=3, clients=4, enroll_fraction=0.3, api_key="load-admin")
    print(report.to_dict())
    assert report.errors == 0 and report.lost_enrolments == 0, report.error_samples
    assert report.identify.count > 0 and report.enroll.count > 0
    assert report.acknowledged_enrolments == report.enroll.count
    assert report.requests == report.identify.count + report.enroll.count


def test_wrong_key_shows_up_as_errors(tmp_path: Path) -> None:
    env = tiny_service_env(tmp_path, API_KEYS="load-admin:admin")
    with running_server(env) as url:
        report = run_load(url, duration=1, clients=2, api_key="wrong")
    assert report.errors == report.requests > 0 and "401" in report.error_samples[0]


@pytest.mark.parametrize("url", ["http://example.com:8000", "http://10.0.0.5:8000"])
def test_only_loopback(url: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        run_load(url, duration=1)
