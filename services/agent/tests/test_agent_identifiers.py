import pytest
from lapse_agent.connectors.postgres.identifiers import (
    UnsafeIdentifier,
    is_safe_identifier,
    quote_identifier,
)


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("alice", '"alice"'),
        ("demo_read", '"demo_read"'),
        ("Alice", '"Alice"'),  # quoting keeps case: no silent folding to another role
        ("_svc", '"_svc"'),
        ("alice@example.com", '"alice@example.com"'),
        ("ci-runner.prod", '"ci-runner.prod"'),
        ("a" * 63, '"' + "a" * 63 + '"'),
    ],
)
def test_safe_names_are_double_quoted(name: str, quoted: str) -> None:
    assert quote_identifier(name) == quoted


@pytest.mark.parametrize(
    "name",
    [
        "",
        'bob"; DROP ROLE postgres; --',
        'a"b',
        "a b",
        "a;b",
        "1alice",  # PostgreSQL would need quoting; we keep to ordinary names
        "-alice",
        "a" * 64,  # longer than NAMEDATALEN-1: PostgreSQL would truncate it
        "alice\n",
        "al\x00ice",
        "ålice",
        "alice$",
        "a\\b",
        "a'b",
    ],
)
def test_unsafe_names_are_refused_before_any_sql(name: str) -> None:
    assert not is_safe_identifier(name)
    with pytest.raises(UnsafeIdentifier, match="login"):
        quote_identifier(name, what="login")
