# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""Fuzz the management API from its own OpenAPI document: no input may cause a 500."""

from __future__ import annotations

import httpx
import pytest

from test_server_harness import LiveServer, live  # noqa: F401

schemathesis = pytest.importorskip("schemathesis")


def test_api_fuzz_no_server_errors(live: LiveServer) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    headers = live.token("fuzzer")
    schema = schemathesis.openapi.from_url(live.url + "/api/v1/openapi.json")
    schema.config.base_url = live.url + "/api/v1"  # type: ignore[attr-defined]
    failures: list[str] = []
    for op_result in schema.get_all_operations():
        op = op_result.ok()

        @settings(max_examples=15, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=op.as_strategy())
        def check(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(headers=headers, base_url=live.url + "/api/v1")
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}")

        check()
    assert not failures, failures
    assert httpx.get(live.url + "/healthz").status_code == 200
