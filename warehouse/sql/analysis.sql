-- Views and table macros for the two research questions (algorithms.md §6, §6.2) and the reports.
--
-- Each analysis is a table macro whose thresholds are parameters, plus a view of the same name that
-- calls it with the defaults:  SELECT * FROM head_trajectories                  (top 2 %)
--                              SELECT * FROM head_trajectories(top_fraction := 0.05)
-- Thresholds come back as columns, so a stored or exported result says how it was computed.
-- Top set at a step = the k highest-scoring heads, k = max(1, ceil(top_fraction · heads)); the
-- round(…, 9) keeps ceil from rounding 0.02·150 = 3.0000000000000004 up to 4.

-- Last scored step of each (model, settings_hash).
CREATE OR REPLACE VIEW final_steps AS
SELECT model, settings_hash, max(step) AS final_step
FROM checkpoints
WHERE status = 'ok'
GROUP BY model, settings_hash;

-- Per head and step: induction and FV scores, percentile among the step's heads (100·(rank−1)/(N−1),
-- ascending, ties share the lower rank), rank from the top (ties broken by layer, then head), and
-- membership of each top set. Heads whose score is non-finite get NULL percentile and are never top.
CREATE OR REPLACE MACRO head_trajectories(top_fraction := 0.02) AS TABLE
WITH wide AS (
    SELECT model, settings_hash, step, layer, head,
           max(value) FILTER (WHERE metric = 'induction') AS induction,
           max(value) FILTER (WHERE metric = 'fv') AS fv
    FROM head_scores
    WHERE metric IN ('induction', 'fv')
    GROUP BY model, settings_hash, step, layer, head
), ranked AS (
    SELECT *,
           count(*) OVER step_heads AS n_heads,
           greatest(1, ceil(round(top_fraction * count(*) OVER step_heads, 9)))::INTEGER AS top_k,
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
)
SELECT r.model, r.settings_hash, r.step, c.tokens, r.layer, r.head,
       r.induction, r.fv, r.induction_pct, r.fv_pct, r.induction_rank, r.fv_rank,
       r.induction IS NOT NULL AND r.induction_rank <= r.top_k AS in_induction_top,
       r.fv IS NOT NULL AND r.fv_rank <= r.top_k AS in_fv_top,
       r.n_heads, r.top_k, top_fraction::DOUBLE AS top_fraction
FROM ranked r
LEFT JOIN checkpoints c USING (model, step, settings_hash);

CREATE OR REPLACE VIEW head_trajectories AS SELECT * FROM head_trajectories();

-- Per head: when it entered each top set (first step in it) and left it (the step after its last step
-- in it; NULL while it is still in at the final step), its peak induction percentile, its final-step
-- scores, and whether it is in the FV top set at the final step after being in the induction top set
-- at an earlier step (induction_then_fv).
CREATE OR REPLACE MACRO head_set_membership(top_fraction := 0.02) AS TABLE
WITH steps AS (
    SELECT tr.*, f.final_step,
           lead(tr.step) OVER (PARTITION BY tr.model, tr.settings_hash, tr.layer, tr.head ORDER BY tr.step) AS next_step
    FROM head_trajectories(top_fraction := top_fraction) tr
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
           coalesce(bool_or(in_induction_top) FILTER (WHERE step < final_step), false) AS induction_top_before_final,
           max(induction_pct) AS peak_induction_pct,
           first(step ORDER BY induction_pct DESC NULLS LAST, step) AS peak_induction_step,
           any_value(induction) FILTER (WHERE step = final_step) AS final_induction,
           any_value(fv) FILTER (WHERE step = final_step) AS final_fv,
           any_value(induction_pct) FILTER (WHERE step = final_step) AS final_induction_pct,
           any_value(fv_pct) FILTER (WHERE step = final_step) AS final_fv_pct,
           coalesce(bool_or(in_fv_top) FILTER (WHERE step = final_step), false) AS final_fv_top,
           coalesce(bool_or(in_induction_top) FILTER (WHERE step = final_step), false) AS final_induction_top,
           any_value(n_heads) FILTER (WHERE step = final_step) AS n_heads,
           any_value(top_k) FILTER (WHERE step = final_step) AS top_k
    FROM steps
    GROUP BY model, settings_hash, layer, head
)
SELECT *, final_fv_top AND induction_top_before_final AS induction_then_fv,
       top_fraction::DOUBLE AS top_fraction
FROM per_head;

CREATE OR REPLACE VIEW head_set_membership AS SELECT * FROM head_set_membership();

-- Question (a): the heads in the FV top set at the final step that were in the induction top set at
-- an earlier step, with when each entered and left each set.
CREATE OR REPLACE MACRO induction_to_fv_transitions(top_fraction := 0.02) AS TABLE
SELECT model, settings_hash, layer, head, final_step,
       induction_entered_step, induction_left_step, fv_entered_step,
       peak_induction_pct, peak_induction_step, final_induction_pct, final_fv_pct,
       final_induction, final_fv, induction_top_steps, fv_top_steps, n_heads, top_k,
       top_fraction::DOUBLE AS top_fraction  -- the parameter (a macro parameter shadows a column of its name)
FROM head_set_membership(top_fraction := top_fraction)
WHERE induction_then_fv;

CREATE OR REPLACE VIEW induction_to_fv_transitions AS SELECT * FROM induction_to_fv_transitions();

-- Per (model, settings_hash, metric) at the final step: the strongest head, the mean of the top set,
-- and the mean over all heads (algorithms.md §6, cell 8).
CREATE OR REPLACE MACRO head_strength(top_fraction := 0.02) AS TABLE
WITH final AS (
    SELECT h.model, h.settings_hash, f.final_step, h.metric, h.value,
           row_number() OVER heads AS rank,
           count(*) OVER (PARTITION BY h.model, h.settings_hash, h.metric) AS n_heads
    FROM head_scores h
    JOIN final_steps f ON h.model = f.model AND h.settings_hash = f.settings_hash AND h.step = f.final_step
    WHERE h.metric IN ('induction', 'fv')
    WINDOW heads AS (PARTITION BY h.model, h.settings_hash, h.metric ORDER BY h.value DESC NULLS LAST, h.layer, h.head)
)
SELECT model, settings_hash, final_step, metric,
       max(value) AS max,
       avg(value) FILTER (WHERE rank <= greatest(1, ceil(round(top_fraction * n_heads, 9)))) AS top_mean,
       avg(value) AS mean,
       any_value(n_heads) AS n_heads,
       greatest(1, ceil(round(top_fraction * any_value(n_heads), 9)))::INTEGER AS top_k,
       top_fraction::DOUBLE AS top_fraction
FROM final
GROUP BY model, settings_hash, final_step, metric;

CREATE OR REPLACE VIEW head_strength AS SELECT * FROM head_strength();

-- Question (b), per model: its shape and its induction and FV strength at the final step.
CREATE OR REPLACE MACRO head_dimensionality(top_fraction := 0.02) AS TABLE
SELECT m.model, s.settings_hash, any_value(s.final_step) AS final_step, any_value(m.family) AS family,
       any_value(m.d_head) AS d_head, any_value(m.d_model) AS d_model, any_value(m.n_heads) AS n_heads,
       any_value(m.n_layers) AS n_layers, any_value(m.n_params) AS n_params,
       any_value(s."max") FILTER (WHERE s.metric = 'induction') AS induction_max,
       any_value(s.top_mean) FILTER (WHERE s.metric = 'induction') AS induction_top_mean,
       any_value(s.mean) FILTER (WHERE s.metric = 'induction') AS induction_mean,
       any_value(s."max") FILTER (WHERE s.metric = 'fv') AS fv_max,
       any_value(s.top_mean) FILTER (WHERE s.metric = 'fv') AS fv_top_mean,
       any_value(s.mean) FILTER (WHERE s.metric = 'fv') AS fv_mean,
       any_value(s.top_k) AS top_k, top_fraction::DOUBLE AS top_fraction
FROM head_strength(top_fraction := top_fraction) s
JOIN models m USING (model)
GROUP BY m.model, s.settings_hash;

CREATE OR REPLACE VIEW head_dimensionality AS SELECT * FROM head_dimensionality();

-- Question (b), across models: Pearson and Spearman correlation of each strength statistic with
-- d_head (one point per row of head_dimensionality; NULL with fewer than 3 points or no spread).
-- Spearman = Pearson of average ranks, so ties are handled as scipy.stats.spearmanr does.
CREATE OR REPLACE MACRO head_dimensionality_correlations(top_fraction := 0.02) AS TABLE
WITH points AS (
    SELECT s.metric, st.statistic, m.d_head::DOUBLE AS d_head,
           CASE st.statistic WHEN 'max' THEN s."max" WHEN 'top_mean' THEN s.top_mean ELSE s.mean END AS value
    FROM head_strength(top_fraction := top_fraction) s
    JOIN models m USING (model)
    CROSS JOIN (VALUES ('max'), ('top_mean'), ('mean')) st(statistic)
), ranked AS (
    SELECT *,
           rank() OVER (PARTITION BY metric, statistic ORDER BY d_head)
             + (count(*) OVER (PARTITION BY metric, statistic, d_head) - 1) / 2.0 AS d_head_rank,
           rank() OVER (PARTITION BY metric, statistic ORDER BY value)
             + (count(*) OVER (PARTITION BY metric, statistic, value) - 1) / 2.0 AS value_rank
    FROM points
    WHERE value IS NOT NULL
), coefficients AS (
    SELECT metric, statistic, count(*) AS n_models,
           corr(d_head, value) AS pearson, corr(d_head_rank, value_rank) AS spearman
    FROM ranked
    GROUP BY metric, statistic
)
SELECT metric, statistic, n_models,
       CASE WHEN n_models >= 3 AND NOT isnan(pearson) THEN pearson END AS pearson,
       CASE WHEN n_models >= 3 AND NOT isnan(spearman) THEN spearman END AS spearman,
       top_fraction::DOUBLE AS top_fraction
FROM coefficients;

CREATE OR REPLACE VIEW head_dimensionality_correlations AS SELECT * FROM head_dimensionality_correlations();

-- Per model and step: the model-level metrics (training loss, ICL token loss, …) next to the
-- strongest induction head, in long form for charts (metric 'max_induction').
CREATE OR REPLACE VIEW phase_change AS
SELECT cm.model, cm.settings_hash, cm.step, c.tokens, cm.metric, cm.value
FROM checkpoint_metrics cm
LEFT JOIN checkpoints c USING (model, step, settings_hash)
UNION ALL
SELECT h.model, h.settings_hash, h.step, any_value(c.tokens), 'max_induction', max(h.value)
FROM head_scores h
LEFT JOIN checkpoints c USING (model, step, settings_hash)
WHERE h.metric = 'induction'
GROUP BY h.model, h.settings_hash, h.step;
