"""The chat-identity directory: who is who, clear errors, reloads without a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lapse_chatops.directory import Directory, DirectoryError, DirectoryFile, Person

TEXT = """
slack:
  U01: {subject: alice}
  U02: {subject: sre-1}
teams:
  "aad-1": {subject: bob}
  "29:carol-teams-id": {subject: carol}
"""


def test_maps_chat_users_to_subjects() -> None:
    directory = Directory.parse(TEXT, source="d.yaml")
    assert directory.slack_person("U01") == Person("alice")
    assert directory.slack_person("U02") == Person("sre-1")
    assert directory.slack_person("U99") is None
    assert directory.slack_person("") is None
    assert directory.teams_person(aad_object_id="aad-1", user_id="29:x") == Person("bob")
    assert directory.teams_person(aad_object_id="aad-9", user_id="29:carol-teams-id") == Person(
        "carol"
    )
    assert directory.teams_person(aad_object_id="", user_id="") is None


@pytest.mark.parametrize("claim", ["roles: [admin]", "groups: [engineering]"])
def test_a_directory_entry_cannot_grant_roles_or_groups(claim: str) -> None:
    # Whoever may edit this file must not be able to make anyone an admin through chat.
    with pytest.raises(DirectoryError) as refused:
        Directory.parse(f"slack: {{U01: {{subject: alice, {claim}}}}}", source="d.yaml")
    problem = str(refused.value)
    assert "d.yaml: slack.U01" in problem and "LAPSE_AUTH_DIRECTORY_FILE" in problem
    assert claim.split(":", maxsplit=1)[0] in problem


def test_finds_a_subject_s_chat_identity() -> None:
    directory = Directory.parse(
        TEXT + "  aad-2: {subject: alice}\n  aad-3: {subject: alice}\n", source="d.yaml"
    )
    assert directory.slack_user_of("alice") == "U01"
    assert directory.slack_user_of("bob") is None
    assert directory.teams_user_of("bob") == "aad-1"
    assert directory.teams_user_of("alice") == "aad-2", "the first entry wins"
    assert directory.teams_user_of("sre-1") is None
    assert directory.slack_user_of("") is None and directory.teams_user_of("") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slack: [", "not valid YAML"),
        ("slack: {U01: {}}", "slack.U01.subject: Field required"),
        ("slack: {U01: {subject: 'alice admin'}}", "slack.U01.subject: String should match"),
        (f"slack: {{U01: {{subject: {'a' * 300}}}}}", "at most 256 characters"),
        (f"slack: {{{'U' * 300}: {{subject: a}}}}", "must be 1 to 256 characters"),
        ("slack: {U01: {subject: ''}}", "slack.U01.subject"),
        ("discord: {}", "discord: Extra inputs are not permitted"),
        ("slack: {U01: {subject: a, team: x}}", "slack.U01.team: Extra inputs"),
    ],
)
def test_refuses_a_broken_directory(text: str, message: str) -> None:
    with pytest.raises(DirectoryError) as refused:
        Directory.parse(text, source="d.yaml")
    assert "d.yaml" in str(refused.value) and message in str(refused.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="cannot read directory file"):
        DirectoryFile(tmp_path / "nope.yaml")


def test_reloads_on_change_and_keeps_the_last_good_version(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text("slack: {U01: {subject: alice}}")
    directory = DirectoryFile(path)
    assert directory.current.slack_person("U01") == Person("alice")

    path.write_text("slack: {U01: {subject: alice}, U02: {subject: bob}}")
    os.utime(path, ns=(1, 10**18))
    assert directory.current.slack_person("U02") == Person("bob")

    path.write_text("slack: [broken")
    os.utime(path, ns=(1, 2 * 10**18))
    assert directory.current.slack_person("U02") == Person("bob")
