"""The HTTP conventions shared by the services and the CLI (ragstack_common/http.py)."""

from __future__ import annotations

import email.utils

import pytest

from ragstack_common.http import bearer_matches, parse_retry_after, retry_after_header


@pytest.mark.parametrize(("seconds", "header"), [(0, "1"), (0.2, "1"), (1.0, "1"), (2.1, "3")])
def test_retry_after_header_is_whole_seconds_at_least_one(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == {"Retry-After": header}


def test_parse_retry_after_reads_both_forms() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("120", cap=10) == 10


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "Mon, 99 Foo 2026"])
def test_parse_retry_after_unreadable_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_bearer_matches_only_the_exact_token() -> None:
    assert bearer_matches("Bearer s3cret", "s3cret")
    assert bearer_matches("bearer s3cret ", "s3cret")
    assert not bearer_matches("Bearer s3cre", "s3cret")
    assert not bearer_matches("Basic s3cret", "s3cret")
    assert not bearer_matches(None, "s3cret")
    assert not bearer_matches("", "s3cret")
