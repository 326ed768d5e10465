-- Seed comparisons: the analyses of analysis.sql (applied before this file), across the seeds of a suite.
--
-- Seeds of one configuration side by side (docs/methods.md, "Seed comparisons"). The models of a suite
-- (models.suite) are its seeds, each with its current setup; a model without a suite takes no part.
-- Head indices are not matched across seeds: training breaks the symmetry between a layer's heads
-- differently in each run, so `seed_head_spread` compares positions (layer, head), while
-- `seed_strongest_heads`, `seed_transitions` (per layer) and `seed_emergence` do not depend on indices.
CREATE OR REPLACE VIEW suite_members AS
SELECT m.suite, m.seed, m.model, cs.settings_hash
FROM models m
JOIN current_setups cs USING (model)
WHERE m.suite IS NOT NULL;

-- Per (suite, step, layer, head): the induction and FV scores of that head position across the suite's
-- seeds (mean, sample standard deviation, min, max, how many seeds have the step), and in how many seeds
-- the head IS an induction / FV head there.
CREATE OR REPLACE MACRO seed_head_spread(top_fraction := 0.02, min_top_heads := 1, induction_floor := 0.25,
                                         fv_floor := 0.001, z := 3.0) AS TABLE
SELECT s.suite, tr.step, any_value(tr.tokens) AS tokens, tr.layer, tr.head, count(*) AS n_seeds,
       avg(tr.induction) AS induction_mean, stddev_samp(tr.induction) AS induction_std,
       min(tr.induction) AS induction_min, max(tr.induction) AS induction_max,
       avg(tr.fv) AS fv_mean, stddev_samp(tr.fv) AS fv_std, min(tr.fv) AS fv_min, max(tr.fv) AS fv_max,
       count(*) FILTER (WHERE tr.is_induction_head) AS n_induction_head_seeds,
       count(*) FILTER (WHERE tr.is_fv_head) AS n_fv_head_seeds,
       top_fraction::DOUBLE AS top_fraction, min_top_heads::INTEGER AS min_top_heads,
       induction_floor::DOUBLE AS induction_floor, fv_floor::DOUBLE AS fv_floor, z::DOUBLE AS z
FROM head_trajectories(top_fraction := top_fraction, min_top_heads := min_top_heads,
                       induction_floor := induction_floor, fv_floor := fv_floor, z := z) tr
JOIN suite_members s USING (model, settings_hash)
GROUP BY s.suite, tr.step, tr.layer, tr.head;

CREATE OR REPLACE VIEW seed_head_spread AS SELECT * FROM seed_head_spread();

-- Per (suite, step, metric ∈ {induction, fv}): each seed's strongest head at that step, then its spread
-- across seeds (mean, sample standard deviation, min, max), and in how many seeds some head IS a head
-- of that kind at that step.
CREATE OR REPLACE MACRO seed_strongest_heads(top_fraction := 0.02, min_top_heads := 1, induction_floor := 0.25,
                                             fv_floor := 0.001, z := 3.0) AS TABLE
WITH per_seed AS (
    SELECT s.suite, s.model, tr.step, any_value(tr.tokens) AS tokens,
           max(tr.induction) AS induction, max(tr.fv) AS fv,
           bool_or(tr.is_induction_head) AS has_induction_head, bool_or(tr.is_fv_head) AS has_fv_head
    FROM head_trajectories(top_fraction := top_fraction, min_top_heads := min_top_heads,
                           induction_floor := induction_floor, fv_floor := fv_floor, z := z) tr
    JOIN suite_members s USING (model, settings_hash)
    GROUP BY s.suite, s.model, tr.step
), long AS (
    SELECT suite, model, step, tokens, 'induction' AS metric, induction AS value, has_induction_head AS has_head
    FROM per_seed
    UNION ALL
    SELECT suite, model, step, tokens, 'fv', fv, has_fv_head
    FROM per_seed
)
SELECT suite, step, any_value(tokens) AS tokens, metric, count(value) AS n_seeds,
       avg(value) AS mean, stddev_samp(value) AS std, min(value) AS "min", max(value) AS "max",
       count(*) FILTER (WHERE has_head) AS n_seeds_with_head,
       top_fraction::DOUBLE AS top_fraction, min_top_heads::INTEGER AS min_top_heads,
       induction_floor::DOUBLE AS induction_floor, fv_floor::DOUBLE AS fv_floor, z::DOUBLE AS z
FROM long
GROUP BY suite, step, metric
HAVING count(value) > 0;

CREATE OR REPLACE VIEW seed_strongest_heads AS SELECT * FROM seed_strongest_heads();

-- Per (suite, layer): in how many of the suite's seeds some head of that layer makes the induction → FV
-- transition (induction_to_fv_transitions), how many such heads there are in all, and which seeds.
CREATE OR REPLACE MACRO seed_transitions(top_fraction := 0.02, min_top_heads := 1, induction_floor := 0.25,
                                         fv_floor := 0.001, z := 3.0) AS TABLE
WITH sizes AS (
    SELECT suite, count(*) AS n_seeds FROM suite_members GROUP BY suite
), layers AS (  -- every scored layer, so that a layer where no seed has a transition reads 0
    SELECT DISTINCT s.suite, h.layer
    FROM head_scores h JOIN suite_members s USING (model, settings_hash)
), moved AS (
    SELECT s.suite, t.layer, count(DISTINCT s.model) AS n_transition_seeds, count(*) AS n_transition_heads,
           list_sort(list(DISTINCT s.seed)) AS transition_seeds,
           min(t.first_induction_head_step) AS first_induction_head_step_min,
           max(t.first_induction_head_step) AS first_induction_head_step_max
    FROM induction_to_fv_transitions(top_fraction := top_fraction, min_top_heads := min_top_heads,
                                     induction_floor := induction_floor, fv_floor := fv_floor, z := z) t
    JOIN suite_members s USING (model, settings_hash)
    GROUP BY s.suite, t.layer
)
SELECT l.suite, l.layer, n.n_seeds, coalesce(m.n_transition_seeds, 0) AS n_transition_seeds,
       coalesce(m.n_transition_heads, 0) AS n_transition_heads, coalesce(m.transition_seeds, []) AS transition_seeds,
       m.first_induction_head_step_min, m.first_induction_head_step_max,
       top_fraction::DOUBLE AS top_fraction, min_top_heads::INTEGER AS min_top_heads,
       induction_floor::DOUBLE AS induction_floor, fv_floor::DOUBLE AS fv_floor, z::DOUBLE AS z
FROM layers l
JOIN sizes n USING (suite)
LEFT JOIN moved m USING (suite, layer);

CREATE OR REPLACE VIEW seed_transitions AS SELECT * FROM seed_transitions();

-- Per (suite, seed): the steps each mechanism emerged (mechanism_emergence), and across the suite's
-- seeds how many had it emerge and the min, max, mean and sample standard deviation of that step.
CREATE OR REPLACE MACRO seed_emergence(top_fraction := 0.02, min_top_heads := 1, induction_floor := 0.25,
                                       fv_floor := 0.001, z := 3.0) AS TABLE
SELECT s.suite, s.seed, s.model, e.settings_hash, e.final_step, e.induction_step, e.fv_step, e.emergence_order,
       count(*) OVER suite_seeds AS n_seeds,
       count(e.induction_step) OVER suite_seeds AS n_induction_seeds,
       min(e.induction_step) OVER suite_seeds AS induction_step_min,
       max(e.induction_step) OVER suite_seeds AS induction_step_max,
       avg(e.induction_step) OVER suite_seeds AS induction_step_mean,
       stddev_samp(e.induction_step) OVER suite_seeds AS induction_step_std,
       count(e.fv_step) OVER suite_seeds AS n_fv_seeds,
       min(e.fv_step) OVER suite_seeds AS fv_step_min,
       max(e.fv_step) OVER suite_seeds AS fv_step_max,
       avg(e.fv_step) OVER suite_seeds AS fv_step_mean,
       stddev_samp(e.fv_step) OVER suite_seeds AS fv_step_std,
       top_fraction::DOUBLE AS top_fraction, min_top_heads::INTEGER AS min_top_heads,
       induction_floor::DOUBLE AS induction_floor, fv_floor::DOUBLE AS fv_floor, z::DOUBLE AS z
FROM mechanism_emergence(top_fraction := top_fraction, min_top_heads := min_top_heads,
                         induction_floor := induction_floor, fv_floor := fv_floor, z := z) e
JOIN suite_members s USING (model, settings_hash)
WINDOW suite_seeds AS (PARTITION BY s.suite);

CREATE OR REPLACE VIEW seed_emergence AS SELECT * FROM seed_emergence();
