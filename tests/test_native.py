"""The compiled modules (proxy/native.py): used only while they match their sources, and
the suite exercises them when they are built."""

from __future__ import annotations

import ast
import importlib
import os
import shutil
from importlib import metadata
from pathlib import Path

import pytest

from proxy import native

ROOT = Path(native.__file__).resolve().parent.parent


def _copy_sources(to: Path) -> None:
    """The project's Python sources (not its build), as they are laid out."""
    for package in ("instrumentation", "proxy"):
        for source in (ROOT / package).rglob("*.py"):
            module = source.relative_to(ROOT)
            if module.parts[:2] == ("proxy", "_native"):
                continue
            (to / module).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, to / module)


def _built(root: Path) -> Path:
    """The sources copied into `root`, and a build directory whose fingerprint matches
    them (no compiled modules in it: `unusable` reads only the fingerprint)."""
    _copy_sources(root)
    out = root / "out"
    out.mkdir()
    (out / native.FINGERPRINT).write_text(native.record(root))
    return out


def test_compiled_modules_define_no_structs_and_no_class_keywords() -> None:
    """mypyc drops a class's keywords (msgspec's frozen=True, gc=False) and rewrites the
    annotations msgspec reads its fields from: no compiled module may define either."""
    offenders = []
    for module in native.MODULES:
        tree = ast.parse((ROOT / module).read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [ast.unparse(base) for base in node.bases]
            if node.keywords or any("Struct" in base for base in bases):
                offenders.append(f"{module}: class {node.name}")
    assert offenders == []


def test_every_listed_module_exists_and_is_a_source_file() -> None:
    """A module listed but gone would make every fingerprint fail: the pure modules for ever."""
    assert all((ROOT / module).is_file() for module in native.MODULES)
    assert "proxy/native.py" not in native.MODULES  # it decides; it is never compiled


def test_a_build_matching_its_sources_is_used(tmp_path: Path) -> None:
    out = _built(tmp_path)
    assert native.unusable(tmp_path, out, env={}) is None


def test_an_edited_source_makes_the_build_unusable(tmp_path: Path) -> None:
    """A compiled module shadows its source: once the source changes, the pure one runs."""
    out = _built(tmp_path)
    edited = tmp_path / native.MODULES[0]
    edited.write_text(edited.read_text() + "\n# edited\n")
    assert native.unusable(tmp_path, out, env={}) == "built from other sources (make native)"


def test_an_edited_module_that_a_compiled_one_imports_makes_the_build_unusable(
    tmp_path: Path,
) -> None:
    """Compiled code checks and converts, at run time, the types mypy gave what it reads
    from modules it imports: the processor reads AttemptRecord.backoff_s as a `float`
    (an int becomes 1.0, a None raises TypeError). A build made before records.py changed
    those types must not run with them."""
    out = _built(tmp_path)
    records = tmp_path / "instrumentation" / "records.py"
    records.write_text(
        records.read_text().replace("self.backoff_s = 0.0", "self.backoff_s: float | None = None")
    )
    assert native.unusable(tmp_path, out, env={}) == "built from other sources (make native)"


def test_the_fingerprint_covers_the_project_modules_the_compiled_ones_import() -> None:
    covered = native.sources()
    assert set(native.MODULES) <= set(covered)
    # Directly (processor, spans, worker) and through a package's __init__ (extract).
    for module in ("records", "extract/base", "extract/openai_common", "metrics", "encoded"):
        assert f"instrumentation/{module}.py" in covered
    assert "proxy/config.py" not in covered  # what none of them imports does not count


def test_no_build_and_spangate_pure_each_mean_the_pure_modules(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    out = tmp_path / "out"
    assert native.unusable(tmp_path, out, env={}) == "not built (make native)"
    out.mkdir()
    (out / native.FINGERPRINT).write_text(native.record(tmp_path))
    assert native.unusable(tmp_path, out, env={native.PURE: "1"}) == "SPANGATE_PURE is set"


def test_the_suite_runs_the_compiled_modules_when_they_are_built() -> None:
    """`make test` builds them (and says SPANGATE_NATIVE=required): every listed module
    is then the compiled one, so the suite checks what `make run` serves."""
    reason = native.why_not()
    if reason is not None:
        if os.environ.get("SPANGATE_NATIVE") == "required":
            pytest.fail(f"compiled modules required, but {reason}")
        pytest.skip(f"compiled modules not in use: {reason}")
    for module in native.MODULES:
        name = module.removesuffix(".py").replace("/", ".")
        loaded = importlib.import_module(name).__file__ or ""
        assert loaded.startswith(str(native.OUT)) and not loaded.endswith(".py"), name


def test_what_walks_client_sized_data_stays_pure() -> None:
    """Compiled code gives up the GIL only when it calls into Python code or a blocking
    call, never at the switch interval: a compiled `_shrink` walked a client's 10,000
    messages ~16 times in one hold of the GIL (20,000 messages: 0.63 s during which the
    event loop could not run, against 35 ms at most pure; measured by helper 39, see
    bench/README.md), and a compiled `record_many` held it ten times as long as pure over a
    long stream's chunk gaps. So content.py and histograms.py are not compiled, and run
    from their sources even when the others are built. (Checked by the list and the
    loaded file, not by timing threads: no test asserts on wall-clock time.)"""
    from instrumentation import content, histograms

    for module in (content, histograms):
        source = module.__name__.replace(".", "/") + ".py"
        assert source not in native.MODULES
        assert (module.__file__ or "").endswith(source)


def test_a_new_build_replaces_the_old_one_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build is made beside the live one and swapped in by renames: a module compiled
    before and no longer listed does not linger, and nothing is left beside it."""
    out = tmp_path / "_native"
    (out / "instrumentation").mkdir(parents=True)
    (out / "instrumentation" / "dropped.so").write_text("old")
    fresh = tmp_path / "_native.build-1"
    (fresh / "instrumentation").mkdir(parents=True)
    (fresh / "instrumentation" / "kept.so").write_text("new")
    (fresh / native.FINGERPRINT).write_text("f\n")
    monkeypatch.setattr(native, "OUT", out)
    native._swap_in(fresh)
    assert sorted(p.name for p in (out / "instrumentation").iterdir()) == ["kept.so"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_native"]


def test_the_build_records_the_files_its_fingerprint_covers(tmp_path: Path) -> None:
    """Start-up hashes the files a build recorded rather than parsing every source again to
    find them (~50 ms a process): the record names the compiled modules and what they
    import."""
    out = _built(tmp_path)
    recorded = (out / native.FINGERPRINT).read_text().split()[1:]
    files = [entry for entry in recorded if "==" not in entry]
    assert files == native.sources(tmp_path)
    assert "instrumentation/records.py" in files


def _pins(out: Path) -> dict[str, str]:
    entries = (out / native.FINGERPRINT).read_text().split()[1:]
    return dict(entry.split("==", 1) for entry in entries if "==" in entry)


def test_the_build_records_the_versions_of_the_distributions_its_types_come_from(
    tmp_path: Path,
) -> None:
    """Compiled code checks at run time the types mypy read from the libraries it imports
    (and mypyc's own code generation): a build is only as current as their versions. The
    record pins mypy and the distributions holding what the covered sources import, found
    from those imports: in the opentelemetry namespace only the ones holding the modules
    imported, and nothing the compiled code does not import (aiohttp)."""
    pins = _pins(_built(tmp_path))
    typed = {"mypy", "msgspec", "multidict", "structlog", "opentelemetry-api"}
    assert typed | {"opentelemetry-sdk", "PyYAML"} <= set(pins)
    assert not {"aiohttp", "opentelemetry-proto", "opentelemetry-exporter-otlp"} & set(pins)
    assert pins == {name: metadata.version(name) for name in pins}


def test_a_changed_dependency_makes_the_build_unusable_and_says_which(tmp_path: Path) -> None:
    """As if built before msgspec was upgraded: same sources, another version recorded."""
    _copy_sources(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    now = native.installed(["msgspec", "structlog"])
    (out / native.FINGERPRINT).write_text(native.record(tmp_path, {**now, "msgspec": "0.0.1"}))
    assert native.unusable(tmp_path, out, env={}) == (
        f"built with msgspec 0.0.1, now {now['msgspec']} (make native)"
    )
    (out / native.FINGERPRINT).write_text(native.record(tmp_path, now))
    assert native.unusable(tmp_path, out, env={}) is None


def test_a_build_time_distribution_missing_at_run_time_does_not_count(tmp_path: Path) -> None:
    """deploy/Dockerfile copies only the build into an image without mypy or stub packages:
    what is not installed cannot differ from what the build was checked against."""
    _copy_sources(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    pins = {"no-such-distribution": "1.0", **native.installed(["msgspec"])}
    (out / native.FINGERPRINT).write_text(native.record(tmp_path, pins))
    assert native.unusable(tmp_path, out, env={}) is None
