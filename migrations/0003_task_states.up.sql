-- A task's status is one of the four states of the task state machine
-- (sql/functions/40_tasks.sql). A row adopted from an earlier deployment
-- with another value stops this step with the constraint's name; fix the
-- row (e.g. set it idle) and run `barkeep db up` again.
ALTER TABLE data_agg_state
  ADD CONSTRAINT data_agg_state_status_check
  CHECK (status IN ('idle', 'running', 'hard_failed', 'disabled'));
