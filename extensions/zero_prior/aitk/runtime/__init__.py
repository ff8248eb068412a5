"""The code that runs inside ai-toolkit: the extension entry, the trainer, the model subclasses, the pivot.

The only part of zero-prior that imports ``toolkit`` or ``extensions_built_in``.
"""
