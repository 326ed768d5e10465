"""Sweeping any training run on the Hub, offline: real huggingface_hub cache layouts of each public suite's
branch naming (OLMo, OLMo 2, PolyPythia seeds, LLM360 Amber, Stanford CRFM GPT-2), each holding small
checkpoints of that suite's architecture, swept with HF_HUB_OFFLINE=1 through the same huggingface_hub code a
user with network runs. Also: a custom --revision-pattern, an unknown architecture and branch names that are
not checkpoints, each refused before any weights are read."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from tests.hub_cache import build_hub_cache, repo_folder
from tests.jobs.conftest import REPO, SWEEP, sweep_env

SCORING = ["--fv-prompts", "2", "--induction-sequences", "8", "--icl-queries", "2", "--ablation-steps", "last"]
HEAD_METRICS = 5  # induction, prev_token, duplicate_token, copying, fv
# repo → (architecture, {branch or tag: which random weights it holds}); 'main' is the final model again
SUITE_REPOS = {
    "allenai/OLMo-tiny-hf": ("olmo", {"step0-tokens0B": 0, "step1000-tokens4B": 1, "step2000-tokens8B": 2, "main": 2}),
    "allenai/OLMo-2-tiny": ("olmo2", {"stage1-step0-tokens0B": 0, "stage1-step1000-tokens5B": 1,
                                      "stage2-ingredient1-step1000-tokens5B": 2}),  # an annealing run: left out
    "EleutherAI/pythia-14m-seed1": ("gpt_neox", {"step0": 0, "step1": 1}),
    "EleutherAI/pythia-14m-seed2": ("gpt_neox", {"step0": 2, "step1": 3}),
    "LLM360/Amber-tiny": ("llama", {"ckpt_000": 0, "ckpt_001": 1, "main": 1}),
    "stanford-crfm/alias-gpt2-small-x21": ("gpt2", {"checkpoint-0": 0, "checkpoint-10": 1}),  # tags on the Hub
}
# expected (step, tokens seen) per repo
EXPECTED = {
    "allenai/OLMo-tiny-hf": [(0, 0), (1000, 4 * 10**9), (2000, 8 * 10**9)],
    "allenai/OLMo-2-tiny": [(0, 0), (1000, 5 * 10**9)],
    "EleutherAI/pythia-14m-seed1": [(0, 0), (1, 2_097_152)],
    "EleutherAI/pythia-14m-seed2": [(0, 0), (1, 2_097_152)],
    "LLM360/Amber-tiny": [(0, None), (1, None)],
    "stanford-crfm/alias-gpt2-small-x21": [(0, 0), (10, 5_242_880)],
}


def save_tiny_checkpoint(folder: Path, family: str, weights: int, tokenizer_dir: Path, vocab_size: int) -> None:
    """A 2-layer, 4-head, width-32 random model of `family` with the run's tokenizer, as save_pretrained writes it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    from tests.dynamics.families import LLAMA_LAYOUT_FAMILIES, tiny_llama_layout_model

    torch.manual_seed(weights)
    shape = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0)
    if family == "gpt_neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                                                 intermediate_size=64, max_position_embeddings=1024, **shape))
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=1024, **shape))
    elif family == "llama":
        model = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                             num_hidden_layers=2, intermediate_size=64, max_position_embeddings=1024,
                                             **shape))
    else:
        assert family in LLAMA_LAYOUT_FAMILIES, family
        model = tiny_llama_layout_model(family, n_layers=2, n_heads=4, d_model=32, n_positions=1024,
                                        initializer_range=0.02, **shape)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, folder / name)


def build_suite_cache(cache: Path, scratch: Path, tokenizer_dir: Path, repos: dict) -> None:
    """Each repo's branches laid out in a real hub cache (refs/, snapshots/, blobs/)."""
    from transformers import AutoTokenizer

    vocab_size = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    for repo_id, (family, branches) in repos.items():
        folders = {}
        for weights in sorted(set(branches.values())):
            folder = scratch / repo_id.replace("/", "--") / str(weights)
            save_tiny_checkpoint(folder, family, weights + 10 * len(folders), tokenizer_dir, vocab_size)
            folders[weights] = folder
        build_hub_cache(cache, repo_id, {branch: folders[w] for branch, w in branches.items()})


@pytest.fixture(scope="module")
def suite_cache(sweep_run_template, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suites")
    cache = root / "hub"
    build_suite_cache(cache, root / "checkpoints", sweep_run_template, SUITE_REPOS)
    return cache


def offline_env(tmp_path: Path) -> dict:
    """The sweep's environment with huggingface_hub offline (read at import) and a home of its own."""
    return {**sweep_env(tmp_path), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}


def offline_sweep(args: list, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SWEEP), *map(str, args)], env=offline_env(tmp_path),
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)


def test_every_suites_naming_sweeps_offline_into_one_warehouse(suite_cache, tmp_path):
    warehouse = tmp_path / "suites.duckdb"
    models = [arg for repo in SUITE_REPOS for arg in ("--model", repo)]
    result = offline_sweep([*models, "--cache-dir", suite_cache, "--warehouse", warehouse, *SCORING, "--no-report",
                      "--actors", "2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    n_checkpoints = sum(len(steps) for steps in EXPECTED.values())
    assert f"{n_checkpoints} planned, {n_checkpoints} scored, 0 skipped as already done, 0 duplicates, 0 failed" \
        in result.stdout
    # the OLMo 2 annealing branch is named, not silently dropped; 'main' is not a checkpoint of its own
    assert "allenai/OLMo-2-tiny: 1 of 3 branches and tags are not training checkpoints" in result.stderr
    assert "'stage2-ingredient1-step1000-tokens5B'" in result.stderr
    with duckdb.connect(str(warehouse), read_only=True) as con:
        checkpoints = con.execute(
            "SELECT model, step, tokens, revision, status FROM checkpoints ORDER BY model, step").fetchall()
        models_rows = {row[0]: row[1:] for row in con.execute(
            "SELECT model, family, source, suite, seed, n_layers, n_heads FROM models").fetchall()}
        per_checkpoint = con.execute(
            "SELECT model, step, count(*), count(value) FROM head_scores GROUP BY ALL").fetchall()
        ablated = dict(con.execute("SELECT model, max(step) FROM ablations GROUP BY model").fetchall())
        seeds = con.execute("SELECT suite, seed, n_seeds FROM seed_emergence ORDER BY suite, seed").fetchall()
    assert {(m, step, tokens) for m, step, tokens, _, _ in checkpoints} == {
        (repo, step, tokens) for repo, steps in EXPECTED.items() for step, tokens in steps}
    assert {status for *_, status in checkpoints} == {"ok"}
    revisions = {(m, r) for m, _, _, r, _ in checkpoints}
    assert ("allenai/OLMo-2-tiny", "stage1-step1000-tokens5B") in revisions and \
        ("stanford-crfm/alias-gpt2-small-x21", "checkpoint-10") in revisions
    assert {m: row[0] for m, row in models_rows.items()} == {repo: arch for repo, (arch, _) in SUITE_REPOS.items()}
    assert models_rows["EleutherAI/pythia-14m-seed2"][1:4] == ("hub", "EleutherAI/pythia-14m", 2)
    assert models_rows["stanford-crfm/alias-gpt2-small-x21"][2:4] == ("stanford-crfm/gpt2-small", 21)
    assert models_rows["allenai/OLMo-tiny-hf"][2:4] == (None, None)
    assert all(n == finite == HEAD_METRICS * 2 * 4 for *_, n, finite in per_checkpoint)  # 2 layers × 4 heads
    assert len(per_checkpoint) == n_checkpoints
    assert ablated == {repo: steps[-1][0] for repo, steps in EXPECTED.items()}  # --ablation-steps last, per model
    assert seeds == [("EleutherAI/pythia-14m", 1, 2), ("EleutherAI/pythia-14m", 2, 2),
                     ("stanford-crfm/gpt2-small", 21, 1)]


TARGETS_SCRIPT = """
    import json, sys
    from dynamics.errors import InputError
    from jobs.sweep.config import SweepConfig
    from jobs.sweep.targets import build_targets

    out = {}
    for name, options in json.loads(sys.argv[1]).items():
        try:
            [target] = build_targets(SweepConfig(**options))
            out[name] = [list(target.revisions), list(target.steps), [target.tokens_seen(s) for s in target.steps],
                         target.suite, target.seed]
        except InputError as err:
            out[name] = str(err)
    print(json.dumps(out))
"""


def test_custom_pattern_explicit_revisions_and_flags_for_suite_and_seed(sweep_run_template, tmp_path):
    cache = tmp_path / "hub"
    repo = "mistralai/tiny-run"
    build_suite_cache(cache, tmp_path / "checkpoints", sweep_run_template, {
        repo: ("mistral", {"iter-0000100": 0, "iter-0000200": 1, "iter-0000300": 2, "best": 2})})
    common = {"models": [repo], "cache_dir": str(cache), "fv_prompts": 2}
    cases = {
        "pattern": {**common, "revision_pattern": r"iter-(?P<step>\d+)", "suite": "tiny", "seeds": [7]},
        "listed": {**common, "revision_pattern": r"iter-(?P<step>\d+)", "revisions": ["iter-0000300", "iter-0000100"]},
        "builtin": common,
        "listed-missing": {**common, "revisions": ["iter-0000400"]},
    }
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(TARGETS_SCRIPT), json.dumps(cases)], cwd=REPO,
                          env=offline_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["pattern"] == [["iter-0000100", "iter-0000200", "iter-0000300"], [100, 200, 300], [None] * 3, "tiny", 7]
    assert out["listed"][:2] == [["iter-0000100", "iter-0000300"], [100, 300]]
    assert out["builtin"].startswith(f"none of the 4 branches and tags of {repo} is a training checkpoint")
    assert "'best', 'iter-0000100'" in out["builtin"]
    assert out["listed-missing"].startswith("'iter-0000400' is not among the branches and tags of")


def _cli(args: list, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *map(str, args)], env=offline_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_unknown_architecture_fails_before_any_weights_are_read(tmp_path):
    cache = tmp_path / "hub"
    config = tmp_path / "mamba"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"model_type": "mamba", "hidden_size": 32}))
    build_hub_cache(cache, "state-spaces/mamba-tiny", {"step0": config, "step1000": config})  # no weight files at all
    warehouse = tmp_path / "w.duckdb"
    result = _cli(["sweep", "--model", "state-spaces/mamba-tiny", "--cache-dir", cache, "--warehouse", warehouse],
                  tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == ("error: state-spaces/mamba-tiny: model type 'mamba' has no adapter; supported: "
                                     "gpt2, gpt_neox, llama, mistral, olmo, olmo2, qwen2 (from config.json)")
    assert not warehouse.exists()
    assert {p.name for p in (repo_folder(cache, "state-spaces/mamba-tiny") / "snapshots").rglob("*")
            if p.is_file()} == {"config.json"}


def test_branch_names_that_are_not_checkpoints_are_listed_in_the_error(suite_cache, tmp_path):
    cache = tmp_path / "hub"
    olmo = repo_folder(suite_cache, "allenai/OLMo-tiny-hf") / "snapshots"
    final = olmo / (repo_folder(suite_cache, "allenai/OLMo-tiny-hf") / "refs" / "main").read_text()
    build_hub_cache(cache, "org/odd-names", {"main": final, "final": final, "best-val": final})
    build_hub_cache(cache, "org/two-namings", {"step0": final, "step1000": final, "step1000-tokens4B": final})
    odd = _cli(["sweep", "--model", "org/odd-names", "--cache-dir", cache], tmp_path)
    assert odd.returncode == 2 and odd.stderr.count("\n") == 1, odd.stderr[-2000:]
    assert odd.stderr.startswith("error: none of the 3 branches and tags of org/odd-names is a training checkpoint")
    assert "(they are: 'best-val', 'final', 'main'); pass --revision-pattern" in odd.stderr
    both = _cli(["sweep", "--model", "org/two-namings", "--cache-dir", cache], tmp_path)
    assert both.returncode == 2, both.stderr[-2000:]
    assert "(step 1000: step1000, step1000-tokens4B)" in both.stderr


def test_score_one_revision_by_the_suites_own_name(suite_cache, tmp_path):
    result = _cli(["score", "--model", "allenai/OLMo-tiny-hf", "--revision", "step1000-tokens4B", "--cache-dir",
                   suite_cache, "--fv-prompts", "2", "--induction-sequences", "8", "--no-icl"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("allenai/OLMo-tiny-hf step1000-tokens4B (float32, weights sha256 ")
