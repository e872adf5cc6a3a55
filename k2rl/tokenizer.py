"""A small tokenizer built locally, with Kimi K2's chat format.

Nothing can be downloaded at run time, so the tiny default policy needs a tokenizer made on the spot:
a byte-level BPE (any text encodes, code included) trained on a few kilobytes of task-like text, with
digits split one per token (arithmetic is learned far faster when numbers are spelled digit by digit).
The special tokens and the chat template follow Kimi K2's conversation format, including its
tool-call section, so recipes written against the tiny model carry over to real K2 checkpoints.
"""

from __future__ import annotations

import random

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Kimi K2's structural tokens. The message layout is
#   <|im_user|>user<|im_middle|>…<|im_end|><|im_assistant|>assistant<|im_middle|>…<|im_end|>
# and tool calls are wrapped in a section of begin/argument/end markers.
SPECIAL_TOKENS = [
    "[PAD]",
    "[BOS]",
    "[EOS]",
    "<|im_system|>",
    "<|im_user|>",
    "<|im_assistant|>",
    "<|im_middle|>",
    "<|im_end|>",
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
]

# Jinja chat template in K2's format. Assistant tool calls render as
#   <|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{json}
#   <|tool_call_end|><|tool_calls_section_end|>
# and a tool result is a system-side message "## Return of ID".
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}<|im_system|>system<|im_middle|>{{ message['content'] }}<|im_end|>"
    "{%- elif message['role'] == 'user' -%}<|im_user|>user<|im_middle|>{{ message['content'] }}<|im_end|>"
    "{%- elif message['role'] == 'tool' -%}"
    "<|im_system|>tool<|im_middle|>## Return of {{ message.get('tool_call_id', '') }}\n"
    "{{ message['content'] }}<|im_end|>"
    "{%- elif message['role'] == 'assistant' -%}"
    "<|im_assistant|>assistant<|im_middle|>{% generation %}{{ message.get('content') or '' }}"
    "{%- if message.get('tool_calls') -%}<|tool_calls_section_begin|>"
    "{%- for call in message['tool_calls'] -%}"
    "<|tool_call_begin|>{{ call.get('id') or ('functions.' ~ call['function']['name'] ~ ':' ~ loop.index0) }}"
    "<|tool_call_argument_begin|>"
    "{%- if call['function']['arguments'] is string -%}{{ call['function']['arguments'] }}"
    "{%- else -%}{{ call['function']['arguments'] | tojson }}{%- endif -%}"
    "<|tool_call_end|>"
    "{%- endfor -%}<|tool_calls_section_end|>{%- endif -%}"
    "<|im_end|>{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_assistant|>assistant<|im_middle|>{%- endif -%}"
)

_WORDS = (
    "the answer is what how many much total left each has have had gives gets buys sells more fewer "
    "apples books coins marbles pencils stickers cards shells is are was were and or of to in on at a an "
    "def return if else elif for while in range len list dict int str float True False None import from "
    "class self assert print lambda yield with as try except raise pass break continue not is and or"
).split()


def _training_corpus(n_lines: int = 4000, seed: int = 0) -> list[str]:
    """Short lines of arithmetic, English task words and Python, enough to learn useful merges."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        lines.append(f"{words} {a} + {b} = {a + b}. The answer is {a - b}.")
        lines.append(f"def f(x):\n    return x * {a} + {b}\n")
    return lines


def build_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer locally and wrap it for ``transformers``."""
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="[BOS]",
        eos_token="<|im_end|>",
        pad_token="[PAD]",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.padding_side = "left"
    return wrapped
