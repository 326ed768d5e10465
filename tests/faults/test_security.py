"""Checkpoints load without executing code: safetensors first, `.bin` only with weights_only, never
remote code. (Listeners and stray writes are checked on a live sweep in test_live_sweep.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from dynamics.adapters import load_model, read_state_dict
from tests.faults.conftest import record_figures
from tests.jobs.conftest import REPO

SOURCE_FOLDERS = ("dynamics", "jobs", "warehouse", "reports")


class _Payload:
    """Unpickling this calls open(marker, 'w'): a file appears iff the pickle's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def malicious_checkpoint(tmp_path) -> tuple[Path, Path]:
    """A save_pretrained folder whose only weights are a pytorch_model.bin that runs code when unpickled."""
    folder = tmp_path / "step1"
    config = GPTNeoXConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=1, intermediate_size=64,
                           vocab_size=64, max_position_embeddings=64)
    GPTNeoXForCausalLM(config).save_pretrained(folder)
    state = dict(read_state_dict(folder))
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({**state, "payload": _Payload(marker)}, folder / "pytorch_model.bin")
    assert not marker.exists()
    return folder, marker


def test_a_pickle_that_runs_code_is_refused_and_never_runs(malicious_checkpoint):
    folder, marker = malicious_checkpoint
    record_figures("malicious pickle checkpoint", 1)
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        read_state_dict(folder)
    with pytest.raises(ValueError):
        load_model(folder)
    assert not marker.exists()


def test_the_source_loads_weights_only_and_never_trusts_remote_code():
    sources = {p: p.read_text() for folder in SOURCE_FOLDERS for p in (REPO / folder).rglob("*.py")}
    for path, text in sources.items():
        assert not re.search(r"trust_remote_code\s*=\s*True", text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
        for call in re.findall(r"\.from_pretrained\((?:[^()]|\([^()]*\))*\)", text, flags=re.S):
            assert "trust_remote_code=False" in call, (path, call)
        assert not re.search(r"\b(pickle|dill|cloudpickle)\.loads?\(", text), path
