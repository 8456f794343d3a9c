"""deploy/compose.yml and deploy/docker/Dockerfile checked against the code, without Docker.

No container runs here and nothing touches the network. What is checked is everything the
two files name: modules, commands, helper scripts, settings, files, services, addresses and
ports. A renamed setting, a moved module, a new service or a typo in an address then fails
this unit test instead of someone's `docker compose up`.

Which environment variables a container may set is computed from the code it runs: the
entry module and every `lapse_*` module it imports (transitively), the pydantic-settings
classes those modules use, and the variables they read from `os.environ` directly.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from types import UnionType
from typing import Any, Union, cast, get_args, get_origin
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yml"

# Every pydantic-settings class of the workspace; test_every_settings_class_is_listed
# keeps this list complete.
SETTINGS_CLASSES = (
    "lapse_common.settings.KafkaSettings",
    "lapse_common.settings.TelemetrySettings",
    "lapse_common.settings.AuthSettings",
    "lapse_common.settings.DatabaseSettings",
    "lapse_common.settings.HousekeepingSettings",
    "lapse_common.grpc_transport.GrpcTransportSettings",
    "lapse_request.settings.RequestSettings",
    "lapse_approval.settings.ApprovalSettings",
    "lapse_grant_scheduler.settings.SchedulerSettings",
    "lapse_revoker.settings.RevokerSettings",
    "lapse_audit.settings.AuditSettings",
    "lapse_agent.settings.AgentSettings",
    "lapse_cli.config.CliSettings",
    "lapse_chatops.settings.ChatopsSettings",
)
LOCAL_HOSTS = {"0.0.0.0", "127.0.0.1", "localhost", "::", "[::]", "::1"}
HEALTHCHECK_PORT = re.compile(r"create_connection\(\(\s*['\"]127\.0\.0\.1['\"]\s*,\s*(\d+)")


# ---------------------------------------------------------------- the workspace


def source_roots() -> list[Path]:
    return (
        sorted(REPO.glob("libs/*/src"))
        + sorted(REPO.glob("services/*/src"))
        + sorted(REPO.glob("clients/*/src"))
    )


def module_path(module: str) -> Path | None:
    """The file of a workspace module, found without importing anything."""
    parts = module.split(".")
    for root in source_roots():
        base = root.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def workspace_members() -> list[Path]:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns: list[str] = root["tool"]["uv"]["workspace"]["members"]
    return sorted(
        path
        for pattern in patterns
        for path in REPO.glob(pattern)
        if (path / "pyproject.toml").is_file()
    )


@cache
def console_scripts() -> dict[str, str]:
    scripts: dict[str, str] = {}
    for member in workspace_members():
        project = tomllib.loads((member / "pyproject.toml").read_text())["project"]
        scripts.update(project.get("scripts", {}))
    return scripts


@dataclass(frozen=True)
class Setting:
    env: str
    cls: type[BaseSettings]
    name: str
    field: FieldInfo

    @property
    def is_path(self) -> bool:
        return _mentions_path(self.field.annotation) or self.env.endswith(("_FILE", "_FILES"))


def _mentions_path(annotation: Any) -> bool:
    if annotation is Path:
        return True
    if get_origin(annotation) in (Union, UnionType):
        return any(_mentions_path(arg) for arg in get_args(annotation))
    return False


def settings_class(dotted: str) -> type[BaseSettings]:
    module, _, name = dotted.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type) and issubclass(cls, BaseSettings), dotted
    return cls


@cache
def all_settings() -> tuple[Setting, ...]:
    found = []
    for dotted in SETTINGS_CLASSES:
        cls = settings_class(dotted)
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            alias = field.validation_alias if isinstance(field.validation_alias, str) else None
            env = alias or field.alias or f"{prefix}{name}"
            found.append(Setting(env=env.upper(), cls=cls, name=name, field=field))
    return tuple(found)


# ---------------------------------------------------------------- what a process reads


@dataclass
class Reach:
    """The files an entry module runs (it and the `lapse_*` modules it imports,
    transitively) and the LAPSE_* variables they read from os.environ directly."""

    files: set[Path]
    environ_reads: set[str]


def _is_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "environ") or (
        isinstance(node, ast.Attribute) and node.attr == "environ"
    )


def _lapse_constant(node: ast.expr) -> str | None:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("LAPSE_")
    ):
        return node.value
    return None


def _environ_reads(tree: ast.AST) -> set[str]:
    reads = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
            name = _lapse_constant(node.args[0])
            getter = node.func.attr == "getenv" or (
                node.func.attr == "get" and _is_environ(node.func.value)
            )
            if name and getter:
                reads.add(name)
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            name = _lapse_constant(node.slice)
            if name:
                reads.add(name)
    return reads


def _imported_modules(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            # `from package import submodule` imports the submodule too.
            yield from (f"{base}.{alias.name}" for alias in node.names)


@cache
def reach(entry: str) -> Reach:
    """Follow `lapse_*` imports from `entry` (for a package: its __main__)."""
    result = Reach(files=set(), environ_reads=set())
    start = f"{entry}.__main__" if module_path(f"{entry}.__main__") else entry
    todo = [start]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen or not module.startswith("lapse_"):
            continue
        seen.add(module)
        path = module_path(module)
        if path is None:
            continue
        # Importing a.b.c runs a/__init__ and a/b/__init__ first.
        parent = module.rpartition(".")[0]
        if parent:
            todo.append(parent)
        result.files.add(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        result.environ_reads |= _environ_reads(tree)
        todo.extend(_imported_modules(tree, module, path.name == "__init__.py"))
    return result


@cache
def settings_used(entry: str) -> tuple[type[BaseSettings], ...]:
    """Settings classes the process refers to outside the module that defines them."""
    files = reach(entry).files
    used = []
    for dotted in SETTINGS_CLASSES:
        cls = settings_class(dotted)
        definer = module_path(cls.__module__)
        pattern = re.compile(rf"\b{cls.__name__}\b")
        if any(pattern.search(path.read_text()) for path in files if path != definer):
            used.append(cls)
    return tuple(used)


# ---------------------------------------------------------------- compose.yml


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict), "compose.yml is not a mapping"
    return cast(dict[str, Any], loaded)


def services() -> dict[str, dict[str, Any]]:
    return cast(dict[str, dict[str, Any]], compose()["services"])


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(word) for word in value]


def argv(service: Mapping[str, Any]) -> list[str]:
    return _words(service.get("entrypoint")) + _words(service.get("command"))


SHELLS = {"sh", "bash"}


def _starts_lapse_command(words: list[str]) -> bool:
    return bool(words) and (
        words[0] in console_scripts()
        or (words[0] in {"python", "python3"} and words[1:2] == ["-m"])
    )


def helper_script(service: Mapping[str, Any]) -> str | None:
    """The script of a container that runs `sh SCRIPT ...` (a helper from deploy/docker)."""
    words = argv(service)
    if len(words) >= 2 and words[0] in SHELLS and not words[1].startswith("-"):
        return words[1]
    return None


def lapse_command(service: Mapping[str, Any]) -> list[str]:
    """The Lapse command line a container runs: its argv, or, for a helper script that wraps
    one (`sh SCRIPT [OPTIONS] lapse ...`), the part from the Lapse command on. Empty if it
    runs none (a helper script of its own, a third-party image)."""
    words = argv(service)
    if helper_script(service) is None:
        return words if _starts_lapse_command(words) else []
    for index in range(2, len(words)):
        if _starts_lapse_command(words[index:]):
            return words[index:]
    return []


def entry_module(service: Mapping[str, Any]) -> str | None:
    """The module a container runs: `python -m X`, or a console script of the workspace."""
    words = lapse_command(service)
    if len(words) >= 3 and words[0] in {"python", "python3"} and words[1] == "-m":
        return words[2]
    if words and words[0] in console_scripts():
        return console_scripts()[words[0]].partition(":")[0]
    return None


def lapse_services() -> list[str]:
    """Compose services that run workspace code."""
    return sorted(
        name
        for name, service in services().items()
        if (entry_module(service) or "").startswith("lapse_")
    )


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(str(item).partition("=")[::2] for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


@dataclass(frozen=True)
class Mount:
    source: str
    target: PurePosixPath
    read_only: bool
    # A named volume's subpath (`volume: {subpath: ...}`): what is mounted at target.
    subpath: PurePosixPath | None = None

    @property
    def bind(self) -> Path | None:
        if self.source.startswith((".", "/")):
            return (DEPLOY / self.source).resolve()
        return None


def mounts(service: Mapping[str, Any]) -> list[Mount]:
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            mode = parts[2] if len(parts) > 2 else ""
            found.append(Mount(parts[0], PurePosixPath(parts[1]), "ro" in mode.split(",")))
        else:
            subpath = (volume.get("volume") or {}).get("subpath")
            found.append(
                Mount(
                    str(volume["source"]),
                    PurePosixPath(volume["target"]),
                    bool(volume.get("read_only", False)),
                    PurePosixPath(subpath) if subpath else None,
                )
            )
    return found


def mount_for(service: Mapping[str, Any], path: str) -> tuple[Mount, PurePosixPath] | None:
    """The mount `path` is on, and where the file is in the mounted volume or host directory."""
    container_path = PurePosixPath(path)
    for mount in mounts(service):
        if container_path == mount.target or mount.target in container_path.parents:
            relative = container_path.relative_to(mount.target)
            return mount, (mount.subpath / relative if mount.subpath else relative)
    return None


def host_file(service: Mapping[str, Any], path: str) -> Path | None:
    """The file on this machine that is mounted at `path` in the container, if any."""
    found = mount_for(service, path)
    if found is None or found[0].bind is None:
        return None
    return found[0].bind / found[1]


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {
        str(name): str((spec or {}).get("condition", "service_started"))
        for name, spec in deps.items()
    }


def grpc_ports(service: Mapping[str, Any]) -> set[int]:
    """Ports the container's servers bind, from its *_GRPC_ADDRESS (or, for the HTTP chat
    front end, *_LISTEN_ADDRESS) settings."""
    return {
        int(value.rpartition(":")[2])
        for key, value in environment(service).items()
        if key.endswith(("_GRPC_ADDRESS", "_LISTEN_ADDRESS"))
    }


def referenced_hosts(env: Mapping[str, str]) -> Iterator[tuple[str, str, int | None]]:
    """(variable, host, port) for every address, URL or DSN in an environment."""
    for key, value in env.items():
        if "://" in value:
            parts = urlsplit(value)
            if parts.hostname:
                yield key, parts.hostname, parts.port
        elif key.endswith(("_ADDRESS", "_BOOTSTRAP_SERVERS")):
            for item in value.split(","):
                host, _, port = item.strip().rpartition(":")
                yield key, host, int(port) if port.isdigit() else None


def one_shots() -> list[str]:
    """The set-up jobs: what other containers wait for with service_completed_successfully."""
    return sorted(
        {
            target
            for service in services().values()
            for target, condition in depends_on(service).items()
            if condition == "service_completed_successfully"
        }
    )


def cli_app() -> Any:
    """The Typer app behind the `lapse` console script."""
    import typer

    module = console_scripts()["lapse"].partition(":")[0]
    app = importlib.import_module(module).app
    assert isinstance(app, typer.Typer), f"{module}.app is not the CLI's Typer app"
    return app


def parse_cli(words: list[str]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The subcommand and parameters of `lapse WORDS...`, parsed by the CLI's own parser: an
    unknown command, option or argument raises here as it would in the container."""
    import typer.main

    command = typer.main.get_command(cli_app())
    context = command.make_context("lapse", [], resilient_parsing=True)
    path: list[str] = []
    rest = list(words)
    while rest and hasattr(command, "get_command"):
        subcommand = command.get_command(context, rest[0])
        if subcommand is None:
            break
        path.append(rest.pop(0))
        command = subcommand
        context = command.make_context(path[-1], [], parent=context, resilient_parsing=True)
    leaf = command.make_context(" ".join(["lapse", *path]), rest, parent=context)
    return tuple(path), dict(leaf.params)


def files_it_would_write(service: Mapping[str, Any]) -> list[PurePosixPath] | None:
    """What a one-shot that needs the running system (the broker, the revoker) writes, in
    container paths, from the code that names those files; None for a one-shot this test
    can run itself (produced_volume_files)."""
    command = lapse_command(service)
    prefix = environment(service).get("LAPSE_KAFKA_TOPIC_PREFIX", "")
    module = entry_module(service)
    if module == "lapse_common.kafka_admin":
        from lapse_common.kafka_admin.__main__ import _parser
        from lapse_common.kafka_admin.provisioning import Installation, password_file

        arguments = _parser().parse_args(command[3:])
        if arguments.command != "setup":
            return []
        installation = Installation(
            topic_prefix=prefix,
            agents=tuple(arguments.agent),
            producers=tuple(arguments.producer),
        )
        return [
            PurePosixPath(password_file(arguments.credentials_dir, installation.user(principal)))
            for principal in installation.principals()
        ]
    if command and command[0] in console_scripts():
        subcommand, parameters = parse_cli(command[1:])
        if subcommand == ("agents", "enroll"):
            from lapse_cli.agent_enrollment import _write_agent_env
            from lapse_common.auth import ensure_keypair
            from lapse_common.kafka_admin import principals
            from lapse_common.kafka_admin.provisioning import Installation, password_file
            from lapse_common.settings import KafkaSettings

            agent_id, out = parameters["agent_id"], Path(parameters["out"])
            user = Installation(topic_prefix=prefix).user(principals.agent(agent_id))
            with tempfile.TemporaryDirectory() as scratch:
                # The key pair and the env file as the command names them.
                private, public = ensure_keypair(Path(scratch), agent_id)
                env_file = _write_agent_env(Path(scratch), agent_id, private, KafkaSettings())
            names = [private.name, public.name, env_file.name, password_file(out, user).name]
            return [PurePosixPath(out, name) for name in names]
        raise AssertionError(
            f"teach files_it_would_write what `lapse {' '.join(subcommand)}` writes"
        )
    return None


def _run_one_shot(name: str, service: Mapping[str, Any], scratch: Path) -> set[tuple[str, str]]:
    """Run a one-shot's command (`python -m ...`, or a helper script) here, on temporary
    directories for its named volumes, and return the (volume, path) files it wrote."""
    words = argv(service)
    mounted = {m.target: m for m in mounts(service)}
    replaced = [sys.executable] if words[0] in {"python", "python3"} else [words[0]]
    for word in words[1:]:
        mount = mounted.get(PurePosixPath(word)) if word.startswith("/") else None
        if mount is None:
            replaced.append(word)
        elif mount.bind is not None:
            replaced.append(str(mount.bind))  # the helper script itself
        else:
            replaced.append(str(scratch / mount.source))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAPSE_")}
    env.update(environment(service))
    run = subprocess.run(
        replaced, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, f"{name}: {words} failed:\n{run.stderr}"
    written = set()
    for mount in mounted.values():
        root = scratch / mount.source
        if mount.bind is None and root.is_dir():
            written |= {
                (mount.source, str(p.relative_to(root))) for p in root.rglob("*") if p.is_file()
            }
    return written


@cache
def one_shot_output(name: str) -> tuple[frozenset[tuple[str, str]], str | None]:
    """The (volume, path) files one-shot `name` writes, and why that is unknown if it is."""
    service = services()[name]
    try:
        computed = files_it_would_write(service)
        if computed is None:
            with tempfile.TemporaryDirectory() as scratch:
                return frozenset(_run_one_shot(name, service, Path(scratch))), None
        written = set()
        for path in computed:
            found = mount_for(service, str(path))
            assert found is not None and found[0].bind is None, (
                f"{name} writes {path}, which is on no named volume it mounts"
            )
            written.add((found[0].source, str(found[1])))
        return frozenset(written), None
    except (Exception, SystemExit) as error:  # each test that needs the files reports it
        return frozenset(), f"{name}: {type(error).__name__}: {error}"


def produced_volume_files() -> dict[str, frozenset[str]]:
    """Files the one-shot containers write into named volumes: found by running their
    command on a temporary directory, or, for those that need the running broker or
    revoker, from the code that names the files (files_it_would_write)."""
    produced: dict[str, set[str]] = {}
    for name in one_shots():
        for volume, path in one_shot_output(name)[0]:
            produced.setdefault(volume, set()).add(path)
    return {volume: frozenset(paths) for volume, paths in produced.items()}


def one_shot_failures(volume: str) -> list[str]:
    """Why what some one-shot mounting `volume` writes is unknown."""
    return [
        error
        for name in one_shots()
        if (error := one_shot_output(name)[1]) is not None
        and any(m.source == volume and not m.read_only for m in mounts(services()[name]))
    ]


# ---------------------------------------------------------------- Dockerfile


def build_context() -> Path:
    """The build context of the Lapse image (compose paths are relative to deploy/)."""
    build = services()[lapse_services()[0]]["build"]
    return (DEPLOY / str(build["context"])).resolve()


def dockerfile_path() -> Path:
    build = services()[lapse_services()[0]]["build"]
    return build_context() / str(build.get("dockerfile", "Dockerfile"))


def dockerfile_instructions() -> list[tuple[str, str]]:
    logical: list[str] = []
    pending = ""
    for raw in dockerfile_path().read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    instructions = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def copies() -> list[tuple[int, list[str]]]:
    """(instruction index, sources) of every COPY from the build context."""
    found = []
    for index, (keyword, rest) in enumerate(dockerfile_instructions()):
        if keyword != "COPY":
            continue
        words = shlex.split(rest)
        if any(word.startswith("--from") for word in words):
            continue
        found.append((index, [word for word in words if not word.startswith("--")][:-1]))
    return found


# ---------------------------------------------------------------- tests: code and settings


def test_every_settings_class_is_listed() -> None:
    defined = set()
    for root in source_roots():
        for path in root.rglob("*.py"):
            if "pb" in path.relative_to(root).parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                    isinstance(base, ast.Name) and base.id == "BaseSettings" for base in node.bases
                ):
                    module = ".".join(path.relative_to(root).with_suffix("").parts)
                    defined.add(f"{module}.{node.name}")
    assert defined == set(SETTINGS_CLASSES)


def test_settings_env_names_are_unique() -> None:
    owners: dict[str, list[str]] = {}
    for setting in all_settings():
        owners.setdefault(setting.env, []).append(f"{setting.cls.__name__}.{setting.name}")
    shared = {env: names for env, names in owners.items() if len(names) > 1}
    # The CLI reads the token settings of AuthSettings under its own class on purpose.
    assert set(shared) <= {
        "LAPSE_AUTH_ISSUER",
        "LAPSE_AUTH_AUDIENCE",
        "LAPSE_AUTH_MAX_TOKEN_LIFETIME_SECONDS",
    }, shared


@pytest.mark.parametrize("name", sorted(services()))
def test_command_module_exists(name: str) -> None:
    service = services()[name]
    words = argv(service)
    script = helper_script(service)
    if script is not None:
        source = host_file(service, script)
        assert source is not None and source.is_file(), (
            f"{name}: runs {script}, which is not mounted from a file of this repository"
        )
        parsed = subprocess.run(
            [words[0], "-n", str(source)], capture_output=True, text=True, check=False
        )
        assert parsed.returncode == 0, f"{name}: {script} does not parse:\n{parsed.stderr}"
    if "image" in service and "build" not in service:
        return  # a third-party image: its command is its own business
    assert words, f"{name}: builds the Lapse image but sets no command"
    if script is not None and not lapse_command(service):
        return  # a helper script that runs no Lapse command
    module = entry_module(service)
    assert module is not None, f"{name}: {words} is neither `python -m MODULE` nor a Lapse script"
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{name}: module {module} is not importable"
    if spec.submodule_search_locations is not None:
        assert importlib.util.find_spec(f"{module}.__main__") is not None, (
            f"{name}: package {module} has no __main__, so `python -m {module}` fails"
        )
    command = lapse_command(service)
    if command[0] == "lapse" and command[1:2] and not command[1].startswith("-"):
        try:
            parse_cli(command[1:])
        except Exception as refused:
            pytest.fail(f"{name}: the CLI does not accept `{shlex.join(command)}`: {refused}")


@pytest.mark.parametrize("name", one_shots())
def test_one_shot_outputs_are_known(name: str) -> None:
    """What each set-up job writes is known: it ran here, or (needing the running broker or
    revoker) its files follow from the code; a skip marker is a file its command writes."""
    written, unknown = one_shot_output(name)
    assert unknown is None, unknown
    words = argv(services()[name])
    if "--unless-exists" in words:  # deploy/docker/as-dev-admin.sh: done once, then skipped
        marker = words[words.index("--unless-exists") + 1]
        found = mount_for(services()[name], marker)
        assert found is not None and (found[0].source, str(found[1])) in written, (
            f"{name}: skipped once {marker} exists, which its command never writes "
            f"(it writes {sorted(written)}), so it runs again on every `up`"
        )


def test_stack_services_all_have_a_compose_service() -> None:
    stack = ast.parse((REPO / "tests" / "stack.py").read_text())
    names: tuple[str, ...] = ()
    for node in stack.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "SERVICES" for target in node.targets
        ):
            names = ast.literal_eval(node.value)
    assert names, "tests/stack.py has no SERVICES tuple"
    script = (DEPLOY / "local" / "lapse.sh").read_text()
    match = re.search(r"^SERVICES=\(([^)]*)\)", script, re.MULTILINE)
    assert match, "deploy/local/lapse.sh has no SERVICES array"
    for name in {*names, *match.group(1).split()}:
        assert name in services(), f"{name} runs in tests and lapse.sh but not in compose"
        expected = "lapse_" + name.replace("-", "_")
        assert entry_module(services()[name]) == expected, f"{name} should run {expected}"


# ---------------------------------------------------------------- tests: environment


@pytest.mark.parametrize("name", lapse_services())
def test_environment_is_read_by_the_process(name: str) -> None:
    """Every LAPSE_* variable set is a settings field, a direct os.environ read or a
    variable the mounted agent config names, of code this container actually runs."""
    service = services()[name]
    entry = entry_module(service)
    assert entry is not None
    used = settings_used(entry)
    known = {s.env for s in all_settings() if s.cls in used} | reach(entry).environ_reads
    known |= agent_config_env_names(service)
    unknown = sorted(
        key for key in environment(service) if key.startswith("LAPSE_") and key not in known
    )
    assert not unknown, (
        f"{name} ({entry}) sets {unknown}, which nothing it runs reads; it reads {sorted(known)}"
    )


@pytest.mark.parametrize("name", lapse_services())
def test_required_settings_are_set_and_valid(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    service = services()[name]
    entry = entry_module(service)
    assert entry is not None
    env = environment(service)
    for key in list(os.environ):
        if key.startswith("LAPSE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for cls in settings_used(entry):
        missing = [
            s.env
            for s in all_settings()
            if s.cls is cls and s.field.is_required() and s.env not in env
        ]
        assert not missing, f"{name}: {cls.__name__} needs {missing}, which compose does not set"
        try:
            cls()
        except ValidationError as invalid:
            pytest.fail(f"{name}: {cls.__name__} rejects the compose environment:\n{invalid}")


@pytest.mark.parametrize("name", lapse_services())
def test_grpc_servers_listen_beyond_loopback(name: str) -> None:
    """A gRPC address left at its 127.0.0.1 default is unreachable from other containers."""
    service = services()[name]
    entry = entry_module(service)
    assert entry is not None
    env = environment(service)
    for setting in all_settings():
        if setting.cls in settings_used(entry) and setting.name == "grpc_address":
            value = env.get(setting.env)
            assert value is not None, (
                f"{name}: {setting.env} unset, so it binds {setting.field.default}"
            )
            host = value.rpartition(":")[0]
            assert host in {"0.0.0.0", "[::]"}, f"{name}: {setting.env}={value} is loopback only"


@pytest.mark.parametrize("name", lapse_services())
def test_file_settings_point_into_mounts(name: str) -> None:
    service = services()[name]
    env = environment(service)
    produced = produced_volume_files()
    for setting in all_settings():
        if not setting.is_path or setting.env not in env:
            continue
        for value in (v.strip() for v in env[setting.env].split(",") if v.strip()):
            found = mount_for(service, value)
            assert found is not None, f"{name}: {setting.env}={value} is in no mounted volume"
            mount, relative = found
            if mount.bind is not None:
                assert (mount.bind / relative).exists(), (
                    f"{name}: {setting.env}={value} is mounted from {mount.bind / relative}, "
                    "which does not exist"
                )
            elif mount.source in produced or one_shot_failures(mount.source):
                files = produced.get(mount.source, frozenset())
                unknown = one_shot_failures(mount.source)
                assert str(relative) in files, (
                    f"{name}: {setting.env}={value} is {relative} on volume {mount.source}, "
                    f"which only gets {sorted(files)}"
                    + (f"; unknown what {unknown} writes" if unknown else "")
                )
            else:
                # A volume nothing fills in advance: the process writes the file itself.
                assert not mount.read_only, (
                    f"{name}: {setting.env}={value} is on read-only volume {mount.source}, "
                    "which no one-shot service fills"
                )


@pytest.mark.parametrize("name", lapse_services())
def test_kafka_clients_log_in_with_their_own_password(name: str) -> None:
    """A container that connects to Kafka with SCRAM reads the password file the set-up
    wrote for its LAPSE_KAFKA_USERNAME (kafka_admin's naming), not another principal's."""
    from lapse_common.kafka_admin.provisioning import password_file

    service = services()[name]
    env = environment(service)
    kafka = settings_class("lapse_common.settings.KafkaSettings")
    entry = entry_module(service)
    assert entry is not None
    if kafka not in settings_used(entry) or "LAPSE_KAFKA_BOOTSTRAP_SERVERS" not in env:
        return
    protocol = env.get(
        "LAPSE_KAFKA_SECURITY_PROTOCOL", kafka.model_fields["security_protocol"].default
    )
    if protocol != "SASL_SSL":
        return
    user, path = env.get("LAPSE_KAFKA_USERNAME"), env.get("LAPSE_KAFKA_PASSWORD_FILE")
    assert user and path, (
        f"{name}: SASL_SSL needs LAPSE_KAFKA_USERNAME and LAPSE_KAFKA_PASSWORD_FILE"
    )
    found = mount_for(service, path)
    assert found is not None, f"{name}: LAPSE_KAFKA_PASSWORD_FILE={path} is in no mounted volume"
    assert found[1].name == password_file(Path(), user).name, (
        f"{name}: logs in as {user} with {found[1]} of {found[0].source}, another principal's"
    )


@pytest.mark.parametrize("name", lapse_services())
def test_addresses_name_services_it_depends_on(name: str) -> None:
    service = services()[name]
    deps = depends_on(service)
    for key, host, port in referenced_hosts(environment(service)):
        if host in LOCAL_HOSTS or host == name:
            continue
        assert host in services(), f"{name}: {key} names host {host}, which is no service"
        assert host in deps, f"{name}: {key} uses {host} but does not depend on it"
        target = services()[host]
        if port is not None and grpc_ports(target) and key.endswith("_ADDRESS"):
            assert port in grpc_ports(target), (
                f"{name}: {key} uses {host}:{port}, but {host} listens on {grpc_ports(target)}"
            )


# ---------------------------------------------------------------- tests: the demo


def agent_config_env_names(service: Mapping[str, Any]) -> set[str]:
    """Environment variables the agent config mounted into this container names."""
    path = environment(service).get("LAPSE_AGENT_CONFIG_FILE")
    source = host_file(service, path) if path else None
    if source is None or not source.is_file():
        return set()  # test_file_settings_point_into_mounts reports it
    config = yaml.safe_load(source.read_text())
    names = set()
    for integration in config.get("integrations", []):
        if "dsn_env" in integration:
            names.add(str(integration["dsn_env"]))
    return names


def mounted_yaml(service: Mapping[str, Any], path: str) -> Any:
    source = host_file(service, path)
    assert source is not None and source.is_file(), f"{path} is not mounted from a file"
    return yaml.safe_load(source.read_text())


def test_agents_serve_the_integrations_the_flows_route_to_them() -> None:
    flow_integrations: dict[str, set[str]] = {}
    for service in services().values():
        files = environment(service).get("LAPSE_APPROVAL_FLOW_FILES")
        for path in (p.strip() for p in (files or "").split(",") if p.strip()):
            flows = mounted_yaml(service, path)
            for integration in flows.get("integrations", []):
                flow_integrations.setdefault(integration["agent"], set()).add(integration["id"])
    agents = [s for s in services().values() if "LAPSE_AGENT_AGENT_ID" in environment(s)]
    assert agents, "compose runs no agent"
    for service in agents:
        env = environment(service)
        agent_id = env["LAPSE_AGENT_AGENT_ID"]
        config = mounted_yaml(service, env["LAPSE_AGENT_CONFIG_FILE"])
        served = {str(integration["id"]) for integration in config["integrations"]}
        assert flow_integrations.get(agent_id) == served, (
            f"flows route {flow_integrations.get(agent_id)} to {agent_id}, which serves {served}"
        )
        unset = agent_config_env_names(service) - set(env)
        assert not unset, f"the agent config reads {sorted(unset)}, which compose does not set"


# ---------------------------------------------------------------- tests: compose structure


@pytest.mark.parametrize("name", sorted(services()))
def test_mounts_exist(name: str) -> None:
    declared = set(compose().get("volumes") or {})
    for mount in mounts(services()[name]):
        if mount.bind is not None:
            assert mount.bind.exists(), f"{name}: mounts {mount.source}, which does not exist"
        else:
            assert mount.source in declared, f"{name}: volume {mount.source} is not declared"


@pytest.mark.parametrize("name", sorted(services()))
def test_depends_on_defined_services(name: str) -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for target, condition in depends_on(services()[name]).items():
        assert target in services(), f"{name} depends on {target}, which is not defined"
        assert condition in conditions, f"{name}: unknown condition {condition}"
        if condition == "service_healthy":
            assert "healthcheck" in services()[target], f"{target} has no healthcheck"
        if condition == "service_completed_successfully":
            assert services()[target].get("restart", "no") == "no", f"{target} restarts"


@pytest.mark.parametrize("name", lapse_services())
def test_healthchecks_and_ports_match_grpc_addresses(name: str) -> None:
    service = services()[name]
    bound = grpc_ports(service)
    test = " ".join(_words((service.get("healthcheck") or {}).get("test")))
    for port in HEALTHCHECK_PORT.findall(test):
        assert int(port) in bound, f"{name}: healthcheck probes {port}, gRPC binds {bound}"
    for published in service.get("ports") or []:
        container_port = int(str(published).split(":")[-1].split("/")[0])
        assert container_port in bound, f"{name}: publishes {container_port}, binds {bound}"


def test_one_image_for_all_lapse_services() -> None:
    builds = {repr(services()[name].get("build")) for name in lapse_services()}
    assert len(builds) == 1, builds
    assert dockerfile_path().is_file()


# ---------------------------------------------------------------- tests: Dockerfile


def test_dockerfile_copy_sources_exist() -> None:
    assert copies(), "the Dockerfile copies nothing"
    for _, sources in copies():
        for source in sources:
            assert (build_context() / source).exists(), f"COPY {source}: no such path"


def test_dockerfile_copies_the_whole_workspace() -> None:
    """Each member's pyproject.toml before the first `uv sync` (the dependency layer)
    and each member's sources before the last one, or the sync fails or misses code."""
    syncs = [
        index
        for index, (keyword, rest) in enumerate(dockerfile_instructions())
        if keyword == "RUN" and "uv sync" in rest
    ]
    assert syncs, "the Dockerfile never runs uv sync"
    copied_early: set[Path] = set()
    copied: set[Path] = set()
    for index, sources in copies():
        paths = {(build_context() / source).resolve() for source in sources}
        if index < syncs[-1]:
            copied |= paths
        if index < syncs[0]:
            copied_early |= paths
    for member in workspace_members():
        assert (member / "pyproject.toml") in copied_early or member in copied_early, (
            f"{member.relative_to(REPO)}/pyproject.toml is not copied before the first uv sync"
        )
        assert any(member == c or c in member.parents for c in copied), (
            f"{member.relative_to(REPO)} is not copied before the last uv sync"
        )
    for lock in ("pyproject.toml", "uv.lock"):
        assert (REPO / lock) in copied_early, f"{lock} is not copied before the first uv sync"
