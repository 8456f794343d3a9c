from pathlib import Path

import pytest
from lapse_agent.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent.yaml"
DSN = "postgresql://lapse_agent:secret-password@127.0.0.1:55432/demo_target"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


VALID = """
integrations:
  - id: demo-pg
    kind: postgres
    dsn_env: TARGET_DSN
    resources:
      appdb:
        permissions:
          read: demo_read
          write: demo_write
"""


def test_the_shipped_example_loads() -> None:
    config = load_config(EXAMPLE, environ={"LAPSE_DEMO_TARGET_DSN": DSN})
    [integration] = config.integrations
    assert integration.id == "demo-pg"
    assert integration.target_dsn == DSN
    assert integration.terminate_sessions_on_revoke is False
    assert integration.resources["appdb"].permissions == {
        "read": "demo_read",
        "write": "demo_write",
    }


def test_dsn_env_is_resolved_and_kept_secret(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), environ={"TARGET_DSN": DSN})
    integration = config.integrations[0]
    assert integration.target_dsn == DSN
    assert "secret-password" not in repr(integration)
    assert config.integration_ids() == ["demo-pg"]


def test_inline_dsn(tmp_path: Path) -> None:
    text = VALID.replace("dsn_env: TARGET_DSN", f"dsn: {DSN}")
    assert load_config(write(tmp_path, text), environ={}).integrations[0].target_dsn == DSN


def problems(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ=environ if environ is not None else {"TARGET_DSN": DSN})
    return str(raised.value)


def test_unset_dsn_env_names_file_integration_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    message = problems(path, environ={})
    assert str(path) in message
    assert "integration 'demo-pg'" in message
    assert "field 'dsn_env'" in message
    assert "TARGET_DSN is not set" in message


def test_both_or_neither_dsn_source(tmp_path: Path) -> None:
    both = VALID.replace("dsn_env: TARGET_DSN", f"dsn_env: TARGET_DSN\n    dsn: {DSN}")
    assert "exactly one of 'dsn' or 'dsn_env'" in problems(write(tmp_path, both))
    neither = VALID.replace("    dsn_env: TARGET_DSN\n", "")
    assert "exactly one of 'dsn' or 'dsn_env'" in problems(write(tmp_path, neither))


def test_a_bad_dsn_is_reported_without_echoing_it(tmp_path: Path) -> None:
    text = VALID.replace("dsn_env: TARGET_DSN", "dsn: mysql://root:hunter2@db/app")
    message = problems(write(tmp_path, text))
    assert "field 'dsn'" in message
    assert "postgresql://" in message
    assert "hunter2" not in message


def test_unsafe_role_name_points_at_the_permission(tmp_path: Path) -> None:
    text = VALID.replace("read: demo_read", 'read: demo_read"; DROP ROLE x; --')
    message = problems(write(tmp_path, text))
    assert "integration 'demo-pg'" in message
    assert "field 'resources.appdb.permissions'" in message
    assert "permission 'read'" in message


def test_unknown_field_and_wrong_kind(tmp_path: Path) -> None:
    text = VALID.replace("kind: postgres", "kind: redis\n    termnate_sessions_on_revoke: true")
    message = problems(write(tmp_path, text))
    assert "field 'kind'" in message
    assert "field 'termnate_sessions_on_revoke'" in message
    assert "Extra inputs are not permitted" in message


def test_second_integration_is_named_by_id_and_index(tmp_path: Path) -> None:
    text = (
        VALID
        + """
  - id: other-pg
    kind: postgres
    dsn_env: TARGET_DSN
    resources: {}
"""
    )
    message = problems(write(tmp_path, text))
    assert "integration 'other-pg' (integrations[1])" in message
    assert "field 'resources'" in message


def test_duplicate_integration_ids(tmp_path: Path) -> None:
    text = VALID + VALID.split("integrations:\n", 1)[1]
    assert "integration id 'demo-pg' is defined more than once" in problems(write(tmp_path, text))


def test_missing_integrations_and_non_mapping(tmp_path: Path) -> None:
    assert "field 'integrations'" in problems(write(tmp_path, "integrations: []\n"))
    assert "expected a mapping" in problems(write(tmp_path, "- just a list\n"))


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    message = problems(write(tmp_path, "integrations:\n  - id: [unclosed\n"))
    assert "not valid YAML at line" in message


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot read agent config" in problems(tmp_path / "nope.yaml")
