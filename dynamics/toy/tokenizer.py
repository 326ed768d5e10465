"""The toy suite's tokenizer: a small byte-level BPE trained offline on the toy corpus.

Laid out like Pythia's: `<|endoftext|>` is id 0 and serves as BOS and EOS, `<|padding|>` is id 1, and
the tokenizer adds no special tokens itself (prompts carry the BOS text, as in the reference).
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast

from dynamics.errors import InputError

BOS_TEXT = "<|endoftext|>"
PAD_TEXT = "<|padding|>"
SPECIAL_TOKENS = (BOS_TEXT, PAD_TEXT)  # ids 0 and 1, in this order


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with `vocab_size` entries (256 bytes + 2 specials + merges) learned from `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise InputError(f"vocab_size must be at least 300 (256 bytes, 2 special tokens, some merges); got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS_TEXT, eos_token=BOS_TEXT, pad_token=PAD_TEXT
    )
