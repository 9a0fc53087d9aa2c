-- The floor of livepg.pending: the numbering reads only the rows that can
-- still wait, not the whole table.
--
-- Why (cmd/livepg-bench/BENCHMARKS.md, "The bus: lean writes"): every
-- numbering step moves rows out of livepg.pending, so under sustained
-- writes the table fills with dead rows until autovacuum comes by (once a
-- minute by default) and its pages stay; each step read all of them, three
-- times (the probe, the scan for committed rows, the move's join). At 16
-- writers for 90 seconds a step grew from 2.4 ms to 9 ms and the writers
-- lost a quarter of their rate until autovacuum ran.
--
-- Every writer's row now carries its transaction's xid (writer_xid, as in
-- the logical mode; a default, so nothing else changes for writers), under
-- an index, and livepg.bus.pending_floor is an xid below which no row can
-- still wait: a numbering step that moves every committed row it sees sets
-- it to its snapshot's xmin (every transaction below it had finished, so
-- its rows, if committed, were seen and moved), in the same transaction as
-- the move. The step's probe and scan, and livepg.head()'s count, read
-- from the floor up: through the index, the rows of the transactions of
-- the last moments, not a minute of dead ones. (Those functions plan
-- without sequential scans: the planner's statistics of a table that is
-- nearly empty whenever they are taken do not show the dead pages, and a
-- sequential scan reads them all; and without JIT, which the cost of a
-- disabled plan node would otherwise set off for every statement.)

-- +goose Up
LOCK TABLE livepg.pending IN ACCESS EXCLUSIVE MODE;
-- Rows already waiting (none but in the logical mode, whose rows have
-- their xid, or a restart's leftovers): below every floor but the first,
-- which is '0'.
UPDATE livepg.pending SET writer_xid = '3' WHERE writer_xid IS NULL;
ALTER TABLE livepg.pending ALTER COLUMN writer_xid SET DEFAULT pg_current_xact_id();
CREATE INDEX pending_writer_xid ON livepg.pending (writer_xid);
ALTER TABLE livepg.bus ADD COLUMN pending_floor xid8 NOT NULL DEFAULT '0';

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.number_visible(max_rows integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
DECLARE
    ids bigint[];
    stamps timestamptz[];
    floor xid8;
    next_floor xid8;
    drained boolean;
BEGIN
    IF current_setting('track_commit_timestamp') = 'on' THEN
        -- A commit timestamp is NULL for a transaction still in progress:
        -- the caller's own rows are never numbered here.
        -- Only the rows at or above the floor (every row below it was
        -- moved), and in the same statement, so the same snapshot, the
        -- snapshot's xmin: every transaction below it had finished, so
        -- once this step moves every committed row it sees, no row below
        -- that xmin can still wait (a row seen without a commit timestamp,
        -- the caller's own, holds the floor at its own xid).
        SELECT b.pending_floor INTO floor FROM livepg.bus b;
        WITH r AS (SELECT e.id, e.writer_xid AS x, pg_xact_commit_timestamp(e.xmin) AS cts
                     FROM livepg.pending e
                    WHERE e.writer_xid >= floor),
             m AS (SELECT r.id, r.cts FROM r WHERE r.cts IS NOT NULL ORDER BY r.cts, r.id LIMIT max_rows)
        SELECT (SELECT array_agg(m.id ORDER BY m.cts, m.id) FROM m),
               (SELECT array_agg(m.cts ORDER BY m.cts, m.id) FROM m),
               (SELECT count(*) FROM m) < max_rows,
               least(pg_snapshot_xmin(pg_current_snapshot()), (SELECT min(r.x) FROM r WHERE r.cts IS NULL))
          INTO ids, stamps, drained, next_floor;
        IF drained AND next_floor > floor THEN
            UPDATE livepg.bus SET pending_floor = next_floor;
        END IF;
    ELSE
        -- No commit timestamps: rows left from a commit_timestamp period,
        -- in xid order (age: older first), then insertion order. age() of
        -- the caller's own rows is 0 or less.
        SELECT array_agg(p.id ORDER BY p.age DESC, p.id), array_agg(clock_timestamp())
          INTO ids, stamps
          FROM (SELECT e.id, age(e.xmin) AS age
                  FROM livepg.pending e
                 WHERE age(e.xmin) > 0
                 ORDER BY age(e.xmin) DESC, e.id
                 LIMIT max_rows) p;
    END IF;
    RETURN livepg.move_pending(ids, stamps);
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.number_pending(max_rows integer DEFAULT 10000,
                                                 OUT numbered integer, OUT head bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
BEGIN
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000000 THEN
        RAISE EXCEPTION 'livepg.number_pending: max_rows must be between 1 and 1000000, not %', max_rows
            USING ERRCODE = '22023';
    END IF;
    numbered := 0;
    -- One probe of livepg.pending, without the lock: nothing pending (or
    -- only rows another node is moving right now, which this node will
    -- see numbered when it reads after that commit) costs no more.
    IF (SELECT b.mode FROM livepg.bus b) <> 'logical'
       AND (SELECT min(e.writer_xid) FROM livepg.pending e
             WHERE e.writer_xid >= (SELECT b.pending_floor FROM livepg.bus b)) IS NOT NULL THEN
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
CREATE OR REPLACE FUNCTION livepg.head() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
    SELECT p.head::text
           || CASE WHEN l.logical THEN
                   CASE WHEN EXISTS (SELECT 1 FROM livepg.pending e WHERE e.writer_xid IS NOT NULL)
                        THEN '~' || pg_current_snapshot()::text ELSE '' END
              ELSE
                   CASE WHEN w.k > 0 THEN '.' || w.k::text ELSE '' END
              END
           || '-' || p.epoch
      FROM livepg.position(NULL, NULL) p,
           LATERAL (SELECT (SELECT b.mode FROM livepg.bus b) = 'logical' AS logical) l,
           LATERAL (SELECT count(*) AS k
                      FROM livepg.pending e
                     WHERE NOT l.logical
                       AND e.writer_xid >= (SELECT b.pending_floor FROM livepg.bus b)
                       AND CASE WHEN current_setting('track_commit_timestamp') = 'on'
                                THEN pg_xact_commit_timestamp(e.xmin) IS NOT NULL
                                ELSE age(e.xmin) > 0 END) w
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.set_bus(new_mode text) RETURNS text
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
    -- Waits for every writer of events under the old mode to finish. The
    -- locks in the order their other holders take them: the switch lock
    -- (commit_lock writers hold it shared from their first event to their
    -- commit), the numbering lock (a numbering step holds it before it
    -- touches the tables), then the tables. (The tables first, as before
    -- 00014, made a deadlock with a numbering step waiting for them, which
    -- PostgreSQL broke after a second by failing one of the two.)
    PERFORM pg_advisory_xact_lock(7236828372618428008);
    PERFORM pg_advisory_xact_lock(7236828372618428007);
    LOCK TABLE livepg.pending, livepg.events IN ACCESS EXCLUSIVE MODE;
    SELECT b.mode INTO old_mode FROM livepg.bus b FOR UPDATE;
    IF old_mode = new_mode THEN
        RETURN old_mode;
    END IF;
    PERFORM livepg.number_stranded();
    IF new_mode = 'logical' THEN
        ALTER TABLE livepg.events DISABLE TRIGGER events_sequence;
        ALTER TABLE livepg.events DISABLE TRIGGER events_notify;
        ALTER TABLE livepg.events ALTER COLUMN writer_xid SET DEFAULT pg_current_xact_id();
        ALTER TABLE livepg.pending DISABLE TRIGGER pending_notify;
        ALTER TABLE livepg.pending ALTER COLUMN writer_xid SET DEFAULT pg_current_xact_id();
        IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'livepg_bus') THEN
            BEGIN
                CREATE PUBLICATION livepg_bus FOR TABLE livepg.pending (id) WITH (publish = 'insert');
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
        ALTER TABLE livepg.pending ENABLE TRIGGER pending_notify;
        DROP PUBLICATION IF EXISTS livepg_bus;
    END IF;
    UPDATE livepg.bus SET mode = new_mode, decoded_through = '0/0';
    RETURN old_mode;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.number_visible(max_rows integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
    stamps timestamptz[];
BEGIN
    IF current_setting('track_commit_timestamp') = 'on' THEN
        -- A commit timestamp is NULL for a transaction still in progress:
        -- the caller's own rows are never numbered here.
        SELECT array_agg(p.id ORDER BY p.cts, p.id), array_agg(p.cts ORDER BY p.cts, p.id)
          INTO ids, stamps
          FROM (SELECT q.id, q.cts
                  FROM (SELECT e.id, pg_xact_commit_timestamp(e.xmin) AS cts
                          FROM livepg.pending e) q
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
                  FROM livepg.pending e
                 WHERE age(e.xmin) > 0
                 ORDER BY age(e.xmin) DESC, e.id
                 LIMIT max_rows) p;
    END IF;
    RETURN livepg.move_pending(ids, stamps);
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
    -- One probe of livepg.pending, without the lock: nothing pending (or
    -- only rows another node is moving right now, which this node will
    -- see numbered when it reads after that commit) costs no more.
    IF (SELECT b.mode FROM livepg.bus b) <> 'logical'
       AND EXISTS (SELECT 1 FROM livepg.pending e) THEN
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
CREATE OR REPLACE FUNCTION livepg.head() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.head::text
           || CASE WHEN l.logical THEN
                   CASE WHEN EXISTS (SELECT 1 FROM livepg.pending e WHERE e.writer_xid IS NOT NULL)
                        THEN '~' || pg_current_snapshot()::text ELSE '' END
              ELSE
                   CASE WHEN w.k > 0 THEN '.' || w.k::text ELSE '' END
              END
           || '-' || p.epoch
      FROM livepg.position(NULL, NULL) p,
           LATERAL (SELECT (SELECT b.mode FROM livepg.bus b) = 'logical' AS logical) l,
           LATERAL (SELECT count(*) AS k
                      FROM livepg.pending e
                     WHERE NOT l.logical
                       AND CASE WHEN current_setting('track_commit_timestamp') = 'on'
                                THEN pg_xact_commit_timestamp(e.xmin) IS NOT NULL
                                ELSE age(e.xmin) > 0 END) w
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.set_bus(new_mode text) RETURNS text
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
    -- Waits for every writer of events under the old mode to finish. The
    -- locks in the order their other holders take them: the switch lock
    -- (commit_lock writers hold it shared from their first event to their
    -- commit), the numbering lock (a numbering step holds it before it
    -- touches the tables), then the tables. (The tables first, as before
    -- 00014, made a deadlock with a numbering step waiting for them, which
    -- PostgreSQL broke after a second by failing one of the two.)
    PERFORM pg_advisory_xact_lock(7236828372618428008);
    PERFORM pg_advisory_xact_lock(7236828372618428007);
    LOCK TABLE livepg.pending, livepg.events IN ACCESS EXCLUSIVE MODE;
    SELECT b.mode INTO old_mode FROM livepg.bus b FOR UPDATE;
    IF old_mode = new_mode THEN
        RETURN old_mode;
    END IF;
    PERFORM livepg.number_stranded();
    IF new_mode = 'logical' THEN
        ALTER TABLE livepg.events DISABLE TRIGGER events_sequence;
        ALTER TABLE livepg.events DISABLE TRIGGER events_notify;
        ALTER TABLE livepg.events ALTER COLUMN writer_xid SET DEFAULT pg_current_xact_id();
        ALTER TABLE livepg.pending DISABLE TRIGGER pending_notify;
        ALTER TABLE livepg.pending ALTER COLUMN writer_xid SET DEFAULT pg_current_xact_id();
        IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'livepg_bus') THEN
            BEGIN
                CREATE PUBLICATION livepg_bus FOR TABLE livepg.pending (id) WITH (publish = 'insert');
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
        ALTER TABLE livepg.pending ENABLE TRIGGER pending_notify;
        ALTER TABLE livepg.pending ALTER COLUMN writer_xid DROP DEFAULT;
        DROP PUBLICATION IF EXISTS livepg_bus;
    END IF;
    UPDATE livepg.bus SET mode = new_mode, decoded_through = '0/0';
    RETURN old_mode;
END
$$;
-- +goose StatementEnd

DROP INDEX livepg.pending_writer_xid;
ALTER TABLE livepg.bus DROP COLUMN pending_floor;
-- +goose StatementBegin
DO $$
BEGIN
    IF (SELECT b.mode FROM livepg.bus b) <> 'logical' THEN
        ALTER TABLE livepg.pending ALTER COLUMN writer_xid DROP DEFAULT;
    END IF;
END
$$;
-- +goose StatementEnd
