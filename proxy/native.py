"""The telemetry worker's modules compiled to C with mypyc, used only while they match
their sources.

The worker turns each request's record into spans, metrics and log lines: pure
Python doing many small dict, bytes and attribute operations. Compiled by mypyc
from the same typed sources it costs about a quarter less CPU in place
(bench/README.md, twelfth session; the event loop's modules, compiled too, got no
faster, so they are not). The sources stay the truth: the compiled modules sit in
`proxy/_native/` (git-ignored) beside a fingerprint of the sources they were built
from and the versions of the distributions whose types they were checked against,
and `instrumentation` puts that directory first on its `__path__` only while the
fingerprint matches. An edited source, an upgraded dependency, a missing build, a
machine without a C compiler or `SPANGATE_PURE=1` all mean the pure modules (the
start-up line says which, as `native`), never stale ones.

`python -m proxy.native build [--required]` compiles (a no-op when up to date);
`make run`, `make test` and the bench run it. Pure, never compiled itself: it decides.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

#: Compiled, from the project root. A module here may not define classes with class
#: keywords (msgspec's `frozen=True`: mypyc drops them) nor decode into msgspec Structs
#: it defines (mypyc rewrites their annotations), nor subclass a class that has
#: `__slots__` of its own; tests/test_native.py checks the first. Nor may it loop over
#: client-sized data (content.py truncates a request's messages): compiled code never
#: gives up the GIL at the switch interval, only when it calls Python code, so such a
#: loop would hold the event loop for as long as it runs (histograms.py, whose
#: record_many walks a stream's chunk gaps, stays pure for that reason: compiled, it was
#: no faster and held the GIL ten times as long).
MODULES = (
    "instrumentation/counters.py",
    "instrumentation/export.py",
    "instrumentation/logbridge.py",
    "instrumentation/logexport.py",
    "instrumentation/logging.py",
    "instrumentation/otlpwire.py",
    "instrumentation/processor.py",
    "instrumentation/semconv.py",
    "instrumentation/spans.py",
    "instrumentation/worker.py",
)
ROOT = Path(__file__).resolve().parent.parent
#: Where the build goes: `<package path>/...so` and the modules' shared library.
OUT = Path(__file__).resolve().parent / "_native"
FINGERPRINT = "sources.sha256"
PURE = "SPANGATE_PURE"

_SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify
out, temp, *modules = sys.argv[1:]
setup(
    name="spangate-native",
    ext_modules=mypycify(modules, target_dir=temp + "/c"),
    script_args=["build_ext", "--build-lib", out, "--build-temp", temp],
)
"""


#: Top-level packages of the project: their modules' types are compiled into MODULES.
_PROJECT = ("instrumentation", "proxy")


def _imports(root: Path, module: str) -> list[str]:
    """The absolute names `module` imports (`from a.b import c`: both a.b and a.b.c)."""
    names = []
    for node in ast.walk(ast.parse((root / module).read_bytes(), module)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return names


def sources(root: Path = ROOT) -> list[str]:
    """MODULES and every project module they import, transitively (TYPE_CHECKING imports
    too: mypy reads them all). A compiled module checks at run time the types mypy gave
    what it reads from those (a RequestRecord's attribute typed `float` is converted to
    one, a value of another type raises TypeError): a build is only as current as they are."""
    found: dict[str, None] = {}
    todo = list(MODULES)
    while todo:
        module = todo.pop()
        if module in found:
            continue
        found[module] = None
        for name in _imports(root, module):
            parts = name.split(".")
            if parts[0] not in _PROJECT:
                continue
            for end in range(1, len(parts) + 1):  # each package on the way, its __init__
                stem = "/".join(parts[:end])
                for candidate in (f"{stem}.py", f"{stem}/__init__.py"):
                    if (root / candidate).is_file():
                        todo.append(candidate)
    return sorted(found)


def dependencies(root: Path, modules: list[str]) -> list[str]:
    """The distributions a build's types come from: mypy (mypyc, and typeshed for the
    standard library), and those holding what `modules` import from outside the project,
    with their stub packages (types-PyYAML for yaml). Compiled code checks at run time
    the types those declare (an SDK attribute typed `str` that a new release makes
    `str | None` raises TypeError), as it does the project modules' (`sources`)."""
    from importlib import metadata

    owners = metadata.packages_distributions()
    files: dict[str, set[str]] = {}

    def holds(distribution: str, path: str) -> bool:
        if distribution not in files:
            files[distribution] = {str(f) for f in metadata.files(distribution) or ()}
        wanted = (f"{path}.py", f"{path}.pyi", f"{path}/__init__.py", f"{path}/__init__.pyi")
        return not files[distribution].isdisjoint(wanted)

    found = {"mypy"}
    for name in {name for module in modules for name in _imports(root, module)}:
        top, _, rest = name.partition(".")
        if top in _PROJECT:
            continue
        for package in (top, f"{top}-stubs"):
            candidates = owners.get(package, [])
            if len(candidates) > 1:  # a namespace package (opentelemetry): who holds it
                path = "/".join([package, *rest.split(".")]) if rest else package
                candidates = [d for d in candidates if holds(d, path)]
            found.update(candidates)
    return sorted(found)


def installed(distributions: Iterable[str]) -> dict[str, str]:
    """The installed version of each of `distributions` that is installed.

    Every process runs this at start-up (bench/README.md, twelfth session: ~5 ms in all,
    0.5 ms before), so importlib.metadata is imported only here (~3 ms), and the version
    is read from the head of the METADATA file: `metadata.version` parses all of it as an
    email message, long description included (~0.8 ms more for eight)."""
    from importlib import metadata

    versions = {}
    for name in distributions:
        try:
            found = metadata.Distribution.from_name(name)
        except metadata.PackageNotFoundError:
            continue
        head = (found.read_text("METADATA") or "").partition("\n\n")[0].splitlines()
        version = next((f[8:].strip() for f in head if f[:8].lower() == "version:"), "")
        versions[name] = version or found.version  # no such field: the parse decides
    return versions


def fingerprint(root: Path, modules: list[str], versions: Mapping[str, str]) -> str:
    """What a build is valid for: `modules` (the compiled sources and the project modules
    they import: `sources`), the distributions' `versions` (`dependencies`) and the
    Python running them."""
    digest = hashlib.sha256(sys.version.encode())
    for name, version in sorted(versions.items()):
        digest.update(f"{name}=={version}\0".encode())
    digest.update(b"\0")
    for module in modules:
        digest.update(module.encode() + b"\0")
        digest.update((root / module).read_bytes())
    return digest.hexdigest()


def record(root: Path = ROOT, versions: Mapping[str, str] | None = None) -> str:
    """The FINGERPRINT file: the digest, the files it covers, then the distributions'
    versions as `name==version` (`versions`: those installed now). Start-up hashes those
    files and looks up those versions instead of parsing every source again to find them
    (~50 ms a process, ~100 ms more for the distributions): a new import can only come
    from an edit to one of the files, which changes the digest."""
    modules = sources(root)
    if versions is None:
        versions = installed(dependencies(root, modules))
    pins = [f"{name}=={version}" for name, version in sorted(versions.items())]
    return "\n".join([fingerprint(root, modules, versions), *modules, *pins]) + "\n"


def unusable(root: Path = ROOT, out: Path = OUT, env: Mapping[str, str] = os.environ) -> str | None:
    """Why the compiled modules may not be used, or None when they may."""
    if env.get(PURE):
        return f"{PURE} is set"
    try:
        built_for, *entries = (out / FINGERPRINT).read_text().split()
    except (OSError, ValueError):  # ValueError: an empty file
        return "not built (make native)"
    modules = [entry for entry in entries if "==" not in entry]
    built_with = dict(entry.split("==", 1) for entry in entries if "==" in entry)
    try:
        current = fingerprint(root, modules, built_with)
    except (OSError, SyntaxError, ValueError):  # ValueError: a null byte in a source
        return "sources missing or unreadable"
    if built_for != current:
        return "built from other sources (make native)"
    # A distribution not installed now is a build-time one (mypy, a stub package) where
    # only the build is copied (deploy/Dockerfile): nothing here can differ from it.
    for name, version in sorted(installed(built_with).items()):
        if version != built_with[name]:
            return f"built with {name} {built_with[name]}, now {version} (make native)"
    return None


@functools.cache
def why_not() -> str | None:
    """`unusable()` for this process, decided once: every package sees the same answer."""
    return unusable()


def describe() -> str:
    """For the start-up line: "compiled", or "pure (why)"."""
    reason = why_not()
    return "compiled" if reason is None else f"pure ({reason})"


def package_path(name: str, path: list[str]) -> list[str]:
    """A package's `__path__` with its compiled modules first, when they may be used."""
    if why_not() is not None:
        return path
    if str(OUT) not in sys.path:
        # The modules' shared library is imported by its top-level name. Appended: nothing
        # in the build directory can shadow an installed package.
        sys.path.append(str(OUT))
    return [str(OUT.joinpath(*name.split("."))), *path]


def build(required: bool = False) -> int:
    """Compile MODULES into OUT unless it is up to date: 0 when the compiled modules can be
    used, or when they cannot and `required` is false (the pure ones run)."""
    if unusable(env={}) is None:
        print("spangate native: up to date")
        return 0
    built_for = record()  # before compiling: an edit during the build stays stale
    # Built beside OUT and swapped in whole, fingerprint included: a running spangate
    # or a second build (make run beside make test) never sees half a build.
    fresh = OUT.with_name(f"{OUT.name}.build-{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="spangate-native-") as temp:
        done = subprocess.run(
            [sys.executable, "-c", _SETUP, str(fresh), temp, *MODULES],
            cwd=ROOT,
            # Its own type cache, outside ROOT. ROOT must be a source tree with
            # pyproject.toml (deploy/Dockerfile builds in one): run in site-packages, mypy
            # takes the installed packages for the project's own and refuses them.
            env={**os.environ, "MYPY_CACHE_DIR": os.path.join(temp, "mypy")},
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        shutil.rmtree(fresh, ignore_errors=True)
        print(done.stdout[-4000:] + done.stderr[-4000:], file=sys.stderr)
        print("spangate native: not compiled; the pure modules run", file=sys.stderr)
        return 1 if required else 0
    (fresh / FINGERPRINT).write_text(built_for)
    _swap_in(fresh)
    print(f"spangate native: compiled {len(MODULES)} modules into {OUT}")
    return 0


def _swap_in(fresh: Path) -> None:
    """OUT becomes `fresh` by renames (a module no longer listed does not linger)."""
    old = OUT.with_name(f"{OUT.name}.old-{os.getpid()}")
    if OUT.exists():
        OUT.rename(old)
    fresh.rename(OUT)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] != ["build"] or not set(argv[1:]) <= {"--required"}:
        print("usage: python -m proxy.native build [--required]", file=sys.stderr)
        return 2
    return build(required="--required" in argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
