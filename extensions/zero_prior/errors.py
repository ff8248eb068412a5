"""The one exception family every zero-prior error belongs to.

A single base class lets the CLI turn known problems into one readable line
while unexpected failures keep their traceback.
"""


class ZeroPriorError(Exception):
    """A problem the user can fix; the message names the key or file and the fix."""


class ConfigError(ZeroPriorError, ValueError):
    """A setting in the YAML (or its Python equivalent) is missing, mistyped or out of range."""


class PlaceholderError(ZeroPriorError, ValueError):
    """A placeholder token cannot be registered or applied as asked."""


class FormatError(ZeroPriorError, ValueError):
    """A saved file does not follow the zero-prior file format."""


class TestbedError(ZeroPriorError, RuntimeError):
    """The tiny test bed cannot be built (for example, the tokenizer ranks are missing)."""
