"""The import contract: every module's imports against the one table of rules in docs/DESIGN.md
("Import rules"), and no import cycle inside a package.

The checker reads the source with `ast` (nothing is imported), so a lazy import inside a
function counts as much as one at the top. No package may have a cycle among its module-level
imports (those run when the module loads; `if TYPE_CHECKING:` blocks never run); a cycle that
goes through an import inside a function is allowed only where LAZY_CYCLES lists it, until its
package is restructured.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "DESIGN.md"
# Cycles closed only by an import inside a function, each waiting for its package's split
# (none left: train/export/ split its writers from its command line in issue 22).
LAZY_CYCLES: list[list[str]] = []
TABLE = re.compile(r"<!-- import-rules\b.*?-->\n(.*?)<!-- /import-rules -->", re.S)


@dataclass(frozen=True)
class Rule:
    package: str
    may: tuple[str, ...]
    must_not: tuple[str, ...]


@dataclass(frozen=True)
class Import:
    module: str                 # the importing module, dotted
    target: str                 # what it imports, dotted and absolute
    line: int
    when: str                   # "load": runs when the module loads; "call": inside a
                                # function; "typing": under `if TYPE_CHECKING:`, never runs


def read_rules(text: str) -> dict[str, Rule]:
    """The rules table between the import-rules markers of a docs/DESIGN.md text."""
    found = TABLE.search(text)
    assert found, "docs/DESIGN.md has no import-rules table between its markers"
    rules: dict[str, Rule] = {}
    for line in found.group(1).strip().splitlines()[2:]:       # after the header and ---
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        package, may, must_not = (tuple(re.findall(r"`([\w.]+)`", c)) for c in cells)
        assert len(package) == 1, f"a row names one package: {line}"
        rules[package[0]] = Rule(package[0], may, must_not)
    return rules


def modules(root: Path, packages: list[str]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name (a package by its name)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name: str, path: Path, known: set[str]) -> list[Import]:
    """The imports of one module, resolved to absolute dotted names; ``from X import y`` is
    ``X.y`` when that is a module of the project, else ``X``."""
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, when: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend(Import(name, a.name, child.lineno, when) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".")
                    base = base[:len(base) - child.level + (1 if is_package else 0)]
                    source = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    source = child.module or ""
                for alias in child.names:
                    sub = f"{source}.{alias.name}"
                    found.append(Import(name, sub if sub in known else source, child.lineno,
                                        when))
            elif isinstance(child, ast.If) and _type_checking(child):
                visit(child, "typing")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, "call" if when == "load" else when)
            else:
                visit(child, when)

    visit(ast.parse(path.read_text(encoding="utf-8")), "load")
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(rules: dict[str, Rule], found: list[Import]) -> list[str]:
    """Each import that breaks the rule of its module's package, as ``module:line -> target``."""
    ours = {r.split(".")[0] for r in rules}
    out = []
    for imp in found:
        rule = max((r for r in rules.values() if _under(imp.module, r.package)),
                   key=lambda r: len(r.package))
        banned = any(_under(imp.target, p) for p in rule.must_not)
        foreign = (imp.target.split(".")[0] in ours and not _under(imp.target, rule.package)
                   and not any(_under(imp.target, p) for p in rule.may))
        if banned or foreign:
            out.append(f"{imp.module}:{imp.line} -> {imp.target} (rule of {rule.package})")
    return list(dict.fromkeys(out))             # one line per import, not per imported name


def cycles(found: list[Import], known: set[str], when: tuple[str, ...] = ("load",)
           ) -> list[list[str]]:
    """Import cycles inside each top-level package, over the imports that run ``when``."""
    graph: dict[str, set[str]] = {m: set() for m in known}
    for imp in found:
        if imp.when in when and imp.target in known \
                and imp.target.split(".")[0] == imp.module.split(".")[0] \
                and imp.target != imp.module:
            graph[imp.module].add(imp.target)
    out: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                out.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return out


def check(root: Path, text: str, lazy: bool = False) -> tuple[list[str], list[list[str]]]:
    """The broken rules and the import cycles of the packages under ``root``; with ``lazy``,
    the cycles count imports inside functions too."""
    rules = read_rules(text)
    packages = sorted({r.split(".")[0] for r in rules})
    found_modules = modules(root, packages)
    known = set(found_modules)
    found = [i for m, p in found_modules.items() for i in imports(m, p, known)]
    return violations(rules, found), cycles(found, known, ("load", "call") if lazy else ("load",))


def test_every_package_of_the_project_has_a_rule():
    import tomllib
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    shipped = {p.removesuffix("*") for p in include}
    assert set(read_rules(DESIGN.read_text(encoding="utf-8"))) >= shipped


def test_every_module_keeps_the_import_rules():
    broken, _ = check(ROOT, DESIGN.read_text(encoding="utf-8"))
    assert broken == []


def test_no_package_has_an_import_cycle():
    _, found = check(ROOT, DESIGN.read_text(encoding="utf-8"))
    assert found == []


def test_imports_inside_functions_close_no_other_cycle():
    _, found = check(ROOT, DESIGN.read_text(encoding="utf-8"), lazy=True)
    assert [c for c in found if c not in LAZY_CYCLES] == []


# -- the checker itself, on planted trees --------------------------------------------------
PLANTED_RULES = """<!-- import-rules -->
| package | may import | must not import |
|---|---|---|
| `low` | none | `torch` |
| `high` | `low` | none |
| `high.inner` | none | none |
<!-- /import-rules -->
"""


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, body in {"low/__init__.py": "", "high/__init__.py": "",
                       "high/inner/__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    return root


def test_the_checker_sees_a_forbidden_and_an_unlisted_import(tmp_path):
    root = _tree(tmp_path, {
        "low/a.py": "def f():\n    import torch.nn\n",              # banned, even lazily
        "low/b.py": "from high import c\n",                         # not in low's list
        "high/c.py": "from low import a\nfrom .inner import d\nimport torch\n",   # all fine
        "high/inner/d.py": "from .. import c\n",                    # its own row: none
    })
    broken, _ = check(root, PLANTED_RULES)
    assert sorted(broken) == ["high.inner.d:1 -> high.c (rule of high.inner)",
                              "low.a:2 -> torch.nn (rule of low)",
                              "low.b:1 -> high.c (rule of low)"]


def test_the_checker_sees_a_cycle_but_not_a_lazy_or_type_checking_import(tmp_path):
    root = _tree(tmp_path, {
        "low/a.py": "from . import b\n",
        "low/b.py": "from .a import x\n",
        "low/c.py": "def f():\n    from . import d\n",
        "low/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import f\n",
    })
    _, found = check(root, PLANTED_RULES)
    assert found == [["low.a", "low.b", "low.a"]]
    _, found = check(root, PLANTED_RULES, lazy=True)
    assert found == [["low.a", "low.b", "low.a"]]
    (root / "low/d.py").write_text("from .c import f\n")
    _, found = check(root, PLANTED_RULES, lazy=True)
    assert found == [["low.a", "low.b", "low.a"], ["low.c", "low.d", "low.c"]]


@pytest.mark.parametrize("row", ["| `low` | none |", "| `low` `high` | none | none |"])
def test_a_malformed_row_is_refused(row):
    with pytest.raises((AssertionError, ValueError)):
        read_rules(f"<!-- import-rules -->\n| a | b | c |\n|---|---|---|\n{row}\n"
                   "<!-- /import-rules -->\n")
