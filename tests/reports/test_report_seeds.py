"""The seeds section of the across-models page: one suite's seeds side by side, captions from the data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from reports import charts
from reports.report import render_report, seed_text
from tests.reports.synthetic_warehouse import SyntheticModel, build_warehouse
from warehouse import queries

STEPS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000)
SEED_MODELS = [  # one configuration, three seeds whose induction heads arrive at different steps
    SyntheticModel(f"run-seed{seed}", 2, 4, 16, STEPS, onset_step=onset, seed=seed, suite="toy-suite")
    for seed, onset in ((1, 32), (2, 64), (3, 256))
]
LONE = SyntheticModel("lone-seed", 2, 4, 16, STEPS, onset_step=64, seed=5, suite="single")  # one seed: no section


@pytest.fixture(scope="module")
def seed_report(tmp_path_factory) -> tuple[Path, dict, Path]:
    """(warehouse, dynamics per model, across-models page)."""
    path = tmp_path_factory.mktemp("seeds") / "warehouse.duckdb"
    dynamics = build_warehouse(path, [*SEED_MODELS, LONE])
    index = render_report(path, path.parent / "report")
    return path, dynamics, index.parent / "across-models.html"


def _charts(page: Path) -> dict[str, dict]:
    return json.loads(re.search(r"const CHARTS = (\{.*?\});\n", page.read_text(), re.S).group(1))


def test_one_section_per_suite_with_several_seeds(seed_report):
    _, _, page = seed_report
    specs = _charts(page)
    seed_sections = [key for key in specs if key.startswith("vis-seeds-")]
    assert len(seed_sections) == 1
    text = page.read_text()
    assert "toy-suite: 3 seeds (1, 2, 3)." in text
    assert "Seeds of toy-suite" in json.dumps(specs[seed_sections[0]], ensure_ascii=False)
    assert "single:" not in text


def test_caption_states_the_spread_the_views_compute(seed_report):
    path, dynamics, page = seed_report
    emergence = queries.seed_emergence(path, "toy-suite")
    strongest = queries.seed_strongest_heads(path, "toy-suite")
    caption = seed_text("toy-suite", strongest, emergence, queries.seed_transitions(path, "toy-suite"))
    assert caption in page.read_text().replace("&#x27;", "'")
    final = np.array([dynamics[m.name].head["induction"][-1].max() for m in SEED_MODELS])  # each seed's strongest
    assert f"the highest induction score of any head is {final.mean():.3g} on average (min {final.min():.3g}, " \
           f"max {final.max():.3g}, sd {final.std(ddof=1):.3g})" in caption
    # each seed's first induction head from the generated scores: the top set is one head of 8, the floor 0.25
    # dwarfs 3 standard errors (0.015)
    steps = [STEPS[int(np.argmax(dynamics[m.name].head["induction"].max(axis=(1, 2)) >= 0.25))] for m in SEED_MODELS]
    assert emergence["induction_step"].to_list() == steps
    assert steps == sorted(steps) and len(set(steps)) > 1  # later onsets, later heads: a spread to state
    assert "First induction head: " + ", ".join(f"step {s} (seed {seed})" for s, seed in zip(steps, (1, 2, 3))) in caption
    assert f"3 of 3 seeds, spread {max(steps) - min(steps)} steps" in caption
    # every seed's transition head sits in the last layer (SyntheticModel.transition_head)
    assert "Heads went from induction to FV in layer 1 in 3 of 3 seeds" in caption


def test_chart_draws_the_band_mean_and_each_seeds_first_head(seed_report):
    path, _, _ = seed_report
    strongest = queries.seed_strongest_heads(path, "toy-suite")
    emergence = queries.seed_emergence(path, "toy-suite")
    spec = charts.chart_seed_spread(strongest, emergence, STEPS[-1]).to_dict()
    panels = spec["hconcat"]
    assert len(panels) == 2  # induction and FV
    band, line, rules = panels[0]["layer"]
    assert (band["encoding"]["y"]["field"], band["encoding"]["y2"]["field"]) == ("min", "max")
    assert line["encoding"]["y"]["field"] == "mean"
    assert rules["encoding"]["color"]["field"] == "seed"
    datasets = spec["datasets"]
    assert len(datasets[band["data"]["name"]]) == len(STEPS)  # one row per step: no per-head or per-seed rows
    assert sorted(r["seed"] for r in datasets[rules["data"]["name"]] if r["metric"] == "induction") == ["1", "2", "3"]
