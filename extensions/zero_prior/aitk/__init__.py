"""The ai-toolkit glue: the only code of this package that imports ai-toolkit.

``extension``, ``model`` and ``trainer`` import ai-toolkit and load only inside
it (ai-toolkit imports this package as ``extensions.zero_prior``);
``settings`` (the config rules) and ``launch`` (running ai-toolkit's ``run.py``
from outside) do not, so tests and tools can use them anywhere.
"""
