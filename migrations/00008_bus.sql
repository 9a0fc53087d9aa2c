-- The bus at NOTIFY's cost: events are numbered after commit, by the nodes.
--
-- Two modes, chosen by the server setting track_commit_timestamp (fixed
-- until a restart; livepg.bus_mode() names the mode in force):
--
--   commit_timestamp (track_commit_timestamp = on, the default mode livepg
--   asks for): writers only insert. Every event row is inserted with seq
--   NULL, and a statement-level AFTER INSERT trigger on livepg.events
--   (events_notify, livepg.notify()) sends pg_notify('livepg', ''): no
--   advisory lock, no UPDATE, nothing else on the writer's commit path.
--   livepg.publish, livepg.publish_batch, livepg.publish_many and tracked
--   tables all write that way.
--
--   commit_lock (track_commit_timestamp = off): writers keep 00001's
--   numbering exactly: the deferred trigger livepg.sequence() takes the
--   numbering lock (advisory lock 7236828372618428007) at commit and
--   numbers the transaction's rows; publish_batch/publish_many number at
--   insert under the same lock.
--
-- Why commit-timestamp order is commit order (README, How it works): every
-- transaction that writes events NOTIFYs, and PostgreSQL holds NOTIFY's own
-- cluster-wide lock from the queue append through the commit record (whose
-- timestamp is the commit timestamp), the flush, to the moment the commit
-- becomes visible. Among notifying transactions, commit-timestamp order is
-- therefore visibility order, and the set a snapshot sees is a prefix of
-- them in commit-timestamp order. (An undocumented property of PostgreSQL,
-- held by the test store.TestCommitTimestampsFollowNotifyOrder.)
--
-- Numbering after commit: livepg.number_pending(max_rows) is what a node
-- runs on each wake-up before it reads. Under the numbering lock (the same
-- advisory lock writers take in commit_lock mode, so the modes never
-- interleave) it numbers the visible rows with seq NULL, ordered by
-- (pg_xact_commit_timestamp(xmin), id) - a prefix in commit order - from
-- livepg.events_seq, sets committed_at to the commit timestamp, and commits
-- durably (synchronous_commit is raised to on for that transaction when it
-- is off): numbers are never delivered before they are durable. It sends no
-- NOTIFY: other nodes, woken by the writer's NOTIFY, wait on the lock and
-- then see the numbers. "Nothing pending" is one probe of the partial index
-- events_pending, without the lock. Within a transaction the rows keep
-- their insertion order (id): rows written in a savepoint or an EXCEPTION
-- block carry a subtransaction's xid, so xmin would reorder them.
--
-- Rows left pending when the server restarts with the setting off (no
-- commit timestamps then) are numbered first, by the first numbering of
-- the new server lifetime (livepg.check_epoch, which begins the new epoch),
-- ordered by their xid (age(xmin)), then id: a boundary case where
-- transactions that waited on one another's locks may come out in xid
-- order rather than commit order.
--
-- If no node runs, events stay un-numbered (not delivered, not in the
-- nodes' reads) until one does.
--
-- Head positions. livepg.head() reads, in the caller's snapshot, the
-- highest numbered seq S and the number k of committed events not yet
-- numbered. Those k are exactly the next k events numbered after S (they are
-- the earliest-committed pending rows, and numbering follows commit order),
-- so head() returns '<S>.<k>-<epoch>' when k > 0 ('<S>-<epoch>' otherwise):
-- "after S, and also skip the next k events". A node resolves such a
-- position with livepg.resolve_position(epoch, S, k) to the seq of the k-th
-- event after S, or NULL when it cannot (not in the history, gone): then
-- the stream resets. Positions are never plain '<S>.<k>' without an epoch.
--
-- HTTP publishes answer with their seqs: publish_many returns each event's
-- id (and its seq in commit_lock mode); in commit_timestamp mode the
-- publishing node numbers the pending rows itself after the commit and then
-- reads the seqs. livepg.publish_batch keeps its signature, and returns NULL
-- seqs in commit_timestamp mode.

-- +goose Up
CREATE INDEX events_pending ON livepg.events (id) WHERE seq IS NULL;

-- livepg.bus_mode names how events get their seq: 'commit_timestamp' or
-- 'commit_lock' (see above).
-- +goose StatementBegin
CREATE FUNCTION livepg.bus_mode() RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN current_setting('track_commit_timestamp') = 'on'
                THEN 'commit_timestamp' ELSE 'commit_lock' END
$$;
-- +goose StatementEnd

-- Every statement that inserts events wakes the nodes at commit.
-- Identical notifications of one transaction are folded into one.
-- +goose StatementBegin
CREATE FUNCTION livepg.notify() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_notify('livepg', '');
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_notify AFTER INSERT ON livepg.events
    FOR EACH STATEMENT EXECUTE FUNCTION livepg.notify();

-- The commit-time numbering runs only in commit_lock mode.
DROP TRIGGER events_sequence ON livepg.events;
CREATE CONSTRAINT TRIGGER events_sequence
    AFTER INSERT ON livepg.events
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.seq IS NULL AND pg_catalog.current_setting('track_commit_timestamp') <> 'on')
    EXECUTE FUNCTION livepg.sequence();

-- livepg.number_visible numbers the committed, visible rows with seq NULL
-- (never the caller's own), at most max_rows of them (NULL: all), and
-- returns how many it numbered. The caller holds the numbering lock and
-- has called livepg.check_epoch. Internal: granted to nobody.
-- +goose StatementBegin
CREATE FUNCTION livepg.number_visible(max_rows integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
    stamps timestamptz[];
    n int;
    first bigint;
BEGIN
    IF current_setting('track_commit_timestamp') = 'on' THEN
        -- A commit timestamp is NULL for a transaction still in progress:
        -- the caller's own rows are never numbered here.
        SELECT array_agg(p.id ORDER BY p.cts, p.id), array_agg(p.cts ORDER BY p.cts, p.id)
          INTO ids, stamps
          FROM (SELECT q.id, q.cts
                  FROM (SELECT e.id, pg_xact_commit_timestamp(e.xmin) AS cts
                          FROM livepg.events e
                         WHERE e.seq IS NULL) q
                 WHERE q.cts IS NOT NULL
                 ORDER BY q.cts, q.id
                 LIMIT max_rows) p;
    ELSE
        -- No commit timestamps: rows left from a commit_timestamp period,
        -- in xid order (age: older first), then insertion order. age() of
        -- the caller's own rows is 0 or less.
        SELECT array_agg(p.id ORDER BY p.age DESC, p.id), array_agg(clock_timestamp())
          INTO ids, stamps
          FROM (SELECT e.id, age(e.xmin) AS age
                  FROM livepg.events e
                 WHERE e.seq IS NULL AND age(e.xmin) > 0
                 ORDER BY age(e.xmin) DESC, e.id
                 LIMIT max_rows) p;
    END IF;
    n := coalesce(cardinality(ids), 0);
    IF n = 0 THEN
        RETURN 0;
    END IF;
    first := nextval('livepg.events_seq');
    IF n > 1 THEN
        PERFORM setval('livepg.events_seq', first + n - 1);
    END IF;
    UPDATE livepg.events e
       SET seq = first + u.i - 1, committed_at = u.at
      FROM unnest(ids, stamps) WITH ORDINALITY AS u(id, at, i)
     WHERE e.id = u.id;
    RETURN n;
END
$$;
-- +goose StatementEnd

-- livepg.number_pending is the node's numbering step (see above): it
-- numbers up to max_rows pending events in commit order and returns how
-- many it numbered and the head after them. When it numbered max_rows,
-- more may be pending: call it again.
-- +goose StatementBegin
CREATE FUNCTION livepg.number_pending(max_rows integer DEFAULT 10000,
                                      OUT numbered integer, OUT head bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000000 THEN
        RAISE EXCEPTION 'livepg.number_pending: max_rows must be between 1 and 1000000, not %', max_rows
            USING ERRCODE = '22023';
    END IF;
    numbered := 0;
    -- One probe of events_pending, without the lock: nothing pending (or
    -- only rows another node is numbering right now, which this node will
    -- see numbered when it reads after that commit) costs no more.
    IF EXISTS (SELECT 1 FROM livepg.events e WHERE e.seq IS NULL) THEN
        PERFORM pg_advisory_xact_lock(7236828372618428007);
        PERFORM livepg.check_epoch();
        numbered := livepg.number_visible(max_rows);
        IF numbered > 0 AND current_setting('synchronous_commit') = 'off' THEN
            -- Durable before any node delivers them.
            PERFORM set_config('synchronous_commit', 'on', true);
        END IF;
    END IF;
    SELECT coalesce((SELECT max(e.seq) FROM livepg.events e), s.pruned_through)
      INTO head FROM livepg.state s;
END
$$;
-- +goose StatementEnd

-- check_epoch (00006) also numbers, when it begins a new epoch in
-- commit_lock mode, the rows left pending from before the restart: first,
-- before the rows of the transaction that calls it.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.check_epoch() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(current_setting('livepg.epoch_checked', true), '') <> 'on' THEN
        IF NOT EXISTS (
            SELECT 1 FROM livepg.state s JOIN livepg.epochs p ON p.epoch = s.epoch
             WHERE p.server_started = pg_postmaster_start_time()
               AND p.timeline = left(pg_walfile_name(pg_current_wal_lsn()), 8)) THEN
            PERFORM livepg.new_epoch();
            IF current_setting('track_commit_timestamp') <> 'on' THEN
                PERFORM livepg.number_visible(NULL);
            END IF;
        END IF;
        PERFORM set_config('livepg.epoch_checked', 'on', true);
    END IF;
END
$$;
-- +goose StatementEnd

-- livepg.publish_many records many events in one INSERT and returns each
-- one's id (as livepg.publish does) and seq. In commit_lock mode it numbers
-- them on the way in, under the numbering lock (as 00003's publish_batch
-- did): only for short transactions. In commit_timestamp mode seq is NULL:
-- a node numbers the events after the commit.
-- +goose StatementBegin
CREATE FUNCTION livepg.publish_many(topics text[], types text[], data jsonb[])
RETURNS TABLE (id bigint, seq bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n int := coalesce(cardinality(topics), 0);
    first bigint;
BEGIN
    IF coalesce(cardinality(types), 0) <> n OR coalesce(cardinality(data), 0) <> n THEN
        RAISE EXCEPTION 'livepg.publish_many: topics, types and data must have the same length'
            USING ERRCODE = '22023';
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    IF current_setting('track_commit_timestamp') = 'on' THEN
        -- The CHECK constraints validate topic and type, NOT NULL refuses NULLs.
        RETURN QUERY
        INSERT INTO livepg.events AS e (topic, type, data)
        SELECT x.topic, x.type, coalesce(x.data, 'null'::jsonb)
          FROM unnest(topics, types, data) WITH ORDINALITY AS x(topic, type, data, i)
         ORDER BY x.i
        RETURNING e.id, e.seq;
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(7236828372618428007);
    PERFORM livepg.check_epoch();
    first := nextval('livepg.events_seq');
    IF n > 1 THEN
        PERFORM setval('livepg.events_seq', first + n - 1);
    END IF;
    RETURN QUERY
    INSERT INTO livepg.events AS e (seq, topic, type, data, committed_at)
    SELECT first + x.i - 1, x.topic, x.type, coalesce(x.data, 'null'::jsonb), clock_timestamp()
      FROM unnest(topics, types, data) WITH ORDINALITY AS x(topic, type, data, i)
     ORDER BY x.i
    RETURNING e.id, e.seq;
    PERFORM pg_notify('livepg', '');
END
$$;
-- +goose StatementEnd

-- livepg.publish_batch (00003) keeps its signature: the seqs, in order;
-- NULL in commit_timestamp mode (use publish_many for the ids).
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.publish_batch(topics text[], types text[], data jsonb[])
RETURNS SETOF bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.seq FROM livepg.publish_many(topics, types, data) AS m ORDER BY m.id
$$;
-- +goose StatementEnd

-- livepg.head() is the position of the caller's snapshot: '<S>-<epoch>', or
-- '<S>.<k>-<epoch>' when k committed events are not numbered yet (see
-- above). The caller's own uncommitted events are not counted.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.head() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.head::text
           || CASE WHEN w.k > 0 THEN '.' || w.k::text ELSE '' END
           || '-' || p.epoch
      FROM livepg.position(NULL, NULL) p,
           LATERAL (SELECT count(*) AS k
                      FROM livepg.events e
                     WHERE e.seq IS NULL
                       AND CASE WHEN current_setting('track_commit_timestamp') = 'on'
                                THEN pg_xact_commit_timestamp(e.xmin) IS NOT NULL
                                ELSE age(e.xmin) > 0 END) w
$$;
-- +goose StatementEnd

-- livepg.resolve_position turns a head position (epoch, after, skip) into
-- the seq of the skip-th event after 'after': where a stream resumed from
-- it starts. NULL when it cannot: the position is not in the log's current
-- history, or those events are gone (pruned, truncated), or they were
-- numbered in a later server lifetime than the epoch's (a crash between the
-- page's read and their numbering may have lost some of them). Call it after
-- livepg.number_pending: the skipped events were committed before the page
-- read its head.
-- +goose StatementBegin
CREATE FUNCTION livepg.resolve_position(id_epoch text, after bigint, skip bigint) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cur text;
    limit_seq bigint;
    up text;
    inherited bigint;
    steps int := 0;
    found bigint;
BEGIN
    IF after IS NULL OR skip IS NULL OR after < 0 OR skip < 1 THEN
        RETURN NULL;
    END IF;
    SELECT s.epoch, coalesce((SELECT max(e.seq) FROM livepg.events e), s.pruned_through)
      INTO cur, limit_seq
      FROM livepg.state s;
    IF id_epoch IS NOT NULL THEN
        WHILE cur IS NOT NULL AND cur <> id_epoch AND steps < 100000 LOOP
            SELECT p.parent, p.forked_after INTO up, inherited FROM livepg.epochs p WHERE p.epoch = cur;
            limit_seq := least(limit_seq, inherited);
            cur := up;
            steps := steps + 1;
        END LOOP;
        IF cur IS NULL OR cur <> id_epoch THEN
            RETURN NULL;
        END IF;
    END IF;
    IF after > limit_seq THEN
        RETURN NULL;
    END IF;
    SELECT e.seq INTO found FROM livepg.events e
     WHERE e.seq > after ORDER BY e.seq OFFSET skip - 1 LIMIT 1;
    IF found IS NULL OR found > limit_seq THEN
        RETURN NULL;
    END IF;
    RETURN found;
END
$$;
-- +goose StatementEnd

REVOKE EXECUTE ON FUNCTION livepg.bus_mode(), livepg.notify(), livepg.number_visible(integer),
    livepg.number_pending(integer), livepg.publish_many(text[], text[], jsonb[]),
    livepg.resolve_position(text, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION livepg.publish_many(text[], text[], jsonb[]), livepg.bus_mode() TO livepg_writer;
GRANT EXECUTE ON FUNCTION livepg.number_pending(integer), livepg.resolve_position(text, bigint, bigint),
    livepg.bus_mode() TO livepg_node;

-- +goose Down
-- Number what is pending first (as commit_lock mode would), so that no row
-- is left with seq NULL for the old commit trigger to miss.
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM livepg.events e WHERE e.seq IS NULL) THEN
        PERFORM pg_advisory_xact_lock(7236828372618428007);
        PERFORM livepg.check_epoch();
        PERFORM livepg.number_visible(NULL);
    END IF;
END
$$;
-- +goose StatementEnd
DROP FUNCTION livepg.resolve_position(text, bigint, bigint);
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.head() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.head::text || '-' || p.epoch FROM livepg.position(NULL, NULL) p
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
    PERFORM livepg.check_epoch();
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
DROP FUNCTION livepg.publish_many(text[], text[], jsonb[]);
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.check_epoch() RETURNS void
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
DROP FUNCTION livepg.number_pending(integer);
DROP FUNCTION livepg.number_visible(integer);
DROP TRIGGER events_sequence ON livepg.events;
CREATE CONSTRAINT TRIGGER events_sequence
    AFTER INSERT ON livepg.events
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.seq IS NULL) EXECUTE FUNCTION livepg.sequence();
DROP TRIGGER events_notify ON livepg.events;
DROP FUNCTION livepg.notify();
DROP FUNCTION livepg.bus_mode();
DROP INDEX livepg.events_pending;
