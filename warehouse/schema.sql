-- The warehouse schema: the only place tables are defined (docs/warehouse.md describes every column).
--
-- Applied by warehouse.db on every read-write open; every statement is idempotent. Views and macros
-- for analysis live in warehouse/sql/*.sql and are applied right after this file.
--
-- Keys are natural keys. A checkpoint is identified by (model, step, settings_hash): settings_hash is
-- the hash of every setting that changes a score (probe and task settings, seeds, prompt-set hashes),
-- so the same checkpoint scored two ways keeps both results side by side. Every score row carries its
-- provenance (revision, weights hash, dtype, attention implementation, code version, run).
--
-- A non-finite score is stored as value NULL with flag 'non_finite'; a finite one has flag NULL.
-- Bump schema_version (and warehouse.db.SCHEMA_VERSION) whenever a table changes.

CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,           -- schema revision this file defines
    applied_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    sql_sha256  VARCHAR                        -- hash of the scripts last applied; unchanged => skip
);

-- One row per `dynamics sweep` (or `dynamics score`) invocation.
CREATE TABLE IF NOT EXISTS runs (
    run_id            VARCHAR PRIMARY KEY,
    started_at        TIMESTAMP NOT NULL,
    finished_at       TIMESTAMP,               -- NULL while running or after a crash
    config            JSON NOT NULL,           -- the full sweep config; enough to rerun
    code_version      VARCHAR NOT NULL,        -- package version + git commit ('.dirty' if uncommitted)
    library_versions  JSON,                    -- {"torch": "...", "transformers": "...", ...}
    device            VARCHAR,                 -- e.g. 'cuda:NVIDIA H100 80GB HBM3' or 'cpu'
    dtype             VARCHAR,
    host              VARCHAR,
    command           VARCHAR,                 -- the command line that started the run
    status            VARCHAR CHECK (status IS NULL OR status IN ('running', 'finished', 'failed', 'interrupted')),
    error             VARCHAR                  -- why a run that did not finish ended
);

-- One row per model (a Hub repo id or a local suite name).
CREATE TABLE IF NOT EXISTS models (
    model        VARCHAR PRIMARY KEY,          -- 'EleutherAI/pythia-160m-deduped' or a local name
    family       VARCHAR NOT NULL,             -- 'gpt_neox', 'gpt2', 'llama'
    source       VARCHAR NOT NULL CHECK (source IN ('hub', 'local')),
    n_layers     INTEGER NOT NULL,
    n_heads      INTEGER NOT NULL,             -- attention heads per layer
    d_model      INTEGER NOT NULL,
    d_head       INTEGER NOT NULL,
    n_params     BIGINT,
    vocab_size   INTEGER,
    config       JSON,                         -- the model's own config, as loaded
    updated_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    suite        VARCHAR,                      -- the configuration several seeds of a run share (NULL: none)
    seed         INTEGER                       -- this model's training seed within its suite
);

-- One row per scored (or attempted) checkpoint. status 'ok' <=> all of its score rows are present:
-- the row and the scores are written in one transaction.
CREATE TABLE IF NOT EXISTS checkpoints (
    model           VARCHAR NOT NULL,
    step            BIGINT NOT NULL,
    settings_hash   VARCHAR NOT NULL,
    revision        VARCHAR,                   -- Hub branch ('step1000') or local folder name
    tokens          BIGINT,                    -- training tokens seen at this step
    weights_sha256  VARCHAR,                   -- hash of the weight files
    "commit"        VARCHAR,                   -- resolved Hub commit of the revision
    duplicate_of    BIGINT,                    -- step of the same model with identical weights
    status          VARCHAR NOT NULL CHECK (status IN ('ok', 'failed', 'duplicate')),
    error           VARCHAR,                   -- error text when status = 'failed'
    dtype           VARCHAR,
    attn_impl       VARCHAR,
    settings        JSON,                      -- the settings whose hash is settings_hash
    scored_at       TIMESTAMP NOT NULL DEFAULT current_timestamp,
    code_version    VARCHAR,
    run_id          VARCHAR,
    load_s          DOUBLE,                    -- seconds to fetch and load the weights
    score_s         DOUBLE,                    -- seconds to score
    PRIMARY KEY (model, step, settings_hash),
    CHECK ((status = 'duplicate') = (duplicate_of IS NOT NULL)),
    CHECK ((status = 'failed') = (error IS NOT NULL))
);

-- One row per (checkpoint, layer, head, metric): 'induction', 'prev_token', 'duplicate_token',
-- 'copying', and 'fv' (function-vector score averaged over tasks).
CREATE TABLE IF NOT EXISTS head_scores (
    model           VARCHAR NOT NULL,
    step            BIGINT NOT NULL,
    settings_hash   VARCHAR NOT NULL,
    layer           INTEGER NOT NULL,
    head            INTEGER NOT NULL,
    metric          VARCHAR NOT NULL,
    value           DOUBLE,
    flag            VARCHAR CHECK (flag IS NULL OR flag = 'non_finite'),
    stderr          DOUBLE,                    -- standard error of value (docs/methods.md, "Standard errors")
    revision        VARCHAR,
    weights_sha256  VARCHAR,
    dtype           VARCHAR,
    attn_impl       VARCHAR,
    code_version    VARCHAR,
    run_id          VARCHAR,
    PRIMARY KEY (model, step, settings_hash, layer, head, metric),
    CHECK ((value IS NULL) = (flag IS NOT NULL))
);

-- Per-task head scores (the FV score of each ICL task before averaging), same columns plus task.
-- Natural key (model, step, settings_hash, task, layer, head, metric), enforced by warehouse.writes
-- rather than declared: on the largest table (~37 rows per head per checkpoint) a 7-column PRIMARY
-- KEY index made the file ~7x larger and writes ~35% slower (benchmarks/warehouse_io.py).
CREATE TABLE IF NOT EXISTS head_task_scores (
    model           VARCHAR NOT NULL,
    step            BIGINT NOT NULL,
    settings_hash   VARCHAR NOT NULL,
    task            VARCHAR NOT NULL,
    layer           INTEGER NOT NULL,
    head            INTEGER NOT NULL,
    metric          VARCHAR NOT NULL,
    value           DOUBLE,
    flag            VARCHAR CHECK (flag IS NULL OR flag = 'non_finite'),
    stderr          DOUBLE,                    -- standard error of value over the task's trials
    revision        VARCHAR,
    weights_sha256  VARCHAR,
    dtype           VARCHAR,
    attn_impl       VARCHAR,
    code_version    VARCHAR,
    run_id          VARCHAR,
    CHECK ((value IS NULL) = (flag IS NOT NULL))
);

-- Model-level metrics of a checkpoint: 'icl_token_loss', 'loss_early', 'loss_late', 'train_loss', ...
CREATE TABLE IF NOT EXISTS checkpoint_metrics (
    model           VARCHAR NOT NULL,
    step            BIGINT NOT NULL,
    settings_hash   VARCHAR NOT NULL,
    metric          VARCHAR NOT NULL,
    value           DOUBLE,
    flag            VARCHAR CHECK (flag IS NULL OR flag = 'non_finite'),
    revision        VARCHAR,
    weights_sha256  VARCHAR,
    dtype           VARCHAR,
    attn_impl       VARCHAR,
    code_version    VARCHAR,
    run_id          VARCHAR,
    PRIMARY KEY (model, step, settings_hash, metric),
    CHECK ((value IS NULL) = (flag IS NOT NULL))
);

-- The exact prompts a settings_hash scored with, so any score can be reproduced. Prompts depend on
-- the settings only (not on the checkpoint), so they are stored once per settings_hash.
CREATE TABLE IF NOT EXISTS prompts (
    settings_hash   VARCHAR NOT NULL,
    task            VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL CHECK (kind IN ('clean', 'corrupted')),
    idx             INTEGER NOT NULL,          -- prompt index within (task, kind)
    prompt          VARCHAR NOT NULL,          -- the full prompt text fed to the model
    target          VARCHAR,                   -- the expected answer
    PRIMARY KEY (settings_hash, task, kind, idx)
);

-- Head-ablation results: ICL metric of a checkpoint with the top `fraction` of heads ranked by
-- `ranking` ablated (docs/methods.md, "Head ablations").
CREATE TABLE IF NOT EXISTS ablations (
    model           VARCHAR NOT NULL,
    step            BIGINT NOT NULL,
    settings_hash   VARCHAR NOT NULL,
    ranking         VARCHAR NOT NULL CHECK (ranking IN ('induction', 'fv', 'random')),
    fraction        DOUBLE NOT NULL,           -- < 1: fraction of all heads; >= 1: a head count
    exclusion       BOOLEAN NOT NULL,          -- top heads of the other score removed first
    method          VARCHAR NOT NULL CHECK (method IN ('mean', 'zero')),
    task            VARCHAR NOT NULL,
    metric          VARCHAR NOT NULL,          -- e.g. 'f1', 'icl_token_loss'
    value           DOUBLE,
    flag            VARCHAR CHECK (flag IS NULL OR flag = 'non_finite'),
    n_ablated       INTEGER,                   -- heads actually ablated
    heads           JSON,                      -- [[layer, head], ...] in ablation order
    revision        VARCHAR,
    weights_sha256  VARCHAR,
    dtype           VARCHAR,
    attn_impl       VARCHAR,
    code_version    VARCHAR,
    run_id          VARCHAR,
    PRIMARY KEY (model, step, settings_hash, ranking, fraction, exclusion, method, task, metric),
    CHECK ((value IS NULL) = (flag IS NOT NULL))
);

-- Version 2: standard errors beside head scores (NULL in rows scored before), how each run ended, and
-- the suite and seed of a model.
ALTER TABLE head_scores ADD COLUMN IF NOT EXISTS stderr DOUBLE;
ALTER TABLE head_task_scores ADD COLUMN IF NOT EXISTS stderr DOUBLE;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS status VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS error VARCHAR;
ALTER TABLE models ADD COLUMN IF NOT EXISTS suite VARCHAR;
ALTER TABLE models ADD COLUMN IF NOT EXISTS seed INTEGER;

INSERT INTO schema_version (version) VALUES (2) ON CONFLICT DO NOTHING;
