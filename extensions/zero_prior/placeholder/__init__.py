"""The placeholder token itself, independent of any trainer or file: made, registered, started, spliced, watched.

- ``config``: ``PlaceholderConfig``, the strict ``placeholder:`` block;
- ``vocabulary``: registering the token in a tokenizer (checked inside the family's prompt template) and
  expanding multi-vector tokens in prompts;
- ``starts``: the zero-prior start and the ablation starts;
- ``splice``: the trainable fp32 vectors and the forward hook that splices them into the encoder's input;
- ``prepare``: all of the above on a text encoder in one call, and the trained state as a file record;
- ``telemetry``: what the vector is doing while it trains.
"""
