"""The Pythia catalogue: published facts, revision names, step specs and their errors."""

from __future__ import annotations

import argparse

import pytest

from dynamics.sources.catalogue import (
    PYTHIA_MODELS,
    PYTHIA_REVISIONS,
    PYTHIA_STEPS,
    parse_steps,
    pythia_model,
    revision_for_step,
    step_for_revision,
    tokens_seen,
)
from jobs import models as list_models

# Published parameter counts (Pythia README; docs/methods.md, "Pythia models"), typed in independently.
PUBLISHED_PARAMS = {
    "14m": 14_067_712,
    "31m": 30_494_720,
    "70m": 70_426_624,
    "160m": 162_322_944,
    "410m": 405_334_016,
    "1b": 1_011_781_632,
    "1.4b": 1_414_647_808,
    "2.8b": 2_775_208_960,
    "6.9b": 6_857_302_016,
    "12b": 11_846_072_320,
}
PYTHIA = list(PYTHIA_STEPS)


def test_parameter_formula_matches_published_counts():
    for model in PYTHIA_MODELS.values():
        assert model.n_params == PUBLISHED_PARAMS[model.size], model.name


def test_catalogue_has_every_size_and_deduped_only_from_70m():
    assert {m.size for m in PYTHIA_MODELS.values()} == set(PUBLISHED_PARAMS)
    assert len(PYTHIA_MODELS) == 18
    assert "pythia-14m-deduped" not in PYTHIA_MODELS and "pythia-31m-deduped" not in PYTHIA_MODELS
    for model in PYTHIA_MODELS.values():
        assert model.n_heads * model.d_head == model.d_model
        assert model.rotary_dims == model.d_head // 4
    big = pythia_model("EleutherAI/pythia-12b-deduped")
    assert (big.repo_id, big.n_layers, big.n_heads, big.vocab_rows) == ("EleutherAI/pythia-12b-deduped", 36, 40, 50_688)
    assert pythia_model("pythia-160m-deduped") is pythia_model("EleutherAI/pythia-160m-deduped")


def test_revisions_are_the_154_published_branches():
    assert len(PYTHIA_REVISIONS) == 154
    assert PYTHIA_REVISIONS[:12] == ("step0", "step1", "step2", "step4", "step8", "step16", "step32", "step64",
                                     "step128", "step256", "step512", "step1000")
    assert PYTHIA_REVISIONS[-1] == "step143000"
    assert PYTHIA_STEPS[11:] == tuple(range(1000, 143_001, 1000))
    assert revision_for_step(1000) == "step1000"
    assert step_for_revision("step1000") == 1000
    assert step_for_revision("main") == 143_000
    assert tokens_seen(143_000) == 299_892_736_000  # the ~300B tokens Pythia reports
    with pytest.raises(ValueError, match="not a step branch"):
        step_for_revision("v1.0")


def test_unknown_model_names_close_matches_and_the_models_command():
    with pytest.raises(ValueError, match=r"did you mean pythia-160m-deduped.*`dynamics models` lists all"):
        pythia_model("pythia-160m-dedup")
    with pytest.raises(ValueError, match="pythia-14m has no deduped variant"):
        pythia_model("EleutherAI/pythia-14m-deduped")
    with pytest.raises(ValueError, match="unknown Pythia model 'gpt2'"):
        pythia_model("gpt2")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0,1,1000", [0, 1, 1000]),
        ("1000,step0,1000", [0, 1000]),
        ("0:10", [0, 1, 2, 4, 8]),
        ("0:5000:2000", [0, 2000, 4000]),
        ("1000:5000", [1000, 2000, 3000, 4000]),
        ("141000:", [141_000, 142_000, 143_000]),
    ],
)
def test_parse_steps_forms(spec, expected):
    assert parse_steps(spec, PYTHIA) == expected


def test_parse_steps_all_and_strided_range_over_everything():
    assert parse_steps("all", PYTHIA) == PYTHIA
    assert parse_steps("0:143001:1000", PYTHIA) == [0, *range(1000, 143_001, 1000)]


def test_unpublished_step_names_the_nearest():
    with pytest.raises(ValueError) as err:
        parse_steps("0,1500", PYTHIA, "EleutherAI/pythia-160m")
    assert str(err.value).startswith(
        "step 1500 is not a published checkpoint of EleutherAI/pythia-160m; the nearest are 1000 and 2000 ("
    )
    with pytest.raises(ValueError, match="the nearest is 143000"):
        parse_steps("200000", PYTHIA)
    with pytest.raises(ValueError, match=r"nearest are 2 and 16 \(published steps: 0, 1, 2, 16\)"):
        parse_steps("3", [0, 1, 2, 16])


@pytest.mark.parametrize("spec", ["a:b", "1:2:3:4", "x", "1,,2", "-5"])
def test_unparseable_spec_shows_the_accepted_forms(spec):
    with pytest.raises(ValueError, match=r"cannot parse steps .*'all', a comma list .* START:STOP\[:STEP\]"):
        parse_steps(spec, PYTHIA)


def test_empty_selection_and_bad_stride_are_errors():
    with pytest.raises(ValueError, match="select no published checkpoint"):
        parse_steps("600:900", PYTHIA)
    with pytest.raises(ValueError, match="stride .* must be positive"):
        parse_steps("0:10:0", PYTHIA)


def test_models_command_prints_every_model(capsys):
    assert list_models.run(argparse.Namespace()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(PYTHIA_MODELS)
    row = next(line for line in lines if line.startswith("EleutherAI/pythia-160m-deduped "))
    assert row.split() == [
        "EleutherAI/pythia-160m-deduped", "12", "768", "12", "64", "16", "50,304", "162,322,944", "154"
    ]
