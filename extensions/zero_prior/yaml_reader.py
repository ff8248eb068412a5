"""One strict reader for every YAML block zero-prior owns, and one ``${NAME}`` filler.

ai-toolkit's config classes drop keys they do not know, which is how an earlier
attempt at this feature shipped settings that were never read. Every block we
own (``placeholder:``, the ``experiment:`` file, the toggle and the refusals
in an ai-toolkit process) is therefore read key by key through ``Block``: an
unknown key, a wrong type or an out-of-range value is a ``ConfigError`` that
names the full key path (``config.process[0].placeholder.init_std``) and what
to write instead. Numbers are read the same way everywhere: PyYAML reads
``1e-5`` (no dot) as a string, so a string that parses as a number is taken
as that number, and a YAML ``true`` never passes for a number.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ConfigError

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a mapping"}


def check_type(key: str, value: Any, expected: type) -> None:
    """Raise ``ConfigError`` naming ``key`` unless ``value`` is an ``expected`` (a bool is never a number).

    >>> check_type("placeholder.seed", 3, int)
    >>> check_type("placeholder.seed", True, int)
    Traceback (most recent call last):
    ...
    zero_prior.errors.ConfigError: placeholder.seed must be an integer, got bool True
    """
    numeric = expected in (int, float)
    ok = isinstance(value, (int, float) if expected is float else expected) and not (
        numeric and isinstance(value, bool)
    )
    if not ok:
        raise ConfigError(f"{key} must be {_TYPE_NAMES[expected]}, got {type(value).__name__} {value!r}")


def as_number(key: str, value: Any) -> Any:
    """``value`` with a numeric string turned into its number (``"1e-5"`` -> 1e-05, ``"500"`` -> 500).

    Anything else is returned unchanged for ``check_type`` to judge; a string
    that is not a number is a ``ConfigError`` naming ``key``.

    >>> as_number("lr", "1e-4"), as_number("steps", "500"), as_number("lr", 0.5)
    (0.0001, 500, 0.5)
    """
    if not isinstance(value, str):
        return value
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {value!r}") from None
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


class Block:
    """One YAML mapping read key by key; every error names ``path.key``.

    >>> block = Block({"steps": "10", "lr": "1e-4"}, "train", {"steps", "lr"})
    >>> block.integer("steps", 1, minimum=1), block.number("lr", 1e-6)
    (10, 0.0001)
    """

    def __init__(
        self, raw: Any, path: str, known: Iterable[str] | None = None, required: bool = False,
        where: str | None = None, kind: str = "a known setting",
    ) -> None:
        label = path or where or "the file"
        if raw is None and required:
            raise ConfigError(f"{label} is missing; add a '{path}:' block")
        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{label} must be a mapping of settings, got {type(raw).__name__}")
        if known is not None:
            known = set(known)
            unknown = sorted(set(raw) - known, key=str)
            if unknown:
                origin = f" ({where})" if where else ""
                raise ConfigError(f"{self._join(path, unknown[0])} is not {kind}{origin}; known keys: "
                                  f"{', '.join(sorted(known))}")
        self.raw: Mapping[str, Any] = raw
        self.path = path

    @staticmethod
    def _join(path: str, name: Any) -> str:
        return f"{path}.{name}" if path else str(name)

    def key(self, name: str) -> str:
        """The full path of ``name`` inside this block."""
        return self._join(self.path, name)

    def get(self, name: str, default: Any = None) -> Any:
        """The raw value of ``name`` (no checks)."""
        return self.raw.get(name, default)

    def child(self, name: str, known: Iterable[str] | None = None, required: bool = False,
              kind: str = "a known setting", where: str | None = None) -> Block:
        """The mapping under ``name`` as a block of its own (empty when absent)."""
        return Block(self.raw.get(name), self.key(name), known, required, where=where, kind=kind)

    def string(self, name: str, default: Any = None, required: bool = False) -> Any:
        """A string (or ``default`` when absent)."""
        value = self.raw.get(name, default)
        if value is None and required:
            raise ConfigError(f"{self.key(name)} is missing")
        if value is not None:
            check_type(self.key(name), value, str)
        return value

    def integer(self, name: str, default: Any, minimum: int | None = None, maximum: int | None = None,
                multiple: int | None = None) -> Any:
        """An integer within the bounds; a numeric string is accepted (``"500"``)."""
        value = as_number(self.key(name), self.raw.get(name, default))
        if value is None and default is None:
            return None
        check_type(self.key(name), value, int)
        self._range(name, value, minimum, maximum)
        if multiple and value % multiple:
            raise ConfigError(f"{self.key(name)} must be a multiple of {multiple}, got {value}")
        return value

    def number(self, name: str, default: Any, minimum: float | None = None, maximum: float | None = None) -> Any:
        """A float within the bounds; ints and numeric strings (``"1e-5"``) are accepted."""
        value = as_number(self.key(name), self.raw.get(name, default))
        if value is None and default is None:
            return None
        check_type(self.key(name), value, float)
        self._range(name, float(value), minimum, maximum)
        return float(value)

    def boolean(self, name: str, default: Any) -> Any:
        """``true`` or ``false``."""
        value = self.raw.get(name, default)
        check_type(self.key(name), value, bool)
        return value

    def int_list(self, name: str, default: Sequence[int], minimum: int | None = None) -> list[int]:
        """A non-empty list of integers."""
        value = self.raw.get(name, default)
        integers = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not integers or not value:
            raise ConfigError(f"{self.key(name)} must be a non-empty list of integers, e.g. [0, 1], got {value!r}")
        for item in value:
            self._range(name, item, minimum, None)
        return list(value)

    def string_list(self, name: str, default: Sequence[str]) -> list[str]:
        """A non-empty list of strings."""
        value = self.raw.get(name, default)
        if not isinstance(value, list) or not value or any(not isinstance(v, str) for v in value):
            raise ConfigError(f"{self.key(name)} must be a non-empty list of strings, got {value!r}")
        return list(value)

    def _range(self, name: str, value: float, minimum: float | None, maximum: float | None) -> None:
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise ConfigError(f"{self.key(name)} must be {bounds}, got {value}")


def fill_fields(text: str, values: Mapping[str, str], where: str) -> str:
    """Fill the ``${NAME}`` fields of ``text``; a missing value names the field and how to give it.

    >>> fill_fields("folder: ${DATA}", {"DATA": "/d"}, "job.yaml")
    'folder: /d'
    """
    try:
        return string.Template(text).substitute(values)
    except KeyError as error:
        name = error.args[0]
        raise ConfigError(f"{where} needs a value for ${{{name}}}: pass --set {name}=VALUE "
                          "(or set the environment variable)") from None
    except ValueError as error:
        raise ConfigError(f"{where}: a '$' that is not a ${{NAME}} field ({error}); write $$ for a literal "
                          "'$'") from None
