-- The analyses: the only definition of each (docs/methods.md, "Analyses"). The report and
-- warehouse.queries select from these; `dynamics sql` users get the same answers.
--
-- Each analysis is a table macro whose thresholds are parameters, plus a view of the same name that
-- calls it with the defaults:   SELECT * FROM induction_to_fv_transitions
--                               SELECT * FROM induction_to_fv_transitions(top_fraction := 0.05, z := 2)
-- The thresholds come back as columns, so a stored or exported result says how it was computed:
--   top_fraction [0.02], min_top_heads [1]: a step's top set is its k best heads,
--       k = min(N, max(min_top_heads, ceil(top_fraction · N))) for N heads; round(…, 9) keeps ceil from
--       turning 0.02·150 = 3.0000000000000004 into 4;
--   induction_floor [0.25], fv_floor [0.001]: the least score of an induction head / an FV head;
--   z [3]: a head's score must exceed z standard errors (a score without a standard error counts only
--       when z = 0).
-- A head IS an induction (FV) head at a step when it is in that step's induction (FV) top set, its
-- score is at least the floor, and the score is significantly above zero. A top set on its own is only
-- a ranking: early in training it holds noise.

-- Last scored step of each (model, settings_hash).
CREATE OR REPLACE VIEW final_steps AS
SELECT model, settings_hash, max(step) AS final_step
FROM checkpoints
WHERE status = 'ok'
GROUP BY model, settings_hash;

-- The scoring setup of each model that reports show: the settings hash scored most recently with
-- status 'ok' (ties broken by hash), and how many setups the model has.
CREATE OR REPLACE VIEW current_setups AS
SELECT model, settings_hash, n_settings
FROM (
    SELECT model, settings_hash,
           row_number() OVER (PARTITION BY model ORDER BY max(scored_at) DESC, settings_hash) AS pick,
           count(*) OVER (PARTITION BY model) AS n_settings
    FROM checkpoints
    WHERE status = 'ok'
    GROUP BY model, settings_hash
)
WHERE pick = 1;

-- Per head and step: induction and FV scores with their standard errors; percentile among the step's
-- heads (100·(rank−1)/(N−1), ascending, ties share the lower rank); rank from the top (ties broken by
-- layer, then head); membership of each top set; and whether the head IS an induction / FV head there.
-- Heads whose score is non-finite get NULL percentile and are never top.
CREATE OR REPLACE MACRO head_trajectories(top_fraction := 0.02, min_top_heads := 1, induction_floor := 0.25,
                                          fv_floor := 0.001, z := 3.0) AS TABLE
WITH wide AS (
    SELECT model, settings_hash, step, layer, head,
           max(value) FILTER (WHERE metric = 'induction') AS induction,
           max(stderr) FILTER (WHERE metric = 'induction') AS induction_stderr,
           max(value) FILTER (WHERE metric = 'fv') AS fv,
           max(stderr) FILTER (WHERE metric = 'fv') AS fv_stderr
    FROM head_scores
    WHERE metric IN ('induction', 'fv')
    GROUP BY model, settings_hash, step, layer, head
), ranked AS (
    SELECT *,
           count(*) OVER step_heads AS n_heads,
           least(count(*) OVER step_heads,
                 greatest(min_top_heads, ceil(round(top_fraction * count(*) OVER step_heads, 9))))::INTEGER AS top_k,
           CASE WHEN induction IS NOT NULL THEN 100 * percent_rank() OVER (
               PARTITION BY model, settings_hash, step, induction IS NULL ORDER BY induction) END AS induction_pct,
           CASE WHEN fv IS NOT NULL THEN 100 * percent_rank() OVER (
               PARTITION BY model, settings_hash, step, fv IS NULL ORDER BY fv) END AS fv_pct,
           row_number() OVER (PARTITION BY model, settings_hash, step
                              ORDER BY induction DESC NULLS LAST, layer, head) AS induction_rank,
           row_number() OVER (PARTITION BY model, settings_hash, step
                              ORDER BY fv DESC NULLS LAST, layer, head) AS fv_rank
    FROM wide
    WINDOW step_heads AS (PARTITION BY model, settings_hash, step)
), flagged AS (
    SELECT *,
           induction IS NOT NULL AND induction_rank <= top_k AS in_induction_top,
           fv IS NOT NULL AND fv_rank <= top_k AS in_fv_top,
           coalesce((z = 0 OR induction_stderr IS NOT NULL) AND induction > z * coalesce(induction_stderr, 0), false)
               AS induction_significant,
           coalesce((z = 0 OR fv_stderr IS NOT NULL) AND fv > z * coalesce(fv_stderr, 0), false) AS fv_significant
    FROM ranked
)
SELECT f.model, f.settings_hash, f.step, c.tokens, f.layer, f.head,
       f.induction, f.induction_stderr, f.fv, f.fv_stderr, f.induction_pct, f.fv_pct, f.induction_rank, f.fv_rank,
       f.in_induction_top, f.in_fv_top, f.induction_significant, f.fv_significant,
       f.in_induction_top AND f.induction >= induction_floor AND f.induction_significant AS is_induction_head,
       f.in_fv_top AND f.fv >= fv_floor AND f.fv_significant AS is_fv_head,
       f.n_heads, f.top_k,
       -- the parameters (a macro parameter shadows a column of its name, hence the casts)
       top_fraction::DOUBLE AS top_fraction, min_top_heads::INTEGER AS min_top_heads,
       induction_floor::DOUBLE AS induction_floor, fv_floor::DOUBLE AS fv_floor, z::DOUBLE AS z
FROM flagged f
LEFT JOIN checkpoints c USING (model, step, settings_hash);

CREATE OR REPLACE VIEW head_trajectories AS SELECT * FROM head_trajectories();

-- Per head: when it entered each top set (first step in it) and left it (the step after its last step
-- in it; NULL while it is still in at the final step); the first step it WAS an induction / FV head;
-- its peak induction score before the final step; its final-step scores and standard errors; and
-- induction_then_fv: an FV head at the final step that was an induction head at an earlier step.
CREATE OR REPLACE MACRO head_set_membership(top_fraction := 0.02, min_top_heads := 1, induction_floor := 0.25,
                                            fv_floor := 0.001, z := 3.0) AS TABLE
WITH steps AS (
    SELECT tr.*, f.final_step,
           lead(tr.step) OVER (PARTITION BY tr.model, tr.settings_hash, tr.layer, tr.head ORDER BY tr.step) AS next_step
    FROM head_trajectories(top_fraction := top_fraction, min_top_heads := min_top_heads,
                           induction_floor := induction_floor, fv_floor := fv_floor, z := z) tr
    JOIN final_steps f USING (model, settings_hash)
    WHERE tr.step <= f.final_step
), per_head AS (
    SELECT model, settings_hash, layer, head,
           any_value(final_step) AS final_step,
           min(step) FILTER (WHERE in_induction_top) AS induction_entered_step,
           arg_max_null(next_step, step) FILTER (WHERE in_induction_top) AS induction_left_step,
           min(step) FILTER (WHERE in_fv_top) AS fv_entered_step,
           arg_max_null(next_step, step) FILTER (WHERE in_fv_top) AS fv_left_step,
           count(*) FILTER (WHERE in_induction_top) AS induction_top_steps,
           count(*) FILTER (WHERE in_fv_top) AS fv_top_steps,
           min(step) FILTER (WHERE is_induction_head) AS first_induction_head_step,
           min(step) FILTER (WHERE is_fv_head) AS first_fv_head_step,
           coalesce(bool_or(is_induction_head) FILTER (WHERE step < final_step), false) AS induction_head_before_final,
           max(induction) FILTER (WHERE step < final_step) AS peak_induction,
           first(step ORDER BY induction DESC NULLS LAST, step) FILTER (WHERE step < final_step) AS peak_induction_step,
           max(induction_pct) AS peak_induction_pct,
           any_value(induction) FILTER (WHERE step = final_step) AS final_induction,
           any_value(induction_stderr) FILTER (WHERE step = final_step) AS final_induction_stderr,
           any_value(fv) FILTER (WHERE step = final_step) AS final_fv,
           any_value(fv_stderr) FILTER (WHERE step = final_step) AS final_fv_stderr,
           any_value(induction_pct) FILTER (WHERE step = final_step) AS final_induction_pct,
           any_value(fv_pct) FILTER (WHERE step = final_step) AS final_fv_pct,
           coalesce(bool_or(in_fv_top) FILTER (WHERE step = final_step), false) AS final_fv_top,
           coalesce(bool_or(in_induction_top) FILTER (WHERE step = final_step), false) AS final_induction_top,
           coalesce(bool_or(is_fv_head) FILTER (WHERE step = final_step), false) AS final_fv_head,
           coalesce(bool_or(is_induction_head) FILTER (WHERE step = final_step), false) AS final_induction_head,
           any_value(n_heads) FILTER (WHERE step = final_step) AS n_heads,
           any_value(top_k) FILTER (WHERE step = final_step) AS top_k
    FROM steps
    GROUP BY model, settings_hash, layer, head
)
SELECT *, final_fv_head AND induction_head_before_final AS induction_then_fv,
       top_fraction::DOUBLE AS top_fraction, min_top_heads::INTEGER AS min_top_heads,
       induction_floor::DOUBLE AS induction_floor, fv_floor::DOUBLE AS fv_floor, z::DOUBLE AS z
FROM per_head;

CREATE OR REPLACE VIEW head_set_membership AS SELECT * FROM head_set_membership();

-- Question (a): the FV heads at the final step that were induction heads at an earlier step — each a
-- claim that survives its standard error (the final FV score exceeds z standard errors and the floor).
CREATE OR REPLACE MACRO induction_to_fv_transitions(top_fraction := 0.02, min_top_heads := 1,
                                                    induction_floor := 0.25, fv_floor := 0.001, z := 3.0) AS TABLE
SELECT model, settings_hash, layer, head, final_step,
       first_induction_head_step, induction_entered_step, induction_left_step, fv_entered_step, first_fv_head_step,
       peak_induction, peak_induction_step, peak_induction_pct, final_induction, final_induction_stderr,
       final_fv, final_fv_stderr, final_induction_pct, final_fv_pct, induction_top_steps, fv_top_steps,
       n_heads, top_k, top_fraction::DOUBLE AS top_fraction, min_top_heads::INTEGER AS min_top_heads,
       induction_floor::DOUBLE AS induction_floor, fv_floor::DOUBLE AS fv_floor, z::DOUBLE AS z
FROM head_set_membership(top_fraction := top_fraction, min_top_heads := min_top_heads,
                         induction_floor := induction_floor, fv_floor := fv_floor, z := z)
WHERE induction_then_fv;

CREATE OR REPLACE VIEW induction_to_fv_transitions AS SELECT * FROM induction_to_fv_transitions();

-- Per (model, settings_hash): the first step at which some head IS an induction head, and the first at
-- which some head IS an FV head (NULL: never), with the strongest head of each kind at its step.
CREATE OR REPLACE MACRO mechanism_emergence(top_fraction := 0.02, min_top_heads := 1, induction_floor := 0.25,
                                            fv_floor := 0.001, z := 3.0) AS TABLE
WITH tr AS (
    SELECT * FROM head_trajectories(top_fraction := top_fraction, min_top_heads := min_top_heads,
                                    induction_floor := induction_floor, fv_floor := fv_floor, z := z)
)
SELECT f.model, f.settings_hash, f.final_step,
       min(tr.step) FILTER (WHERE tr.is_induction_head) AS induction_step,
       min(tr.step) FILTER (WHERE tr.is_fv_head) AS fv_step,
       CASE WHEN min(tr.step) FILTER (WHERE tr.is_induction_head) IS NULL
                 OR min(tr.step) FILTER (WHERE tr.is_fv_head) IS NULL THEN NULL
            WHEN min(tr.step) FILTER (WHERE tr.is_induction_head) < min(tr.step) FILTER (WHERE tr.is_fv_head)
                 THEN 'induction first'
            WHEN min(tr.step) FILTER (WHERE tr.is_induction_head) > min(tr.step) FILTER (WHERE tr.is_fv_head)
                 THEN 'fv first'
            ELSE 'same step' END AS emergence_order,
       top_fraction::DOUBLE AS top_fraction, min_top_heads::INTEGER AS min_top_heads,
       induction_floor::DOUBLE AS induction_floor, fv_floor::DOUBLE AS fv_floor, z::DOUBLE AS z
FROM final_steps f
JOIN tr USING (model, settings_hash)
GROUP BY f.model, f.settings_hash, f.final_step;

CREATE OR REPLACE VIEW mechanism_emergence AS SELECT * FROM mechanism_emergence();

-- Per (model, settings_hash, metric) at the final step: the strongest head, the mean of the top set,
-- the mean over all heads, and how many heads ARE heads of that kind there (docs/methods.md,
-- "Head strength").
CREATE OR REPLACE MACRO head_strength(top_fraction := 0.02, min_top_heads := 1, induction_floor := 0.25,
                                      fv_floor := 0.001, z := 3.0) AS TABLE
WITH final AS (
    SELECT tr.*
    FROM head_trajectories(top_fraction := top_fraction, min_top_heads := min_top_heads,
                           induction_floor := induction_floor, fv_floor := fv_floor, z := z) tr
    JOIN final_steps f ON tr.model = f.model AND tr.settings_hash = f.settings_hash AND tr.step = f.final_step
), long AS (
    SELECT model, settings_hash, step, 'induction' AS metric, induction AS value, in_induction_top AS in_top,
           is_induction_head AS is_head, n_heads, top_k
    FROM final
    UNION ALL
    SELECT model, settings_hash, step, 'fv', fv, in_fv_top, is_fv_head, n_heads, top_k
    FROM final
)
SELECT model, settings_hash, any_value(step) AS final_step, metric,
       max(value) AS "max", avg(value) FILTER (WHERE in_top) AS top_mean, avg(value) AS mean,
       count(*) FILTER (WHERE is_head) AS n_mechanism_heads,
       any_value(n_heads) AS n_heads, any_value(top_k) AS top_k,
       top_fraction::DOUBLE AS top_fraction, min_top_heads::INTEGER AS min_top_heads,
       induction_floor::DOUBLE AS induction_floor, fv_floor::DOUBLE AS fv_floor, z::DOUBLE AS z
FROM long
GROUP BY model, settings_hash, metric
HAVING count(value) > 0;

CREATE OR REPLACE VIEW head_strength AS SELECT * FROM head_strength();

-- Question (b), per model (its current setup): its shape and its induction and FV strength at the final step.
CREATE OR REPLACE MACRO head_dimensionality(top_fraction := 0.02, min_top_heads := 1, induction_floor := 0.25,
                                            fv_floor := 0.001, z := 3.0) AS TABLE
SELECT m.model, s.settings_hash, any_value(s.final_step) AS final_step, any_value(m.family) AS family,
       any_value(m.d_head) AS d_head, any_value(m.d_model) AS d_model, any_value(m.n_heads) AS n_heads,
       any_value(m.n_layers) AS n_layers, any_value(m.n_params) AS n_params,
       any_value(s."max") FILTER (WHERE s.metric = 'induction') AS induction_max,
       any_value(s.top_mean) FILTER (WHERE s.metric = 'induction') AS induction_top_mean,
       any_value(s.mean) FILTER (WHERE s.metric = 'induction') AS induction_mean,
       any_value(s.n_mechanism_heads) FILTER (WHERE s.metric = 'induction') AS n_induction_heads,
       any_value(s."max") FILTER (WHERE s.metric = 'fv') AS fv_max,
       any_value(s.top_mean) FILTER (WHERE s.metric = 'fv') AS fv_top_mean,
       any_value(s.mean) FILTER (WHERE s.metric = 'fv') AS fv_mean,
       any_value(s.n_mechanism_heads) FILTER (WHERE s.metric = 'fv') AS n_fv_heads,
       any_value(s.top_k) AS top_k, top_fraction::DOUBLE AS top_fraction, min_top_heads::INTEGER AS min_top_heads,
       induction_floor::DOUBLE AS induction_floor, fv_floor::DOUBLE AS fv_floor, z::DOUBLE AS z
FROM head_strength(top_fraction := top_fraction, min_top_heads := min_top_heads,
                   induction_floor := induction_floor, fv_floor := fv_floor, z := z) s
JOIN current_setups USING (model, settings_hash)
JOIN models m USING (model)
GROUP BY m.model, s.settings_hash;

CREATE OR REPLACE VIEW head_dimensionality AS SELECT * FROM head_dimensionality();

-- Question (b), across models: Pearson and Spearman correlation of each strength statistic with
-- d_head (one point per model, its current setup, as in head_dimensionality; NULL with fewer than 3
-- points or no spread).
-- Spearman = Pearson of average ranks, so ties are handled as scipy.stats.spearmanr does.
CREATE OR REPLACE MACRO head_dimensionality_correlations(top_fraction := 0.02, min_top_heads := 1,
                                                         induction_floor := 0.25, fv_floor := 0.001,
                                                         z := 3.0) AS TABLE
WITH points AS (
    SELECT s.metric, st.statistic, m.d_head::DOUBLE AS d_head,
           CASE st.statistic WHEN 'max' THEN s."max" WHEN 'top_mean' THEN s.top_mean ELSE s.mean END AS value
    FROM head_strength(top_fraction := top_fraction, min_top_heads := min_top_heads,
                       induction_floor := induction_floor, fv_floor := fv_floor, z := z) s
    JOIN current_setups USING (model, settings_hash)
    JOIN models m USING (model)
    CROSS JOIN (VALUES ('max'), ('top_mean'), ('mean')) st(statistic)
), ranked AS (
    SELECT *,
           rank() OVER (PARTITION BY metric, statistic ORDER BY d_head)
             + (count(*) OVER (PARTITION BY metric, statistic, d_head) - 1) / 2.0 AS d_head_rank,
           rank() OVER (PARTITION BY metric, statistic ORDER BY value)
             + (count(*) OVER (PARTITION BY metric, statistic, value) - 1) / 2.0 AS value_rank
    FROM points
    WHERE value IS NOT NULL AND d_head IS NOT NULL
), coefficients AS (
    SELECT metric, statistic, count(*) AS n_models,
           corr(d_head, value) AS pearson, corr(d_head_rank, value_rank) AS spearman
    FROM ranked
    GROUP BY metric, statistic
)
SELECT metric, statistic, n_models,
       CASE WHEN n_models >= 3 AND NOT isnan(pearson) THEN pearson END AS pearson,
       CASE WHEN n_models >= 3 AND NOT isnan(spearman) THEN spearman END AS spearman,
       top_fraction::DOUBLE AS top_fraction, min_top_heads::INTEGER AS min_top_heads,
       induction_floor::DOUBLE AS induction_floor, fv_floor::DOUBLE AS fv_floor, z::DOUBLE AS z
FROM coefficients;

CREATE OR REPLACE VIEW head_dimensionality_correlations AS SELECT * FROM head_dimensionality_correlations();

-- Per model and step: the model-level metrics (training loss, ICL token loss, few-shot accuracy, …)
-- next to the strongest induction and FV heads, in long form for charts ('max_induction', 'max_fv').
CREATE OR REPLACE VIEW phase_change AS
SELECT cm.model, cm.settings_hash, cm.step, c.tokens, cm.metric, cm.value
FROM checkpoint_metrics cm
LEFT JOIN checkpoints c USING (model, step, settings_hash)
UNION ALL
SELECT h.model, h.settings_hash, h.step, any_value(c.tokens), 'max_' || h.metric, max(h.value)
FROM head_scores h
LEFT JOIN checkpoints c USING (model, step, settings_hash)
WHERE h.metric IN ('induction', 'fv')
GROUP BY h.model, h.settings_hash, h.step, h.metric;

-- Which metrics each model's current setup has, with how many steps: (model, source, metric, n_steps).
-- Ablations count for any setup: ablation runs may use their own settings.
CREATE OR REPLACE VIEW metric_inventory AS
SELECT model, 'head_scores' AS source, metric, count(DISTINCT step) AS n_steps
FROM head_scores JOIN current_setups USING (model, settings_hash)
WHERE value IS NOT NULL GROUP BY model, metric
UNION ALL
SELECT model, 'checkpoint_metrics', metric, count(DISTINCT step)
FROM checkpoint_metrics JOIN current_setups USING (model, settings_hash)
WHERE value IS NOT NULL GROUP BY model, metric
UNION ALL
SELECT model, 'ablations', metric, count(DISTINCT step)
FROM ablations WHERE value IS NOT NULL GROUP BY model, metric;

-- Few-shot accuracy under head ablation, averaged over tasks, one setup per model: the current setup's
-- latest ablated step when it has ablations, else the latest ablated step (alphabetically first hash
-- there); of that step's rows, metric 'f1' before 'top1' and then method 'mean' before 'zero'. A fraction >= 1 (a
-- head count) becomes a fraction of the model's heads; n_ablated says how many heads that was (fewer than
-- asked when too few heads qualify), ablated_fraction what share of the model's heads. The clean
-- run (fraction 0, no exclusion) is repeated as the first point of the with-exclusion curve, which the
-- reference grid does not run at 0.
CREATE OR REPLACE VIEW ablation_curves AS
WITH rows AS (
    SELECT a.*, cs.settings_hash IS NOT NULL AS current
    FROM ablations a LEFT JOIN current_setups cs USING (model, settings_hash)
    WHERE a.value IS NOT NULL AND a.metric IN ('f1', 'top1')
), setup AS (
    SELECT model,
           first(step ORDER BY current DESC, step DESC, settings_hash) AS step,
           first(settings_hash ORDER BY current DESC, step DESC, settings_hash) AS settings_hash
    FROM rows GROUP BY model
), pick AS (  -- the (metric, method) pair among that step's rows, so that the four always name existing rows
    SELECT model, step, settings_hash,
           first(metric ORDER BY metric = 'f1' DESC, method = 'mean' DESC) AS metric,
           first(method ORDER BY metric = 'f1' DESC, method = 'mean' DESC) AS method
    FROM rows JOIN setup USING (model, step, settings_hash) GROUP BY ALL
), curves AS (
    SELECT r.model, r.step, r.settings_hash, r.method, r.metric, r.ranking, r.exclusion,
           CASE WHEN r.fraction >= 1 THEN r.fraction / (m.n_layers * m.n_heads) ELSE r.fraction END AS fraction,
           any_value(r.n_ablated) AS n_ablated, m.n_layers * m.n_heads AS n_heads_total,
           any_value(r.n_ablated::DOUBLE / (m.n_layers * m.n_heads)) AS ablated_fraction,
           avg(r.value) AS value, count(DISTINCT r.task) AS n_tasks
    FROM rows r JOIN pick p USING (model, step, settings_hash, metric, method)
    LEFT JOIN models m USING (model)
    GROUP BY ALL
)
SELECT * FROM curves
UNION ALL
SELECT model, step, settings_hash, method, metric, ranking, true, fraction, n_ablated, n_heads_total,
       ablated_fraction, value, n_tasks
FROM curves c
WHERE NOT exclusion AND fraction = 0 AND EXISTS (
    SELECT 1 FROM curves e WHERE e.model = c.model AND e.ranking = c.ranking AND e.exclusion)
  AND NOT EXISTS (
    SELECT 1 FROM curves e WHERE e.model = c.model AND e.ranking = c.ranking AND e.exclusion AND e.fraction = 0);

-- The trajectories of the heads in the final induction or the final FV top set, with each head's
-- set membership (for charts: which heads to follow through training, and which made the transition).
CREATE OR REPLACE MACRO final_top_head_trajectories(top_fraction := 0.02, min_top_heads := 1,
                                                    induction_floor := 0.25, fv_floor := 0.001,
                                                    z := 3.0) AS TABLE
SELECT tr.model, tr.settings_hash, tr.step, tr.tokens, tr.layer, tr.head,
       tr.induction, tr.induction_stderr, tr.fv, tr.fv_stderr, tr.is_induction_head, tr.is_fv_head,
       m.final_induction_top, m.final_fv_top, m.final_induction_head, m.final_fv_head, m.induction_then_fv,
       m.first_induction_head_step, tr.top_k, tr.top_fraction, tr.min_top_heads, tr.induction_floor, tr.fv_floor, tr.z
FROM head_trajectories(top_fraction := top_fraction, min_top_heads := min_top_heads,
                       induction_floor := induction_floor, fv_floor := fv_floor, z := z) tr
JOIN head_set_membership(top_fraction := top_fraction, min_top_heads := min_top_heads,
                         induction_floor := induction_floor, fv_floor := fv_floor, z := z) m
    USING (model, settings_hash, layer, head)
WHERE m.final_induction_top OR m.final_fv_top;

CREATE OR REPLACE VIEW final_top_head_trajectories AS SELECT * FROM final_top_head_trajectories();

-- Per model, its current setup: how many checkpoints were scored, failed and found duplicate (their
-- steps listed), and its shape (from models, else from the head scores; d_head then stays NULL).
CREATE OR REPLACE VIEW scored_models AS
WITH shape AS (
    SELECT model, settings_hash, max(layer) + 1 AS n_layers, max(head) + 1 AS n_heads
    FROM head_scores JOIN current_setups USING (model, settings_hash)
    GROUP BY model, settings_hash
)
SELECT cs.model, cs.settings_hash, cs.n_settings,
       count(*) FILTER (WHERE c.status = 'ok') AS n_steps,
       min(c.step) FILTER (WHERE c.status = 'ok') AS first_step,
       max(c.step) FILTER (WHERE c.status = 'ok') AS final_step,
       list(c.step ORDER BY c.step) FILTER (WHERE c.status = 'ok') AS steps,
       coalesce(list(c.step ORDER BY c.step) FILTER (WHERE c.status = 'failed'), []) AS failed_steps,
       coalesce(list(c.step ORDER BY c.step) FILTER (WHERE c.status = 'duplicate'), []) AS duplicate_steps,
       any_value(m.family) AS family,
       coalesce(any_value(m.n_layers), any_value(s.n_layers)) AS n_layers,
       coalesce(any_value(m.n_heads), any_value(s.n_heads)) AS n_heads,
       any_value(m.d_head) AS d_head, any_value(m.d_model) AS d_model, any_value(m.n_params) AS n_params
FROM current_setups cs
JOIN checkpoints c USING (model, settings_hash)
LEFT JOIN models m USING (model)
LEFT JOIN shape s USING (model, settings_hash)
GROUP BY cs.model, cs.settings_hash, cs.n_settings;
