"""Retention periods are written as in KubeBlocks; bad ones give one clear line."""

from datetime import timedelta

import pytest

from backupctl.errors import UsageError
from backupctl.retention import format_period, parse_period


@pytest.mark.parametrize("text,expected", [
    ("7d", timedelta(days=7)),
    ("12h", timedelta(hours=12)),
    ("30d12h", timedelta(days=30, hours=12)),
    ("30d12h30m", timedelta(days=30, hours=12, minutes=30)),
    ("90m", timedelta(minutes=90)),
    ("2y", timedelta(days=730)),
    ("6mo", timedelta(days=180)),
    ("1y6mo", timedelta(days=545)),
    ("2w", timedelta(days=14)),
    (" 7D ", timedelta(days=7)),
])
def test_period_parses_kubeblocks_durations(text, expected):
    assert parse_period(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "7 d", "-7d", "7d7d", "12h7d", "1.5d", "7days", "0d", "0h0m",
                                  "P7D", "7d-", "mo"])
def test_bad_period_is_one_clear_line(text):
    with pytest.raises(UsageError) as info:
        parse_period(text)
    message = str(info.value)
    assert "\n" not in message
    assert "retention period" in message
    assert "7d" in message  # the hint shows what a good one looks like


def test_format_period_round_trips():
    for text in ("7d", "12h", "30d12h", "30d12h30m", "45m"):
        assert format_period(parse_period(text)) == text
