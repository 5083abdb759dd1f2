"""The Dockerfile (docker cannot build here): multi-stage, slim, non-root, health-checked."""

import json
import re

from tests.conftest import ROOT
from tests.test_packaging import SOURCES


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.strip().split(None, 1) for line in joined.splitlines() if line.strip())
    ]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def test_builder_stage_compiles_durable_rules_and_runtime_has_no_compiler() -> None:
    builder, runtime = _stages()
    assert builder[0][1].endswith("AS builder")
    assert any(i == "RUN" and "gcc" in args for i, args in builder)
    assert any(i == "RUN" and "pip wheel" in args for i, args in builder)
    assert not any(i == "RUN" and "gcc" in args for i, args in runtime)
    assert any(i == "COPY" and "--from=builder" in args for i, args in runtime)


def test_runtime_is_a_slim_supported_python() -> None:
    runtime = _stages()[-1]
    image = runtime[0][1]
    assert re.fullmatch(r"python:3\.1[12]-slim(-\w+)?", image), image


def test_runs_as_non_root_with_healthcheck_and_serve_entrypoint() -> None:
    runtime = dict(_stages()[-1])
    assert runtime["USER"] not in ("root", "0")
    assert "/health" in runtime["HEALTHCHECK"]
    assert json.loads(runtime["ENTRYPOINT"])[:2] == ["cds-service", "serve"]
    assert "CDS_RULES_DIR" not in runtime["ENV"]  # the wheel carries the knowledge base
    assert "CDS_DATABASE_URL=sqlite:////app/data/" in runtime["ENV"]  # the non-root user's folder
    assert any(i == "RUN" and "chown cds /app/data" in args for i, args in _stages()[-1])


def test_the_builder_builds_the_wheel_from_what_the_packaging_test_builds_it_from() -> None:
    builder = _stages()[0]
    copied = {name.rstrip("/") for i, args in builder if i == "COPY" for name in args.split()[:-1]}
    assert set(SOURCES) <= copied
    assert any(i == "RUN" and "-c constraints.txt" in args for i, args in builder)
