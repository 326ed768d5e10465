"""Which branches (and tags) of a Hub repository are training checkpoints, their steps, tokens seen, and
the suite and seed of the run.

Public checkpoint suites each name their revisions their own way. The built-in patterns below were checked
against each suite's own public material (model cards, training configs, code that loads them; cited beside
each pattern):

| pattern | example | suite |
|---|---|---|
| `step<N>` | `step1000` | Pythia; PolyPythia `EleutherAI/pythia-160m-seed1` … `-seed9` |
| `step<N>-tokens<B>B` | `step20000-tokens84B` | OLMo 1 (`allenai/OLMo-1B-hf`, `OLMo-7B-0424-hf`, …) |
| `stage1-step<N>-tokens<B>B` | `stage1-step721901-tokens6056B` | OLMo 2 pretraining (stage 1) |
| `ckpt_<NNN>` | `ckpt_000`, `ckpt_358` | LLM360 Amber (checkpoint index, not an optimizer step) |
| `checkpoint-<N>` | `checkpoint-400` | Stanford CRFM Mistral GPT-2 (`stanford-crfm/alias-gpt2-small-x21`; git tags) |

Anything else takes `--revision-pattern REGEX` with a named group `step` (and optionally `billions`,
the tokens seen in billions, as OLMo names them). A branch no pattern matches is left out and named in a
warning (`main` silently: it is the final model under another name); when no branch matches, or two
branches name one step (OLMo 2's stage-2 `ingredient` branches restart their step count, for example),
the error lists them rather than guessing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from dynamics.errors import InputError

log = logging.getLogger(__name__)

STEP_GROUP = "step"
BILLIONS_GROUP = "billions"  # tokens seen, in billions, as OLMo's branch names give them (rounded there)


@dataclass(frozen=True)
class RevisionPattern:
    """A branch-naming scheme: a regex the whole name must match, with a named group `step`."""

    regex: str
    example: str  # a name it matches, for messages

    def match(self, revision: str) -> re.Match | None:
        return re.fullmatch(self.regex, revision)


BUILTIN_PATTERNS: tuple[RevisionPattern, ...] = (
    # Pythia README and our catalogue; PolyPythia: lm-checkpoints' PythiaCheckpoints (oskarvanderwal/lm-checkpoints,
    # lm_checkpoints/pythia.py) loads `EleutherAI/pythia-{size}-seed{seed}` at revision f"step{step}".
    RevisionPattern(r"step(?P<step>\d+)", "step1000"),
    # OLMo 1: branch list in reeceshuttle/deep-learning-proj constants.py ('step20000-tokens84B' … for
    # allenai/OLMo-1B, 'step50000-tokens221B' … for OLMo-7B); lm-checkpoints' lm_checkpoints/olmo.py
    # documents the 'step1000-tokens4B' convention.
    RevisionPattern(r"step(?P<step>\d+)-tokens(?P<billions>\d+)B", "step1000-tokens4B"),
    # OLMo 2: allenai/OLMo-core src/scripts/official/OLMo2/README.md links 'stage1-step721901-tokens6056B'
    # (stage 1) and 'stage2-ingredient1-step11921-tokens101B' (stage-2 annealing runs, each restarting at step
    # 0 with its own seed: not matched here, sweep one with --revision-pattern).
    RevisionPattern(r"stage1-step(?P<step>\d+)-tokens(?P<billions>\d+)B", "stage1-step1000-tokens5B"),
    # LLM360 Amber model card (copy in YinanWusoymilk/hf-readme, LLM360_Amber.md): 360 checkpoints,
    # branches 'ckpt_000' … 'ckpt_358'; N is the checkpoint's index, not an optimizer step.
    RevisionPattern(r"ckpt_(?P<step>\d+)", "ckpt_000"),
    # Stanford CRFM Mistral GPT-2: stanford-crfm/mistral conf/gpt2-mistral-small-config.yaml saves every 10
    # steps to 100, 50 to 2,000, 100 to 20,000, 1,000 to 400,000; the Hub repos expose them as git tags
    # 'checkpoint-<step>' (from_pretrained(..., revision="checkpoint-400")).
    RevisionPattern(r"checkpoint-(?P<step>\d+)", "checkpoint-1000"),
)

# Tokens per optimizer step where the suite publishes its batch, by repository id (NULL elsewhere):
_TOKENS_PER_STEP: tuple[tuple[str, int], ...] = (
    # Pythia and PolyPythia: 1024 sequences × 2048 tokens (Pythia README; lm-checkpoints' pythia.py uses the
    # same for every seed). Not the -v0 runs: some used 4M-token batches.
    (r"EleutherAI/pythia-[\w.-]+(?<!-v0)", 2_097_152),
    # Stanford CRFM GPT-2 small and medium: effective_bsz 512 × seq_len 1024 (stanford-crfm/mistral
    # conf/gpt2-mistral-{small,medium}-config.yaml, conf/models/gpt2-small.yaml).
    (r"stanford-crfm/\w+-gpt2-(?:small|medium)-x\d+", 524_288),
)

# The runs that are seeds of one configuration, by repository id: (regex, suite template). The seed is the
# 'seed' group. PolyPythia: lm-checkpoints' get_model_name maps seed 0 to the original repo and seed N to
# '-seed{N}' (sizes 14m–410m); the '-data-seed'/'-weight-seed' repos vary one source of randomness only, so
# they are suites of their own. Stanford CRFM: the 'x21' … 'x777' suffix is the training seed (seed: 21 in
# conf/gpt2-mistral-small-config.yaml for alias-x21).
_SUITES: tuple[tuple[str, str], ...] = (
    (r"EleutherAI/pythia-(?P<size>14m|31m|70m|160m|410m)-seed(?P<seed>\d+)", "EleutherAI/pythia-{size}"),
    (r"EleutherAI/pythia-(?P<size>14m|31m|70m|160m|410m)(?P<seed>)", "EleutherAI/pythia-{size}"),  # seed '' = 0
    (r"EleutherAI/pythia-(?P<size>160m)-(?P<kind>data|weight)-seed(?P<seed>\d+)", "EleutherAI/pythia-{size}-{kind}-seed"),
    (r"stanford-crfm/\w+-gpt2-(?P<size>small|medium)-x(?P<seed>\d+)", "stanford-crfm/gpt2-{size}"),
)


@dataclass(frozen=True)
class RevisionStep:
    """A revision that is a training checkpoint."""

    revision: str
    step: int
    tokens: int | None  # tokens seen by the end of the step; None where the suite does not publish it


def compile_pattern(regex: str) -> RevisionPattern:
    """A user's --revision-pattern, checked: it must compile and name a group `step`."""
    try:
        compiled = re.compile(regex)
    except re.error as err:
        raise InputError(f"--revision-pattern {regex!r} is not a valid regular expression ({err})") from err
    if STEP_GROUP not in compiled.groupindex:
        raise InputError(f"--revision-pattern {regex!r} has no named group 'step'; write it like "
                         r"'my-run-(?P<step>\d+)' (the whole branch name must match)")
    return RevisionPattern(regex, "")


def checkpoint_revisions(
    refs: Sequence[str], repo_id: str, pattern: str | None = None, wanted: Sequence[str] = (),
) -> list[RevisionStep]:
    """The revisions of `refs` that are training checkpoints, by step.

    Args:
        refs: the repository's branch and tag names.
        repo_id: named in messages; chooses the tokens-per-step table entry.
        pattern: a --revision-pattern regex used instead of the built-in patterns.
        wanted: an explicit list (--revisions): each must be in `refs` and name a step; other refs are ignored.

    Raises InputError when no revision names a step, two name the same step, or a wanted one is missing.
    """
    patterns = (compile_pattern(pattern),) if pattern else BUILTIN_PATTERNS
    if wanted:
        missing = [r for r in wanted if r not in refs]
        if missing:
            raise InputError(f"{_names(missing)} {'is' if len(missing) == 1 else 'are'} not among the branches and "
                             f"tags of {repo_id} ({_names(sorted(refs))}); check --revisions")
    candidates = list(wanted) or list(refs)
    found, unmatched = [], []
    for revision in candidates:
        parsed = _parse(revision, patterns, repo_id)
        (found if parsed else unmatched).append(parsed or revision)
    if wanted and unmatched:
        raise InputError(f"--revisions {_names(unmatched)} name no training step under {_describe(patterns)}; "
                         "pass --revision-pattern with a (?P<step>…) group")
    if not found:
        raise InputError(f"none of the {len(refs)} branches and tags of {repo_id} is a training checkpoint under "
                         f"{_describe(patterns)} (they are: {_names(sorted(refs))}); pass --revision-pattern "
                         r"REGEX with a named group (?P<step>\d+), or --revisions NAME,NAME")
    by_step: dict[int, list[str]] = {}
    for checkpoint in found:
        by_step.setdefault(checkpoint.step, []).append(checkpoint.revision)
    clashes = {step: names for step, names in by_step.items() if len(names) > 1}
    if clashes:
        listed = "; ".join(f"step {step}: {', '.join(sorted(names))}" for step, names in sorted(clashes.items())[:5])
        raise InputError(f"{repo_id} has {len(clashes)} step(s) named by more than one revision ({listed}); pick "
                         "one naming with --revision-pattern or list the revisions with --revisions")
    left_out = [r for r in unmatched if r != "main"]
    if left_out:
        log.warning("%s: %d of %d branches and tags are not training checkpoints under %s and are left out: %s",
                    repo_id, len(left_out), len(refs), _describe(patterns), _names(sorted(left_out)))
    return sorted(found, key=lambda c: c.step)


def tokens_per_step(repo_id: str) -> int | None:
    """Training tokens per optimizer step of a known suite's repository; None when not published."""
    for regex, tokens in _TOKENS_PER_STEP:
        if re.fullmatch(regex, repo_id, flags=re.IGNORECASE):
            return tokens
    return None


def suite_and_seed(repo_id: str) -> tuple[str | None, int | None]:
    """(suite, seed) of a repository that is one seed of a known multi-seed suite, else (None, None).

    Example: 'EleutherAI/pythia-160m-seed3' → ('EleutherAI/pythia-160m', 3); the original
    'EleutherAI/pythia-160m' is seed 0 of that suite.
    """
    for regex, template in _SUITES:
        match = re.fullmatch(regex, repo_id, flags=re.IGNORECASE)
        if match:
            groups = match.groupdict()
            return template.format(**{k: v.lower() for k, v in groups.items() if k != "seed"}), int(groups["seed"] or 0)
    return None, None


def _parse(revision: str, patterns: Sequence[RevisionPattern], repo_id: str) -> RevisionStep | None:
    for pattern in patterns:
        match = pattern.match(revision)
        if match is None:
            continue
        step = int(match.group(STEP_GROUP))
        billions = match.groupdict().get(BILLIONS_GROUP)
        per_step = tokens_per_step(repo_id)
        tokens = int(billions) * 10**9 if billions is not None else (None if per_step is None else step * per_step)
        return RevisionStep(revision, step, tokens)
    return None


def _describe(patterns: Sequence[RevisionPattern]) -> str:
    if patterns == BUILTIN_PATTERNS:
        return "the built-in patterns (" + ", ".join(p.example for p in patterns) + ")"
    return f"--revision-pattern {patterns[0].regex!r}"


def _names(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
