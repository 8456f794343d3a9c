"""The chat command language: what it accepts and how it explains what it does not."""

from __future__ import annotations

import pytest
from lapse_chatops.grammar import (
    CommandError,
    HelpCommand,
    RequestCommand,
    parse_command,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "request demo-pg/appdb read as alice for 30m because looking into INC-123",
            RequestCommand("demo-pg", "appdb", "read", "alice", 1800, "looking into INC-123"),
        ),
        (
            "request demo-pg/appdb read as alice",
            RequestCommand("demo-pg", "appdb", "read", "alice", 0, ""),
        ),
        (
            "REQUEST demo-pg/appdb write FOR 1h30m AS bob",
            RequestCommand("demo-pg", "appdb", "write", "bob", 5400, ""),
        ),
        (
            "  request   demo-pg/appdb  read as alice because  as for  because  it's 2 < 3  ",
            RequestCommand("demo-pg", "appdb", "read", "alice", 0, "as for  because  it's 2 < 3"),
        ),
        (
            "request far-pg/fardb read as it_1_u03 for 2d",
            RequestCommand("far-pg", "fardb", "read", "it_1_u03", 172800, ""),
        ),
    ],
)
def test_accepts_requests(text: str, expected: RequestCommand) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "help", "HELP me"])
def test_help(text: str) -> None:
    assert parse_command(text) == HelpCommand()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("approve req-1", "unknown command 'approve': try `request ...` or `help`"),
        ("request", "`request` needs INTEGRATION/RESOURCE and PERMISSION"),
        ("request demo-pg/appdb", "`request` needs INTEGRATION/RESOURCE and PERMISSION"),
        ("request appdb read as alice", "'appdb' must look like INTEGRATION/RESOURCE"),
        ("request demo-pg/ read as alice", "'demo-pg/' must look like INTEGRATION/RESOURCE"),
        ("request /appdb read as alice", "'/appdb' must look like INTEGRATION/RESOURCE"),
        ("request a/b/c read as alice", "'a/b/c' must look like INTEGRATION/RESOURCE"),
        ("request demo-pg/appdb as alice", "needs a PERMISSION after INTEGRATION/RESOURCE"),
        ("request demo-pg/appdb read", "say which login gets the access: `as LOGIN`"),
        ("request demo-pg/appdb read for 30m", "say which login gets the access: `as LOGIN`"),
        ("request demo-pg/appdb read as", "`as` needs a value after it"),
        ("request demo-pg/appdb read as alice for", "`for` needs a value after it"),
        ("request demo-pg/appdb read as alice as bob", "`as` given twice"),
        ("request demo-pg/appdb read as alice for 30m for 1h", "`for` given twice"),
        ("request demo-pg/appdb read as alice because   ", "`because` needs a reason after it"),
        (
            "request demo-pg/appdb read as alice please",
            "unexpected 'please': expected `as LOGIN`, `for DURATION` or `because REASON`",
        ),
        ("request demo-pg/appdb read as alice for soon", "'soon' is not a duration like 90s"),
        ("request demo-pg/appdb read as alice for 30", "'30' is not a duration like 90s"),
        ("request demo-pg/appdb read as alice for -5m", "'-5m' is not a duration like 90s"),
        ("request demo-pg/appdb read as alice for 0m", "duration '0m' must be longer than zero"),
    ],
)
def test_refuses_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(CommandError) as refused:
        parse_command(text)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("4h", 14400), ("1h30m", 5400), ("2d", 172800), ("1H", 3600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
