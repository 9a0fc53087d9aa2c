-- The logical bus mode (LIVEPG_BUS=logical): writers only insert, the WAL
-- gives the order.
--
-- In the default mode (00008: commit_timestamp or commit_lock) every
-- transaction that writes events also takes part in ordering them (a
-- NOTIFY, or the commit-time advisory lock): at most about one such commit
-- per WAL flush per cluster. In the logical mode
-- writers insert their events with seq NULL and do nothing else: no NOTIFY,
-- no lock, so their commits group-commit like plain INSERTs. One node, the
-- decoding leader (realtime/walbus), streams the replication slot livepg_bus
-- (pgoutput, publication livepg_bus: INSERTs into livepg.events, id only),
-- which delivers each committed transaction whole at its commit record, in
-- commit-LSN order; a transaction that waited on another's row lock commits
-- after it. The leader numbers each batch of decoded transactions in that
-- order with livepg.number_decoded, which records the batch's last commit
-- LSN in the same transaction (a replay after a crash skips it) and wakes
-- every node with one NOTIFY.
--
-- The mode lives in livepg.bus, changed only by livepg's owner with
-- livepg.set_bus('logical' | 'default') (`livepg bus logical|default`, or a
-- node with LIVEPG_BUS that runs migrations as the owner). Switching swaps
-- what a writer's INSERT does instead of testing the mode on each write, so
-- the default mode's writes cost what they did:
--   * logical: the default mode's triggers on livepg.events (events_notify,
--     events_sequence) are disabled, and
--     events.writer_xid gets the default pg_current_xact_id() (the writer's
--     top-level xid, which xmin stops being once the row is numbered);
--   * default: the triggers are enabled again, writer_xid has no default.
-- The switch takes livepg.events' ACCESS EXCLUSIVE lock, so it waits for
-- every transaction writing events under the old mode to end, then numbers
-- what they left pending (livepg.number_stranded) before anything is
-- written under the new one. Functions that behave differently in the
-- logical mode read livepg.bus: livepg.bus_mode() (says 'logical'),
-- publish_many/publish_batch (insert only, NULL seqs), number_pending (the
-- nodes' numbering step: numbers nothing), check_epoch (does not number
-- leftovers after a restart: the slot decodes them again) and head().
--
-- A lost slot never loses an event: the events table is the truth. When the
-- leader creates the slot (first start, or after it was dropped or
-- invalidated by max_slot_wal_keep_size), it exports the slot's snapshot; the
-- events pending (seq NULL) in that snapshot are exactly those committed
-- before the slot's consistent point, which will never be decoded, and
-- livepg.recover_decoded numbers them first. Their mutual order cannot come
-- from the WAL any more: it is commit timestamp order when
-- track_commit_timestamp is on, else xid order (which may put a
-- transaction that waited on another's lock before it: documented in
-- RELIABILITY.md), ties by id.
--
-- head() in this mode: a page's snapshot may see a committed transaction T2
-- that the leader has not numbered yet while it does not see T1, which
-- commits before T2 in the WAL: T1 will be numbered first. So a page's
-- position is "after seq S, except the pending transactions the page
-- already saw": livepg.head() returns S and, when the caller's snapshot sees
-- pending events, the snapshot itself ('<S>~<snapshot>-<epoch>'); a stream
-- resuming from it skips, after S, the events whose writer xid
-- (events.writer_xid) that snapshot sees, once they are numbered.

-- +goose Up
CREATE TABLE livepg.bus (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    mode            text NOT NULL DEFAULT 'default' CHECK (mode IN ('default', 'logical')),
    -- The last commit LSN the decoding leader numbered.
    decoded_through pg_lsn NOT NULL DEFAULT '0/0',
    -- Every event id up to this one is settled: committed rows of them
    -- were removed by a TRUNCATE (which waited for their writers), so the
    -- leader does not wait for them to become visible.
    truncated_through_id bigint NOT NULL DEFAULT 0
);
INSERT INTO livepg.bus DEFAULT VALUES;

-- +goose StatementBegin
CREATE FUNCTION livepg.truncated_ids() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE livepg.bus
       SET truncated_through_id = (SELECT CASE WHEN q.is_called THEN q.last_value ELSE 0 END
                                     FROM livepg.events_id_seq q);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_truncated_ids AFTER TRUNCATE ON livepg.events
    FOR EACH STATEMENT EXECUTE FUNCTION livepg.truncated_ids();

-- Set only in the logical mode (see above); NULL costs nothing.
ALTER TABLE livepg.events ADD COLUMN writer_xid xid8;


-- livepg.number_stranded numbers every visible pending event, ordered by
-- commit timestamp when track_commit_timestamp is on, else by xid, then id.
-- The caller holds the numbering lock.
-- +goose StatementBegin
CREATE FUNCTION livepg.number_stranded() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
    by_time boolean := current_setting('track_commit_timestamp') = 'on';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM livepg.events e WHERE e.seq IS NULL) THEN
        RETURN 0;
    END IF;
    PERFORM livepg.check_epoch();
    WITH pending AS (
        SELECT e.id,
               coalesce(e.writer_xid::text::bigint, e.xmin::text::bigint) AS x,
               CASE WHEN by_time THEN pg_xact_commit_timestamp(e.xmin) END AS ts
          FROM livepg.events e
         WHERE e.seq IS NULL
    ), ordered AS (
        SELECT p.id, p.ts, nextval('livepg.events_seq') AS seq
          FROM (SELECT * FROM pending ORDER BY ts, x, id) p
    )
    UPDATE livepg.events e
       SET seq = o.seq, committed_at = coalesce(o.ts, clock_timestamp())
      FROM ordered o
     WHERE e.id = o.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
-- +goose StatementEnd

-- livepg.number_decoded numbers the events ids (in this order: the decoded
-- commit order) that are still pending, with committed_at from commit_times
-- (same length), records through as decoded and wakes every node. A batch at
-- or below what is recorded was numbered before: it returns NULL and does
-- nothing. Returns how many events it numbered.
-- +goose StatementBegin
CREATE FUNCTION livepg.number_decoded(ids bigint[], commit_times timestamptz[], through pg_lsn)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
    missing bigint;
BEGIN
    IF coalesce(cardinality(ids), 0) <> coalesce(cardinality(commit_times), 0) OR through IS NULL THEN
        RAISE EXCEPTION 'livepg.number_decoded: ids and commit_times must have the same length, through must not be NULL'
            USING ERRCODE = '22023';
    END IF;
    PERFORM pg_advisory_xact_lock(7236828372618428007);
    IF (SELECT b.mode FROM livepg.bus b) <> 'logical' THEN
        RAISE EXCEPTION 'livepg.number_decoded: the bus is not in the logical mode' USING ERRCODE = '55000';
    END IF;
    IF through <= (SELECT b.decoded_through FROM livepg.bus b) THEN
        RETURN NULL;
    END IF;
    -- The walsender sends a transaction once its commit record is flushed,
    -- a moment before it becomes visible (longer with synchronous
    -- replication: it waits for the standby in between). Wait until every
    -- decoded row is visible (each statement here takes a new snapshot),
    -- up to a second; then fail with SQLSTATE LP001 and the leader calls
    -- again. Rows a TRUNCATE removed since are not waited for.
    FOR attempt IN 1..1000 LOOP
        SELECT count(*) INTO missing
          FROM unnest(ids) AS u(id)
         WHERE u.id > (SELECT b.truncated_through_id FROM livepg.bus b)
           AND NOT EXISTS (SELECT 1 FROM livepg.events e WHERE e.id = u.id);
        EXIT WHEN missing = 0;
        IF attempt = 1000 THEN
            RAISE EXCEPTION 'livepg.number_decoded: % of % decoded events through % are not visible yet', missing, cardinality(ids), through
                USING ERRCODE = 'LP001';
        END IF;
        PERFORM pg_sleep(0.001);
    END LOOP;
    PERFORM livepg.check_epoch();
    WITH ordered AS (
        SELECT d.id, d.ts, nextval('livepg.events_seq') AS seq
          FROM (SELECT u.id, u.ts
                  FROM unnest(ids, commit_times) WITH ORDINALITY AS u(id, ts, i)
                  JOIN livepg.events e ON e.id = u.id AND e.seq IS NULL
                 ORDER BY u.i) d
    )
    UPDATE livepg.events e
       SET seq = o.seq, committed_at = coalesce(o.ts, clock_timestamp())
      FROM ordered o
     WHERE e.id = o.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE livepg.bus SET decoded_through = through;
    IF n > 0 THEN
        PERFORM pg_notify('livepg', '');
    END IF;
    RETURN n;
END
$$;
-- +goose StatementEnd

-- livepg.recover_decoded is called by the leader in the snapshot exported by
-- a new slot (REPEATABLE READ, SET TRANSACTION SNAPSHOT): it numbers the
-- events pending there, which the slot will never decode, and records
-- everything before the slot's consistent point as decoded. Returns how many it numbered.
-- +goose StatementBegin
CREATE FUNCTION livepg.recover_decoded(consistent_point pg_lsn) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7236828372618428007);
    IF (SELECT b.mode FROM livepg.bus b) <> 'logical' THEN
        RAISE EXCEPTION 'livepg.recover_decoded: the bus is not in the logical mode' USING ERRCODE = '55000';
    END IF;
    n := livepg.number_stranded();
    -- A commit record at the consistent point itself is decoded (and is
    -- not in the snapshot): only what is before it is done.
    UPDATE livepg.bus SET decoded_through = consistent_point - 1;
    IF n > 0 THEN
        PERFORM pg_notify('livepg', '');
    END IF;
    RETURN n;
END
$$;
-- +goose StatementEnd

-- livepg.bus_mode() (00008) names 'logical' too.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.bus_mode() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN (SELECT b.mode FROM livepg.bus b) = 'logical' THEN 'logical'
                WHEN current_setting('track_commit_timestamp') = 'on' THEN 'commit_timestamp'
                ELSE 'commit_lock' END
$$;
-- +goose StatementEnd

-- livepg.head() (00008) in the logical mode: the id of the last event
-- numbered in the caller's snapshot and, when that snapshot sees events not
-- numbered yet, the snapshot itself: '<seq>~<snapshot>-<epoch>'. A stream
-- that resumes from it skips, after seq, exactly the events whose writers
-- that snapshot sees (once the leader has numbered them:
-- store.SeenInSnapshot). In the other modes it is 00008's.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.head() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.head::text
           || CASE WHEN l.logical THEN
                   CASE WHEN EXISTS (SELECT 1 FROM livepg.events e WHERE e.seq IS NULL AND e.writer_xid IS NOT NULL)
                        THEN '~' || pg_current_snapshot()::text ELSE '' END
              ELSE
                   CASE WHEN w.k > 0 THEN '.' || w.k::text ELSE '' END
              END
           || '-' || p.epoch
      FROM livepg.position(NULL, NULL) p,
           LATERAL (SELECT (SELECT b.mode FROM livepg.bus b) = 'logical' AS logical) l,
           LATERAL (SELECT count(*) AS k
                      FROM livepg.events e
                     WHERE NOT l.logical AND e.seq IS NULL
                       AND CASE WHEN current_setting('track_commit_timestamp') = 'on'
                                THEN pg_xact_commit_timestamp(e.xmin) IS NOT NULL
                                ELSE age(e.xmin) > 0 END) w
$$;
-- +goose StatementEnd

-- livepg.publish_many (00008) in the logical mode only inserts, whatever
-- track_commit_timestamp says: no lock, no seq (NULL), no NOTIFY (the
-- statement trigger events_notify is disabled in this mode).
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.publish_many(topics text[], types text[], data jsonb[])
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
    IF current_setting('track_commit_timestamp') = 'on' OR (SELECT b.mode FROM livepg.bus b) = 'logical' THEN
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

-- livepg.number_pending (00008), the default mode's numbering step, numbers
-- nothing in the logical mode: only the decoding leader numbers, in WAL
-- order. It still returns the head.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.number_pending(max_rows integer DEFAULT 10000,
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
    IF (SELECT b.mode FROM livepg.bus b) <> 'logical'
       AND EXISTS (SELECT 1 FROM livepg.events e WHERE e.seq IS NULL) THEN
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

-- livepg.check_epoch (00008) numbers rows left pending from before a
-- restart in commit_lock mode; not in the logical mode, where the slot
-- decodes them again after the restart.
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
            IF current_setting('track_commit_timestamp') <> 'on'
               AND (SELECT b.mode FROM livepg.bus b) <> 'logical' THEN
                PERFORM livepg.number_visible(NULL);
            END IF;
        END IF;
        PERFORM set_config('livepg.epoch_checked', 'on', true);
    END IF;
END
$$;
-- +goose StatementEnd

-- livepg.set_bus switches the mode (see the header). Owner only.
-- +goose StatementBegin
CREATE FUNCTION livepg.set_bus(new_mode text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_mode text;
BEGIN
    IF new_mode IS NULL OR new_mode NOT IN ('default', 'logical') THEN
        RAISE EXCEPTION 'livepg.set_bus: mode must be default or logical, not %', coalesce(quote_literal(new_mode), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF new_mode = 'logical' AND current_setting('wal_level') <> 'logical' THEN
        RAISE EXCEPTION 'livepg.set_bus: the logical bus needs wal_level = logical (it is %)', current_setting('wal_level')
            USING ERRCODE = '55000',
                  HINT = 'ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL. On Fly Postgres: fly postgres config update --wal-level logical.';
    END IF;
    IF (SELECT b.mode FROM livepg.bus b) = new_mode THEN
        RETURN new_mode;
    END IF;
    -- Waits for every writer of events under the old mode to finish.
    LOCK TABLE livepg.events IN ACCESS EXCLUSIVE MODE;
    SELECT b.mode INTO old_mode FROM livepg.bus b FOR UPDATE;
    IF old_mode = new_mode THEN
        RETURN old_mode;
    END IF;
    PERFORM pg_advisory_xact_lock(7236828372618428007);
    PERFORM livepg.number_stranded();
    IF new_mode = 'logical' THEN
        ALTER TABLE livepg.events DISABLE TRIGGER events_sequence;
        ALTER TABLE livepg.events DISABLE TRIGGER events_notify;
        ALTER TABLE livepg.events ALTER COLUMN writer_xid SET DEFAULT pg_current_xact_id();
        IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'livepg_bus') THEN
            BEGIN
                CREATE PUBLICATION livepg_bus FOR TABLE livepg.events (id) WITH (publish = 'insert');
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'livepg.set_bus: creating the publication livepg_bus needs the CREATE privilege on database %', current_database()
                    USING ERRCODE = '42501',
                          HINT = format('As the database''s owner or a superuser: GRANT CREATE ON DATABASE %I TO %I; then run livepg bus logical again.', current_database(), current_user);
            END;
        END IF;
    ELSE
        ALTER TABLE livepg.events ENABLE TRIGGER events_sequence;
        ALTER TABLE livepg.events ENABLE TRIGGER events_notify;
        ALTER TABLE livepg.events ALTER COLUMN writer_xid DROP DEFAULT;
        DROP PUBLICATION IF EXISTS livepg_bus;
    END IF;
    UPDATE livepg.bus SET mode = new_mode, decoded_through = '0/0';
    RETURN old_mode;
END
$$;
-- +goose StatementEnd

REVOKE ALL ON livepg.bus FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION livepg.truncated_ids(), livepg.number_stranded(), livepg.number_decoded(bigint[], timestamptz[], pg_lsn),
    livepg.recover_decoded(pg_lsn), livepg.set_bus(text) FROM PUBLIC;
GRANT SELECT ON livepg.bus TO livepg_node;
GRANT EXECUTE ON FUNCTION livepg.number_decoded(bigint[], timestamptz[], pg_lsn),
    livepg.recover_decoded(pg_lsn) TO livepg_node;

-- +goose Down
-- +goose StatementBegin
DO $$
BEGIN
    IF (SELECT b.mode FROM livepg.bus b) = 'logical' THEN
        PERFORM livepg.set_bus('default');
    END IF;
END
$$;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.bus_mode() RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN current_setting('track_commit_timestamp') = 'on'
                THEN 'commit_timestamp' ELSE 'commit_lock' END
$$;
-- +goose StatementEnd
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
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.publish_many(topics text[], types text[], data jsonb[])
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
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.number_pending(max_rows integer DEFAULT 10000,
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
DROP FUNCTION livepg.set_bus(text);
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.head() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.head::text || '-' || p.epoch FROM livepg.position(NULL, NULL) p
$$;
-- +goose StatementEnd
DROP FUNCTION livepg.recover_decoded(pg_lsn);
DROP FUNCTION livepg.number_decoded(bigint[], timestamptz[], pg_lsn);
DROP FUNCTION livepg.number_stranded();
DROP TRIGGER events_truncated_ids ON livepg.events;
DROP FUNCTION livepg.truncated_ids();
ALTER TABLE livepg.events DROP COLUMN writer_xid;
DROP TABLE livepg.bus;
