"""Training helpers that do not depend on ai-toolkit: the causal prefix cache and data-parallel averaging."""
