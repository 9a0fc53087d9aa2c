-- A log written once: writers insert their events into livepg.pending, a
-- narrow table of their own (primary key only), and the numbering moves
-- committed rows into livepg.events with their seq, in one DELETE feeding
-- one INSERT, instead of updating each event row in place.
--
-- Why (cmd/livepg-bench/BENCHMARKS.md, "The bus: where the writers' time
-- goes"): every notifying commit runs one at a time under NOTIFY's lock,
-- and a numbering transaction that updates event rows slows that chain
-- while it runs (each numbered row was a new version of a wide row in three
-- indexes, and a dead entry for the next steps to walk). Writers no longer
-- touch the log's indexes, and the log's rows are written once, numbered.
--
-- What stays the same: the order and its argument (00008, 00009), every
-- function's signature, the ids (a pending row keeps its id, from the log's
-- own identity sequence, when it moves), the size check and the presence
-- guard (now on livepg.pending, where writers write), what readers read
-- (only livepg.events). A pending event is a row of livepg.pending instead
-- of a row of livepg.events with seq NULL:
--   * commit_timestamp: the nodes' numbering step (livepg.number_pending,
--     livepg.number_visible) moves the visible pending rows, in commit
--     timestamp order;
--   * commit_lock: livepg.publish writes into livepg.events as before (its
--     deferred trigger events_sequence numbers the rows in place at commit,
--     under the numbering lock: cheaper there than a move);
--     livepg.publish_many numbers at insert as before. With the setting
--     off, both read the bus mode under a shared advisory lock
--     (7236828372618428008) that livepg.set_bus takes exclusively, so no
--     row reaches livepg.pending in this mode but those a commit_timestamp
--     period left before a restart (numbered first, in xid order, by the
--     first numbering of the new server lifetime: livepg.check_epoch);
--   * logical: writers' rows in livepg.pending carry writer_xid; the
--     publication livepg_bus carries livepg.pending's inserts (id only) and
--     the leader moves the decoded ids in commit-LSN order
--     (livepg.number_decoded); livepg.number_stranded moves what the slot
--     will never decode.
-- livepg.move_pending(ids, stamps) is the one move: it numbers the rows of
-- ids still pending, in the order given, from livepg.events_seq. While it
-- moves, the transaction-local setting livepg.moving is on, and the log's
-- own triggers (the size check, the presence guard, the wake-up) do not
-- fire: the moved rows were checked when written, and their writers'
-- NOTIFY woke the nodes.
--
-- The rows pending when this migration runs are numbered first (under the
-- numbering lock, after every writer of the log has finished), as
-- livepg.set_bus does when the mode changes.

-- +goose Up
LOCK TABLE livepg.events IN SHARE ROW EXCLUSIVE MODE;
SELECT pg_advisory_xact_lock(7236828372618428007), livepg.number_stranded();

CREATE TABLE livepg.pending (
    id         bigint PRIMARY KEY DEFAULT nextval('livepg.events_id_seq'),
    topic      text NOT NULL CHECK (length(topic) <= 256 AND topic ~ '^[A-Za-z0-9_.:@=+%-]+(/[A-Za-z0-9_.:@=+%-]+)*$'),
    type       text NOT NULL CHECK (type ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    data       jsonb NOT NULL,
    size       integer,
    writer_xid xid8
);
REVOKE ALL ON livepg.pending FROM PUBLIC;
GRANT SELECT ON livepg.pending TO livepg_node;

-- The log's own size check and wake-up let moved rows through (they were
-- checked when written, and the numbering wakes nobody: the writers'
-- NOTIFY did).
DROP TRIGGER events_measure ON livepg.events;
CREATE TRIGGER events_measure BEFORE INSERT ON livepg.events
    FOR EACH ROW WHEN (pg_catalog.current_setting('livepg.moving', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION livepg.measure();
DROP TRIGGER events_notify ON livepg.events;
CREATE TRIGGER events_notify AFTER INSERT ON livepg.events
    FOR EACH STATEMENT WHEN (pg_catalog.current_setting('livepg.moving', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION livepg.notify();
-- The presence guard too: it checked the writer when the row was written,
-- and a move may run in another role's transaction (commit_lock mode
-- numbers a restart's leftovers in the first writer's commit).
DROP TRIGGER events_presence_guard ON livepg.events;
CREATE TRIGGER events_presence_guard BEFORE INSERT ON livepg.events
    FOR EACH ROW WHEN (NEW.type = 'presence' AND pg_catalog.current_setting('livepg.moving', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION livepg.presence_guard();

-- livepg.move_pending numbers the rows of ids still in livepg.pending, in
-- the order of ids, and moves them into livepg.events with committed_at
-- from stamps (NULL: now). The caller holds the numbering lock. Internal:
-- granted to nobody.
-- +goose StatementBegin
CREATE FUNCTION livepg.move_pending(ids bigint[], stamps timestamptz[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n int := coalesce(cardinality(ids), 0);
    first bigint;
    moved int;
BEGIN
    IF n = 0 THEN
        RETURN 0;
    END IF;
    first := nextval('livepg.events_seq');
    IF n > 1 THEN
        PERFORM setval('livepg.events_seq', first + n - 1);
    END IF;
    PERFORM set_config('livepg.moving', 'on', true);
    WITH m AS (
        DELETE FROM livepg.pending p
         USING unnest(ids, stamps) WITH ORDINALITY AS u(id, at, i)
         WHERE p.id = u.id
        RETURNING p.id, p.topic, p.type, p.data, p.size, p.writer_xid, u.at, u.i)
    INSERT INTO livepg.events (id, seq, topic, type, data, committed_at, size, writer_xid)
    OVERRIDING SYSTEM VALUE
    SELECT m.id, first + m.i - 1, m.topic, m.type, m.data, coalesce(m.at, clock_timestamp()), m.size, m.writer_xid
      FROM m ORDER BY m.i;
    GET DIAGNOSTICS moved = ROW_COUNT;
    PERFORM set_config('livepg.moving', '', true);
    RETURN moved;
END
$$;
-- +goose StatementEnd
REVOKE EXECUTE ON FUNCTION livepg.move_pending(bigint[], timestamptz[]) FROM PUBLIC;

CREATE TRIGGER pending_measure BEFORE INSERT ON livepg.pending
    FOR EACH ROW EXECUTE FUNCTION livepg.measure();
CREATE TRIGGER pending_presence_guard BEFORE INSERT ON livepg.pending
    FOR EACH ROW WHEN (NEW.type = 'presence') EXECUTE FUNCTION livepg.presence_guard();
CREATE TRIGGER pending_notify AFTER INSERT ON livepg.pending
    FOR EACH STATEMENT EXECUTE FUNCTION livepg.notify();
CREATE TRIGGER pending_truncated_ids AFTER TRUNCATE ON livepg.pending
    FOR EACH STATEMENT EXECUTE FUNCTION livepg.truncated_ids();

-- +goose StatementBegin
DO $$
BEGIN
    IF (SELECT b.mode FROM livepg.bus b) = 'logical' THEN
        ALTER TABLE livepg.events DISABLE TRIGGER events_notify;
        ALTER TABLE livepg.pending DISABLE TRIGGER pending_notify;
        ALTER TABLE livepg.pending ALTER COLUMN writer_xid SET DEFAULT pg_current_xact_id();
        IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'livepg_bus') THEN
            ALTER PUBLICATION livepg_bus SET TABLE livepg.pending (id);
        END IF;
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.publish(topic text, data jsonb, type text DEFAULT 'message')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    event_id bigint;
BEGIN
    IF topic IS NULL THEN
        RAISE EXCEPTION 'livepg.publish: topic must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF type IS NULL THEN
        RAISE EXCEPTION 'livepg.publish: type must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF length(topic) > 256 OR topic !~ '^[A-Za-z0-9_.:@=+%-]+(/[A-Za-z0-9_.:@=+%-]+)*$' THEN
        RAISE EXCEPTION 'livepg.publish: invalid topic %', quote_literal(topic)
            USING ERRCODE = '22023',
                  HINT = 'A topic is 1-256 characters: segments of letters, digits and _.:@=+-% separated by single slashes.';
    END IF;
    IF type !~ '^[A-Za-z0-9_.:-]{1,64}$' THEN
        RAISE EXCEPTION 'livepg.publish: invalid type %', quote_literal(type)
            USING ERRCODE = '22023',
                  HINT = 'A type is 1-64 letters, digits or _.:-';
    END IF;
    IF current_setting('track_commit_timestamp') <> 'on' THEN
        -- commit_lock mode numbers in place, at commit (livepg.sequence):
        -- cheaper under its lock than a move. Read the mode under the
        -- switch lock, which livepg.set_bus takes exclusively, so that no
        -- row is written for a mode that changed meanwhile.
        PERFORM pg_advisory_xact_lock_shared(7236828372618428008);
        IF (SELECT b.mode FROM livepg.bus b) <> 'logical' THEN
            INSERT INTO livepg.events (topic, type, data)
            VALUES (topic, type, coalesce(data, 'null'::jsonb))
            RETURNING id INTO event_id;
            RETURN event_id;
        END IF;
    END IF;
    INSERT INTO livepg.pending (topic, type, data)
    VALUES (topic, type, coalesce(data, 'null'::jsonb))
    RETURNING id INTO event_id;
    RETURN event_id;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.publish_many(topics text[], types text[], data jsonb[])
RETURNS TABLE(id bigint, seq bigint)
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
    IF current_setting('track_commit_timestamp') <> 'on' THEN
        -- The mode under the switch lock (see livepg.publish).
        PERFORM pg_advisory_xact_lock_shared(7236828372618428008);
    END IF;
    IF current_setting('track_commit_timestamp') = 'on' OR (SELECT b.mode FROM livepg.bus b) = 'logical' THEN
        -- The CHECK constraints validate topic and type, NOT NULL refuses NULLs.
        RETURN QUERY
        INSERT INTO livepg.pending AS e (topic, type, data)
        SELECT x.topic, x.type, coalesce(x.data, 'null'::jsonb)
          FROM unnest(topics, types, data) WITH ORDINALITY AS x(topic, type, data, i)
         ORDER BY x.i
        RETURNING e.id, NULL::bigint;
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

-- number_stranded also numbers rows pending in the log itself (seq NULL),
-- which only a database older than this migration, or the log's owner
-- writing to it directly, leaves.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.number_stranded() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint := 0;
    moved bigint;
    by_time boolean := current_setting('track_commit_timestamp') = 'on';
    ids bigint[];
    stamps timestamptz[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM livepg.events e WHERE e.seq IS NULL)
       AND NOT EXISTS (SELECT 1 FROM livepg.pending e) THEN
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
    SELECT array_agg(q.id ORDER BY q.ts, q.x, q.id), array_agg(q.ts ORDER BY q.ts, q.x, q.id)
      INTO ids, stamps
      FROM (SELECT e.id,
                   coalesce(e.writer_xid::text::bigint, e.xmin::text::bigint) AS x,
                   CASE WHEN by_time THEN pg_xact_commit_timestamp(e.xmin) END AS ts
              FROM livepg.pending e
             WHERE age(e.xmin) > 0) q;
    moved := livepg.move_pending(ids, stamps);
    RETURN n + moved;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.number_decoded(ids bigint[], commit_times timestamptz[], through pg_lsn)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
    missing bigint;
    move_ids bigint[];
    move_times timestamptz[];
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
    -- again. Rows a TRUNCATE removed since, and rows already moved into the
    -- log, are not waited for.
    FOR attempt IN 1..1000 LOOP
        SELECT count(*) INTO missing
          FROM unnest(ids) AS u(id)
         WHERE u.id > (SELECT b.truncated_through_id FROM livepg.bus b)
           AND NOT EXISTS (SELECT 1 FROM livepg.pending p WHERE p.id = u.id)
           AND NOT EXISTS (SELECT 1 FROM livepg.events e WHERE e.id = u.id);
        EXIT WHEN missing = 0;
        IF attempt = 1000 THEN
            RAISE EXCEPTION 'livepg.number_decoded: % of % decoded events through % are not visible yet', missing, cardinality(ids), through
                USING ERRCODE = 'LP001';
        END IF;
        PERFORM pg_sleep(0.001);
    END LOOP;
    PERFORM livepg.check_epoch();
    SELECT array_agg(u.id ORDER BY u.i), array_agg(u.ts ORDER BY u.i)
      INTO move_ids, move_times
      FROM unnest(ids, commit_times) WITH ORDINALITY AS u(id, ts, i)
     WHERE EXISTS (SELECT 1 FROM livepg.pending p WHERE p.id = u.id);
    n := livepg.move_pending(move_ids, move_times);
    UPDATE livepg.bus SET decoded_through = through;
    IF n > 0 THEN
        PERFORM pg_notify('livepg', '');
    END IF;
    RETURN n;
END
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
    -- Waits for every writer of events under the old mode to finish.
    PERFORM pg_advisory_xact_lock(7236828372618428008);
    LOCK TABLE livepg.pending, livepg.events IN ACCESS EXCLUSIVE MODE;
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

-- +goose Down
LOCK TABLE livepg.pending, livepg.events IN ACCESS EXCLUSIVE MODE;
SELECT pg_advisory_xact_lock(7236828372618428007), livepg.number_stranded();
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'livepg_bus') THEN
        ALTER PUBLICATION livepg_bus SET TABLE livepg.events (id);
    END IF;
END
$$;
-- +goose StatementEnd


-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.publish(topic text, data jsonb, type text DEFAULT 'message'::text)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    event_id bigint;
BEGIN
    IF topic IS NULL THEN
        RAISE EXCEPTION 'livepg.publish: topic must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF type IS NULL THEN
        RAISE EXCEPTION 'livepg.publish: type must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF length(topic) > 256 OR topic !~ '^[A-Za-z0-9_.:@=+%-]+(/[A-Za-z0-9_.:@=+%-]+)*$' THEN
        RAISE EXCEPTION 'livepg.publish: invalid topic %', quote_literal(topic)
            USING ERRCODE = '22023',
                  HINT = 'A topic is 1-256 characters: segments of letters, digits and _.:@=+-% separated by single slashes.';
    END IF;
    IF type !~ '^[A-Za-z0-9_.:-]{1,64}$' THEN
        RAISE EXCEPTION 'livepg.publish: invalid type %', quote_literal(type)
            USING ERRCODE = '22023',
                  HINT = 'A type is 1-64 letters, digits or _.:-';
    END IF;
    INSERT INTO livepg.events (topic, type, data)
    VALUES (topic, type, coalesce(data, 'null'::jsonb))
    RETURNING id INTO event_id;
    RETURN event_id;
END
$function$

;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.publish_many(topics text[], types text[], data jsonb[])
 RETURNS TABLE(id bigint, seq bigint)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$

;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.number_visible(max_rows integer)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$

;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.number_pending(max_rows integer DEFAULT 10000, OUT numbered integer, OUT head bigint)
 RETURNS record
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$

;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.head()
 RETURNS text
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$

;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.number_stranded()
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$

;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.number_decoded(ids bigint[], commit_times timestamp with time zone[], through pg_lsn)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$

;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.set_bus(new_mode text)
 RETURNS text
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$

;
-- +goose StatementEnd

DROP TABLE livepg.pending;
DROP TRIGGER events_measure ON livepg.events;
CREATE TRIGGER events_measure BEFORE INSERT ON livepg.events
    FOR EACH ROW EXECUTE FUNCTION livepg.measure();
DROP TRIGGER events_notify ON livepg.events;
CREATE TRIGGER events_notify AFTER INSERT ON livepg.events
    FOR EACH STATEMENT EXECUTE FUNCTION livepg.notify();
DROP TRIGGER events_presence_guard ON livepg.events;
CREATE TRIGGER events_presence_guard BEFORE INSERT ON livepg.events
    FOR EACH ROW WHEN (NEW.type = 'presence') EXECUTE FUNCTION livepg.presence_guard();
-- +goose StatementBegin
DO $$
BEGIN
    IF (SELECT b.mode FROM livepg.bus b) = 'logical' THEN
        ALTER TABLE livepg.events DISABLE TRIGGER events_notify;
    END IF;
END
$$;
-- +goose StatementEnd
DROP FUNCTION livepg.move_pending(bigint[], timestamptz[]);
