-- livepg.publish_batch: many events in one short transaction, numbered as
-- they are inserted instead of at commit.
--
-- livepg.publish leaves seq NULL and the commit-time trigger (00001) numbers
-- each row: an UPDATE per event, inside the section that commits run through
-- one at a time. A caller whose whole transaction is the publishing itself
-- (the HTTP publish batcher) can do better: take the same commit-order lock
-- first, insert the rows with their seqs, NOTIFY and commit. The lock is held
-- from the insert until the commit is visible, so seq order is still
-- visibility order; the rows skip the trigger (it fires only for rows
-- inserted with seq NULL) and the batch costs one INSERT.
--
-- Only for short transactions: from the call to the commit, every other
-- event transaction waits at its commit. Never insert into livepg.events with
-- a seq yourself; use livepg.publish or this function.

-- +goose Up
DROP TRIGGER events_sequence ON livepg.events;
CREATE CONSTRAINT TRIGGER events_sequence
    AFTER INSERT ON livepg.events
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.seq IS NULL) EXECUTE FUNCTION livepg.sequence();

-- +goose StatementBegin
CREATE FUNCTION livepg.publish_batch(topics text[], types text[], data jsonb[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
DECLARE
    n int := coalesce(cardinality(topics), 0);
    first bigint;
BEGIN
    IF coalesce(cardinality(types), 0) <> n OR coalesce(cardinality(data), 0) <> n THEN
        RAISE EXCEPTION 'livepg.publish_batch: topics, types and data must have the same length'
            USING ERRCODE = '22023';
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(7236828372618428007);
    first := nextval('livepg.events_seq');
    IF n > 1 THEN
        PERFORM setval('livepg.events_seq', first + n - 1);
    END IF;
    -- The CHECK constraints validate topic and type, NOT NULL refuses NULLs.
    INSERT INTO livepg.events (seq, topic, type, data, committed_at)
    SELECT first + x.i - 1, x.topic, x.type, coalesce(x.data, 'null'::jsonb), clock_timestamp()
      FROM unnest(topics, types, data) WITH ORDINALITY AS x(topic, type, data, i);
    PERFORM pg_notify('livepg', '');
    RETURN QUERY SELECT first + g - 1 FROM generate_series(1, n) AS g;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION livepg.publish_batch(text[], text[], jsonb[]);
DROP TRIGGER events_sequence ON livepg.events;
CREATE CONSTRAINT TRIGGER events_sequence
    AFTER INSERT ON livepg.events
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION livepg.sequence();
