"""A griffe extension for the API pages: the docstrings' Sphinx roles (``:class:`X```, ``:func:`~m.f```) are
shown as code (``X``, ``m.f``) instead of as literal role markup, which Markdown does not know."""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):`~?([^`]+)`")


class SphinxRoles(Extension):
    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
