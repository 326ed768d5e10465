"""Seeds of one configuration in one warehouse: the --suite/--seed/--toy-seeds flags, and the toy suite trained
with three seeds (a tiny config: seconds of training) swept together, with the seed views and report section."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import textwrap

import duckdb
import pytest

from dynamics.errors import InputError
from jobs.sweep import config as sweep_config
from jobs.sweep.config import SweepConfig
from jobs.sweep.targets import build_targets
from tests.jobs.conftest import REPO, sweep_env
from warehouse import queries


def parse(argv: list[str]) -> SweepConfig:
    parser = argparse.ArgumentParser()
    sweep_config.add_arguments(parser)
    return SweepConfig.from_args(parser.parse_args(argv))


def test_suite_and_seed_flags_reach_the_targets(sweep_run_template, tmp_path):
    config = parse(["--local", str(sweep_run_template), "--local", str(sweep_run_template), "--name", "a", "--name",
                    "b", "--suite", "mine", "--seed", "4", "--seed", "5", "--fv-prompts", "2"])
    assert (config.suite, config.seeds) == ("mine", (4, 5))
    assert [(t.suite, t.seed) for t in build_targets(config)] == [("mine", 4), ("mine", 5)]
    assert parse(["--toy-seeds", "0, 1,2"]).toy_seeds == (0, 1, 2)
    assert parse(["--model", "org/run", "--revisions", "a,b", "--revision-pattern", "r-(?P<step>\\d+)"]).revisions \
        == ("a", "b")
    assert SweepConfig.from_dict(config.to_dict()) == config  # stored with the run, rebuilt exactly


@pytest.mark.parametrize(("fields", "message"), [
    ({"local": ("/a", "/b"), "seeds": (1,)}, "--seed is given 1 time(s) for 2 run(s)"),
    ({"seeds": (1,)}, "the toy suite takes --toy-seeds"),
    ({"models": ("org/run",), "toy_seeds": (0, 1)}, "--toy-seeds trains the embedded toy suite"),
    ({"toy_seeds": (0, 0)}, "--toy-seeds lists a seed twice"),
    ({"local": ("/a",), "revisions": ("step1",)}, "--revision-pattern and --revisions name Hub revisions"),
    ({"models": ("org/run",), "revision_pattern": "run-(\\d+)"}, "has no named group 'step'"),
    ({"models": ("org/run",), "revisions": ("step1",), "steps": "0:10"}, "--revisions and --steps conflict"),
])
def test_bad_seed_and_revision_options_are_refused(fields, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SweepConfig(**fields)


def tiny_toy_preset():
    """The default preset's data and probes with one 16-wide, 1-layer model trained for 3 steps."""
    from dynamics.toy.suite import PRESETS
    from dynamics.toy.train import ToyModelSpec

    base = PRESETS["default"]
    return dataclasses.replace(
        base, models=(ToyModelSpec("t-16d-2h", 16, 2, 1, rotary_fraction=0.5),),
        train=dataclasses.replace(base.train, steps=(0, 1, 3), warmup_steps=1),
        probe=dataclasses.replace(base.probe, induction=dataclasses.replace(base.probe.induction, n_sequences=4)))


# The sweep with a preset registered under a test-only name: the driver trains the suites before Ray starts,
# and the actors only read the checkpoint folders it names.
SWEEP_SCRIPT = """
    import sys
    from dynamics.toy import suite
    from tests.jobs.test_seeds import tiny_toy_preset

    suite.PRESETS["tiny-test"] = tiny_toy_preset()
    from jobs.sweep_checkpoints import main
    sys.exit(main(sys.argv[1:]))
"""


def test_toy_suite_trained_with_three_seeds_sweeps_into_one_warehouse(tmp_path):
    warehouse = tmp_path / "seeds.duckdb"
    args = ["--toy-preset", "tiny-test", "--toy-seeds", "0,1,2", "--warehouse", warehouse, "--fv-prompts", "2",
            "--induction-sequences", "8", "--icl-queries", "2", "--ablation-steps", "none", "--actors", "2"]
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SWEEP_SCRIPT), *map(str, args)], cwd=REPO,
                          env=sweep_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "9 planned, 9 scored" in done.stdout
    with duckdb.connect(str(warehouse), read_only=True) as con:
        models = con.execute("SELECT model, suite, seed FROM models ORDER BY seed").fetchall()
    assert models == [("toy/t-16d-2h", "toy/t-16d-2h", 0), ("toy/t-16d-2h-seed1", "toy/t-16d-2h", 1),
                      ("toy/t-16d-2h-seed2", "toy/t-16d-2h", 2)]
    strongest = queries.seed_strongest_heads(warehouse, "toy/t-16d-2h")
    assert sorted(set(strongest["step"])) == [0, 1, 3] and set(strongest["n_seeds"]) == {3}
    assert set(strongest["metric"]) == {"induction", "fv"} and (strongest["max"] >= strongest["min"]).all()
    assert (strongest["std"] > 0).all()  # three seeds, three different models
    assert queries.seed_emergence(warehouse)["seed"].to_list() == [0, 1, 2]
    page = (tmp_path / "seeds-report" / "across-models.html").read_text()
    assert "toy/t-16d-2h: 3 seeds (0, 1, 2)." in page and 'id="vis-seeds-0"' in page
