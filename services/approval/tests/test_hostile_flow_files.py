"""Flow files from a hostile or careless author: aliases, size, and error floods."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
from lapse_approval.flows import (
    MAX_FLOW_FILE_BYTES,
    MAX_PROBLEM_CHARS,
    MAX_REPORTED_PROBLEMS,
    FlowFileError,
    parse_catalog,
)

# The shape reported in the issue: nested aliases, each level multiplying the one below.
BILLION_LAUGHS = """
integrations:
  - id: demo-pg
    agent: demo-agent
    resources: {appdb: [read]}
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
flows:
  - name: boom
    requestors: {users: *f}
    targets: [{integration: demo-pg, resources: *f, permissions: *f}]
    approval: {mode: auto}
"""


def test_aliases_are_refused_before_anything_expands() -> None:
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(FlowFileError) as caught:
        parse_catalog([(Path("laughs.yaml"), BILLION_LAUGHS)])
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert caught.value.problems == [
        "laughs.yaml: line 6: YAML anchors and aliases (&name, *name) are not allowed in "
        "flow files; write each entry out"
    ]
    # Expanded, this is 10^6 entries per list; refused, it is a few kilobytes of events.
    assert peak < 5 * 1024 * 1024
    assert elapsed < 1.0


def test_an_anchor_without_alias_is_refused_too() -> None:
    text = "integrations: &all []\nflows: []\n"
    with pytest.raises(FlowFileError, match="line 1: YAML anchors and aliases"):
        parse_catalog([(Path("a.yaml"), text)])


def test_an_oversized_file_is_refused_without_parsing() -> None:
    text = "flows: []\n# " + "x" * MAX_FLOW_FILE_BYTES + "\n"
    with pytest.raises(FlowFileError) as caught:
        parse_catalog([(Path("big.yaml"), text)])
    assert caught.value.problems == [
        f"big.yaml: {len(text)} bytes; a flow file may be at most {MAX_FLOW_FILE_BYTES}"
    ]


def test_too_many_files_are_refused() -> None:
    with pytest.raises(FlowFileError, match="65 flow files given; the limit is 64"):
        parse_catalog([(Path(f"{n}.yaml"), "flows: []\n") for n in range(65)])


def test_an_error_flood_is_capped_and_each_problem_is_short() -> None:
    long_name = "n" * 1000
    flows = "\n".join(
        f"  - {{name: {long_name}{n}, requestors: {{}}, targets: [], approval: {{mode: auto}}}}"
        for n in range(200)
    )
    with pytest.raises(FlowFileError) as caught:
        parse_catalog([(Path("flood.yaml"), f"flows:\n{flows}\n")])
    problems = caught.value.problems
    assert len(problems) == MAX_REPORTED_PROBLEMS + 1
    assert problems[-1] == f"... and {200 - MAX_REPORTED_PROBLEMS} more problems"
    assert all(len(p) <= MAX_PROBLEM_CHARS for p in problems)
    assert len(str(caught.value)) < (MAX_REPORTED_PROBLEMS + 1) * MAX_PROBLEM_CHARS


def test_a_large_valid_file_is_checked_in_linear_time() -> None:
    # 1000 resources offered and a flow naming each of them for 200 targets: the old check
    # rebuilt the offered set per target.
    resources = ", ".join(f"r{n}: [read]" for n in range(1000))
    names = ", ".join(f"r{n}" for n in range(1000))
    targets = "\n".join(
        f"      - {{integration: demo-pg, resources: [{names}], permissions: [read]}}"
        for _ in range(40)
    )
    text = (
        "integrations:\n"
        f"  - {{id: demo-pg, agent: demo-agent, resources: {{{resources}}}}}\n"
        "flows:\n"
        "  - name: wide\n"
        "    requestors: {users: [alice]}\n"
        "    approval: {mode: auto}\n"
        f"    targets:\n{targets}\n"
    )
    assert len(text.encode()) < MAX_FLOW_FILE_BYTES
    catalog = parse_catalog([(Path("wide.yaml"), text)])
    assert len(catalog.flows[0].targets) == 40
