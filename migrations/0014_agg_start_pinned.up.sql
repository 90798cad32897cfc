-- Whether a task's start was given by an operator (`sync --start`,
-- `sync_agg_state_from_registry(env, agg_start)`) instead of taken from the
-- symbol's data (docs/DESIGN.md "Where a task starts"). A start taken from
-- the data moves back when older 1m rows arrive; a pinned one stays, and
-- the rows before it are reported. Tasks created before this step count as
-- not pinned: older rows written later get their bars.
ALTER TABLE data_agg_state ADD COLUMN agg_start_pinned boolean NOT NULL DEFAULT false;
