"""The toy suites' tokenizers: a small byte-level BPE trained offline on a story corpus, or one token per word.

Laid out like Pythia's: `<|endoftext|>` is id 0 and serves as BOS and EOS, `<|padding|>` is id 1, and
the tokenizer adds no special tokens itself (prompts carry the BOS text, as in the reference).
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast

from dynamics.errors import InputError

BOS_TEXT = "<|endoftext|>"
PAD_TEXT = "<|padding|>"
UNK_TEXT = "<|unk|>"  # the word-level tokenizer's unknown word
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


def word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word of a closed vocabulary, laid out like the BPE one.

    Ids 0 and 1 are BOS/EOS and padding, id 2 the unknown word, then `words` in order. A word is the same
    token with or without a leading space, so " y" tokenized alone is the word itself (the FV target).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, UNK_TEXT, *words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TEXT))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    backend.add_special_tokens([*SPECIAL_TOKENS, UNK_TEXT])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS_TEXT, eos_token=BOS_TEXT, pad_token=PAD_TEXT, unk_token=UNK_TEXT
    )
