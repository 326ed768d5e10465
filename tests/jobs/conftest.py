"""A small local training run for sweep tests: random tiny GPT-NeoX checkpoints with a real BPE tokenizer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SWEEP = REPO / "jobs" / "sweep_checkpoints.py"
RUN_STEPS = (0, 1, 2, 4, 8)  # step1 is step0 saved again (as Pythia's step1 equals step0)
# small but complete scoring settings: every metric, every built-in task
FAST_SCORING = ["--fv-prompts", "2", "--induction-sequences", "8", "--icl-queries", "2", "--ablation-steps", "8"]


def build_sweep_run(root: Path) -> Path:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from dynamics.toy.corpus import CorpusConfig, generate_texts
    from dynamics.toy.tokenizer import BOS_TEXT, train_tokenizer

    documents, heldout = generate_texts(0, CorpusConfig(n_stories=60, n_prompts=60, n_heldout_stories=8))
    tokenizer = train_tokenizer((d.replace(BOS_TEXT, "") for d in documents), vocab_size=400)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
        intermediate_size=64, max_position_embeddings=1024, rotary_pct=0.25, bos_token_id=0, eos_token_id=0,
    )
    for step in RUN_STEPS:
        torch.manual_seed(0 if step == 1 else step)
        folder = root / f"step{step}"
        GPTNeoXForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    tokenizer.save_pretrained(root)
    (root / "heldout.txt").write_text("\n".join(heldout))
    return root


@pytest.fixture(scope="session")
def sweep_run_template(tmp_path_factory) -> Path:
    return build_sweep_run(tmp_path_factory.mktemp("sweep-run"))


@pytest.fixture
def sweep_run(sweep_run_template, tmp_path) -> Path:
    """A per-test copy of the run, free to corrupt."""
    return Path(shutil.copytree(sweep_run_template, tmp_path / "run"))


def sweep_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(DYNAMICS_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO), RAY_AUTH_MODE="token")
    return env


def run_sweep(args: list, tmp_path: Path, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SWEEP), *map(str, args)], env=sweep_env(tmp_path), capture_output=True,
        text=True, timeout=timeout, cwd=tmp_path, **kwargs,
    )
