"""Warm start: a short supervised phase with TRL's SFTTrainer on the task's demonstrations.

RL from a random policy gets zero reward everywhere and so no signal. A short supervised phase
teaches the answer format and some arithmetic; it is kept short on purpose, so RL starts from a
policy that is right sometimes, not always. The whole model trains here (it is tiny and random); RL
afterwards trains only expert adapters.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, concatenate_datasets
from trl import SFTConfig, SFTTrainer

from k2rl.config import WarmStartConfig
from k2rl.errors import K2RLError
from k2rl.data.sources import sft_dataset
from k2rl.policy.precision import trainer_precision
from k2rl.trainer.trl_options import COMMON_DEFAULTS, SFT_OWNED, build_trl_config, trl_fields


# SFTConfig fields k2rl sets from other recipe keys (``warm_start.trl`` may not set them).
def trl_options(config: WarmStartConfig) -> dict:
    """The recipe's ``warm_start.trl`` fields, checked against SFTConfig (see :mod:`.trl_options`)."""
    return trl_fields(SFTConfig, config.trl, SFT_OWNED, "warm_start.trl")


def warm_start_args(
    config: WarmStartConfig, out_dir: Path, seed: int, long_prompts: bool = False, report_to=(), multi_turn: bool = False
) -> SFTConfig:
    """SFTConfig for the warm start (``long_prompts``: critic prompts are a few hundred tokens).

    ``multi_turn``: some demonstrations hold tool results. The loss then covers the assistant's turns
    only (the chat template's generation marks), as RL's does: a tool's output is not the policy's to
    predict, and training on it teaches the policy to work out in its head what the tool printed, a
    target it cannot reach whose gradient drowns out the one it can (copying the result into the answer).
    """
    defaults = {  # k2rl's choices that ``warm_start.trl`` may override
        **COMMON_DEFAULTS,
        "lr_scheduler_type": "cosine",
        "logging_steps": max(config.max_steps // 10, 1),
        "save_strategy": "no",
        "max_length": 512 if long_prompts else 128,
        "completion_only_loss": True,
        "assistant_only_loss": multi_turn,
    }
    return build_trl_config(
        SFTConfig,
        "warm_start.trl" if config.trl else "warm_start",
        output_dir=str(out_dir),
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        warmup_steps=int(config.warmup_ratio * config.max_steps),
        report_to=list(report_to),
        seed=seed,
        **trainer_precision(),
        **{**defaults, **trl_options(config)},
    )


def _context_length(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def _has_tool_results(rows: Dataset) -> bool:
    return any(message["role"] == "tool" for completion in rows["completion"] for message in completion)


def answer_drill_rows(rows: Dataset, copies: int) -> list[dict]:
    """``copies`` of the last step of each demonstration that holds tool results (``warm_start.answer_drills``):
    prompt = the question and every turn up to the last tool result, completion = the final answer."""
    drills = [{"prompt": row["prompt"] + row["completion"][:-1], "completion": row["completion"][-1:]}
              for row in rows if any(m["role"] == "tool" for m in row["completion"])]
    return drills * copies


def _conversations(rows: list[dict]) -> Dataset:
    """Prompt/completion rows as one dataset: every message with the same keys, so Arrow gives the
    columns one type whether a prompt holds tool calls (a drill) or not."""
    def same_keys(messages):
        return [{"role": m["role"], "content": m["content"], "tool_calls": m.get("tool_calls"),
                 "tool_call_id": m.get("tool_call_id")} for m in messages]

    return Dataset.from_list([{"prompt": same_keys(r["prompt"]), "completion": same_keys(r["completion"])} for r in rows])


def _longest_demonstration(rows: Dataset, tokenizer, context: int | None) -> int:
    """Tokens in the longest prompt + demonstration: the warm start must never cut a demonstration short
    (a cut one teaches an answer without its end). One longer than the model's context is refused."""
    longest = max(len(tokenizer(tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False),
                                add_special_tokens=False)["input_ids"]) for row in rows)
    if context is not None and longest > context:
        raise K2RLError(f"warm start: a demonstration (with its prompt) is {longest} tokens, longer than the "
                        f"model's context of {context}; shorten the task's prompts or demonstrations")
    return longest


def warm_start_trainer(
    model, tokenizer, train, config: WarmStartConfig, out_dir: Path, seed: int, callbacks=(), extra_rows: Dataset | None = None,
    report_to=(),
) -> SFTTrainer:
    """The SFTTrainer of the warm start on prompt -> demonstration pairs (plus ``extra_rows``), not yet run."""
    rows = sft_dataset(train)
    args = warm_start_args(config, out_dir, seed, long_prompts=extra_rows is not None, report_to=report_to,
                           multi_turn=_has_tool_results(rows))
    args.max_length = max(args.max_length, _longest_demonstration(rows, tokenizer, _context_length(model)))
    extra = extra_rows.select_columns(["prompt", "completion"]) if extra_rows is not None else None
    drills = answer_drill_rows(rows, config.answer_drills)
    if drills:
        rows = _conversations([*rows.to_list(), *drills, *(extra.to_list() if extra is not None else [])]).shuffle(seed=seed)
    elif extra is not None:
        rows = concatenate_datasets([rows, extra]).shuffle(seed=seed)
    return SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer, callbacks=list(callbacks))


def warm_start(
    model, tokenizer, train, config: WarmStartConfig, out_dir: Path, seed: int, callbacks=(), extra_rows: Dataset | None = None,
    report_to=(),
):
    """Supervised fine-tuning on prompt -> demonstration pairs (plus ``extra_rows``); returns the trained model."""
    trainer = warm_start_trainer(model, tokenizer, train, config, out_dir, seed, callbacks, extra_rows, report_to)
    trainer.train()
    return trainer.model
