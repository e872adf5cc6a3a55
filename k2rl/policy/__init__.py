"""The policy room: building and loading models (any HF causal LM, K2-family presets), the tokenizer with
K2's chat format, and the numeric precision a device gets. Knows nothing about rewards or training."""
