-- History pruning (`barkeep history prune`): each prune records the instant
-- before which retired versions of derived bars and earlier values of 1m
-- bars were deleted, so an as-of read before it is refused instead of being
-- answered from what is left. A NULL symbol is a prune of every symbol.
SET LOCAL client_min_messages = warning;
CREATE TABLE IF NOT EXISTS history_prunes (
  pruned_at timestamptz NOT NULL DEFAULT now(),
  canonical_symbol text,
  pruned_before timestamptz NOT NULL,
  bars_deleted bigint NOT NULL,
  revisions_deleted bigint NOT NULL
);
GRANT SELECT ON history_prunes TO barkeep_reader, barkeep_worker, barkeep_ingest;
