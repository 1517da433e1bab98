"""pyproject.toml's runtime dependencies against what spangate's code imports: a module
that comes only through another package's own requirements can vanish with that
package's next release (README, "Dependencies")."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("proxy", "instrumentation")
#: Declared meta-packages: they ship no code, only their requirements, which therefore
#: count as declared. opentelemetry-exporter-otlp is the brief's name for the OTLP
#: exporters, its -proto-grpc and -proto-http parts.
META_PACKAGES = ("opentelemetry-exporter-otlp",)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return _normalized(match.group(0))


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {_requirement_name(r) for r in project["dependencies"]}
    for meta in META_PACKAGES:
        # The meta-package's parts, not its optional extras.
        parts = [r for r in metadata.requires(meta) or () if "extra ==" not in r]
        names |= {_requirement_name(r) for r in parts}
    return names


def _is_import_error_guard(node: ast.Try) -> bool:
    names = {"ImportError", "ModuleNotFoundError"}
    for handler in node.handlers:
        caught = handler.type
        kinds = caught.elts if isinstance(caught, ast.Tuple) else [caught]
        if any(isinstance(k, ast.Name) and k.id in names for k in kinds):
            return True
    return False


def _required_imports(tree: ast.AST, optional: bool = False) -> Iterator[tuple[str, str | None]]:
    """(module, imported name) of every import the module cannot do without: not under
    `if TYPE_CHECKING` and not in a `try` that handles ImportError (an optional module,
    uvloop, or an SDK seam with a fallback)."""
    for node in ast.iter_child_nodes(tree):
        guarded = optional
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _required_imports(ast.Module(node.orelse, []), optional)
            continue
        if isinstance(node, ast.Try) and _is_import_error_guard(node):
            guarded = True
        if isinstance(node, ast.Import) and not guarded:
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not guarded and node.level == 0:
            assert node.module is not None
            yield from ((node.module, alias.name) for alias in node.names)
        else:
            yield from _required_imports(node, guarded)


@cache
def _owners() -> dict[Path, str]:
    """Installed file → the distribution that installed it."""
    owners: dict[Path, str] = {}
    for dist in metadata.distributions():
        for file in dist.files or ():
            if file.suffix == ".py":
                owners[Path(str(dist.locate_file(file))).resolve()] = _normalized(
                    dist.metadata["Name"]
                )
    return owners


def _distribution(module: str, name: str | None) -> str | None:
    """The distribution that provides `from module import name` (or `import module`),
    None for the standard library and spangate's own packages."""
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top in SOURCES or top == "__future__":
        return None
    for candidate in ([f"{module}.{name}"] if name else []) + [module]:
        try:
            spec = importlib.util.find_spec(candidate)
        except ModuleNotFoundError:
            continue
        if spec is not None and spec.origin and spec.origin not in ("namespace", "built-in"):
            return _owners().get(Path(spec.origin).resolve(), f"<unowned {candidate}>")
    return f"<not installed {module}>"


def imported_distributions() -> dict[str, set[str]]:
    """Distribution → the source files that import from it."""
    found: dict[str, set[str]] = {}
    for package in SOURCES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for module, name in _required_imports(tree):
                dist = _distribution(module, name)
                if dist is not None:
                    found.setdefault(dist, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_package_spangate_imports_is_a_declared_dependency() -> None:
    """opentelemetry.proto (instrumentation/otlpgrpc.py's request classes) came only
    through the exporters' pins until it was declared; any such module is named here."""
    undeclared = {
        dist: sorted(files)
        for dist, files in imported_distributions().items()
        if dist not in declared()
    }
    assert undeclared == {}


def test_the_check_sees_the_imports_it_guards() -> None:
    """The check above finds imports at all (the OTLP proto classes among them), so an
    empty result means declared, not unread."""
    found = imported_distributions()
    assert "opentelemetry-proto" in found
    assert "instrumentation/otlpgrpc.py" in found["opentelemetry-proto"]
    assert "msgspec" in found
