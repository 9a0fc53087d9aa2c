-- Event ids that name their history.
--
-- A seq alone names an event only within one history of the log. A restored
-- cold backup, a promoted replica that lost the last commits, or another
-- database, reuse the same numbers for other events. So the log keeps an
-- epoch: a short random name of the history it is in, and an event's SSE id
-- is '<seq>-<epoch>' (livepg.head() gives the same form).
--
-- A new epoch begins (livepg.epochs gains a row, livepg.state.epoch names
-- it) at the first commit of events in each server lifetime: livepg.sequence,
-- the commit trigger, compares the server lifetime the current epoch was
-- begun in (pg_postmaster_start_time() and the WAL timeline) with its own,
-- and when they differ records a new epoch whose parent is the current one
-- and which inherits its events through the head (forked_after). The epoch
-- row is written in the same transaction, so in the same WAL, as the first
-- events it numbers: every copy of the database that has those events has
-- their epoch, and a copy that lacks them (a backup, a replica that was
-- behind) lacks the epoch too.
--
-- An id (epoch E, seq N) is in the current history when E is the current
-- epoch or one of its ancestors and N is no higher than what the current
-- history inherited from E (livepg.position). Why each case is caught:
--
--   * Plain restart: a new epoch forks at the head; every id issued before
--     it is inherited. Nobody is reset.
--   * Restore of a cold backup (stop, copy back, start): the original server,
--     started again after the backup, committed its later events under an
--     epoch created after the backup. The restored copy has never heard of
--     that epoch, and its own next epoch forks at the backup's head: ids of
--     the lost events are refused, ids older than the backup still resume.
--   * Failover to a replica that lost the tail: the replica has the
--     primary's epoch E but only through its own head H. Promoted (new
--     timeline, another postmaster), its first commit forks E at H: an id
--     (E, N) with N > H names a lost event and is refused.
--   * Another database: its epochs are other random names.
--   * TRUNCATE of the log: no fork (nothing is renumbered), but every event
--     is gone: a trigger moves pruned_through to the last seq handed out.
--
-- Ids from before this migration are plain numbers: they are read as they
-- always were, a seq of the current history.

-- +goose Up
CREATE TABLE livepg.epochs (
    epoch          text PRIMARY KEY CHECK (epoch ~ '^[0-9a-f]{12}$'),
    -- The epoch this one forked from, and the last seq it inherited from it.
    parent         text REFERENCES livepg.epochs,
    forked_after   bigint NOT NULL,
    -- The server lifetime the epoch was begun in.
    server_started timestamptz NOT NULL,
    timeline       text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now()
);

ALTER TABLE livepg.state ADD COLUMN epoch text REFERENCES livepg.epochs;

-- livepg.new_epoch starts a new epoch forked from the current one at the
-- head. Call it under the sequence lock (livepg.sequence holds it).
-- +goose StatementBegin
CREATE FUNCTION livepg.new_epoch() RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    name text := left(md5(gen_random_uuid()::text), 12);
    current text;
    head bigint;
BEGIN
    SELECT s.epoch, coalesce((SELECT max(e.seq) FROM livepg.events e), s.pruned_through)
      INTO current, head
      FROM livepg.state s;
    INSERT INTO livepg.epochs (epoch, parent, forked_after, server_started, timeline)
    VALUES (name, current, head, pg_postmaster_start_time(),
            CASE WHEN pg_is_in_recovery() THEN '' ELSE left(pg_walfile_name(pg_current_wal_lsn()), 8) END);
    UPDATE livepg.state SET epoch = name;
    RETURN name;
END
$$;
-- +goose StatementEnd

SELECT livepg.new_epoch();

-- livepg.check_epoch begins a new epoch unless the current one was begun in
-- this server lifetime; once per transaction. Every path that numbers
-- events calls it under the sequence lock, before numbering: the commit
-- trigger (livepg.sequence) and livepg.publish_batch, which numbers its rows
-- itself (so that an HTTP publish, the first commit after a failover, is
-- not numbered in the lost history).
-- +goose StatementBegin
CREATE FUNCTION livepg.check_epoch() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(current_setting('livepg.epoch_checked', true), '') <> 'on' THEN
        IF NOT EXISTS (
            SELECT 1 FROM livepg.state s JOIN livepg.epochs p ON p.epoch = s.epoch
             WHERE p.server_started = pg_postmaster_start_time()
               AND p.timeline = left(pg_walfile_name(pg_current_wal_lsn()), 8)) THEN
            PERFORM livepg.new_epoch();
        END IF;
        PERFORM set_config('livepg.epoch_checked', 'on', true);
    END IF;
END
$$;
-- +goose StatementEnd
REVOKE EXECUTE ON FUNCTION livepg.check_epoch() FROM PUBLIC;

-- The commit trigger checks, once per transaction, that the current epoch
-- was begun in this server lifetime, and begins one if not.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.sequence() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Re-entrant: the first event of the transaction takes the lock, the
    -- others find it already held.
    PERFORM pg_advisory_xact_lock(7236828372618428007);
    PERFORM livepg.check_epoch();
    UPDATE livepg.events
       SET seq = nextval('livepg.events_seq'), committed_at = clock_timestamp()
     WHERE id = NEW.id;
    -- Identical notifications in one transaction are folded into one, so a
    -- transaction sends a single wake-up however many events it records.
    PERFORM pg_notify('livepg', '');
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- livepg.publish_batch numbers its rows itself (00003): it checks the epoch
-- too, under the same lock, before it takes its seqs.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.publish_batch(topics text[], types text[], data jsonb[])
RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
    PERFORM livepg.check_epoch();
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

-- livepg.position says where the log is in the caller's snapshot (its
-- current epoch, head and how far it is pruned) and whether the id
-- (epoch, seq) is in its history: epoch is the current epoch or an
-- ancestor, and seq no higher than what the current history has of it.
-- A NULL epoch is a plain-number id from before epochs: a seq of the
-- current history.
-- +goose StatementBegin
CREATE FUNCTION livepg.position(id_epoch text, id_seq bigint,
                                OUT epoch text, OUT head bigint, OUT pruned_through bigint, OUT valid boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cur text;
    limit_seq bigint;
    up text;
    inherited bigint;
    steps int := 0;
BEGIN
    SELECT s.epoch, s.pruned_through, coalesce((SELECT max(e.seq) FROM livepg.events e), s.pruned_through)
      INTO epoch, pruned_through, head
      FROM livepg.state s;
    valid := false;
    IF id_seq IS NULL THEN
        RETURN;
    END IF;
    IF id_epoch IS NULL THEN
        valid := id_seq <= head;
        RETURN;
    END IF;
    cur := epoch;
    limit_seq := head;
    WHILE cur IS NOT NULL AND steps < 100000 LOOP
        IF cur = id_epoch THEN
            valid := id_seq <= limit_seq;
            RETURN;
        END IF;
        SELECT p.parent, p.forked_after INTO up, inherited FROM livepg.epochs p WHERE p.epoch = cur;
        limit_seq := least(limit_seq, inherited);
        cur := up;
        steps := steps + 1;
    END LOOP;
END
$$;
-- +goose StatementEnd

-- livepg.head() is the id of the last event committed in the caller's
-- snapshot, '<seq>-<epoch>': read it in the same REPEATABLE READ
-- transaction as a page's state and resume the page's stream from it.
DROP FUNCTION livepg.head();
-- +goose StatementBegin
CREATE FUNCTION livepg.head() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.head::text || '-' || p.epoch FROM livepg.position(NULL, NULL) p
$$;
-- +goose StatementEnd

-- TRUNCATE empties the log: every seq handed out so far is gone, as if
-- pruned.
-- +goose StatementBegin
CREATE FUNCTION livepg.truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE livepg.state
       SET pruned_through = greatest(pruned_through,
                                     (SELECT CASE WHEN q.is_called THEN q.last_value ELSE 0 END
                                        FROM livepg.events_seq q));
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_truncated AFTER TRUNCATE ON livepg.events
    FOR EACH STATEMENT EXECUTE FUNCTION livepg.truncated();

REVOKE ALL ON livepg.epochs FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION livepg.new_epoch(), livepg.position(text, bigint), livepg.head(), livepg.truncated() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION livepg.head() TO livepg_writer;
GRANT EXECUTE ON FUNCTION livepg.position(text, bigint) TO livepg_node;
GRANT SELECT ON livepg.epochs TO livepg_node;

-- +goose Down
DROP TRIGGER events_truncated ON livepg.events;
DROP FUNCTION livepg.truncated();
DROP FUNCTION livepg.head();
-- +goose StatementBegin
CREATE FUNCTION livepg.head() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT max(seq) FROM livepg.events),
                    (SELECT pruned_through FROM livepg.state))
$$;
-- +goose StatementEnd
REVOKE EXECUTE ON FUNCTION livepg.head() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION livepg.head() TO livepg_writer;
DROP FUNCTION livepg.position(text, bigint);
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.sequence() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7236828372618428007);
    UPDATE livepg.events
       SET seq = nextval('livepg.events_seq'), committed_at = clock_timestamp()
     WHERE id = NEW.id;
    PERFORM pg_notify('livepg', '');
    RETURN NULL;
END
$$;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.publish_batch(topics text[], types text[], data jsonb[])
RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
    INSERT INTO livepg.events (seq, topic, type, data, committed_at)
    SELECT first + x.i - 1, x.topic, x.type, coalesce(x.data, 'null'::jsonb), clock_timestamp()
      FROM unnest(topics, types, data) WITH ORDINALITY AS x(topic, type, data, i);
    PERFORM pg_notify('livepg', '');
    RETURN QUERY SELECT first + g - 1 FROM generate_series(1, n) AS g;
END
$$;
-- +goose StatementEnd
DROP FUNCTION livepg.check_epoch();
ALTER TABLE livepg.state DROP COLUMN epoch;
DROP FUNCTION livepg.new_epoch();
DROP TABLE livepg.epochs;
