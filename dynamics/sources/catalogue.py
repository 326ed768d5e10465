"""The Pythia model catalogue: sizes, architecture facts, published checkpoint steps, step specs.

Facts come from the Pythia README table and the Hugging Face configs (docs/methods.md, "Pythia models").
Every size has 154 checkpoints, published as branches `step0`, `step1`, `step2`, `step4`, …, `step512`,
then `step1000` … `step143000`; `main` is the same model as `step143000`.
"""

from __future__ import annotations

import bisect
import difflib
import re
from dataclasses import dataclass

from dynamics.errors import InputError

ORGANISATION = "EleutherAI"
TOKENS_PER_STEP = 2_097_152  # 1024 sequences × 2048 tokens per optimizer step
FINAL_STEP = 143_000
PYTHIA_STEPS: tuple[int, ...] = (0, *(2**i for i in range(10)), *range(1000, FINAL_STEP + 1, 1000))
PYTHIA_REVISIONS: tuple[str, ...] = tuple(f"step{step}" for step in PYTHIA_STEPS)
PYTHIA_STEPS_TEXT = "published steps: 0, 1, 2, 4, ..., 512, then every 1000 up to 143000"

_REVISION_PATTERN = re.compile(r"step(\d+)")


@dataclass(frozen=True)
class PythiaModel:
    """One published Pythia model (a size, standard or deduplicated)."""

    size: str
    deduped: bool
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    rotary_dims: int  # rotary on the first 25% of each head's dims; the rest is position-free
    vocab_rows: int  # embedding rows: tokenizer's 50,277 padded for model parallelism

    @property
    def name(self) -> str:
        return f"pythia-{self.size}" + ("-deduped" if self.deduped else "")

    @property
    def repo_id(self) -> str:
        return f"{ORGANISATION}/{self.name}"

    @property
    def n_params(self) -> int:
        """Parameters including both (untied) embeddings: L·(12d² + 13d) + 2Vd + 2d."""
        d = self.d_model
        return self.n_layers * (12 * d * d + 13 * d) + 2 * self.vocab_rows * d + 2 * d


# size, deduped variant exists, L, d, H, d_head, rotary dims, V  (docs/methods.md, "Pythia models")
_SIZES = (
    ("14m", False, 6, 128, 4, 32, 8, 50_304),
    ("31m", False, 6, 256, 8, 32, 8, 50_304),
    ("70m", True, 6, 512, 8, 64, 16, 50_304),
    ("160m", True, 12, 768, 12, 64, 16, 50_304),
    ("410m", True, 24, 1024, 16, 64, 16, 50_304),
    ("1b", True, 16, 2048, 8, 256, 64, 50_304),
    ("1.4b", True, 24, 2048, 16, 128, 32, 50_304),
    ("2.8b", True, 32, 2560, 32, 80, 20, 50_304),
    ("6.9b", True, 32, 4096, 32, 128, 32, 50_432),
    ("12b", True, 36, 5120, 40, 128, 32, 50_688),
)

PYTHIA_MODELS: dict[str, PythiaModel] = {
    model.name: model
    for size, has_deduped, *shape in _SIZES
    for model in [PythiaModel(size, False, *shape)] + ([PythiaModel(size, True, *shape)] if has_deduped else [])
}


def pythia_model(name: str) -> PythiaModel:
    """The catalogue entry for `EleutherAI/pythia-160m-deduped` or `pythia-160m-deduped`."""
    key = name.strip().lower().removeprefix(f"{ORGANISATION.lower()}/")
    if key in PYTHIA_MODELS:
        return PYTHIA_MODELS[key]
    base = key.removesuffix("-deduped")
    if base != key and base in PYTHIA_MODELS:
        raise InputError(f"{name!r} does not exist: {base} has no deduped variant (deduped exists for 70m to 12b)")
    close = difflib.get_close_matches(key, PYTHIA_MODELS, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise InputError(f"unknown Pythia model {name!r}; {hint}`dynamics models` lists all")


def is_pythia_repo(repo_id: str) -> bool:
    """Whether a Hub repo id names a catalogued Pythia model (and so has the 154 step branches)."""
    organisation, _, name = repo_id.lower().partition("/")
    return organisation == ORGANISATION.lower() and name in PYTHIA_MODELS


def is_catalogue_name(name: str) -> bool:
    """Whether `--model NAME` asks for this catalogue: [EleutherAI/]pythia-… other than the PolyPythia seeds
    (-seed<N>, -data-seed<N>, -weight-seed<N>) and the -v0 runs, which have branch lists of their own. A
    mistyped catalogue name then gets the catalogue's 'did you mean' error."""
    organisation, _, rest = name.strip().lower().rpartition("/")
    if organisation not in ("", ORGANISATION.lower()) or not rest.startswith("pythia-"):
        return False
    return re.search(r"-(?:data-|weight-)?seed\d+$|-v0$", rest) is None


def revision_for_step(step: int) -> str:
    """The branch name of a step: 1000 → 'step1000'."""
    if step < 0:
        raise InputError(f"step must be non-negative (got {step})")
    return f"step{step}"


def step_for_revision(revision: str) -> int:
    """The step of a branch name: 'step1000' → 1000; 'main' is Pythia's final step 143000."""
    if revision == "main":
        return FINAL_STEP
    match = _REVISION_PATTERN.fullmatch(revision)
    if match is None:
        raise InputError(f"revision {revision!r} is not a step branch; expected 'main' or 'step<N>' like 'step1000'")
    return int(match.group(1))


def tokens_seen(step: int) -> int:
    """Training tokens consumed by the end of `step` (2,097,152 per step)."""
    return step * TOKENS_PER_STEP


_SPEC_FORMS = (
    "use 'all', a comma list like '0,1,1000', or a range START:STOP[:STEP] like '0:10000:1000' (STOP excluded)"
)


def parse_steps(spec: str, available: list[int], model_id: str | None = None) -> list[int]:
    """The published steps a spec selects, ascending and without repeats.

    Forms: `all`; a comma list `0,1,1000` (each must be published; `step1000` also accepted);
    `START:STOP:STEP` (published steps s with START <= s < STOP and (s - START) % STEP == 0);
    `START:STOP` (every published step in [START, STOP)). START and STOP may be left empty.

    Args:
        spec: what the user typed.
        available: the steps the checkpoint source publishes.
        model_id: named in error messages.
    """
    published = sorted(set(available))
    if not published:
        raise InputError(f"{model_id or 'the checkpoint source'} publishes no checkpoints to select from")
    text = spec.strip().replace(" ", "")
    if text == "all":
        return published
    if ":" in text:
        selected = _select_range(text, spec, published)
        if not selected:
            raise InputError(f"steps {spec!r} select no published checkpoint ({describe_steps(published)})")
        return selected
    steps = [_parse_int(part.removeprefix("step"), spec) for part in text.split(",")]
    for step in steps:
        check_published(step, published, model_id)
    return sorted(set(steps))


def _select_range(text: str, spec: str, published: list[int]) -> list[int]:
    parts = text.split(":")
    if len(parts) > 3:
        raise InputError(f"cannot parse steps {spec!r}; {_SPEC_FORMS}")
    start = _parse_int(parts[0], spec) if parts[0] else published[0]
    stop = _parse_int(parts[1], spec) if parts[1] else published[-1] + 1
    stride = _parse_int(parts[2], spec) if len(parts) == 3 and parts[2] else 1
    if stride <= 0:
        raise InputError(f"step stride in {spec!r} must be positive (got {stride})")
    return [s for s in published if start <= s < stop and (s - start) % stride == 0]


def _parse_int(text: str, spec: str) -> int:
    if not text.isdigit():
        raise InputError(f"cannot parse steps {spec!r}; {_SPEC_FORMS}")
    return int(text)


def check_published(step: int, published: list[int], model_id: str | None) -> None:
    """Raise a ValueError naming the nearest published steps unless `step` is in `published` (sorted)."""
    index = bisect.bisect_left(published, step)
    if index < len(published) and published[index] == step:
        return
    nearest = published[max(index - 1, 0) : index + 1]
    if len(nearest) == 2:
        nearest_text = f"the nearest are {nearest[0]} and {nearest[1]}"
    else:
        nearest_text = f"the nearest is {nearest[0]}"
    raise InputError(
        f"step {step} is not a published checkpoint of {model_id or 'this source'}; {nearest_text} "
        f"({describe_steps(published)})"
    )


def describe_steps(published: list[int]) -> str:
    """A short phrase listing sorted steps, for error messages."""
    if tuple(published) == PYTHIA_STEPS:
        return PYTHIA_STEPS_TEXT
    if len(published) <= 8:
        return "published steps: " + ", ".join(map(str, published))
    head, tail = ", ".join(map(str, published[:4])), ", ".join(map(str, published[-2:]))
    return f"published steps: {head}, ..., {tail} ({len(published)} in all)"
