"""Rules of the codebase that a reviewer would otherwise have to remember."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVICE_PACKAGES = {path.name for path in REPO.glob("services/*/src/lapse_*") if path.is_dir()}


def test_every_service_is_its_own_package() -> None:
    assert {
        "lapse_request",
        "lapse_approval",
        "lapse_grant_scheduler",
        "lapse_revoker",
        "lapse_audit",
        "lapse_agent",
    } == SERVICE_PACKAGES


def test_no_service_imports_another() -> None:
    offenders = []
    for package in SERVICE_PACKAGES:
        source_root = next(REPO.glob(f"services/*/src/{package}"))
        for module in source_root.rglob("*.py"):
            for node in ast.walk(ast.parse(module.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top in SERVICE_PACKAGES and top != package:
                        offenders.append(f"{module.relative_to(REPO)} imports {name}")
    assert not offenders, offenders


def test_no_utils_modules() -> None:
    assert not [p for p in REPO.glob("**/utils.py") if ".venv" not in p.parts]


def test_generated_protobuf_code_matches_proto_files() -> None:
    check = subprocess.run(
        [sys.executable, str(REPO / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
