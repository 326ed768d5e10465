"""`SweepConfig`: everything a sweep does, built once from the command line (or a stored run) and passed down.

The command line is read in one place (`SweepConfig.from_args`); the driver, the targets and the
workers get the config as an argument. `runs.config` stores it whole (`to_dict`), so
`SweepConfig.from_run(warehouse, run_id)` rebuilds a run exactly (`--rerun RUN_ID`).

Options left out on the command line are absent from the parsed arguments (argparse.SUPPRESS) and
take the field defaults below; `None` for a scoring count means "the default of the target": the
reference's for Pythia and local runs, the toy suite's own for the embedded default (see
`jobs.sweep.targets`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from dynamics.errors import InputError
from dynamics.home import dynamics_home
from dynamics.sources.revisions import compile_pattern

DEVICES = ("auto", "cpu", "cuda")
# options that may accompany --rerun: where the run is stored, and whether to rescore what is done
RERUN_COMPANIONS = ("warehouse", "force", "rerun")


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: what to score, how, where results go, and with which resources."""

    # what to sweep (neither models nor local: the embedded toy suite)
    models: tuple[str, ...] = ()  # Hugging Face model ids
    local: tuple[str, ...] = ()  # folders of step<N>/ checkpoints (absolute paths)
    names: tuple[str, ...] = ()  # one per --local, in order: stored as 'local/<name>'; () = each folder's name
    skip_unparsed: bool = False  # leave out (and list) --local folders whose names give no step
    steps: str = "all"  # 'all', a list '0,1,1000' or START:STOP[:STEP] over published steps
    revision_pattern: str | None = None  # regex with a group (?P<step>…) naming the --model repos' checkpoints
    revisions: tuple[str, ...] = ()  # the --model repos' checkpoint branches, listed; () = all that name a step
    suite: str | None = None  # the configuration the swept runs are seeds of (models.suite)
    seeds: tuple[int, ...] = ()  # one per --model then --local, in order (models.seed)
    toy_preset: str = "default"
    toy_seeds: tuple[int, ...] = ()  # the toy suite trained with each of these seeds; () = the preset's own
    # how to score
    tasks_dir: str | None = None  # Todd-format task folder; None: the built-in tasks
    fv: bool = True
    icl: bool = True
    induction_sequences: int | None = None
    fv_prompts: int | None = None
    shots: int | None = None
    icl_queries: int | None = None
    ablation_steps: str | None = None  # 'none', 'last' or a step spec; None: the target's default
    heldout: str | None = None
    token_loss_positions: tuple[int, int] | None = None
    # where results go
    warehouse: str | None = None  # None: $DYNAMICS_HOME/warehouse.duckdb
    report_dir: str | None = None  # None: beside the warehouse
    report: bool = True
    # resources (none of them changes a score)
    cache_dir: str | None = None
    max_cache_gb: float | None = None
    device: str = "auto"
    actors: int | None = None
    address: str | None = None
    max_retries: int = 2
    force: bool = False

    def __post_init__(self) -> None:
        problems = self._problems()
        if len(problems) == 1:
            raise InputError(problems[0])
        if problems:
            raise InputError(f"the sweep options have {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))

    def _problems(self) -> list[str]:
        problems = []
        for flag, value, least in (
            ("--induction-sequences", self.induction_sequences, 1), ("--fv-prompts", self.fv_prompts, 1),
            ("--icl-queries", self.icl_queries, 1), ("--shots", self.shots, 0), ("--actors", self.actors, 1),
            ("--max-retries", self.max_retries, 0),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                problems.append(f"{flag} must be an integer of at least {least} (got {value!r})")
        if self.max_cache_gb is not None and not self.max_cache_gb > 0:
            problems.append(f"--max-cache-gb must be positive (got {self.max_cache_gb})")
        if self.device not in DEVICES:
            problems.append(f"--device must be one of {', '.join(DEVICES)} (got {self.device!r})")
        if not self.fv and self.fv_prompts is not None:
            problems.append("--no-fv and --fv-prompts conflict: drop one of them")
        if not self.icl and (self.icl_queries is not None or self.ablation_steps is not None):
            problems.append("--no-icl conflicts with --icl-queries and --ablation-steps: drop one of them")
        if self.shots == 0 and self.fv:
            problems.append("--shots 0 leaves no demonstrations whose labels the FV score could shuffle; "
                            "use --shots 1 or more, or --no-fv for zero-shot accuracy only")
        if self.steps != "all" and not (self.models or self.local):
            problems.append("--steps needs --model or --local; the default toy sweep scores every toy checkpoint")
        problems += self._run_problems()
        if self.token_loss_positions is not None:
            early, late = self.token_loss_positions
            if not 0 <= early < late:
                problems.append(f"--token-loss-positions needs 0 ≤ EARLY < LATE (got {early},{late})")
        if self.tasks_dir is not None and not Path(self.tasks_dir).is_dir():
            problems.append(f"task folder {self.tasks_dir} does not exist; pass a Todd-format folder with "
                            "abstractive/ and extractive/")
        return problems

    def _run_problems(self) -> list[str]:
        """Problems with which checkpoints of which runs to sweep: revision names, suites and seeds."""
        problems = []
        if (self.revision_pattern is not None or self.revisions) and not self.models:
            problems.append("--revision-pattern and --revisions name Hub revisions: they need --model")
        if self.revision_pattern is not None:
            try:
                compile_pattern(self.revision_pattern)
            except InputError as err:
                problems.append(str(err))
        if self.revisions and self.steps != "all":
            problems.append("--revisions and --steps conflict: list the revisions or select steps, not both")
        if len(set(self.revisions)) != len(self.revisions) or not all(self.revisions):
            problems.append(f"--revisions must name distinct, non-empty revisions (got {','.join(self.revisions)})")
        n_runs = len(self.models) + len(self.local)
        if self.seeds and len(self.seeds) != n_runs:
            problems.append(f"--seed is given {len(self.seeds)} time(s) for {n_runs} run(s); give one per --model "
                            "and --local, in that order")
        problems += _name_problems(self.names, self.local)
        if (self.suite is not None or self.seeds) and self.is_toy:
            problems.append("--suite and --seed describe --model or --local runs; the toy suite takes --toy-seeds")
        if self.suite is not None and not self.suite.strip():
            problems.append("--suite must be a non-empty name")
        if self.toy_seeds and not self.is_toy:
            problems.append("--toy-seeds trains the embedded toy suite; it conflicts with --model and --local")
        for flag, seeds in (("--seed", self.seeds), ("--toy-seeds", self.toy_seeds)):
            if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
                problems.append(f"{flag} takes non-negative integers (got {', '.join(map(str, seeds))})")
        if len(set(self.toy_seeds)) != len(self.toy_seeds):
            problems.append(f"--toy-seeds lists a seed twice ({','.join(map(str, self.toy_seeds))})")
        return problems

    @property
    def is_toy(self) -> bool:
        """Whether this sweeps the embedded toy suite (no --model, no --local)."""
        return not (self.models or self.local)

    def to_dict(self) -> dict:
        """JSON-ready fields (tuples as lists); `from_dict` inverts it."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, fields: dict) -> SweepConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise InputError(f"stored sweep config has fields this version does not know ({', '.join(unknown)}); "
                             "rerun it with the code version recorded in its run")
        values = dict(fields)
        for name in ("models", "local", "names", "token_loss_positions", "revisions", "seeds", "toy_seeds"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    @classmethod
    def from_run(cls, warehouse: Path, run_id: str) -> SweepConfig:
        """The config a stored run was started with (`runs.config`), to repeat it exactly."""
        from warehouse.queries import query

        rows = query(warehouse, "SELECT config FROM runs WHERE run_id = ?", [run_id])
        if rows.is_empty():
            recent = query(warehouse, "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 3")["run_id"].to_list()
            raise InputError(f"no run {run_id!r} in {warehouse}; recent runs: {', '.join(recent) or 'none'}")
        stored = json.loads(rows["config"][0])
        if "sweep" not in stored:
            raise InputError(f"run {run_id} in {warehouse} was written by an older version that did not store "
                             "its config whole; repeat it with the command in runs.command")
        return cls.from_dict(stored["sweep"])

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SweepConfig:
        """The config the parsed command line describes (options left out take the field defaults)."""
        given = {k: v for k, v in vars(args).items() if k not in ("run", "command")}
        if "rerun" in given:
            extra = sorted("--" + k.replace("_", "-") for k in given if k not in RERUN_COMPANIONS)
            if extra:
                raise InputError(f"--rerun repeats a stored run exactly; drop {', '.join(extra)} "
                                 "(only --warehouse and --force go with it)")
            warehouse = Path(given.get("warehouse") or default_warehouse()).expanduser().resolve()
            stored = cls.from_run(warehouse, given["rerun"])
            return dataclasses.replace(stored, warehouse=str(warehouse), force=given.get("force", stored.force))
        fields: dict = {}
        renamed = {"model": "models", "tasks": "tasks_dir", "seed": "seeds"}
        negated = {"no_fv": "fv", "no_icl": "icl", "no_report": "report"}
        for name, value in given.items():
            if name in negated:
                fields[negated[name]] = not value
            elif name == "token_loss_positions":
                fields[name] = parse_positions(value)
            elif name in ("revisions", "toy_seeds"):
                fields[name] = parse_list(value, f"--{name.replace('_', '-')}", int if name == "toy_seeds" else str)
            elif name == "seed":
                fields["seeds"] = tuple(value)
            elif name == "name":
                fields["names"] = tuple(value)
            elif name in ("model", "local"):
                fields[renamed.get(name, name)] = tuple(str(Path(v).resolve()) if name == "local" else v for v in value)
            elif name in ("tasks", "heldout", "warehouse", "report_dir", "cache_dir"):
                fields[renamed.get(name, name)] = str(Path(value).expanduser().resolve())
            else:
                fields[name] = value
        return cls(**fields)


def _name_problems(names: tuple[str, ...], local: tuple[str, ...]) -> list[str]:
    """--name: one per --local, each a plain name (stored as 'local/<name>'), no two alike."""
    if not names:
        return []
    problems = []
    if len(names) != len(local):
        problems.append(f"--name is given {len(names)} time(s) for {len(local)} --local run(s); give one per --local, "
                        "in the same order")
    bad = [name for name in names if not re.fullmatch(r"[A-Za-z0-9][\w.+-]*", name)]
    if bad:
        problems.append(f"--name takes plain names of letters, digits and . _ + - (got {', '.join(map(repr, bad))}); "
                        "each is stored as local/<name>")
    if len(set(names)) != len(names):
        problems.append(f"--name lists a name twice ({', '.join(names)}): two runs would share an id")
    return problems


def parse_positions(spec: str) -> tuple[int, int]:
    """'50,500' → (50, 500)."""
    try:
        early, late = (int(part) for part in spec.split(","))
    except ValueError as err:
        raise InputError(f"--token-loss-positions {spec!r} is not EARLY,LATE (two integers, e.g. 50,500)") from err
    return early, late


def parse_list(spec: str, flag: str, kind: type = str) -> tuple:
    """'a,b,c' → ('a', 'b', 'c'); with kind=int, '0,1,2' → (0, 1, 2)."""
    parts = [part.strip() for part in spec.split(",")]
    try:
        return tuple(kind(part) for part in parts if part)
    except ValueError as err:
        raise InputError(f"{flag} {spec!r} is not a comma list of {kind.__name__}s (e.g. 0,1,2)") from err


def default_warehouse() -> Path:
    return dynamics_home() / "warehouse.duckdb"


def add_scoring_arguments(group) -> None:
    """How to score (into an argparse parser or argument group): shared by `dynamics sweep` and `dynamics score`."""
    skip = argparse.SUPPRESS
    group.add_argument("--tasks", metavar="DIR", default=skip,
                       help="Todd-format task folder (abstractive/, extractive/): the reference's 29 FV tasks; "
                            "default: the built-in tasks")
    group.add_argument("--no-fv", action="store_true", default=skip,
                       help="skip the function-vector score (induction scores only)")
    group.add_argument("--induction-sequences", type=int, metavar="N", default=skip,
                       help="sequences in the induction probe (default 1000)")
    group.add_argument("--fv-prompts", type=int, metavar="N", default=skip,
                       help="clean and corrupted prompts per task for the FV score (default 100 each)")
    group.add_argument("--shots", type=int, metavar="N", default=skip,
                       help="demonstrations per prompt for the FV score and few-shot accuracy (default 10; "
                            "0 = zero-shot accuracy, with --no-fv)")
    group.add_argument("--no-icl", action="store_true", default=skip,
                       help="skip the ICL experiments (few-shot accuracy; ablations and FV execution)")
    group.add_argument("--icl-queries", type=int, metavar="N", default=skip,
                       help="few-shot accuracy queries per evaluation task (default 100)")
    group.add_argument("--heldout", metavar="FILE", default=skip,
                       help="text, JSONL or Parquet file (a 'text' field) for the ICL token-loss score")
    group.add_argument("--token-loss-positions", metavar="EARLY,LATE", default=skip,
                       help="token positions of the ICL token-loss score (default 50,500 as the reference)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep's command line; every option is absent from the result unless given."""
    skip = argparse.SUPPRESS
    where = parser.add_argument_group("what to sweep (default: the embedded toy suite)")
    where.add_argument("--model", action="append", metavar="NAME", default=skip,
                       help="Hugging Face model id, e.g. EleutherAI/pythia-160m-deduped (repeatable)")
    where.add_argument("--local", action="append", metavar="DIR", default=skip,
                       help="a local run: a folder of step<N>/ (save_pretrained) or checkpoint-<N>/ (Trainer) "
                            "checkpoints (repeatable)")
    where.add_argument("--name", action="append", metavar="NAME", default=skip,
                       help="the id of each --local run, in order, stored as local/NAME (default: local/<folder "
                            "name>; a folder name the warehouse holds for another folder is refused)")
    where.add_argument("--skip-unparsed", action="store_true", default=skip,
                       help="leave out --local subfolders whose names give no step (stepX, two folders for one "
                            "step), listing them, instead of stopping")
    where.add_argument("--steps", default=skip,
                       help="'all', a list '0,1,1000', or START:STOP[:STEP] over published steps (default: all)")
    where.add_argument("--revision-pattern", metavar="REGEX", default=skip,
                       help="which --model branches are checkpoints: a regex the whole branch name matches, with a "
                            r"named group for the step, e.g. 'run-(?P<step>\d+)' (default: the built-in patterns, "
                            "step<N>, step<N>-tokens<B>B, stage1-step<N>-tokens<B>B, ckpt_<N>, checkpoint-<N>)")
    where.add_argument("--revisions", metavar="A,B,C", default=skip,
                       help="the --model checkpoint branches to sweep, listed (default: every branch naming a step)")
    where.add_argument("--suite", metavar="NAME", default=skip,
                       help="the configuration the swept runs are seeds of, for the seed views (default: known "
                            "suites such as PolyPythia's -seed<N> repos are recognised)")
    where.add_argument("--seed", action="append", type=int, metavar="N", default=skip,
                       help="the training seed of each --model, then each --local run, in order (repeatable)")
    where.add_argument("--toy-preset", default=skip, help="toy suite preset for the default run (default: default)")
    where.add_argument("--toy-seeds", metavar="N,N", default=skip,
                       help="train and sweep the toy suite once per seed, e.g. 0,1,2 (default: the preset's own seed)")
    where.add_argument("--rerun", metavar="RUN_ID", default=skip,
                       help="repeat a stored run exactly, with the config in the warehouse's runs table")
    what = parser.add_argument_group("how to score")
    add_scoring_arguments(what)
    what.add_argument("--ablation-steps", metavar="SPEC", default=skip,
                      help="checkpoints that also get the head-ablation grid and FV execution: 'none', 'last', "
                           "or a step spec like --steps (default: none; the toy default: last and three earlier)")
    out = parser.add_argument_group("where results go")
    out.add_argument("--warehouse", type=Path, default=skip,
                     help="DuckDB file (default: $DYNAMICS_HOME/warehouse.duckdb)")
    out.add_argument("--report-dir", type=Path, default=skip, help="HTML report folder (default: next to the warehouse)")
    out.add_argument("--no-report", action="store_true", default=skip, help="do not render the HTML report at the end")
    run = parser.add_argument_group("resources")
    run.add_argument("--cache-dir", type=Path, default=skip, help="Hugging Face cache for Hub checkpoints (default: HF's)")
    run.add_argument("--max-cache-gb", type=float, default=skip,
                     help="bound the checkpoint cache; scored revisions are evicted")
    run.add_argument("--device", choices=DEVICES, default=skip,
                     help="auto (default): one actor per GPU if the cluster has GPUs, else CPU actors")
    run.add_argument("--actors", type=int, default=skip, help="number of scoring actors (default: GPUs, or CPUs on CPU)")
    run.add_argument("--address", default=skip, help="Ray cluster address (default: $RAY_ADDRESS, else a new local Ray)")
    run.add_argument("--max-retries", type=int, default=skip, help="retries of a checkpoint whose actor died (default 2)")
    run.add_argument("--force", action="store_true", default=skip, help="rescore checkpoints already in the warehouse")
