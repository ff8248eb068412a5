"""Everything zero-prior knows about ai-toolkit.

The modules directly in this folder never import ai-toolkit, so the config
rules, the launcher and the installer are usable and testable anywhere:
``facts`` (values copied from ai-toolkit), ``checkout`` (finding a checkout),
``settings`` (the config rules, checked before any model loads), ``launch``
(running ai-toolkit's ``run.py`` on a staged root), ``install`` (putting the
extension into a checkout), ``step_log`` (reading its per-step database),
``ui_job`` (its web UI's job row, for a refusal) and ``plugin_page`` (the UI's
Plugin tab page with the token's health).
``runtime/`` is the only code of the package that imports ai-toolkit; it is
loaded only inside ai-toolkit, which imports this package as ``extensions.zero_prior``.
"""
