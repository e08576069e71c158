"""What the workflow derives from the package itself: rerun inputs and environment needs.

Snakemake reruns a job when one of its inputs changes, but it does not follow
Python imports. :func:`code_inputs` lists every fibrecon module a rule's
script imports, directly or through other fibrecon modules, so that a rule
declares exactly those files as inputs (``rules/common.smk``) and editing any
of them reruns its jobs. :func:`third_party_imports` lists the packages that
importing a script needs, which a test compares with the rule's conda
environment (``envs/<stage>.yaml``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

__all__ = ["PACKAGE", "imports_of", "fibrecon_modules", "code_inputs", "third_party_imports"]

#: The package's source folder.
PACKAGE = Path(__file__).resolve().parent


def imports_of(path, *, module_level: bool = False) -> set[str]:
    """Dotted names a Python file imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``).

    Parameters
    ----------
    path : str or Path
        A Python source file.
    module_level : bool
        Only imports that run when the file is imported or run (not those
        inside function bodies, which run only when the function is called).

    Returns
    -------
    set of str
    """
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    names: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if module_level and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                   ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names.add(child.module)
                names.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(tree)
    return names


def _module_file(name: str, package: Path) -> Path | None:
    """The source file of ``fibrecon.x`` (None for names that are not modules of the package)."""
    parts = name.split(".")
    if parts[0] != "fibrecon":
        return None
    path = package.joinpath(*parts[1:])
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def fibrecon_modules(path, *, module_level: bool = False, package=PACKAGE) -> list[Path]:
    """Every fibrecon module file that importing or running ``path`` reaches, transitively.

    The package's ``__init__.py`` is always among them (any ``fibrecon.x``
    import runs it). ``package`` is the folder of the package's sources whose
    graph is followed (the workflow's own ``src/fibrecon``, whichever copy of
    fibrecon Python would import).

    Examples
    --------
    >>> names = [p.name for p in fibrecon_modules(PACKAGE / "particles.py")]
    >>> "extrema.py" in names and "__init__.py" in names
    True
    """
    seen: dict[Path, None] = {}
    todo = [Path(path)]
    while todo:
        current = todo.pop()
        for name in sorted(imports_of(current, module_level=module_level)):
            found = _module_file(name, Path(package))
            if found is not None and found not in seen:
                seen[found] = None
                todo.append(found)
    if seen:
        seen.setdefault(Path(package) / "__init__.py", None)
    return sorted(p for p in seen if p != Path(path).resolve())


def code_inputs(script, package=PACKAGE) -> list[str]:
    """The library files a rule's script depends on, as paths for the rule's ``code`` input."""
    return [str(p) for p in fibrecon_modules(script, package=package)]


def third_party_imports(script) -> set[str]:
    """Top-level names of the non-standard-library packages that running ``script`` imports.

    Everything in the script counts except function bodies; in the fibrecon
    modules it reaches, only module-level imports (a function's own import
    runs only when it is called).
    """
    files = [Path(script), *fibrecon_modules(script, module_level=True)]
    names = set()
    for i, path in enumerate(files):
        names |= {n.split(".")[0] for n in imports_of(path, module_level=True)}
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("fibrecon",
                                                                               "__future__")}
