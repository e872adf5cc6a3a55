"""The data room: task data for a run (built-in generators, HF ids, JSONL/Parquet, named evaluation
sets) in TRL's conversational format, and the warm start's prompt/completion pairs."""
