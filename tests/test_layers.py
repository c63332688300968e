"""The import rules of the layout (core / app / store / adapters), checked statically.

Every module of ``src/cronwatch`` is parsed with ``ast``; every import counts, wherever it
is written: at the top, inside a function (the lazy imports of the wrapper path) or under
``TYPE_CHECKING`` (a type-only edge still ties the modules together for mypy and for the
reader). Relative imports are resolved against the importing module's package.

The checker is a handful of plain functions over a source tree, so each rule is also
tested on a small package written to ``tmp_path`` with a deliberate violation: a rule that
cannot fail guards nothing.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Third-party libraries the domain may use: schedule parsing. Anything else (a web
# framework, a database driver) belongs to an adapter.
CORE_THIRD_PARTY = {"cronsim", "oncalendar"}

# Modules every layer may import: leaves that import nothing (test_leaves_are_leaves).
LEAVES = {"cronwatch._version"}  # the version string, shown on the dashboard page

# What each layer may import of cronwatch, itself and LEAVES included.
LAYERS = {
    "cronwatch.core": {"cronwatch.core", *LEAVES},
    # cronwatch.system: where files live on this machine (the default database, the config
    # file), read from the environment; os and sys only. The core does no such I/O.
    "cronwatch.app": {
        "cronwatch.core",
        "cronwatch.store",
        "cronwatch.app",
        "cronwatch.system",
        *LEAVES,
    },
    "cronwatch.store": {"cronwatch.core", "cronwatch.store", "cronwatch.system", *LEAVES},
}

# (where, what) -> why: the only places a layer imports beyond LAYERS. ``where`` is a
# module or ``module:function``; keep them as narrow as that.
LAYER_EXCEPTIONS = {
    ("cronwatch.core.settings:_item", "cronwatch.notify"):
        "a channel URL is valid when the channel that would deliver it accepts it, and only "
        "the notify registry knows its schemes (Apprise's URLs only Apprise, when installed, "
        "can judge): the one settings schema asks it lazily, so that job set, the TOML file, "
        "the API and the SDK refuse the same URLs",
    ("cronwatch.app.evaluate:deliver_outbox", "cronwatch.notify"):
        "delivering the outbox is a use case (the wrapper's post-run step and `cronwatch "
        "check` call it) and it sends through the channels; the import is lazy, so a job without "
        "channels does not pay for it",
}  # fmt: skip

DB_DRIVERS = {"sqlite3", "_sqlite3", "psycopg"}
# Modules outside cronwatch.store that import a database driver today. This list may only
# shrink (an entry that no longer imports one fails the test too, so it is removed): the
# server's ingest and ping processes are moving behind the Store interface (issue 10).
DB_DRIVER_OFFENDERS = {
    "cronwatch.wrapper.record",
}


@dataclass(frozen=True)
class Import:
    """One imported name: ``module`` is the absolute module it comes from (the submodule
    itself when the name is one), ``name`` the name taken from it (None for ``import m``),
    ``scope`` the function or class it is written in ("" at module level)."""

    importer: str
    module: str
    name: str | None
    line: int
    scope: str = ""
    type_only: bool = False  # under ``if TYPE_CHECKING:``

    @property
    def where(self) -> str:
        return f"{self.importer}:{self.scope}" if self.scope else self.importer

    def __str__(self) -> str:
        what = f"{self.name} from {self.module}" if self.name else self.module
        how = " (type only)" if self.type_only else f" (in {self.scope})" if self.scope else ""
        return f"{self.importer}:{self.line} imports {what}{how}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def parse_tree(root: Path, package: str) -> dict[str, list[Import]]:
    """Every module under ``root/package`` and the imports it makes, anywhere in its body."""
    files = {module_name(root, p): p for p in sorted((root / package).rglob("*.py"))}
    found: dict[str, list[Import]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        collector = _Collector(mod, path.name == "__init__.py", set(files))
        collector.visit(tree)
        found[mod] = collector.imports
    return found


class _Collector(ast.NodeVisitor):
    """The imports of one module, each with the function or class it is written in."""

    def __init__(self, mod: str, is_package: bool, modules: set[str]) -> None:
        self.mod, self.is_package, self.modules = mod, is_package, modules
        self.scope: list[str] = []
        self.type_only = False
        self.imports: list[Import] = []

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            outer, self.type_only = self.type_only, True
            for child in node.body:
                self.visit(child)
            self.type_only = outer
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _add(self, module: str, name: str | None, node: ast.stmt) -> None:
        scope = ".".join(self.scope)
        self.imports.append(Import(self.mod, module, name, node.lineno, scope, self.type_only))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, None, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = resolve(self.mod, self.is_package, node.module, node.level)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in self.modules:  # `from package import submodule`
                self._add(sub, None, node)
            else:
                self._add(base, alias.name, node)


def resolve(mod: str, is_package: bool, target: str | None, level: int) -> str:
    """The absolute module of ``from <level dots><target> import ...`` written in ``mod``."""
    if level == 0:
        assert target is not None
        return target
    parts = mod.split(".") if is_package else mod.split(".")[:-1]
    if level > 1:
        parts = parts[: -(level - 1)]
    return ".".join([*parts, target] if target else parts)


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def at(imp: Import, where: str) -> bool:
    """Whether ``imp`` is written in ``where``: a module (or package), or ``module:function``."""
    return imp.where == where or imp.where.startswith((where + ".", where + ":"))


def top(module: str) -> str:
    return module.split(".", 1)[0]


def layer_violations(
    imports: dict[str, list[Import]],
    layers: dict[str, set[str]],
    third_party: dict[str, set[str]],
    exceptions: dict[tuple[str, str], str],
    package: str = "cronwatch",
) -> list[str]:
    """Imports a layer may not make: of ``package`` outside the layer's allowed prefixes
    (unless ``(importer, layer)`` is an exception), and of third-party libraries outside
    ``third_party[layer]`` when the layer has such a list (the stdlib is always fine)."""
    bad = []
    for mod, imps in sorted(imports.items()):
        layer = next((prefix for prefix in layers if within(mod, prefix)), None)
        if layer is None:
            continue
        for imp in imps:
            if top(imp.module) == package:
                if any(within(imp.module, ok) for ok in layers[layer]):
                    continue
                if any(at(imp, who) and within(imp.module, what) for who, what in exceptions):
                    continue
                bad.append(f"{imp}: {layer} may not")
            elif (
                layer in third_party
                and top(imp.module) not in sys.stdlib_module_names
                and top(imp.module) not in third_party[layer]
            ):
                bad.append(f"{imp}: {layer} may not")
    return bad


def driver_importers(
    imports: dict[str, list[Import]], drivers: set[str], home: str
) -> dict[str, list[str]]:
    """Modules outside ``home`` that import a database driver, with where."""
    found: dict[str, list[str]] = {}
    for mod, imps in sorted(imports.items()):
        if within(mod, home):
            continue
        for imp in imps:
            if top(imp.module) in drivers:
                found.setdefault(mod, []).append(str(imp))
    return found


def graph(imports: dict[str, list[Import]]) -> dict[str, dict[str, list[Import]]]:
    """Module -> the modules of the tree it imports -> the imports that make the edge."""
    edges: dict[str, dict[str, list[Import]]] = {mod: {} for mod in imports}
    for mod, imps in imports.items():
        for imp in imps:
            if imp.module in imports and imp.module != mod:
                edges[mod].setdefault(imp.module, []).append(imp)
    return edges


def cycles(edges: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def describe_cycle(component: list[str], edges: dict[str, dict[str, list[Import]]]) -> str:
    """A component as its edges, each with the names (and lines) that make it."""
    lines = [" <-> ".join(component)]
    members = set(component)
    for mod in component:
        for target, imps in sorted(edges[mod].items()):
            if target in members:
                names = ", ".join(tie(i) for i in imps)
                lines.append(f"    {mod} -> {target}: {names}")
    return "\n".join(lines)


def tie(imp: Import) -> str:
    name = imp.name or imp.module.rsplit(".", 1)[-1]
    how = ", type only" if imp.type_only else f", in {imp.scope}" if imp.scope else ""
    return f"{name} (line {imp.line}{how})"


def private_imports(imports: dict[str, list[Import]], package: str = "cronwatch") -> list[str]:
    """``from a import _x`` across modules of ``package``, and private modules of a package
    imported from outside that package. Dunders are public; a C module of the stdlib
    (``import _signal``) is not a name taken from another module."""
    bad = []
    for mod, imps in sorted(imports.items()):
        for imp in imps:
            if top(imp.module) != package:
                continue
            if imp.name is not None:
                if private(imp.name) and imp.module != mod:
                    bad.append(str(imp))
                continue
            # a private module (a/_m.py) is shared by its package's modules only
            *parent, last = imp.module.split(".")
            if private(last) and not within(mod, ".".join(parent)):
                bad.append(f"{imp}, a private module")
    return bad


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


# --- the rules, on cronwatch ------------------------------------------------------------------


def cronwatch() -> dict[str, list[Import]]:
    return parse_tree(SRC, "cronwatch")


def test_core_imports_only_core_and_the_schedule_libraries() -> None:
    bad = layer_violations(
        only(cronwatch(), "cronwatch.core"),
        LAYERS,
        {"cronwatch.core": CORE_THIRD_PARTY},
        LAYER_EXCEPTIONS,
    )
    assert not bad, "the domain imports outside itself:\n" + "\n".join(bad)


def test_app_imports_only_core_store_and_app() -> None:
    bad = layer_violations(only(cronwatch(), "cronwatch.app"), LAYERS, {}, LAYER_EXCEPTIONS)
    assert not bad, "a use case imports an adapter:\n" + "\n".join(bad)


def test_store_imports_only_core_and_store() -> None:
    bad = layer_violations(only(cronwatch(), "cronwatch.store"), LAYERS, {}, {})
    assert not bad, "the store imports outside core and store:\n" + "\n".join(bad)


def test_layer_exceptions_are_still_needed() -> None:
    """An exception nothing uses any more is removed, so that it cannot cover a new import."""
    imports = [i for imps in cronwatch().values() for i in imps]
    for who, what in LAYER_EXCEPTIONS:
        assert any(at(i, who) and within(i.module, what) for i in imports), (who, what)


def test_leaves_are_leaves() -> None:
    imports = cronwatch()
    for leaf in LEAVES:
        assert not [i for i in imports[leaf] if top(i.module) == "cronwatch"], leaf


def test_database_drivers_are_imported_only_by_the_store() -> None:
    found = driver_importers(cronwatch(), DB_DRIVERS, "cronwatch.store")
    new = {mod: where for mod, where in found.items() if mod not in DB_DRIVER_OFFENDERS}
    assert not new, "a database driver outside the store:\n" + "\n".join(
        line for lines in new.values() for line in lines
    )
    gone = DB_DRIVER_OFFENDERS - set(found)
    assert not gone, f"no longer import a driver: remove them from DB_DRIVER_OFFENDERS: {gone}"


def test_no_import_cycles() -> None:
    """Function-level imports included: a lazy import still ties two modules together."""
    edges = graph(cronwatch())
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(describe_cycle(c, edges) for c in found)


def test_no_private_names_across_modules() -> None:
    bad = private_imports(cronwatch())
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


def test_the_checker_reads_the_whole_tree() -> None:
    """A guard over too few modules passes for the wrong reason."""
    imports = cronwatch()
    on_disk = {module_name(SRC, p) for p in (SRC / "cronwatch").rglob("*.py")}
    assert set(imports) == on_disk and len(on_disk) > 50
    assert {"cronwatch", "cronwatch.core.model", "cronwatch.store.sqlite.backend"} <= on_disk
    # the lazy and type-only imports are seen: the store's json, its TYPE_CHECKING block
    backend = {i.module for i in imports["cronwatch.store.sqlite.backend"]}
    assert {"json", "cronwatch.store.sqlite.migrations"} <= backend


def only(imports: dict[str, list[Import]], prefix: str) -> dict[str, list[Import]]:
    return {mod: imps for mod, imps in imports.items() if within(mod, prefix)}


# --- the checker itself, on packages with deliberate violations -------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for d in {p.parent for p in root.rglob("*.py")}:  # every directory is a package
        while d != root and not (d / "__init__.py").exists():
            (d / "__init__.py").write_text("")
            d = d.parent
    return root


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "cronwatch/__init__.py": "from . import core\nfrom ._version import v\n",
        "cronwatch/_version.py": "v = 1\n",
        "cronwatch/core/model.py": "from . import values\nfrom .values import D\nfrom .. import app\n",
        "cronwatch/core/values.py": "D = 1\n",
        "cronwatch/app/x/y.py": "from ...core.model import M\nfrom ..z import Z\n",
    })  # fmt: skip
    got = {
        m: [(i.module, i.name) for i in imps] for m, imps in parse_tree(root, "cronwatch").items()
    }
    assert got["cronwatch"] == [("cronwatch.core", None), ("cronwatch._version", "v")]
    assert got["cronwatch.core.model"] == [
        ("cronwatch.core.values", None), ("cronwatch.core.values", "D"), ("cronwatch.app", None)
    ]  # fmt: skip
    assert got["cronwatch.app.x.y"] == [("cronwatch.core.model", "M"), ("cronwatch.app.z", "Z")]


def test_the_layer_check_sees_imports_anywhere(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "cronwatch/core/model.py": "import re\nimport cronsim\nfrom cronwatch.core import values\n",
        "cronwatch/core/values.py": "",
        # inside a function, and type-only: both count
        "cronwatch/core/health.py": "def f():\n    from cronwatch.app import evaluate\n",
        "cronwatch/core/typed.py": (
            "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from cronwatch.server.app import S\n"
        ),
        "cronwatch/core/web.py": "import fastapi\n",
        "cronwatch/app/evaluate.py": (
            "from cronwatch.core import model\nfrom cronwatch.store.interface import Store\n"
            "def deliver_outbox():\n    from cronwatch.notify import send\n"
            "def other():\n    from cronwatch.notify import send\n"
            "import cronwatch.cli.report\n"
        ),
        "cronwatch/store/backend.py": "import sqlite3\nfrom cronwatch.app import evaluate\n",
    })  # fmt: skip
    imports = parse_tree(root, "cronwatch")
    bad = layer_violations(imports, LAYERS, {"cronwatch.core": CORE_THIRD_PARTY}, LAYER_EXCEPTIONS)
    assert bad == [
        "cronwatch.app.evaluate:6 imports send from cronwatch.notify (in other): cronwatch.app may not",
        "cronwatch.app.evaluate:7 imports cronwatch.cli.report: cronwatch.app may not",
        "cronwatch.core.health:2 imports cronwatch.app.evaluate (in f): cronwatch.core may not",
        "cronwatch.core.typed:3 imports S from cronwatch.server.app (type only): cronwatch.core may not",
        "cronwatch.core.web:1 imports fastapi: cronwatch.core may not",
        "cronwatch.store.backend:2 imports cronwatch.app.evaluate: cronwatch.store may not",
    ]
    # without the exception deliver_outbox's import is reported too; without a list of
    # third-party libraries for core, fastapi is not
    loose = layer_violations(imports, LAYERS, {}, {})
    assert (
        "cronwatch.app.evaluate:4 imports send from cronwatch.notify (in deliver_outbox): "
        "cronwatch.app may not"
    ) in loose
    assert len(loose) == len(bad) and not [b for b in loose if "fastapi" in b]


def test_the_driver_check_sees_drivers_outside_the_store(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "cronwatch/store/sqlite/backend.py": "import sqlite3\n",
        "cronwatch/server/metrics.py": "def f():\n    import sqlite3\n",
        "cronwatch/wrapper/record.py": "from _sqlite3 import connect\n",
        "cronwatch/server/pg.py": "import psycopg.rows\n",
        "cronwatch/server/fine.py": "import sqlite3_utils_not_a_driver\n",
    })  # fmt: skip
    found = driver_importers(parse_tree(root, "cronwatch"), DB_DRIVERS, "cronwatch.store")
    assert found == {
        "cronwatch.server.metrics": ["cronwatch.server.metrics:2 imports sqlite3 (in f)"],
        "cronwatch.server.pg": ["cronwatch.server.pg:1 imports psycopg.rows"],
        "cronwatch.wrapper.record": ["cronwatch.wrapper.record:1 imports connect from _sqlite3"],
    }


def test_the_cycle_check_finds_cycles_and_names_their_ties(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "cronwatch/a.py": "from cronwatch.b import f\n",
        "cronwatch/b.py": "def f():\n    from cronwatch import c\n",
        "cronwatch/c.py": "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from .a import A\n",
        "cronwatch/d.py": "from cronwatch import a, e\n",
        "cronwatch/e.py": "import cronwatch.d\n",
        "cronwatch/leaf.py": "import os\nfrom cronwatch import a\n",
    })  # fmt: skip
    edges = graph(parse_tree(root, "cronwatch"))
    found = cycles(edges)
    assert found == [["cronwatch.a", "cronwatch.b", "cronwatch.c"], ["cronwatch.d", "cronwatch.e"]]
    text = describe_cycle(found[0], edges)
    assert "cronwatch.b -> cronwatch.c: c (line 2, in f)" in text
    assert "cronwatch.c -> cronwatch.a: A (line 3, type only)" in text
    # a tree without a back edge has none
    (root / "cronwatch/c.py").write_text("")
    (root / "cronwatch/e.py").write_text("")
    assert cycles(graph(parse_tree(root, "cronwatch"))) == []


def test_the_private_name_check(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "cronwatch/__init__.py": "from cronwatch._version import __version__\n",
        "cronwatch/_version.py": "__version__ = '1'\n",
        "cronwatch/notify/_http.py": "def _post(): ...\ndef post(): ...\n",
        "cronwatch/notify/slack.py": "from cronwatch.notify import _http\nfrom ._http import post\n",
        "cronwatch/server/ping.py": "def _event(): ...\n_X = 1\nprint(_X)\n",
        "cronwatch/server/apply.py": (
            "import _signal\nfrom os import _exit\nfrom cronwatch.server.ping import _event\n"
            "def f():\n    from ..notify._http import _post\n"
            "import cronwatch.notify._http\n"
        ),
    })  # fmt: skip
    assert private_imports(parse_tree(root, "cronwatch")) == [
        "cronwatch.server.apply:3 imports _event from cronwatch.server.ping",
        "cronwatch.server.apply:5 imports _post from cronwatch.notify._http (in f)",
        "cronwatch.server.apply:6 imports cronwatch.notify._http, a private module",
    ]
