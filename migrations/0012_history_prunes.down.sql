-- Reverts 0012: the record of history prunes goes (as-of reads before a
-- prune are then no longer refused; what was pruned stays gone).
SET LOCAL client_min_messages = warning;
DROP TABLE IF EXISTS history_prunes;
