"""Every exception zero-prior raises on purpose, one class per kind of failure.

All of them derive from ``ZeroPriorError``, so the CLI turns any known problem
into one line that names the key, file or value and says what to do, while an
unexpected failure keeps its traceback. Each class also derives from the
built-in exception it refines (``ValueError`` for bad input, ``RuntimeError``
for a run that cannot go on), so callers that already catch those keep
working.
"""


class ZeroPriorError(Exception):
    """A problem the user can fix; the message names the key or file and the fix."""


class ConfigError(ZeroPriorError, ValueError):
    """A setting in a YAML file (or its Python equivalent) is missing, mistyped or out of range."""


class PlaceholderError(ZeroPriorError, ValueError):
    """A placeholder token cannot be registered or applied as asked."""


class FormatError(ZeroPriorError, ValueError):
    """A file or weights package does not follow the zero-prior file format, or does not fit the model."""


class PipelineError(ZeroPriorError, ValueError):
    """A diffusers pipeline cannot be loaded from what was given, or is not of a family zero-prior supports."""


class ExportError(ZeroPriorError, ValueError):
    """An export cannot be written as asked (existing output, unknown format, unwritable place)."""


class InstallError(ZeroPriorError, ValueError):
    """The extension cannot be installed into (or removed from) a checkout as asked."""


class AiToolkitError(ZeroPriorError, RuntimeError):
    """ai-toolkit is missing, failed, or behaves differently from the version zero-prior supports."""


class TrainingError(ZeroPriorError, RuntimeError):
    """Placeholder training cannot go on (a non-finite vector, a pivot that failed on another rank)."""


class CaptionError(ZeroPriorError, ValueError):
    """The dataset or the caption settings cannot produce a clean set of paired captions."""


class ExperimentError(ZeroPriorError, RuntimeError):
    """An arm failed or an output the next step needs is missing; the message names the file and the fix."""


class StatsError(ZeroPriorError, ValueError):
    """The per-prompt values cannot be compared as given (missing prompts, NaN, too few prompts)."""


class MetricUnavailableError(ZeroPriorError, RuntimeError):
    """A metric cannot be computed here (package or weights missing); the message says why and how to fix it."""


class MetricInputError(ZeroPriorError, ValueError):
    """Images or prompts given to a metric are unusable (type, shape, value range, count); the message says which."""


class TinyModelError(ZeroPriorError, RuntimeError):
    """The tiny test bed cannot be built (for example, the tokenizer ranks are missing)."""
