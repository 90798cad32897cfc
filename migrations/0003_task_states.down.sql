-- Lifts the status constraint; every row stays.
ALTER TABLE data_agg_state DROP CONSTRAINT IF EXISTS data_agg_state_status_check;
