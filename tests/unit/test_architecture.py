"""The architecture, checked from the source: the layer order, the backend seam, the AWS SDK's confinement, no
``isinstance`` on a concrete backend class, and the 600-line limit (issue 12; ``docs/architecture.md``).

Nothing under ``src/shardwise`` is imported here: every file is parsed with :mod:`ast`, and every import counts —
at module level, inside functions and under ``if TYPE_CHECKING:`` — because a lazy or type-only import that runs
up the layers is still a dependency a reader has to hold in mind. Each violation is one line of the failure
message, naming the file, the line, the import (or call) and the rule it breaks.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PACKAGE = SRC / "shardwise"
ARCHITECTURE_DOC = REPO / "docs" / "architecture.md"

#: The layers, low to high: a module may import its own top-level package or one in a LOWER layer, never one in
#: its own layer or above. ``docs/architecture.md`` prints this table; every top-level module or package under
#: ``src/shardwise`` must be placed in it (a new one is placed on purpose, not by default).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "hashkeys", "metrics", "retry"),  # L0
    ("checkpoint",),  # L1
    ("retrieval", "leases", "state"),  # L2: state/ sits below processor.py, whose inputs carry a StateStore
    ("tables", "processor"),  # L3
    ("lifecycle", "assignment"),  # L4
    ("backends", "worker_metrics"),  # L5: worker_metrics sits below the 3.x assigner (leasing) that reads it
    ("leasing", "leadership"),  # L6
    ("versions",),  # L7
    ("worker",),  # L8
    ("config", "admin"),  # L9
    ("kclpy", "demo"),  # L10
    ("cli",),  # L11: the command line composes the worker, kclpy and the demo
    ("__main__",),  # L12: ``python -m shardwise`` runs the command line
)

#: ``shardwise/__init__.py`` itself: at L0, and it may import what is at L0 (the exceptions it re-exports).
ROOT = "shardwise"
ROOT_LAYER = 0

#: The concrete backends, and the only places outside ``backends/`` that may import them (composition roots).
CONCRETE_BACKENDS = ("shardwise.backends.sqlite", "shardwise.backends.aws")
COMPOSITION_ROOTS = frozenset({"backends", "cli", "demo"})

#: The AWS SDK (and its type stubs) lives behind the one client factory in ``backends/aws``.
AWS_SDK = ("boto3", "botocore")
AWS_SDK_STUB_PREFIX = "mypy_boto3_"
AWS_PACKAGE = "shardwise.backends.aws"

MAX_LINES = 600

RULE_TABLE = (
    "every top-level module or package under src/shardwise is placed in LAYERS (tests/unit/test_architecture.py)"
)
RULE_LAYERS = "layer order: a module imports only its own package or packages in lower layers"
RULE_ROOTS = "outside backends/, only cli/ and demo.py import shardwise.backends.sqlite.* or shardwise.backends.aws.*"
RULE_AWS_SDK = "no boto3 / botocore / mypy_boto3_* import outside src/shardwise/backends/aws/"
RULE_ISINSTANCE = "no isinstance on a concrete backend class outside src/shardwise/backends/ (ask Capabilities)"
RULE_LINES = f"no module under src/ over {MAX_LINES} lines"


def layer_of() -> dict[str, int]:
    """Top-level name → its layer number, from :data:`LAYERS`."""
    return {name: number for number, names in enumerate(LAYERS) for name in names}


# -- the checker (pure: source text in, violations out) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    path: str
    line: int
    what: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what} — breaks: {self.rule}"


@dataclass(frozen=True, slots=True)
class Source:
    """One module: its dotted name, its path as reported, and its text."""

    module: str
    path: str
    text: str

    @property
    def is_package(self) -> bool:
        return self.path.endswith("__init__.py")

    @property
    def top(self) -> str:
        """The top-level package or module it belongs to (``ROOT`` for ``shardwise/__init__.py``)."""
        parts = self.module.split(".")
        return parts[1] if len(parts) > 1 else ROOT

    def tree(self) -> ast.Module:
        return _parse(self.text, self.path)


@functools.cache
def _parse(text: str, path: str) -> ast.Module:
    """Each file is parsed once for all the checks (the trees are only read)."""
    return ast.parse(text, filename=path)


@dataclass(frozen=True, slots=True)
class Import:
    """One imported module, absolute (``from pkg import sub`` names ``pkg.sub`` when ``sub`` is a module)."""

    target: str
    line: int
    statement: str


def top_of(module: str) -> str | None:
    """The top-level name under ``shardwise`` of an absolute module name; ``None`` outside shardwise."""
    parts = module.split(".")
    if parts[0] != ROOT:
        return None
    return parts[1] if len(parts) > 1 else ROOT


def imports_of(source: Source, known_modules: frozenset[str]) -> list[Import]:
    """Every module the source imports, wherever the import stands (function bodies, ``TYPE_CHECKING`` blocks
    included), in line order; a statement naming several modules gives one :class:`Import` per module."""
    found: dict[tuple[int, str], Import] = {}
    for node in ast.walk(source.tree()):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault((node.lineno, alias.name), Import(alias.name, node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(source, node.module, node.level)
            names = ", ".join(alias.name for alias in node.names)
            statement = f"from {'.' * node.level}{node.module or ''} import {names}"
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                target = candidate if candidate in known_modules else base
                found.setdefault((node.lineno, target), Import(target, node.lineno, statement))
    return [found[key] for key in sorted(found)]


def _absolute(source: Source, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    package = source.module.split(".") if source.is_package else source.module.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, module] if module else base)


def check_layers(source: Source, known_modules: frozenset[str], layers: Mapping[str, int]) -> list[Violation]:
    """Imports of a package in the same or a higher layer (rule a)."""
    own = source.top
    own_layer = ROOT_LAYER if own == ROOT else layers.get(own)
    if own_layer is None:
        return []  # not placed: check_table reports it
    found = []
    for imported in imports_of(source, known_modules):
        target = top_of(imported.target)
        if target is None or target == own:
            continue
        target_layer = ROOT_LAYER if target == ROOT else layers.get(target)
        if target_layer is None:
            continue  # not placed: check_table reports it
        allowed = target_layer < own_layer or (own == ROOT and target_layer == ROOT_LAYER)
        if not allowed:
            found.append(
                Violation(
                    source.path,
                    imported.line,
                    f"`{imported.statement}`: {own} (L{own_layer}) imports {target} (L{target_layer})",
                    RULE_LAYERS,
                )
            )
    return found


def check_composition_roots(source: Source, known_modules: frozenset[str]) -> list[Violation]:
    """Imports of a concrete backend outside ``backends/``, ``cli/`` and ``demo.py`` (rule b)."""
    if source.top in COMPOSITION_ROOTS:
        return []
    return [
        Violation(source.path, imported.line, f"`{imported.statement}` imports {imported.target}", RULE_ROOTS)
        for imported in imports_of(source, known_modules)
        if any(imported.target == b or imported.target.startswith(f"{b}.") for b in CONCRETE_BACKENDS)
    ]


def check_aws_sdk(source: Source, known_modules: frozenset[str]) -> list[Violation]:
    """Imports of boto3, botocore or their type stubs outside ``backends/aws`` (rule c)."""
    if source.module == AWS_PACKAGE or source.module.startswith(f"{AWS_PACKAGE}."):
        return []
    found = []
    for imported in imports_of(source, known_modules):
        first = imported.target.split(".")[0]
        if first in AWS_SDK or first.startswith(AWS_SDK_STUB_PREFIX):
            found.append(Violation(source.path, imported.line, f"`{imported.statement}`", RULE_AWS_SDK))
    return found


def concrete_backend_classes(sources: Iterable[Source]) -> frozenset[str]:
    """The names of every class defined in ``backends/sqlite`` and ``backends/aws``."""
    names: set[str] = set()
    for source in sources:
        if any(source.module == b or source.module.startswith(f"{b}.") for b in CONCRETE_BACKENDS):
            names.update(node.name for node in ast.walk(source.tree()) if isinstance(node, ast.ClassDef))
    return frozenset(names)


def check_isinstance(source: Source, concrete: frozenset[str]) -> list[Violation]:
    """``isinstance(x, C)`` (or a tuple of classes) with C a concrete backend class, outside ``backends/`` (rule d).

    A class of the same name that the module defines itself is its own, not the backend's; an alias
    (``import ... as X``) is followed back to the imported name.
    """
    if source.top == "backends":
        return []
    tree = source.tree()
    own = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    aliases = {
        alias.asname: alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname
    }
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance"):
            continue
        if len(node.args) != 2:
            continue
        for name in _class_names(node.args[1]):
            original = aliases.get(name, name)
            if original in concrete and name not in own:
                found.append(
                    Violation(
                        source.path,
                        node.lineno,
                        f"`{ast.unparse(node)}` tests for the concrete backend class {original}",
                        RULE_ISINSTANCE,
                    )
                )
    return sorted(found, key=lambda violation: violation.line)


def _class_names(node: ast.expr) -> Iterator[str]:
    if isinstance(node, ast.Tuple):
        for element in node.elts:
            yield from _class_names(element)
    elif isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr


def check_length(source: Source) -> list[Violation]:
    """A module over :data:`MAX_LINES` lines, counted as ``wc -l`` does (rule e)."""
    lines = source.text.count("\n")
    if lines <= MAX_LINES:
        return []
    return [Violation(source.path, lines, f"{lines} lines", RULE_LINES)]


def check_table(tops: Iterable[str], layers: Mapping[str, int]) -> list[Violation]:
    """Top-level modules missing from :data:`LAYERS`, and names in it that no longer exist."""
    present = set(tops)
    missing = [
        Violation(f"src/shardwise/{top}", 0, f"{top} is not placed in any layer", RULE_TABLE)
        for top in sorted(present - set(layers))
    ]
    stale = [
        Violation("tests/unit/test_architecture.py", 0, f"LAYERS names {top}, which does not exist", RULE_TABLE)
        for top in sorted(set(layers) - present)
    ]
    return missing + stale


# -- the tree under src/ ----------------------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def load_sources() -> list[Source]:
    return [
        Source(_module_name(path), str(path.relative_to(REPO)), path.read_text(encoding="utf-8"))
        for path in sorted(SRC.rglob("*.py"))
    ]


def top_level_names() -> list[str]:
    """Every top-level module (``errors.py``) and package (``leasing/``) under ``src/shardwise``."""
    names = []
    for entry in sorted(PACKAGE.iterdir()):
        if entry.is_dir() and any(entry.rglob("*.py")):
            names.append(entry.name)
        elif entry.suffix == ".py" and entry.name != "__init__.py":
            names.append(entry.stem)
    return names


SOURCES = load_sources()
KNOWN_MODULES = frozenset(source.module for source in SOURCES)
SHARDWISE_SOURCES = [source for source in SOURCES if top_of(source.module) is not None]


def _fail_on(violations: list[Violation]) -> None:
    """Fail with one line per violation (and no traceback: the lines say where to look)."""
    if violations:
        pytest.fail(f"{len(violations)} violation(s):\n" + "\n".join(str(v) for v in violations), pytrace=False)


# -- the checks on the source --------------------------------------------------------------------------------------


def test_every_top_level_module_is_placed_in_a_layer() -> None:
    violations = check_table(top_level_names(), layer_of())
    _fail_on(violations)


def test_imports_follow_the_layer_order() -> None:
    layers = layer_of()
    violations = [v for source in SHARDWISE_SOURCES for v in check_layers(source, KNOWN_MODULES, layers)]
    _fail_on(violations)


def test_only_composition_roots_import_concrete_backends() -> None:
    violations = [v for source in SHARDWISE_SOURCES for v in check_composition_roots(source, KNOWN_MODULES)]
    _fail_on(violations)


def test_the_aws_sdk_is_imported_only_in_backends_aws() -> None:
    violations = [v for source in SHARDWISE_SOURCES for v in check_aws_sdk(source, KNOWN_MODULES)]
    _fail_on(violations)


def test_no_isinstance_on_a_concrete_backend_class() -> None:
    concrete = concrete_backend_classes(SHARDWISE_SOURCES)
    assert {"SQLiteLeaseStore", "DynamoDBLeaseStore"} <= concrete, sorted(concrete)  # the parse found the backends
    violations = [v for source in SHARDWISE_SOURCES for v in check_isinstance(source, concrete)]
    _fail_on(violations)


def test_no_module_is_over_600_lines() -> None:
    violations = [v for source in SOURCES for v in check_length(source)]
    _fail_on(violations)


def test_the_layer_table_is_the_one_docs_architecture_prints() -> None:
    """``docs/architecture.md`` has one row per top-level package: ``| L<n> | `name` | ... |``."""
    rows = re.findall(r"^\|\s*L(\d+)\s*\|\s*`([^`]+)`", ARCHITECTURE_DOC.read_text(encoding="utf-8"), re.MULTILINE)
    printed = {name.removesuffix(".py").removesuffix("/"): int(number) for number, name in rows}
    assert printed == layer_of()


# -- the checker catches what it should (so the checks above cannot pass vacuously) -----------------------------

KNOWN = frozenset({"shardwise", "shardwise.errors", "shardwise.worker", "shardwise.worker.worker"})


def _source(module: str, text: str, *, package: bool = False) -> Source:
    path = "src/" + module.replace(".", "/") + ("/__init__.py" if package else ".py")
    return Source(module, path, text)


def test_checker_reports_an_import_up_the_layers_wherever_it_stands() -> None:
    text = (
        "from typing import TYPE_CHECKING\n"
        "import shardwise.worker.worker\n"
        "if TYPE_CHECKING:\n"
        "    from shardwise.worker import Worker\n"
        "def late() -> None:\n"
        "    from shardwise import worker\n"
    )
    violations = check_layers(_source("shardwise.leases.store", text), KNOWN, layer_of())
    assert [(v.line, v.rule) for v in violations] == [(2, RULE_LAYERS), (4, RULE_LAYERS), (6, RULE_LAYERS)]
    assert str(violations[0]) == (
        "src/shardwise/leases/store.py:2: `import shardwise.worker.worker`: leases (L2) imports worker (L8)"
        f" — breaks: {RULE_LAYERS}"
    )


def test_checker_reports_an_import_within_the_same_layer_and_a_relative_one() -> None:
    same_layer = check_layers(_source("shardwise.leasing.taker", "import shardwise.leadership\n"), KNOWN, layer_of())
    assert [v.what for v in same_layer] == ["`import shardwise.leadership`: leasing (L6) imports leadership (L6)"]
    relative = check_layers(_source("shardwise.leases.store", "from ..worker import Worker\n"), KNOWN, layer_of())
    assert [v.what for v in relative] == ["`from ..worker import Worker`: leases (L2) imports worker (L8)"]


def test_checker_allows_own_package_lower_layers_and_the_root_at_l0() -> None:
    text = "from shardwise.errors import ShardwiseError\nfrom shardwise.worker import worker\nfrom . import helpers\n"
    assert check_layers(_source("shardwise.worker.core", text), KNOWN, layer_of()) == []
    root = _source("shardwise", "from shardwise.errors import ShardwiseError\n", package=True)
    assert check_layers(root, KNOWN, layer_of()) == []
    assert len(check_layers(_source("shardwise", "import shardwise.cli\n", package=True), KNOWN, layer_of())) == 1


def test_checker_reports_a_concrete_backend_import_outside_the_composition_roots() -> None:
    text = "from shardwise.backends.sqlite.leases import SQLiteLeaseStore\nfrom shardwise.backends import aws\n"
    known = KNOWN | {"shardwise.backends", "shardwise.backends.aws"}
    violations = check_composition_roots(_source("shardwise.admin.migrate", text), known)
    assert [(v.line, v.rule) for v in violations] == [(1, RULE_ROOTS), (2, RULE_ROOTS)]
    assert check_composition_roots(_source("shardwise.cli.run", text), known) == []
    assert check_composition_roots(_source("shardwise.demo", text), known) == []


def test_checker_reports_the_aws_sdk_outside_backends_aws() -> None:
    text = (
        "import boto3\n"
        "def f() -> None:\n"
        "    from botocore.exceptions import ClientError\n"
        "from mypy_boto3_dynamodb.client import DynamoDBClient\n"
    )
    violations = check_aws_sdk(_source("shardwise.admin.migrate", text), KNOWN)
    assert [(v.line, v.rule) for v in violations] == [(1, RULE_AWS_SDK), (3, RULE_AWS_SDK), (4, RULE_AWS_SDK)]
    assert check_aws_sdk(_source("shardwise.backends.aws.client", text), KNOWN) == []


def test_checker_reports_isinstance_on_a_concrete_backend_class() -> None:
    backend = _source("shardwise.backends.sqlite.leases", "class SQLiteLeaseStore:\n    pass\n")
    concrete = concrete_backend_classes([backend])
    assert concrete == {"SQLiteLeaseStore"}
    text = (
        "from shardwise.backends.sqlite.leases import SQLiteLeaseStore as Local\n"
        "from shardwise.backends.sqlite import leases\n"
        "def f(store: object) -> bool:\n"
        "    return isinstance(store, (int, Local)) or isinstance(store, leases.SQLiteLeaseStore)\n"
    )
    violations = check_isinstance(_source("shardwise.worker.worker", text), concrete)
    assert [(v.line, v.rule) for v in violations] == [(4, RULE_ISINSTANCE), (4, RULE_ISINSTANCE)]
    assert "SQLiteLeaseStore" in violations[0].what
    assert check_isinstance(_source("shardwise.backends.port", text), concrete) == []
    own = "class SQLiteLeaseStore:\n    pass\nisinstance(1, SQLiteLeaseStore)\n"
    assert check_isinstance(_source("shardwise.worker.fake", own), concrete) == []


def test_checker_reports_a_long_module_and_a_package_missing_from_the_table() -> None:
    assert check_length(_source("shardwise.worker.worker", "x = 1\n" * MAX_LINES)) == []
    [long] = check_length(_source("shardwise.worker.worker", "x = 1\n" * (MAX_LINES + 1)))
    assert (long.line, long.rule) == (MAX_LINES + 1, RULE_LINES)
    violations = check_table([*layer_of(), "newpackage"], layer_of())
    assert [v.what for v in violations] == ["newpackage is not placed in any layer"]
    assert [v.what for v in check_table(["errors"], {"errors": 0, "gone": 1})] == [
        "LAYERS names gone, which does not exist"
    ]
