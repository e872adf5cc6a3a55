"""Sandboxes: run untrusted code and decide verdicts. Must not import torch or transformers."""
