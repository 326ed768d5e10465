"""The toy suite: real training shows an induction rise; layout, determinism and the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerFast

from dynamics.adapters import load_model
from dynamics.scorers.induction import InductionConfig, make_probe, ordinary_token_ids, score_induction
from dynamics.toy.corpus import CorpusConfig, StoryData, repeated_span_rows
from dynamics.toy.suite import MANIFEST, ToySuiteConfig, checkpoint_schedule, read_manifest, train_suite
from dynamics.toy.train import ProbeSettings, ToyModelSpec, TrainSettings
from jobs import cli
from jobs.toy import format_scores

SMALL_CORPUS = CorpusConfig(n_stories=300, n_prompts=300, n_heldout_stories=40)
PROBE = ProbeSettings(induction=InductionConfig(n_sequences=100))


def rise_config() -> ToySuiteConfig:
    """One width-64 model on repeated-span rows only (text rows delay the jump), trained past it.

    Without text the jump comes at steps 1,100-1,500 (three seeds); 1,800 steps leave a margin.
    """
    return ToySuiteConfig(
        models=(ToyModelSpec("t-64d-2h", 64, 2, 2),),
        train=TrainSettings(steps=checkpoint_schedule(1800, every=300)),
        data=StoryData(corpus=SMALL_CORPUS, repeat_rows=32, text_rows=0),
        probe=PROBE,
    )


def short_config(seed: int = 0, two_models: bool = False) -> ToySuiteConfig:
    """A few steps of one tiny model (or two, trained in parallel processes)."""
    models = (ToyModelSpec("t-16d-2h", 16, 2, 1),) + ((ToyModelSpec("t-16d-1h", 16, 1, 1),) if two_models else ())
    return ToySuiteConfig(
        models=models,
        train=TrainSettings(steps=(0, 1, 3)),
        data=StoryData(corpus=CorpusConfig(n_stories=40, n_prompts=40, n_heldout_stories=16), repeat_rows=2, text_rows=2),
        probe=ProbeSettings(induction=InductionConfig(n_sequences=4)),
        seed=seed,
    )


@pytest.fixture(scope="module")
def rise_suite(tmp_path_factory) -> Path:
    return train_suite(rise_config(), out=tmp_path_factory.mktemp("suites") / "rise")


def test_induction_rises_from_chance(rise_suite: Path) -> None:
    manifest = read_manifest(rise_suite)
    for model, rows in manifest["checkpoint_scores"].items():
        induction = [r["induction_best"] for r in rows]
        assert induction[0] < 0.05, model
        assert induction[-1] > 0.15 and induction[-1] > 4 * induction[0], (model, induction)
        token_loss = [r["icl_token_loss"] for r in rows]
        assert token_loss[-1] < token_loss[0] - 0.2, (model, token_loss)  # later tokens gain from context


def test_manifest_and_layout(rise_suite: Path) -> None:
    manifest = read_manifest(rise_suite)
    config = rise_config()
    assert manifest["config_hash"] == config.config_hash()
    assert manifest["models"] == ["t-64d-2h"]
    assert manifest["steps"] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 600, 900, 1200, 1500, 1800]
    assert len(manifest["data_sha256"]) == 64
    tokenizer = PreTrainedTokenizerFast.from_pretrained(rise_suite / "t-64d-2h")
    assert tokenizer.convert_ids_to_tokens([0, 1]) == ["<|endoftext|>", "<|padding|>"]
    assert tokenizer("<|endoftext|>Q: cat").input_ids[0] == 0
    for step in manifest["steps"]:
        assert (rise_suite / "t-64d-2h" / f"step{step}" / "model.safetensors").is_file()
    model = load_model(rise_suite / "t-64d-2h" / "step1800", attn_implementation="eager")
    assert (model.n_layers, model.n_heads, model.d_head, model.d_model) == (2, 2, 32, 64)
    assert model.config.use_parallel_residual and model.config.rope_parameters["partial_rotary_factor"] == 0.25
    assert model.vocab_size == len(tokenizer) == 512


def test_manifest_scores_match_a_fresh_scoring(rise_suite: Path) -> None:
    model = load_model(rise_suite / "t-64d-2h" / "step1800", attn_implementation="eager")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(rise_suite / "t-64d-2h" / "step1800")
    probe = make_probe(ordinary_token_ids(tokenizer), 0, PROBE.induction)
    scores = score_induction(model, probe, PROBE.induction)
    recorded = read_manifest(rise_suite)["checkpoint_scores"]["t-64d-2h"][-1]
    assert recorded["step"] == 1800
    assert recorded["induction_best"] == pytest.approx(float(scores.values["induction"].max()), rel=1e-5)
    table = format_scores(read_manifest(rise_suite)).splitlines()
    assert len(table) == 1 + 16 and table[-1].split()[:2] == ["t-64d-2h", "1800"]


def test_same_seed_gives_identical_weights(tmp_path: Path) -> None:
    first = train_suite(short_config(two_models=True), out=tmp_path / "a")  # one process per model
    second = train_suite(short_config(), out=tmp_path / "b")  # in this process
    other = train_suite(short_config(seed=1), out=tmp_path / "c")
    weights = [load_file(d / "t-16d-2h" / "step3" / "model.safetensors") for d in (first, second, other)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert read_manifest(first)["data_sha256"] == read_manifest(second)["data_sha256"]


def test_cache_is_reused_and_protected(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    train_suite(short_config(), out=out)
    weight_file = out / "t-16d-2h" / "step3" / "model.safetensors"
    before = weight_file.stat().st_mtime_ns
    assert train_suite(short_config(), out=out) == out
    assert weight_file.stat().st_mtime_ns == before  # not retrained
    with pytest.raises(FileExistsError, match="holds a toy suite of another config"):
        train_suite(short_config(seed=1), out=out)
    train_suite(short_config(seed=1), out=out, force=True)
    assert read_manifest(out)["seed"] == 1


def test_interrupted_suite_is_rebuilt_and_foreign_folders_refused(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    train_suite(short_config(), out=out)
    (out / MANIFEST).unlink()
    (out / ".incomplete").touch()
    train_suite(short_config(), out=out)
    assert (out / MANIFEST).is_file() and not (out / ".incomplete").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert cli.main(["toy", "--out", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "keep"


def test_default_cache_location_follows_dynamics_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DYNAMICS_HOME", str(tmp_path))
    suite_dir = train_suite(short_config())
    assert suite_dir == tmp_path / "toy" / short_config().config_hash()
    assert json.loads((suite_dir / MANIFEST).read_text())["config_hash"] == suite_dir.name


def test_repeated_span_rows_copy_earlier_segments_at_varied_offsets() -> None:
    ids = torch.arange(2, 512)
    rows = repeated_span_rows(torch.Generator().manual_seed(0), ids, 0, 64, 128, 4, 50)  # (64, 128)
    assert rows.shape == (64, 128) and (rows[:, 0] == 0).all() and (rows[:, 1:] >= 2).all()
    offsets = set()
    for row in rows.tolist():
        for pos in range(2, 128):  # a repeated bigram marks a copy; its distance is the offset
            for back in range(1, pos - 1):
                if row[pos - back - 1 : pos - back + 1] == row[pos - 1 : pos + 1]:
                    offsets.add(back)
    assert len(offsets) > 30


def test_config_errors_are_reported_together() -> None:
    with pytest.raises(ValueError, match=r"2 problem\(s\): models must be non-empty.*shorter than the induction probe"):
        ToySuiteConfig(models=(), train=TrainSettings(steps=(0, 10)), data=StoryData(context_length=64),
                       probe=ProbeSettings(early=1, late=20))
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        ToyModelSpec("x", 64, 3)


@pytest.mark.slow
def test_default_preset_shows_the_induction_phase_change(tmp_path: Path, capsys) -> None:
    """The embedded default (≈10 min on 2 cores): every model goes from chance to a clear induction head."""
    assert cli.main(["toy", "--out", str(tmp_path / "suite")]) == 0
    assert f"toy suite: {tmp_path / 'suite'}" in capsys.readouterr().out
    for model, rows in read_manifest(tmp_path / "suite")["checkpoint_scores"].items():
        assert rows[0]["induction_best"] < 0.05 and rows[-1]["induction_best"] >= 0.25, model
        assert rows[-1]["icl_token_loss"] < rows[0]["icl_token_loss"] - 0.5, model
