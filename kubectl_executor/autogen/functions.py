"""User-defined functions: the module autogen-ext's executors write, its stubs, its requirements."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from textwrap import dedent, indent
from typing import Any

from autogen_core.code_executor import (
    Alias,
    FunctionWithRequirements,
    FunctionWithRequirementsStr,
    Import,
)

from ..errors import InvalidInputError

AnyFunction = FunctionWithRequirements[Any, Any] | Callable[..., Any] | FunctionWithRequirementsStr


FUNCTION_PROMPT_TEMPLATE = """You have access to the following user defined functions. They can be accessed from the module called `$module_name` by their function names.

For example, if there was a function called `foo` you could import it by writing `from $module_name import foo`

$functions"""


def _import_to_str(im: Import) -> str:
    if isinstance(im, str):
        return f"import {im}"
    if isinstance(im, Alias):
        return f"import {im.name} as {im.alias}"
    names = ", ".join(i if isinstance(i, str) else f"{i.name} as {i.alias}" for i in im.imports)
    return f"from {im.module} import {names}"


def _to_code(func: AnyFunction) -> str:
    if isinstance(func, FunctionWithRequirementsStr):
        return func.func
    target = func.func if isinstance(func, FunctionWithRequirements) else func
    code = inspect.getsource(target)
    # Strip the decorator line (@with_requirements(...)) as autogen-ext does.
    if code.startswith("@"):
        code = code[code.index("\n") + 1 :]
    return code


def build_python_functions_file(funcs: Sequence[AnyFunction]) -> str:
    """The module text: every global import once, then each function's source."""
    imports: list[Import] = []
    for func in funcs:
        if isinstance(func, (FunctionWithRequirements, FunctionWithRequirementsStr)):
            for im in func.global_imports:
                if im not in imports:
                    imports.append(im)
    content = "\n".join(map(_import_to_str, imports)) + "\n\n"
    for func in funcs:
        content += _to_code(func) + "\n\n"
    return content


def to_stub(func: AnyFunction) -> str:
    """``def name(signature):`` with its docstring and ``...`` (what a prompt shows)."""
    if isinstance(func, FunctionWithRequirementsStr):
        return to_stub(func.compiled_func)
    target = func.func if isinstance(func, FunctionWithRequirements) else func
    content = f"def {target.__name__}{inspect.signature(target)}:\n"
    if target.__doc__:
        content += indent('"""' + dedent(target.__doc__) + '"""', "    ") + "\n"
    return content + "    ..."


def required_packages(funcs: Sequence[AnyFunction]) -> list[str]:
    packages: list[str] = []
    for func in funcs:
        if isinstance(func, (FunctionWithRequirements, FunctionWithRequirementsStr)):
            for pkg in func.python_packages:
                if pkg not in packages:
                    packages.append(pkg)
    for pkg in packages:
        if not pkg.strip() or pkg.strip().startswith("-") or "\n" in pkg:
            raise InvalidInputError(f"{pkg!r} is not a package requirement")
    return packages
