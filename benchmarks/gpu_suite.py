"""Every GPU performance target measured by one command, in at most 7.5 minutes on one H100/H200.

    make bench-gpu                                  # python -m benchmarks.gpu_suite
    python -m benchmarks.gpu_suite --out artifacts/h200-first-run
    python -m benchmarks.gpu_suite --cpu-smoke      # tiny shapes on the CPU: the same code paths, about a minute

Stages, each under its own time limit (one that fails prints `figure=error: <why>` and the suite goes on):
  setup       the 29 FV tasks as Todd-format files (../shared/icl-tasks or --tasks when present, else the
              built-in tasks written under the reference's names, in turn), a byte-level BPE learned from
              their texts (so prompts have Pythia-like lengths), 29 × (100 clean + 100 corrupted) 10-shot
              prompts, the 1000-sequence induction probe
  per shape   random-weight pythia-410m, 1.4b and 6.9b built on the GPU in the sweep's late-step dtype
              (choose_dtype(step > 1000) = bf16): FV per checkpoint, the reference loop timed on one trial
              and scaled to all, the fraction of the compute-bound limit reached (benchmarks/fv_limit.py),
              the induction probe (benchmarks/suite_model.py)
  sweep       5 pythia-410m-shaped fp16 checkpoints on local disk through `jobs/sweep_checkpoints.py` with
              a real sweep's scoring settings (its defaults: induction, FV and few-shot accuracy), timed from
              its warehouse and projected to 154 checkpoints (benchmarks/suite_sweep.py)
  gpu tests   `pytest -m gpu`
Figures are printed as `name=value` lines as they come, then as a table against the targets, and saved
with the settings, library versions, GPU name and stage times in <out>/figures.json. The exit status is 1
if any stage failed.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.fv_scoring import task_tokenizer
from benchmarks.random_models import NeoxShape, build_random_model, release_device_memory
from benchmarks.suite_model import (
    FvProtocol,
    fv_figure_names,
    induction_figure_names,
    measure_function_vectors,
    measure_induction,
)
from benchmarks.suite_runner import Figure, Measured, StageRunner, format_figure, run_command
from benchmarks.suite_sweep import REPO, SWEEP_FIGURES, SweepPlan, measure_sweep
from dynamics.scorers.function_vectors import FunctionVectorConfig, choose_dtype
from dynamics.scorers.induction import InductionConfig, make_probe, ordinary_token_ids
from dynamics.tasks.builtin import builtin_tasks
from dynamics.tasks.prompts import PromptSet, build_prompt_set
from dynamics.tasks.todd import REFERENCE_EVAL_TASKS, REFERENCE_FV_TASKS, load_task_dir

LATE_STEP = 143_000  # any step > 1000: the dtype most of a sweep's checkpoints are scored in
SHARED_TASKS = REPO.parent / "shared" / "icl-tasks"
TEST_FIGURES = ("gpu_tests_passed", "gpu_tests_failed", "gpu_tests_skipped")


@dataclass(frozen=True)
class ShapePlan:
    shape: NeoxShape
    build_limit_s: float
    fv_limit_s: float
    induction_limit_s: float


@dataclass(frozen=True)
class SuiteConfig:
    name: str
    device: str
    shapes: tuple[ShapePlan, ...]
    n_tasks: int  # FV tasks, the first of REFERENCE_FV_TASKS
    fv: FvProtocol
    induction: InductionConfig
    sweep: SweepPlan
    setup_limit_s: float
    sweep_limit_s: float
    tests_limit_s: float
    total_limit_s: float
    expected_s: float  # the whole run when the targets are met (the estimate printed at the start)
    tokenizer_vocab: int = 4096  # more than the task texts allow merges for: every merge, Pythia-like lengths

    @property
    def dtype(self) -> torch.dtype:
        return choose_dtype(LATE_STEP, self.device)

    @property
    def targets(self) -> dict[str, Target]:
        """What the run is judged against: the GPU targets; tiny CPU shapes have none."""
        return TARGETS if self.device == "cuda" else {}


@dataclass(frozen=True)
class Target:
    limit: float
    text: str  # as the performance targets state it

    def met(self, value: Figure) -> str:
        return "-" if isinstance(value, str) else ("yes" if value <= self.limit else "NO")


TARGETS = {
    "fv_s_pythia-410m": Target(8, "≤ 8 s"),
    "fv_s_pythia-6.9b": Target(90, "≤ 90 s"),
    "induction_s_pythia-6.9b": Target(5, "≤ 5 s"),
    "sweep_min_154_checkpoints": Target(20, "≤ 20 min"),
    "sweep_overlap": Target(0.6, "≤ 0.6"),
    "gpu_tests_failed": Target(0, "0"),
}
# design-time numbers for comparison (one H100; the reference loop in fp16, the probe in fp32; the fast
# path's compute-bound estimates), from docs/performance.md and the performance reference it summarises
REFERENCE_FIGURES = {
    "fv_s_pythia-410m": "≈ 3.7 s compute-bound", "fv_s_pythia-1.4b": "≈ 7.7 s compute-bound",
    "fv_s_pythia-6.9b": "≈ 55 s compute-bound", "fv_reference_h_pythia-410m": "6.2 h",
    "fv_reference_h_pythia-1.4b": "5.5 h", "fv_reference_h_pythia-6.9b": "18.3 h",
    "induction_s_pythia-410m": "2.0 s (fp32, batched)", "induction_s_pythia-6.9b": "28 s (fp32, batched)",
}


def gpu_profile() -> SuiteConfig:
    """The measured run: Pythia shapes, the reference protocol, a real sweep's settings."""
    pythia = NeoxShape.from_catalogue
    return SuiteConfig(
        name="gpu", device="cuda",
        # FV limits: the target + one reference trial (1 + L·H batch-1 forwards at ≈ 20 ms) + warm-up and slack
        shapes=(ShapePlan(pythia("pythia-410m"), 10, 30, 10), ShapePlan(pythia("pythia-1.4b"), 10, 35, 10),
                ShapePlan(pythia("pythia-6.9b"), 15, 140, 15)),
        n_tasks=29, fv=FvProtocol(FunctionVectorConfig(), oracle_trials=1), induction=InductionConfig(),
        # a real sweep's settings are the command's defaults; 5 checkpoints of ≈ 15 s after ≈ 30 s of start-up
        sweep=SweepPlan(pythia("pythia-410m"), n_checkpoints=5, arguments=("--device", "cuda", "--actors", "1"),
                        settings="the sweep's defaults: induction 1000 sequences, FV 29 tasks × 100 + 100 prompts, "
                                 "few-shot accuracy 19 tasks × 100 queries"),
        setup_limit_s=20, sweep_limit_s=120, tests_limit_s=20, total_limit_s=450, expected_s=320,
    )


def cpu_smoke_profile() -> SuiteConfig:
    """Tiny shapes, few prompts, three checkpoints: every stage and figure of the GPU run, on the CPU."""
    tiny = NeoxShape("tiny-a", n_layers=2, n_heads=4, d_model=64, vocab_size=4096)
    return SuiteConfig(
        name="cpu-smoke", device="cpu",
        shapes=(ShapePlan(tiny, 10, 30, 10), ShapePlan(NeoxShape("tiny-b", 3, 4, 64, 4096), 10, 30, 10)),
        n_tasks=3,
        fv=FvProtocol(FunctionVectorConfig(n_shots=3, n_clean=4, n_corrupted=4, batch_size=4), oracle_trials=1,
                      throughput_batch=8, throughput_length=32, throughput_repeats=2),
        induction=InductionConfig(n_sequences=20, batch_size=10),
        sweep=SweepPlan(tiny, n_checkpoints=3, arguments=(
            "--device", "cpu", "--actors", "1", "--no-icl", "--fv-prompts", "2", "--induction-sequences", "8",
            "--shots", "3"), settings="tiny: no few-shot accuracy, FV 29 tasks × 2 + 2 prompts, 8 induction sequences"),
        setup_limit_s=30, sweep_limit_s=120, tests_limit_s=60, total_limit_s=200, expected_s=60,
    )


@dataclass(frozen=True)
class SuiteInputs:
    """What every shape is scored on, built once: the model does not change prompts or probe."""

    tasks_dir: Path
    tasks_source: str
    tokenizer: Any
    prompts: PromptSet
    probe: Tensor  # (sequence, 1 + 2·repeat_len)


def write_builtin_task_folder(root: Path) -> Path:
    """The built-in tasks as a Todd-format folder under the reference's 29 FV and 19 evaluation names, the
    built-in tasks taken in turn, so the FV stage and the sweep read the task set the reference scores."""
    builtin = list(builtin_tasks().values())
    (root / "abstractive").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(REFERENCE_FV_TASKS + REFERENCE_EVAL_TASKS):
        task = builtin[i % len(builtin)]
        rows = [{"input": x, "output": y} for x, y in task.train + task.valid]
        (root / "abstractive" / f"{name}.json").write_text(json.dumps(rows))
    return root


def prepare_inputs(config: SuiteConfig, tasks_dir: Path | None, out: Path) -> SuiteInputs:
    """Tasks (from `tasks_dir`, or the built-in ones written under `out`), tokenizer, prompts and probe."""
    if tasks_dir is not None:
        source = f"Todd-format task files in {tasks_dir}"
    else:
        tasks_dir = write_builtin_task_folder(out / "tasks")
        source = f"the {len(builtin_tasks())} built-in tasks in turn, as Todd-format files in {tasks_dir}"
    tasks = load_task_dir(tasks_dir, REFERENCE_FV_TASKS)
    tokenizer = task_tokenizer(tasks, config.tokenizer_vocab)
    protocol = config.fv.config
    prompts = build_prompt_set(tasks, tokenizer, names=REFERENCE_FV_TASKS[: config.n_tasks], n_shots=protocol.n_shots,
                               n_clean=protocol.n_clean, n_corrupted=protocol.n_corrupted, seed=protocol.seed)
    probe = make_probe(ordinary_token_ids(tokenizer), tokenizer.bos_token_id, config.induction)
    return SuiteInputs(tasks_dir, source, tokenizer, prompts, probe)


def describe_inputs(inputs: SuiteInputs) -> str:
    lengths = [len(p.input_ids) for task in inputs.prompts.tasks for p in task.clean + task.corrupted]
    task = inputs.prompts.tasks[0]
    return (f"  tasks: {inputs.tasks_source}\n  prompts: {len(inputs.prompts.tasks)} tasks × ({len(task.clean)} clean + "
            f"{len(task.corrupted)} corrupted), {inputs.prompts.n_shots} shots, mean {sum(lengths) / len(lengths):.0f} "
            f"tokens ({min(lengths)}-{max(lengths)}) with a {len(inputs.tokenizer)}-entry BPE learned from the task texts\n"
            f"  induction probe: {inputs.probe.shape[0]} sequences of {inputs.probe.shape[1]} tokens")


def run_shape(runner: StageRunner, plan: ShapePlan, inputs: SuiteInputs, config: SuiteConfig) -> None:
    """The FV and induction stages of one shape; its model is built once for both, and dropped on return."""
    label = plan.shape.label
    model = runner.call(f"build {plan.shape.describe()}, {config.dtype}", plan.build_limit_s,
                        lambda _deadline: build_random_model(plan.shape, config.device, config.dtype,
                                                             bos_id=inputs.tokenizer.bos_token_id))
    if model is None:
        runner.skip(f"fv {label}", fv_figure_names(label), f"the {label} model could not be built")
        runner.skip(f"induction {label}", induction_figure_names(label), f"the {label} model could not be built")
        return
    runner.run(f"fv {label}", plan.fv_limit_s, fv_figure_names(label),
               lambda deadline: measure_function_vectors(model, inputs.prompts, config.fv, label, deadline))
    runner.run(f"induction {label}", plan.induction_limit_s, induction_figure_names(label),
               lambda _deadline: measure_induction(model, inputs.probe, config.induction, label))


def run_gpu_tests(deadline: float, out: Path) -> Measured:
    """`pytest -m gpu` in a subprocess (a test module that fails to import does not stop the others)."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", "tests"]
    completed = run_command(command, deadline - time.monotonic() - 2, cwd=REPO)
    (out / "gpu-tests-output.txt").write_text(completed.output)
    summary = pytest_summary(completed.output)
    if summary == "" and completed.returncode != 0:
        raise RuntimeError(f"pytest exited {completed.returncode} without a summary; see {out / 'gpu-tests-output.txt'}")
    return Measured(count_tests(summary), {"summary": summary, "exit_code": completed.returncode},
                    [f"pytest -m gpu: {summary}"])


def count_tests(summary: str) -> dict[str, int]:
    """The test figures from pytest's closing line; errors (a module that failed to import) count as failed."""
    counts = {kind.rstrip("s"): int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", summary)}
    return {"gpu_tests_passed": counts.get("passed", 0),
            "gpu_tests_failed": counts.get("failed", 0) + counts.get("error", 0),
            "gpu_tests_skipped": counts.get("skipped", 0)}


def pytest_summary(output: str) -> str:
    """pytest's closing line, without the '=' rule it may be framed in."""
    pattern = re.compile(r"\d+ (passed|failed|skipped|deselected|errors?)\b|no tests ran")
    lines = [line.strip("= ") for line in output.splitlines() if pattern.search(line)]
    return lines[-1] if lines else ""


def figure_names(config: SuiteConfig) -> list[str]:
    """Every figure the suite reports for `config`, in order."""
    names = [n for plan in config.shapes for n in (*fv_figure_names(plan.shape.label), *induction_figure_names(plan.shape.label))]
    return names + list(SWEEP_FIGURES) + list(TEST_FIGURES)


def environment(config: SuiteConfig) -> dict[str, Any]:
    import transformers

    cuda = torch.device(config.device).type == "cuda" and torch.cuda.is_available()
    return {
        "device": config.device, "gpu": torch.cuda.get_device_name() if cuda else None, "cuda": torch.version.cuda,
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "host": platform.node(), "torch_threads": torch.get_num_threads(), "dtype": str(config.dtype),
    }


def print_plan(config: SuiteConfig, env: dict[str, Any], out: Path) -> None:
    shapes = ", ".join(f"{p.shape.label} ≤ {p.build_limit_s + p.fv_limit_s + p.induction_limit_s:.0f} s" for p in config.shapes)
    print(f"{config.name} suite on {env['gpu'] or config.device} ({env['dtype']}), torch {env['torch']}, "
          f"transformers {env['transformers']}; figures → {out / 'figures.json'}")
    print(f"plan: setup ≤ {config.setup_limit_s:.0f} s; per shape (build, FV, induction): {shapes}; "
          f"sweep of {config.sweep.n_checkpoints} checkpoints ≤ {config.sweep_limit_s:.0f} s; "
          f"pytest -m gpu ≤ {config.tests_limit_s:.0f} s")
    print(f"estimate: about {config.expected_s / 60:.1f} min if the targets are met, at most "
          f"{config.total_limit_s / 60:.1f} min (each stage stops at its limit)", flush=True)


def print_table(figures: dict[str, Figure], targets: dict[str, Target]) -> None:
    """The closing table; `targets` empty (the CPU smoke run) leaves the judging columns out."""
    header = ("figure", "value", "target", "met", "design-time (H100)") if targets else ("figure", "value")
    rows = [header]
    for name, value in figures.items():
        row = (name, format_figure(value)[:60])
        if targets:
            target = targets.get(name)
            row += (target.text if target else "", target.met(value) if target else "", REFERENCE_FIGURES.get(name, ""))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def write_results(out: Path, config: SuiteConfig, env: dict[str, Any], runner: StageRunner, wall_s: float) -> Path:
    path = out / "figures.json"
    results = {
        "suite": config.name, "written_at": datetime.now(UTC).isoformat(timespec="seconds"), "wall_s": wall_s,
        "environment": env, "figures": runner.figures,
        "targets": {name: target.text for name, target in config.targets.items()},
        "stages": [asdict(record) for record in runner.records], "settings": asdict(config),
    }
    path.write_text(json.dumps(results, indent=2, default=str))
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU (what the default tests run)")
    parser.add_argument("--out", type=Path, help="results folder (default: artifacts/<suite>-<UTC time>)")
    parser.add_argument("--tasks", type=Path, help=f"Todd-format task folder (default: {SHARED_TASKS} when present, "
                                                   "else the built-in tasks)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args(argv)


def run_suite(runner: StageRunner, config: SuiteConfig, tasks_dir: Path | None, out: Path) -> None:
    """Every stage in order: setup, each shape (its model freed before the next), the sweep, the GPU tests."""
    inputs = runner.call("setup", config.setup_limit_s, lambda _deadline: prepare_inputs(config, tasks_dir, out))
    if inputs is None:
        for plan in config.shapes:
            runner.skip(f"fv {plan.shape.label}", fv_figure_names(plan.shape.label), "setup failed")
            runner.skip(f"induction {plan.shape.label}", induction_figure_names(plan.shape.label), "setup failed")
        runner.skip("sweep", SWEEP_FIGURES, "setup failed")
    else:
        print(describe_inputs(inputs), flush=True)
        for plan in config.shapes:
            run_shape(runner, plan, inputs, config)
            release_device_memory()  # the shape's model is unreferenced now: give its memory back before the next
        runner.run(f"sweep ({config.sweep.n_checkpoints} checkpoints)", config.sweep_limit_s, SWEEP_FIGURES,
                   lambda deadline: measure_sweep(config.sweep, inputs.tokenizer, inputs.tasks_dir, out, config.device,
                                                  deadline))
    runner.run("gpu tests", config.tests_limit_s, TEST_FIGURES, lambda deadline: run_gpu_tests(deadline, out))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = cpu_smoke_profile() if args.cpu_smoke else gpu_profile()
    if config.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device is visible to torch; run on a GPU machine, or pass --cpu-smoke", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks_dir = args.tasks or (SHARED_TASKS if SHARED_TASKS.is_dir() else None)
    out = (args.out or REPO / "artifacts" / f"{config.name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = environment(config)
    print_plan(config, env, out)
    started = time.monotonic()
    runner = StageRunner(config.total_limit_s - 10)  # 10 s for the imports before and the file after
    run_suite(runner, config, tasks_dir, out)
    print_table(runner.figures, config.targets)
    path = write_results(out, config, env, runner, time.monotonic() - started)
    print(f"\nfigures written to {path} ({time.monotonic() - started:.0f} s)")
    return 1 if any(record.error for record in runner.records) else 0


if __name__ == "__main__":
    sys.exit(main())
