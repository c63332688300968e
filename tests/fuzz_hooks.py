"""Schemathesis hooks for tests/test_server_fuzz.py (loaded by the CLI through
SCHEMATHESIS_HOOKS; not a test module).

``positive_data_acceptance`` says that every request the OpenAPI document allows must be
accepted. Four job settings are checked by parsers whose rules no JSON Schema can state
(a cron expression, an IANA zone, a channel URL, an assertion rule): for them the
document promises a string and the server may still answer 422 naming the setting. So
are an integration's settings (a host name, a webhook URL, an Apprise URL with {to}), and
a notification list's channels (channels, as ``notify``'s, never the name of a list). This
check is the built-in one with exactly that exception.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

BEYOND_THE_SCHEMA = (
    "schedule: ", "tz: ", "notify: ", "asserts: ", "integration ", "notification list ",
)  # fmt: skip
# Cronitor's Monitor API answers 400 naming the monitor, then the same settings (and its
# realert_interval, text such as "every 8 hours")
CRONITOR = re.compile(r"monitor '[^']*': (schedule|tz|notify|asserts|realert_interval): ")


@schemathesis.check
def positive_data_acceptance_but_parsed_settings(ctx: Any, response: Any, case: Any) -> Any:
    if response.status_code in (400, 422):
        try:
            error = str(response.json().get("error", ""))
        except Exception:  # not JSON: the built-in check judges it
            error = ""
        if response.status_code == 422 and error.startswith(BEYOND_THE_SCHEMA):
            return None
        if response.status_code == 400 and CRONITOR.match(error):
            return None
    return positive_data_acceptance(ctx, response, case)
