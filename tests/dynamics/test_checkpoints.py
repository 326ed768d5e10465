"""Checkpoint sources on real files: a local run, and a real Hub cache read by huggingface_hub offline.

Hub tests run huggingface_hub in subprocesses with HF_HUB_OFFLINE=1 in their environment (it is read at
import) against a cache laid out exactly as the Hub writes it (`tests/hub_cache.py`); nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import scan_cache_dir
from safetensors.torch import load_file

from dynamics.adapters import load_model
from dynamics.sources.cache_budget import SharedCacheBudget
from dynamics.sources.checkpoints import LocalSource, ReadAhead, WeightsIndex
from tests.hub_cache import build_hub_cache, repo_folder

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHIA_REPO = "EleutherAI/pythia-70m"  # named like Pythia, holding the tiny run: gets the 154-branch catalogue
OTHER_REPO = "tiny-org/tiny-neox"  # any other repo: revisions come from its branches


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def offline_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": str(REPO_ROOT)}


def run_offline(tmp_path: Path, script: str, *args: object) -> dict:
    """Run `script` with HF_HUB_OFFLINE=1 and return the JSON object it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        env=offline_env(tmp_path),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def snapshot_names(cache: Path, repo_id: str) -> set[str]:
    snapshots = repo_folder(cache, repo_id) / "snapshots"
    return {p.name for p in snapshots.iterdir()} if snapshots.is_dir() else set()


# --- local runs -------------------------------------------------------------------------------------------


def test_local_source_lists_by_step_and_fetches_with_hashes(ckpt_tiny_run):
    source = LocalSource(ckpt_tiny_run.root)
    assert source.list_revisions() == ["step0", "step1", "step2", "step16"]
    fetched = source.fetch("step16")
    assert fetched.path == ckpt_tiny_run.root / "step16"
    assert (fetched.step, fetched.commit, fetched.files) == (16, None, ("config.json", "model.safetensors"))
    assert fetched.weights_sha256 == sha256_of(fetched.path / "model.safetensors")
    assert source.tokenizer_dir("step16") == ckpt_tiny_run.root  # saved once for the whole run


def test_local_source_errors_name_what_exists(ckpt_tiny_run, tmp_path):
    source = LocalSource(ckpt_tiny_run.root)
    with pytest.raises(ValueError, match=r"'step4' is not among .* \(published steps: 0, 1, 2, 16\)"):
        source.fetch("step4")
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        LocalSource(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"expected step<N>/ subfolders"):
        LocalSource(tmp_path / "empty")


def test_duplicate_weights_are_detected(ckpt_tiny_run):
    source = LocalSource(ckpt_tiny_run.root)
    seen = WeightsIndex()
    duplicates = {}
    for revision in source.list_revisions():
        fetched = source.fetch(revision)
        original = seen.original(fetched.weights_sha256, fetched.step)
        seen.add(fetched.weights_sha256, fetched.step)
        duplicates[revision] = None if original is None else f"step{original}"
    assert duplicates == {"step0": None, "step1": "step0", "step2": None, "step16": None}
    assert len(seen.as_dict()) == 3


def test_a_lower_step_seen_later_demotes_the_higher_one():
    seen = WeightsIndex({"abc": 8})
    assert seen.original("abc", 8) is None and seen.original("abc", 9) == 8
    assert seen.add("abc", 2) == 8  # step 8 had these weights first, but step 2 is the original
    assert seen.original("abc", 8) == 2 and seen.add("abc", 4) is None


def test_weight_digest_is_remembered_until_the_file_changes(ckpt_tiny_run):
    source = LocalSource(ckpt_tiny_run.root)
    weights = ckpt_tiny_run.root / "step2" / "model.safetensors"
    true_digest = source.fetch("step2").weights_sha256
    sidecar = ckpt_tiny_run.root / ".dynamics" / "sha256.json"
    entries = json.loads(sidecar.read_text())
    (key,) = [k for k in entries if str(weights.resolve()) in k]
    sidecar.write_text(json.dumps({**entries, key: "remembered"}))
    assert source.fetch("step2").weights_sha256 == "remembered"  # served from the sidecar, not re-hashed
    os.utime(weights, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert source.fetch("step2").weights_sha256 == true_digest


def test_read_ahead_then_take_returns_the_same_checkpoint(ckpt_tiny_run):
    source = LocalSource(ckpt_tiny_run.root)
    ahead = ReadAhead(source.fetch)
    ahead.start("step2")
    ahead.start("step16")
    assert ahead.take("step2") == (LocalSource(ckpt_tiny_run.root).fetch("step2"), True)
    assert ahead.take("step0") == (source.fetch("step0"), False)  # nothing started: read now


def test_new_checkpoint_loads_into_the_built_model(ckpt_tiny_run):
    from transformers import AutoModelForCausalLM

    source = LocalSource(ckpt_tiny_run.root)
    loaded = load_model(source.fetch("step0").path)
    model_before = id(loaded.model)
    ids = torch.arange(1, 17).unsqueeze(0)  # (batch=1, pos=16)
    logits_step0 = loaded.model(ids).logits
    later = source.fetch("step2")
    loaded.load_weights(later.path)
    fresh = AutoModelForCausalLM.from_pretrained(later.path).eval()
    assert id(loaded.model) == model_before
    assert not torch.allclose(loaded.model(ids).logits, logits_step0)
    torch.testing.assert_close(loaded.model(ids).logits, fresh(ids).logits, rtol=0, atol=0)


# --- damaged weight files ---------------------------------------------------------------------------------


def flip_header_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:12] = b"\xff\xfe\xfd\xfc"  # the first bytes of the JSON header
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [flip_header_bytes, truncate])
def test_damaged_weights_give_a_one_line_error_naming_the_file(ckpt_tiny_run, damage):
    source = LocalSource(ckpt_tiny_run.root)
    loaded = load_model(source.fetch("step0").path)
    weights = ckpt_tiny_run.root / "step2" / "model.safetensors"
    damage(weights)
    expected = rf"weight file {re.escape(str(weights))} is corrupt or truncated \(.*\); delete .* and fetch the"
    with pytest.raises(ValueError, match=expected) as at_fetch:
        source.fetch("step2")
    with pytest.raises(ValueError, match=expected) as at_load:
        loaded.load_weights(weights.parent)
    assert "\n" not in str(at_fetch.value) + str(at_load.value)


def test_damaged_blob_behind_a_symlink_is_named(ckpt_tiny_run, tmp_path):
    cache = tmp_path / "hub"
    commits = build_hub_cache(cache, OTHER_REPO, {"step2": ckpt_tiny_run.root / "step2"})
    snapshot = repo_folder(cache, OTHER_REPO) / "snapshots" / commits["step2"]
    blob = (snapshot / "model.safetensors").resolve()
    loaded = load_model(ckpt_tiny_run.root / "step0")
    truncate(blob)
    named = rf"\(blob {re.escape(str(blob))}\) is corrupt.*delete {re.escape(str(blob))} and"
    with pytest.raises(ValueError, match=named):
        loaded.load_weights(snapshot)


# --- the Hub cache, offline --------------------------------------------------------------------------------

OFFLINE_SCRIPT = """
    import json, sys
    from pathlib import Path
    import torch
    from dynamics.adapters import load_model
    from dynamics.sources.checkpoints import HubSource, WeightsIndex

    cache, local_root = Path(sys.argv[1]), Path(sys.argv[2])
    source = HubSource("EleutherAI/pythia-70m", cache_dir=cache)
    out = {"revisions": source.list_revisions(), "fetched": {}, "duplicates": {}}
    seen = WeightsIndex()
    for revision in ["step0", "step1", "step2", "step16"]:
        f = source.fetch(revision)
        out["fetched"][revision] = [str(f.path), f.commit, f.weights_sha256, list(f.files), f.step]
        original = seen.original(f.weights_sha256, f.step)
        seen.add(f.weights_sha256, f.step)
        out["duplicates"][revision] = None if original is None else f"step{original}"
    ids = torch.arange(1, 17).unsqueeze(0)
    hub_logits = load_model(Path(out["fetched"]["step2"][0])).model(ids).logits
    local_logits = load_model(local_root / "step2").model(ids).logits
    out["max_logit_diff"] = (hub_logits - local_logits).abs().max().item()
    out["tokenizer_dir"] = str(source.tokenizer_dir("step2"))
    for revision in ["step1000", "step1500"]:
        try:
            source.fetch(revision)
        except ValueError as err:
            out[revision] = str(err)
    other = HubSource("tiny-org/tiny-neox", cache_dir=cache)
    out["other_revisions"] = other.list_revisions()
    legacy = other.fetch("legacy")  # a branch with only pytorch_model.bin
    out["legacy"] = [list(legacy.files), legacy.step, legacy.weights_sha256]
    legacy_logits = load_model(legacy.path).model(ids).logits
    out["legacy_max_logit_diff"] = (legacy_logits - local_logits).abs().max().item()
    print(json.dumps(out))
"""


def test_hub_source_offline_lists_fetches_and_loads(ckpt_tiny_run, tmp_path):
    root = ckpt_tiny_run.root
    for revision in ckpt_tiny_run.revisions:  # Hub repos carry a tokenizer in every revision
        (root / revision / "tokenizer.json").write_bytes((root / "tokenizer.json").read_bytes())
    cache = tmp_path / "hub"
    commits = build_hub_cache(cache, PYTHIA_REPO, {r: root / r for r in ckpt_tiny_run.revisions})
    legacy = tmp_path / "legacy"  # an older upload: pickled weights only, read with weights_only=True
    legacy.mkdir()
    (legacy / "config.json").write_bytes((root / "step2" / "config.json").read_bytes())
    torch.save(load_file(root / "step2" / "model.safetensors"), legacy / "pytorch_model.bin")
    build_hub_cache(cache, OTHER_REPO, {"legacy": legacy, **{r: root / r for r in ckpt_tiny_run.revisions}})

    out = run_offline(tmp_path, OFFLINE_SCRIPT, cache, root)

    assert len(out["revisions"]) == 154 and out["revisions"][:3] == ["step0", "step1", "step2"]
    snapshots = repo_folder(cache, PYTHIA_REPO) / "snapshots"
    for revision, (path, commit, digest, files, step) in out["fetched"].items():
        assert (path, commit) == (str(snapshots / commits[revision]), commits[revision])
        assert digest == sha256_of(root / revision / "model.safetensors")
        assert files == ["config.json", "model.safetensors", "tokenizer.json"]
        assert step == int(revision.removeprefix("step"))
    assert out["duplicates"] == {"step0": None, "step1": "step0", "step2": None, "step16": None}
    assert out["max_logit_diff"] == 0.0
    assert out["tokenizer_dir"] == str(snapshots / commits["step2"])
    assert out["step1000"] == (
        f"revision step1000 of {PYTHIA_REPO} is not in the cache at {cache} and HF_HUB_OFFLINE=1; "
        "run once with network or pass --cache-dir"
    )
    assert out["step1500"].startswith(f"step 1500 is not a published checkpoint of {PYTHIA_REPO}; the nearest are 1000")
    assert out["other_revisions"] == ["step0", "step1", "step2", "step16", "legacy"]
    assert out["legacy"] == [["config.json", "pytorch_model.bin"], None, sha256_of(legacy / "pytorch_model.bin")]
    assert out["legacy_max_logit_diff"] == 0.0


UNREACHABLE_SCRIPT = """
    import json, sys
    from dynamics.sources.checkpoints import HubSource

    try:
        HubSource("EleutherAI/pythia-70m", cache_dir=sys.argv[1]).fetch("step0")
    except ValueError as err:
        print(json.dumps({"error": str(err)}))
"""


def test_unreachable_hub_is_a_one_line_error(tmp_path):
    env = {k: v for k, v in offline_env(tmp_path).items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens on the discard port: connection refused
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(UNREACHABLE_SCRIPT), str(tmp_path / "hub")],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error.startswith(f"cannot reach the Hub to list the branches of {PYTHIA_REPO} (")
    assert error.endswith("check the network, or set HF_HUB_OFFLINE=1 to use what is cached")


# --- bounded cache shared by processes --------------------------------------------------------------------

HOLDER_SCRIPT = """
    import json, sys, time
    from pathlib import Path
    from dynamics.sources.checkpoints import HubSource

    cache, bound, ready, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    source = HubSource("tiny-org/tiny-neox", cache_dir=cache, max_cache_bytes=bound)
    fetched = source.fetch("step0")
    ready.write_text(str(fetched.path))
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    source.release("step0")
    print(json.dumps({"released": go.exists()}))
"""

WORKER_SCRIPT = """
    import json, sys
    from pathlib import Path
    from dynamics.sources.checkpoints import HubSource, ReadAhead

    cache, bound = Path(sys.argv[1]), int(sys.argv[2])
    source = HubSource("tiny-org/tiny-neox", cache_dir=cache, max_cache_bytes=bound)
    ahead = ReadAhead(source.fetch)
    ahead.start("step16")  # in flight (held) while step2 is fetched and released
    digests = {}
    for revision in ["step2", "step16", "step0", "step1"]:  # step0 is also held by the other process
        digests[revision] = ahead.take(revision)[0].weights_sha256
        source.release(revision)
    print(json.dumps(digests))
"""


def test_eviction_never_deletes_a_revision_another_process_holds(ckpt_tiny_run, tmp_path):
    cache = tmp_path / "hub"
    commits = build_hub_cache(cache, OTHER_REPO, {r: ckpt_tiny_run.root / r for r in ckpt_tiny_run.revisions})
    held = repo_folder(cache, OTHER_REPO) / "snapshots" / commits["step0"]
    bound = (held / "model.safetensors").stat().st_size // 2  # smaller than any single revision
    ready, go = tmp_path / "ready", tmp_path / "go"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER_SCRIPT), str(cache), str(bound), str(ready), str(go)],
        env=offline_env(tmp_path),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and holder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), holder.communicate()[1] if holder.poll() is not None else "holder never became ready"

        digests = run_offline(tmp_path, WORKER_SCRIPT, cache, bound)
        assert digests["step2"] == sha256_of(ckpt_tiny_run.root / "step2" / "model.safetensors")
        # Everything the worker released is gone; the held revision survives although the cache is over the bound.
        assert snapshot_names(cache, OTHER_REPO) == {commits["step0"]}
        assert sha256_of(held / "model.safetensors") == sha256_of(ckpt_tiny_run.root / "step0" / "model.safetensors")
        assert scan_cache_dir(cache).size_on_disk > bound
    finally:
        go.touch()
        stdout, stderr = holder.communicate(timeout=120)
    assert holder.returncode == 0, stderr
    assert json.loads(stdout) == {"released": True}
    assert snapshot_names(cache, OTHER_REPO) == set()
    assert scan_cache_dir(cache).size_on_disk <= bound


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_budget_evicts_least_recently_released_and_ignores_dead_markers(ckpt_tiny_run, tmp_path):
    cache = tmp_path / "hub"
    commits = build_hub_cache(cache, OTHER_REPO, {r: ckpt_tiny_run.root / r for r in ckpt_tiny_run.revisions})
    total = scan_cache_dir(cache).size_on_disk
    budget = SharedCacheBudget(cache, max_bytes=total - 1)  # evicting one distinct revision is enough
    state = cache / ".dynamics"
    stale = state / "in-use" / f"{commits['step2']}.{dead_pid()}"  # a crashed worker's marker: ignored
    stale.touch()
    (state / "in-use" / f"{commits['step16']}.{os.getppid()}").touch()  # a live process: protected
    for seconds, revision in [(100, "step16"), (200, "step2"), (300, "step0")]:
        released = state / "released" / commits[revision]
        released.touch()
        os.utime(released, (seconds, seconds))

    budget.acquire(commits["step1"])  # eviction runs before a fetch

    assert snapshot_names(cache, OTHER_REPO) == {commits[r] for r in ("step0", "step1", "step16")}
    assert not stale.exists()
    assert scan_cache_dir(cache).size_on_disk <= total - 1


NAMED_SCRIPT = """
    import json, sys
    from pathlib import Path
    from dynamics.sources.checkpoints import HubSource

    cache = Path(sys.argv[1])
    source = HubSource("allenai/OLMo-tiny", cache_dir=cache, steps={"step16-tokens1B": 16})
    config = source.fetch_config("step16-tokens1B")
    fetched = source.fetch("step16-tokens1B")
    print(json.dumps({"revisions": source.list_revisions(), "config": str(config), "step": fetched.step,
                      "unnamed_step": source.fetch("main").step}))
"""


def test_hub_source_lists_any_naming_and_fetches_config_alone(ckpt_tiny_run, tmp_path):
    cache = tmp_path / "hub"
    root = ckpt_tiny_run.root
    commits = build_hub_cache(cache, "allenai/OLMo-tiny", {"step16-tokens1B": root / "step16", "main": root / "step16",
                                                           "checkpoint-2": root / "step2"})
    out = run_offline(tmp_path, NAMED_SCRIPT, cache)
    assert out["revisions"] == ["checkpoint-2", "main", "step16-tokens1B"]  # every cached branch and tag
    assert out["config"] == str(repo_folder(cache, "allenai/OLMo-tiny") / "snapshots" / commits["step16-tokens1B"]
                                / "config.json")
    assert (out["step"], out["unnamed_step"]) == (16, None)  # the step the sweep's naming gave the revision
