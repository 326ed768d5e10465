"""Checkpoint revisions from branch names: every built-in pattern, a custom regex, names that are not
checkpoints or are ambiguous, explicit lists, tokens seen, and the suites and seeds of known repositories."""

from __future__ import annotations

import logging

import pytest

from dynamics.errors import InputError
from dynamics.sources.catalogue import is_catalogue_name
from dynamics.sources.revisions import (
    BUILTIN_PATTERNS,
    checkpoint_revisions,
    compile_pattern,
    suite_and_seed,
    tokens_per_step,
)

# (repo id, its branch and tag names as the suite publishes them, expected (revision, step, tokens))
SUITES = [
    ("EleutherAI/pythia-160m-seed3", ["main", "step0", "step1", "step512", "step1000"],
     [("step0", 0, 0), ("step1", 1, 2_097_152), ("step512", 512, 512 * 2_097_152), ("step1000", 1000, 2_097_152_000)]),
    ("allenai/OLMo-1B-hf", ["main", "step20000-tokens84B", "step30000-tokens126B"],
     [("step20000-tokens84B", 20000, 84 * 10**9), ("step30000-tokens126B", 30000, 126 * 10**9)]),
    ("allenai/OLMo-2-0325-32B", ["main", "stage1-step721901-tokens6056B", "stage1-step1000-tokens9B"],
     [("stage1-step1000-tokens9B", 1000, 9 * 10**9), ("stage1-step721901-tokens6056B", 721901, 6056 * 10**9)]),
    ("LLM360/Amber", ["main", "ckpt_000", "ckpt_001", "ckpt_358"],
     [("ckpt_000", 0, None), ("ckpt_001", 1, None), ("ckpt_358", 358, None)]),
    ("stanford-crfm/alias-gpt2-small-x21", ["main", "checkpoint-0", "checkpoint-10", "checkpoint-400000"],
     [("checkpoint-0", 0, 0), ("checkpoint-10", 10, 10 * 524_288), ("checkpoint-400000", 400000, 400000 * 524_288)]),
]


@pytest.mark.parametrize(("repo_id", "refs", "expected"), SUITES, ids=[s[0] for s in SUITES])
def test_each_suites_naming_gives_steps_and_tokens(repo_id, refs, expected, caplog):
    with caplog.at_level(logging.WARNING):
        found = checkpoint_revisions(refs, repo_id)
    assert [(c.revision, c.step, c.tokens) for c in found] == expected
    assert "left out" not in caplog.text  # `main` alone is left out without a word


def test_every_builtin_pattern_is_covered_and_they_are_disjoint():
    examples = [p.example for p in BUILTIN_PATTERNS]
    assert len({p.regex for p in BUILTIN_PATTERNS}) == len(BUILTIN_PATTERNS)
    for pattern in BUILTIN_PATTERNS:  # each example matches its own pattern and no other
        assert [p for p in BUILTIN_PATTERNS if p.match(pattern.example)] == [pattern], pattern.example
    covered = {ref for _, refs, _ in SUITES for ref in refs}
    assert all(any(p.match(ref) for ref in covered) for p in BUILTIN_PATTERNS), examples


def test_branches_that_are_not_checkpoints_are_named_in_a_warning(caplog):
    refs = ["main", "stage1-step0-tokens0B", "stage1-step1000-tokens5B", "stage2-ingredient1-step1000-tokens5B"]
    with caplog.at_level(logging.WARNING):
        found = checkpoint_revisions(refs, "allenai/OLMo-2-tiny")
    assert [c.step for c in found] == [0, 1000]
    assert "1 of 4 branches and tags are not training checkpoints" in caplog.text
    assert "'stage2-ingredient1-step1000-tokens5B'" in caplog.text and "'main'" not in caplog.text


def test_no_checkpoint_branch_lists_every_branch_and_says_what_to_pass():
    with pytest.raises(InputError) as caught:
        checkpoint_revisions(["main", "final", "best-val"], "org/odd-names")
    message = str(caught.value)
    assert message.startswith("none of the 3 branches and tags of org/odd-names is a training checkpoint under the "
                              "built-in patterns (step1000, step1000-tokens4B")
    assert "(they are: 'best-val', 'final', 'main')" in message and "--revision-pattern" in message
    assert "\n" not in message


def test_two_branches_naming_one_step_are_refused():
    with pytest.raises(InputError, match=r"org/two-namings has 1 step\(s\) named by more than one revision "
                                         r"\(step 1000: step1000, step1000-tokens4B\)"):
        checkpoint_revisions(["step0", "step1000", "step1000-tokens4B"], "org/two-namings")


def test_a_custom_pattern_replaces_the_builtin_ones(caplog):
    refs = ["iter-0000100", "iter-0000200-tokens3B", "iter-0000300", "step400", "best"]
    with caplog.at_level(logging.WARNING):
        found = checkpoint_revisions(refs, "org/run", pattern=r"iter-(?P<step>\d+)(?:-tokens(?P<billions>\d+)B)?")
    assert [(c.revision, c.step, c.tokens) for c in found] == [
        ("iter-0000100", 100, None), ("iter-0000200-tokens3B", 200, 3 * 10**9), ("iter-0000300", 300, None)]
    assert "2 of 5" in caplog.text and "'step400'" in caplog.text  # built-in names do not count under a custom one


@pytest.mark.parametrize(("regex", "message"), [
    (r"iter-(\d+)", "has no named group 'step'"),
    (r"iter-(?P<step>\d+", "is not a valid regular expression"),
])
def test_a_bad_custom_pattern_is_refused(regex, message):
    with pytest.raises(InputError, match=message):
        compile_pattern(regex)


def test_an_explicit_list_must_exist_and_name_steps():
    refs = ["main", "step0", "step1", "step2"]
    assert [c.step for c in checkpoint_revisions(refs, "org/run", wanted=["step2", "step0"])] == [0, 2]
    with pytest.raises(InputError, match=r"'step9' is not among the branches and tags of org/run"):
        checkpoint_revisions(refs, "org/run", wanted=["step0", "step9"])
    with pytest.raises(InputError, match=r"--revisions 'main' name no training step"):
        checkpoint_revisions(refs, "org/run", wanted=["main", "step1"])


def test_tokens_per_step_only_where_published():
    assert tokens_per_step("EleutherAI/pythia-160m-deduped") == 2_097_152
    assert tokens_per_step("eleutherai/pythia-70m-seed2") == 2_097_152
    assert tokens_per_step("EleutherAI/pythia-160m-v0") is None  # some -v0 runs used 4M-token batches
    assert tokens_per_step("stanford-crfm/eowyn-gpt2-medium-x777") == 524_288
    assert tokens_per_step("LLM360/Amber") is None and tokens_per_step("allenai/OLMo-1B-hf") is None


@pytest.mark.parametrize(("repo_id", "expected"), [
    ("EleutherAI/pythia-160m-seed3", ("EleutherAI/pythia-160m", 3)),
    ("EleutherAI/pythia-14m", ("EleutherAI/pythia-14m", 0)),  # the original run is seed 0
    ("EleutherAI/pythia-160m-data-seed2", ("EleutherAI/pythia-160m-data-seed", 2)),
    ("EleutherAI/pythia-160m-weight-seed1", ("EleutherAI/pythia-160m-weight-seed", 1)),
    ("stanford-crfm/battlestar-gpt2-small-x49", ("stanford-crfm/gpt2-small", 49)),
    ("EleutherAI/pythia-1b", (None, None)),  # no PolyPythia seeds at this size
    ("EleutherAI/pythia-160m-deduped", (None, None)),
    ("allenai/OLMo-1B-hf", (None, None)),
])
def test_suite_and_seed_of_known_repositories(repo_id, expected):
    assert suite_and_seed(repo_id) == expected


def test_only_catalogued_pythia_names_go_to_the_catalogue():
    assert is_catalogue_name("EleutherAI/pythia-15m") and is_catalogue_name("pythia-160m-deduped")
    for name in ("EleutherAI/pythia-160m-seed1", "EleutherAI/pythia-160m-data-seed1", "EleutherAI/pythia-410m-v0",
                 "allenai/OLMo-1B-hf", "gpt2"):
        assert not is_catalogue_name(name), name
