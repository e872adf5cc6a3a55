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
from k2rl.data.sources import sft_dataset
from k2rl.policy.precision import trainer_precision


def warm_start_args(config: WarmStartConfig, out_dir: Path, seed: int, long_prompts: bool = False) -> SFTConfig:
    """SFTConfig for the warm start (``long_prompts``: critic prompts are a few hundred tokens)."""
    return SFTConfig(
        output_dir=str(out_dir),
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        warmup_steps=int(config.warmup_ratio * config.max_steps),
        lr_scheduler_type="cosine",
        logging_steps=max(config.max_steps // 10, 1),
        save_strategy="no",
        report_to=[],
        seed=seed,
        **trainer_precision(),
        dataloader_num_workers=0,
        max_length=512 if long_prompts else 128,
        completion_only_loss=True,
        disable_tqdm=False,
    )


def warm_start(
    model, tokenizer, train, config: WarmStartConfig, out_dir: Path, seed: int, callbacks=(), extra_rows: Dataset | None = None
):
    """Supervised fine-tuning on prompt -> demonstration pairs (plus ``extra_rows``); returns the trained model."""
    args = warm_start_args(config, out_dir, seed, long_prompts=extra_rows is not None)
    rows = sft_dataset(train)
    if extra_rows is not None:
        rows = concatenate_datasets([rows, extra_rows.select_columns(["prompt", "completion"])]).shuffle(seed=seed)
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=rows, processing_class=tokenizer, callbacks=list(callbacks)
    )
    trainer.train()
    return trainer.model
