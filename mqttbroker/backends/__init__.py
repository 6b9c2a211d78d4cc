"""
Backends chosen by description strings: C{passwd:file=/etc/mqtt/passwd},
C{aclfile:file=/etc/mqtt/acl}, C{http:url=http://127.0.0.1:8080/auth,timeout=2}.

The text before the first colon names a plugin; the rest is C{key=value} parameters
separated by commas (a value may hold colons and equals signs; write a comma in a
value as C{\\,}). Plugins provide L{IBackendPlugin} and are found with Twisted's
plugin system, so a third-party module in a C{twisted/plugins} directory on the path
adds a backend by name without touching this code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from twisted.plugin import IPlugin, getPlugins
from zope.interface import implementer

from mqttbroker.interfaces import IBackendPlugin

__all__ = ["BackendError", "BackendPlugin", "backend_plugins", "build_backend", "parse_description"]


class BackendError(ValueError):
    """A backend description that cannot be used, and why."""


def parse_description(text: str) -> tuple[str, dict[str, str]]:
    """
    The plugin name and the parameters of a description.

    @raise BackendError: no name, or a parameter that is not C{key=value}, or one
        given twice.
    """
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise BackendError(f"{text!r}: a description starts with a backend name, e.g. passwd:")
    parameters: dict[str, str] = {}
    if rest:
        for part in _split_commas(rest):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or not key:
                raise BackendError(f"{text!r}: {part!r} is not key=value")
            if key in parameters:
                raise BackendError(f"{text!r}: {key!r} given twice")
            parameters[key] = value
    return name, parameters


def _split_commas(text: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


@implementer(IPlugin, IBackendPlugin)
class BackendPlugin:
    """
    An L{IBackendPlugin} that imports its implementation only when it is built, so
    that listing plugins (and C{twist --help}) stays fast.

    @ivar factory: C{"module:callable"}; the callable takes the parameters.
    """

    def __init__(self, name: str, kind: str, description: str, factory: str) -> None:
        self.name = name
        self.kind = kind
        self.description = description
        self.factory = factory

    def build(self, parameters: Mapping[str, str]) -> object:
        module, _, attribute = self.factory.partition(":")
        make: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
        return make(dict(parameters))


def backend_plugins(kind: str) -> dict[str, IBackendPlugin]:
    """Every installed backend plugin of C{kind}, by name."""
    import twisted.plugins  # noqa: PLC0415 (the plugin package, looked up when needed)

    return {p.name: p for p in getPlugins(IBackendPlugin, twisted.plugins) if p.kind == kind}


def build_backend(description: str, kind: str) -> object:
    """
    The backend a description names.

    @raise BackendError: an unknown name (listing the known ones), or parameters the
        backend refuses (its message).
    """
    name, parameters = parse_description(description)
    plugins = backend_plugins(kind)
    plugin = plugins.get(name)
    if plugin is None:
        known = ", ".join(sorted(plugins)) or "none"
        raise BackendError(f"{description!r}: no {kind} backend named {name!r} (known: {known})")
    try:
        return plugin.build(parameters)
    except BackendError:
        raise
    except (ValueError, OSError) as error:
        raise BackendError(f"{description!r}: {error}") from None
