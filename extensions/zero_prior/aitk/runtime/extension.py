"""The ai-toolkit plugin entry: registers the ``zero_prior_trainer`` process type.

ai-toolkit calls ``get_process()`` of every extension at job start, so the
trainer (and the heavy imports behind it) is imported inside the method only.
"""

from __future__ import annotations

from toolkit.extension import Extension

from ..facts import PROCESS_TYPE


class ZeroPriorExtension(Extension):
    """``type: zero_prior_trainer`` in a process config selects ``ZeroPriorTrainer``."""

    uid = PROCESS_TYPE
    name = "Zero-prior placeholder trainer"

    @classmethod
    def get_process(cls) -> type:
        from .trainer import ZeroPriorTrainer

        return ZeroPriorTrainer


AI_TOOLKIT_EXTENSIONS = [ZeroPriorExtension]
