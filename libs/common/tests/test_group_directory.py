"""Groups from the directory file join the token's claims; edits are picked up; bad files are
named with the field that is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lapse_common.auth import TokenVerifier, ensure_keypair, mint_token
from lapse_common.group_directory import GroupDirectory, GroupDirectoryError, watch_group_directory
from lapse_common.settings import AuthSettings


def test_directory_groups_are_added_to_the_claimed_ones() -> None:
    directory = GroupDirectory.parse(
        "groups:\n  contractors: [u07]\n  db-approvers: [carol, u07]\n", source="dir.yaml"
    )
    assert directory.groups_of("u07", claimed=("engineering",)) == (
        "contractors",
        "db-approvers",
        "engineering",
    )
    assert directory.groups_of("nobody") == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("groups: [a, b]\n", "field groups: Input should be a valid dictionary"),
        ("people: {}\n", "field people: Extra inputs are not permitted"),
        ("groups:\n  ops: ['']\n", "group 'ops' lists an empty member"),
        ("groups: {ops: [a\n", "not valid YAML"),
    ],
)
def test_bad_directory_files_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(GroupDirectoryError) as error:
        GroupDirectory.parse(text, source="dir.yaml")
    assert str(error.value).startswith("dir.yaml: ")
    assert problem in str(error.value)


def test_verified_tokens_carry_directory_groups_and_edits_apply_without_restart(
    tmp_path: Path,
) -> None:
    private, public = ensure_keypair(tmp_path, "token")
    directory = tmp_path / "directory.yaml"
    directory.write_text("groups:\n  contractors: [u07]\n")
    verifier = TokenVerifier.from_settings(
        AuthSettings(public_key_file=public, directory_file=directory, dev_mode=True)
    )
    token = mint_token(
        private_key_pem=private.read_bytes(), subject="u07", groups=[], roles=[], ttl_seconds=60
    )
    assert verifier.verify(token).groups == ("contractors",)

    directory.write_text("groups:\n  contractors: []\n  oncall: [u07]\n")
    stat = directory.stat()
    os.utime(directory, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert verifier.verify(token).groups == ("oncall",)

    # A broken edit keeps the last good directory rather than dropping everyone's groups.
    directory.write_text("groups: {oncall: [u07\n")
    os.utime(directory, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000))
    assert verifier.verify(token).groups == ("oncall",)


def test_a_missing_directory_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(GroupDirectoryError, match="cannot read"):
        watch_group_directory(tmp_path / "absent.yaml")
