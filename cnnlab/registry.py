"""A name → builder registry shared by models, datasets and darknet layers.

One registry per kind of thing. Builders register with a decorator; a duplicate name is an error
(two files silently fighting over one name is a bug), and an unknown name suggests close matches.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from cnnlab.errors import CnnlabError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, listing: str | None = "") -> None:
        self.kind = kind  # e.g. "model", used in error messages
        # where a user finds the valid names; None: name them in the error itself (few entries)
        self.listing = f"List them with `cnnlab {kind}s`." if listing == "" else listing
        self._entries: dict[str, T] = {}
        # "prefix:" → "module:function" builders for names that are files, not entries (darknet:x.cfg);
        # imported on first use so this registry's package need not import the builder's
        self._prefixes: dict[str, str] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register()`` uses the function's ``__name__``."""

        def decorate(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            self.add(key, obj)
            return obj

        return decorate

    def add(self, name: str, obj: T) -> None:
        if name in self._entries:
            raise ValueError(f"duplicate {self.kind} name {name!r}: each {self.kind} must be registered once")
        self._entries[name] = obj

    def add_prefix(self, prefix: str, target: str) -> None:
        """Names ``prefix:REST`` resolve to ``functools.partial(function, name)`` from ``"module:function"``."""
        if prefix in self._prefixes:
            raise ValueError(f"duplicate {self.kind} prefix {prefix!r}")
        self._prefixes[prefix] = target

    def get(self, name: str) -> T:
        prefix, sep, _ = name.partition(":")
        if sep and prefix in self._prefixes:
            module, _, function = self._prefixes[prefix].partition(":")
            return functools.partial(getattr(importlib.import_module(module), function), name)  # type: ignore[return-value]
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            listing = self.listing if self.listing is not None else f"Valid: {', '.join(self.names())}."
            raise CnnlabError(f"unknown {self.kind} {name!r}.{hint} {listing}") from None

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted names, optionally filtered by a shell-style glob (``resnet*``)."""
        names = sorted(self._entries)
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
