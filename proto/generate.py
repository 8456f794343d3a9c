"""Regenerate the committed Python code for proto/lapse/v1/*.proto.

Run with `make proto`. `--check` regenerates into a temporary folder and exits 1 when the
committed code differs, so CI catches a .proto edited without regenerating.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
PACKAGE_ROOT = REPO / "libs" / "common" / "src" / "lapse_common" / "pb"
# protoc writes `from lapse.v1 import x_pb2`; our code lives under lapse_common.pb.
IMPORT_PATTERN = re.compile(r"^from lapse\.v1 import", re.MULTILINE)


def generate(out_root: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.glob("lapse/v1/*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    for generated in (out_root / "lapse" / "v1").glob("*.py*"):
        text = generated.read_text()
        generated.write_text(IMPORT_PATTERN.sub("from lapse_common.pb.lapse.v1 import", text))
    for package in (out_root / "lapse", out_root / "lapse" / "v1"):
        (package / "__init__.py").write_text("")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code drifted")
    options = parser.parse_args()
    if not options.check:
        shutil.rmtree(PACKAGE_ROOT / "lapse", ignore_errors=True)
        generate(PACKAGE_ROOT)
        print(f"generated into {PACKAGE_ROOT.relative_to(REPO)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "lapse" / "v1"
        committed = PACKAGE_ROOT / "lapse" / "v1"
        names = sorted({p.name for p in fresh.iterdir()} | {p.name for p in committed.iterdir()})
        drifted = [
            n
            for n in names
            if n != "__pycache__"
            and not (
                (fresh / n).exists()
                and (committed / n).exists()
                and filecmp.cmp(fresh / n, committed / n, shallow=False)
            )
        ]
    if drifted:
        print("generated protobuf code is out of date: " + ", ".join(drifted), file=sys.stderr)
        print("run `make proto` and commit the result", file=sys.stderr)
        return 1
    print("generated protobuf code matches proto/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
