"""
Sphinx configuration for the mqttbroker documentation.

Build with ``sphinx-build -W --keep-going -b html docs OUTDIR`` (``tox -e docs``): every
warning is an error. Pages are reStructuredText, or Markdown where a tool writes them; no extension
needs the network.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mqttbroker import __version__  # noqa: E402

project = "mqttbroker"
author = "the mqttbroker authors"
copyright = "the mqttbroker authors"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

# Narrative pages are reST; pages that tools write (performance figures, the
# conformance report) are Markdown, read by MyST.
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
# The conformance report must start with its figures (tools read its first lines),
# so its sections begin at H2 with no H1 above them.
suppress_warnings = ["myst.header"]
root_doc = "index"
exclude_patterns = ["_build"]
nitpicky = False

html_theme = "alabaster"
html_title = f"mqttbroker {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Show the codec's type aliases by name instead of spelling out their unions.
autodoc_type_aliases = {
    "Packet": "mqttbroker.codec.Packet",
    "Properties": "mqttbroker.codec.Properties",
}


# The sources document themselves in epytext (as Twisted does): @ivar, @raise,
# C{code}, L{link}, U{url}. Autodoc expects reStructuredText, so turn that markup
# into its reST equivalents before the docstring is parsed.

_FIELDS = re.compile(r"^(\s*)@(ivar|param|type|raise|return|rtype)\b\s*([^:]*):", re.MULTILINE)
_FIELD_NAMES = {"raise": "raises", "return": "returns"}
_INLINE = re.compile(r"([CLU])\{([^{}]*)\}")


def _field(match: re.Match[str]) -> str:
    indent, name, argument = match.groups()
    name = _FIELD_NAMES.get(name, name)
    argument = argument.strip()
    return f"{indent}:{name} {argument}:" if argument else f"{indent}:{name}:"


def _inline(text: str) -> str:
    pieces = []
    last = 0
    for match in _INLINE.finditer(text):
        kind, content = match.groups()
        if kind == "C":
            markup = f"``{content}``"
        elif kind == "L":
            markup = f":py:obj:`{content}`"
        else:
            markup = f"`{content} <{content}>`__"
        start, end = match.span()
        # reST inline markup must not touch a word character: join it with "\ ".
        before = "\\ " if start and text[start - 1].isalnum() else ""
        after = "\\ " if end < len(text) and text[end].isalnum() else ""
        pieces.append(text[last:start] + before + markup + after)
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


def epytext_to_rest(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Rewrite a docstring's epytext markup as reStructuredText, in place."""
    text = _inline(_FIELDS.sub(_field, "\n".join(lines)))
    lines[:] = text.split("\n")


_ALIAS_REPR = re.compile(r"TypeAliasForwardRef\('([^']*)'\)")


def clean_signature(
    app: Any,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None]:
    """Show a type alias nested in a generic (C{Iterator[Packet]}) by its name."""

    def clean(text: str | None) -> str | None:
        return None if text is None else _ALIAS_REPR.sub(r"\1", text)

    return clean(signature), clean(return_annotation)


def setup(app: Any) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", epytext_to_rest)
    app.connect("autodoc-process-signature", clean_signature)
    return {"parallel_read_safe": True}
