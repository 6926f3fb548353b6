"""Griffe extensions for docs/api.md, loaded by mkdocs.yml. They change what is rendered, never
the sources.

- ``ConstructorFromNew``: the classes of the Rust core (``Event``, ``Listener``,
  ``WorkerPool``, ``Emitter``, ``Bus``, ...) are built by ``__new__`` in python/nova/_core.pyi and
  have no ``__init__``, while griffe takes a class's signature from ``__init__`` only. A class
  that defines ``__new__`` and no ``__init__`` gets an ``__init__`` with the same parameters
  (``self`` for ``cls``), which ``merge_init_into_class`` shows as the class signature, as
  ``help()`` would.
- ``PlainRoles``: the docstrings are written for ``help()`` and use reST roles
  (``:class:`~nova.Bus```); Markdown would show the role's name. A role becomes a code span of
  its target (the last component with ``~``), and a paragraph ending in reST's ``::`` ends in
  ``:``.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")
_LITERAL_INTRO = re.compile(r"(?<=\S)::$", re.M)


class ConstructorFromNew(griffe.Extension):
    def on_class_members(
        self, *, node: ast.AST | griffe.ObjectNode, cls: griffe.Class, **kwargs: Any
    ) -> None:
        new = cls.members.get("__new__")
        if "__init__" in cls.members or not isinstance(new, griffe.Function):
            return
        params = list(new.parameters)
        if not params or params[0].name != "cls":
            return
        init = griffe.Function(
            "__init__",
            lineno=new.lineno,
            endlineno=new.endlineno,
            parameters=griffe.Parameters(
                griffe.Parameter("self", kind=params[0].kind),
                *(
                    griffe.Parameter(p.name, annotation=p.annotation, kind=p.kind, default=p.default)
                    for p in params[1:]
                ),
            ),
            returns="None",
            docstring=new.docstring,
        )
        cls.set_member("__init__", init)


def _role(match: re.Match[str]) -> str:
    target = match.group(2).strip()
    if match.group(1):
        target = target.rsplit(".", 1)[-1]
    return f"``{target}``"


class PlainRoles(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        todo: list[griffe.Object] = [pkg]
        while todo:
            obj = todo.pop()
            if obj.docstring is not None:
                text = _ROLE.sub(_role, obj.docstring.value)
                obj.docstring.value = _LITERAL_INTRO.sub(":", text)
            todo.extend(m for m in obj.members.values() if not m.is_alias)  # type: ignore[misc]
