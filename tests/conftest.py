"""Shared fixtures. Checkpoint fixtures are prefixed `ckpt_`."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.warning_guard import pytest_runtest_protocol  # noqa: F401  (a hook: fails deprecations our code calls)


@dataclass(frozen=True)
class CkptRun:
    """A tiny local training run: `root/step<N>/` save_pretrained folders and `root/tokenizer.json`."""

    root: Path
    revisions: tuple[str, ...]  # in step order
    identical: tuple[str, str]  # two revisions whose weight files are byte-identical (like Pythia step0/step1)


CKPT_REVISIONS = ("step0", "step1", "step2", "step16")  # step16 sorts before step2 as text


def ckpt_build_run(root: Path) -> CkptRun:
    """Random-weight 2-layer GPT-NeoX checkpoints; step1 is step0 saved again, the others differ."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        hidden_size=32,
        num_attention_heads=4,
        num_hidden_layers=2,
        intermediate_size=64,
        vocab_size=64,
        max_position_embeddings=64,
        rotary_pct=0.25,
    )
    for seed, revision in [(0, "step0"), (0, "step1"), (2, "step2"), (16, "step16")]:
        torch.manual_seed(seed)
        GPTNeoXForCausalLM(config).save_pretrained(root / revision)
    vocab = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, config.vocab_size)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(root / "tokenizer.json"))
    return CkptRun(root=root, revisions=CKPT_REVISIONS, identical=("step0", "step1"))


@pytest.fixture(scope="session")
def ckpt_run_template(tmp_path_factory: pytest.TempPathFactory) -> CkptRun:
    """Built once per session; read-only — use `ckpt_tiny_run` for a copy a test may change."""
    return ckpt_build_run(tmp_path_factory.mktemp("ckpt_run"))


@pytest.fixture
def ckpt_tiny_run(ckpt_run_template: CkptRun, tmp_path: Path) -> CkptRun:
    """A fresh copy of the tiny run under this test's tmp_path."""
    root = tmp_path / "run"
    shutil.copytree(ckpt_run_template.root, root)
    return CkptRun(root=root, revisions=ckpt_run_template.revisions, identical=ckpt_run_template.identical)
