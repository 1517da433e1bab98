"""deploy/Dockerfile read as docker builds it (docker itself is not run here): the
compiled modules (proxy/native.py) must be copied from where the build stage puts
them, and every spangate process of the image must import the installed package."""

from __future__ import annotations

import posixpath
import shlex
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parent.parent / "deploy" / "Dockerfile"
SITE = "/usr/local/lib/python3.11/site-packages"


class Stage:
    def __init__(self, name: str) -> None:
        self.name = name
        self.workdir = "/"
        #: RUN commands, each with the working directory it ran in.
        self.runs: list[tuple[str, str]] = []
        #: COPY destinations (absolute) and, for `--from`, (stage, source).
        self.copies: list[tuple[str, tuple[str, str] | None]] = []


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _stages() -> list[Stage]:
    stages: list[Stage] = []
    for keyword, rest in _instructions():
        if keyword == "FROM":
            words = rest.split()
            stages.append(Stage(words[2] if len(words) > 2 else str(len(stages))))
            continue
        stage = stages[-1]
        if keyword == "WORKDIR":
            stage.workdir = posixpath.join(stage.workdir, rest)
        elif keyword == "RUN":
            stage.runs.append((stage.workdir, rest))
        elif keyword == "COPY":
            words = shlex.split(rest)
            origin = None
            if words[0].startswith("--from="):
                origin = (words[0].removeprefix("--from="), words[1])
                words = words[1:]
            for source in words[:-1]:
                target = posixpath.join(stage.workdir, words[-1])
                if words[-1].endswith("/") or len(words) > 2:
                    target = posixpath.join(target, posixpath.basename(source))
                stage.copies.append((posixpath.normpath(target), origin))
    return stages


def test_the_compiled_modules_are_copied_from_where_the_build_stage_puts_them() -> None:
    """`python -m proxy.native build` imports proxy from its working directory (sys.path[0]
    for `-m`), so it builds into <workdir>/proxy/_native, not into site-packages."""
    stages = {stage.name: stage for stage in _stages()}
    final = _stages()[-1]
    (copied,) = [origin for _, origin in final.copies if origin is not None]
    builder = stages[copied[0]]
    (workdir,) = [cwd for cwd, command in builder.runs if "-m proxy.native build" in command]
    assert posixpath.normpath(copied[1]) == posixpath.join(workdir, "proxy", "_native")
    assert (f"{SITE}/proxy/_native", copied) in final.copies


def test_the_final_working_directory_holds_no_copy_of_the_sources() -> None:
    """The --workers and the telemetry process are `python -m ...` children: they import
    from the working directory first, and a copy of the sources there, without the compiled
    modules beside it, made them run the pure modules while the ready line said compiled."""
    final = _stages()[-1]
    for target, origin in final.copies:
        if origin is None:
            assert posixpath.dirname(target) != final.workdir, target
            for package in ("proxy", "instrumentation"):
                assert target != posixpath.join(final.workdir, package), target
