"""Exceptions. One base class; adapters turn it into a one-line message or a JSON error.

CronwatchError              anything cronwatch reports to a user (CLI exit 1, HTTP 400)
├── ValidationError         bad input: names, durations, schedules, statuses (exit 2, 422)
├── NotFound                unknown job, run or incident (exit 1, 404)
├── Conflict                valid input that the current state refuses (a job that exists,
│                           a finish before its run's start) (exit 1, 409)
├── StoreError              the database cannot be opened, read or written
│   └── StoreBusy           another writer holds it (retry later; HTTP 503)
│       ├── LostClaim       another process changed what this transaction read (retry it)
│       └── StaleCache      another process committed while a writer trusted its caches
└── DeliveryError           a notification channel failed (transport error, bad answer)
"""

from __future__ import annotations


class CronwatchError(Exception):
    """Base class. ``str(e)`` is a complete one-line message for a person."""

    exit_code = 1
    http_status = 400


class ValidationError(CronwatchError, ValueError):
    exit_code = 2
    http_status = 422


class NotFound(CronwatchError, LookupError):
    exit_code = 1
    http_status = 404


class Conflict(CronwatchError):
    exit_code = 1
    http_status = 409


class StoreError(CronwatchError):
    exit_code = 1
    http_status = 503


class StoreBusy(StoreError):
    """The database is locked by another writer: the same call later may well succeed."""


class DeliveryError(CronwatchError):
    exit_code = 1
    http_status = 502


class LostClaim(StoreBusy):
    """A conditional update matched nothing: another process (a replica, ``check``, a
    wrapper's post-run step) changed what this transaction decided on. Roll back and run
    the whole transaction again; it will decide on what is stored now."""


class StaleCache(StoreBusy):
    """A writer applied a batch on what it remembered (jobs, alert states) and found, at
    the moment of writing, that another connection had committed since: nothing of the
    batch was written. Forget what is remembered and run the batch again."""
