-- Lean writes: the checks that every event's writer paid in triggers and
-- constraints on livepg.pending are made once, inside the functions that
-- write it.
--
-- Why (cmd/livepg-bench/BENCHMARKS.md, "Lean writes"): on a busy server
-- the writers' CPU is what slows NOTIFY's one-at-a-time commits, and each
-- row trigger (a PL/pgSQL call with its own search_path) and each CHECK
-- constraint (its expression rebuilt from the catalog for every statement,
-- then a regular expression that livepg.publish had just matched) cost the
-- writer of every event. Only livepg's own functions write livepg.pending
-- (nobody else holds a privilege on it), and they already validate what
-- they write:
--   * livepg.publish checked topic and type with clear errors; it now
--     measures the data against livepg.limits.max_event_size itself (the
--     same error: SQLSTATE 54000) and refuses a 'presence' event from a
--     writer that is not a node (the same error: 42501);
--   * livepg.publish_many (and publish_batch, which calls it) relied on
--     the table's CHECK constraints: it now checks every element first,
--     with the same SQLSTATEs as before (23502 for a NULL, 23514 for an
--     invalid topic or type) and a message that names the element;
--   * tracked tables write through livepg.publish (livepg.capture runs as
--     the writer and calls it), as before.
-- Unchanged: livepg.pending's statement trigger that NOTIFYs (livepg.set_bus
-- turns it off in the logical mode, under a lock that waits for every
-- writer), livepg.events' own checks and triggers (the commit_lock mode
-- writes the log directly), what is written, every signature.

-- +goose Up
ALTER TABLE livepg.pending DROP CONSTRAINT pending_topic_check, DROP CONSTRAINT pending_type_check;
DROP TRIGGER pending_measure ON livepg.pending;
DROP TRIGGER pending_presence_guard ON livepg.pending;

-- livepg.check_presence_writer refuses a 'presence' event from a session
-- that is neither a livepg node nor livepg's owner (livepg.presence_guard,
-- as a function for livepg.publish and livepg.publish_many). Internal.
-- +goose StatementBegin
CREATE FUNCTION livepg.check_presence_writer() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner oid;
BEGIN
    SELECT c.relowner INTO owner FROM pg_catalog.pg_class c WHERE c.oid = 'livepg.events'::pg_catalog.regclass;
    IF pg_catalog.pg_has_role(session_user, 'livepg_node', 'MEMBER')
       OR pg_catalog.pg_has_role(session_user, owner, 'MEMBER') THEN
        RETURN;
    END IF;
    RAISE EXCEPTION 'livepg: events of type ''presence'' are written by livepg nodes only (role livepg_node)'
        USING ERRCODE = '42501',
              HINT = 'Pages join a topic''s presence through a node: GET /v1/events?topic=...&presence=...';
END
$$;
-- +goose StatementEnd
REVOKE EXECUTE ON FUNCTION livepg.check_presence_writer() FROM PUBLIC;

-- The log's own guard (commit_lock writes) asks the same question.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.presence_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM livepg.check_presence_writer();
    RETURN NEW;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.publish(topic text, data jsonb, type text DEFAULT 'message')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    event_id bigint;
    event_data jsonb := coalesce(data, 'null'::jsonb);
    size integer;
    limit_bytes integer;
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
        -- row is written for a mode that changed meanwhile. (The log's own
        -- triggers measure the data and guard presence there.)
        PERFORM pg_advisory_xact_lock_shared(7236828372618428008);
        IF (SELECT b.mode FROM livepg.bus b) <> 'logical' THEN
            INSERT INTO livepg.events (topic, type, data)
            VALUES (topic, type, event_data)
            RETURNING id INTO event_id;
            RETURN event_id;
        END IF;
    END IF;
    size := octet_length(event_data::text);
    SELECT l.max_event_size INTO limit_bytes FROM livepg.limits l;
    IF size > limit_bytes THEN
        RAISE EXCEPTION 'livepg: event data on topic % is % bytes as JSON text, more than the limit of % bytes',
            quote_literal(topic), size, limit_bytes
            USING ERRCODE = '54000',
                  HINT = 'The limit is livepg.limits.max_event_size. Numbers count as PostgreSQL prints them: 1e1000 is 1,001 bytes.';
    END IF;
    IF type = 'presence' THEN
        PERFORM livepg.check_presence_writer();
    END IF;
    INSERT INTO livepg.pending (topic, type, data, size)
    VALUES (topic, type, event_data, size)
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
    bad record;
    limit_bytes integer;
    sizes integer[];
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
        -- Every element checked before anything is written: the first bad
        -- one, by position, is named.
        SELECT l.max_event_size INTO limit_bytes FROM livepg.limits l;
        -- Each event's data as JSON text once: its size, checked here and
        -- stored below.
        SELECT array_agg(octet_length(coalesce(u.data, 'null'::jsonb)::text) ORDER BY u.i) INTO sizes
          FROM unnest(data) WITH ORDINALITY AS u(data, i);
        SELECT x.i, x.topic, x.type, x.size INTO bad
          FROM unnest(topics, types, sizes) WITH ORDINALITY AS x(topic, type, size, i)
         WHERE x.topic IS NULL OR x.type IS NULL
            OR length(x.topic) > 256 OR x.topic !~ '^[A-Za-z0-9_.:@=+%-]+(/[A-Za-z0-9_.:@=+%-]+)*$'
            OR x.type !~ '^[A-Za-z0-9_.:-]{1,64}$'
            OR x.size > limit_bytes
         ORDER BY x.i
         LIMIT 1;
        IF FOUND THEN
            IF bad.topic IS NULL OR bad.type IS NULL THEN
                RAISE EXCEPTION 'livepg.publish_many: event % has a NULL topic or type', bad.i
                    USING ERRCODE = '23502';
            ELSIF length(bad.topic) > 256 OR bad.topic !~ '^[A-Za-z0-9_.:@=+%-]+(/[A-Za-z0-9_.:@=+%-]+)*$' THEN
                RAISE EXCEPTION 'livepg.publish_many: event % has an invalid topic %', bad.i, quote_literal(bad.topic)
                    USING ERRCODE = '23514',
                          HINT = 'A topic is 1-256 characters: segments of letters, digits and _.:@=+-% separated by single slashes.';
            ELSIF bad.type !~ '^[A-Za-z0-9_.:-]{1,64}$' THEN
                RAISE EXCEPTION 'livepg.publish_many: event % has an invalid type %', bad.i, quote_literal(bad.type)
                    USING ERRCODE = '23514',
                          HINT = 'A type is 1-64 letters, digits or _.:-';
            ELSE
                RAISE EXCEPTION 'livepg: event data on topic % is % bytes as JSON text, more than the limit of % bytes',
                    quote_literal(bad.topic), bad.size, limit_bytes
                    USING ERRCODE = '54000',
                          HINT = 'The limit is livepg.limits.max_event_size. Numbers count as PostgreSQL prints them: 1e1000 is 1,001 bytes.';
            END IF;
        END IF;
        IF 'presence' = ANY (types) THEN
            PERFORM livepg.check_presence_writer();
        END IF;
        RETURN QUERY
        INSERT INTO livepg.pending AS e (topic, type, data, size)
        SELECT x.topic, x.type, coalesce(x.data, 'null'::jsonb), x.size
          FROM unnest(topics, types, data, sizes) WITH ORDINALITY AS x(topic, type, data, size, i)
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

-- livepg.set_bus takes its locks in the order of their other holders.
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

-- +goose Down
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
CREATE OR REPLACE FUNCTION livepg.presence_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner oid;
BEGIN
    SELECT c.relowner INTO owner FROM pg_catalog.pg_class c WHERE c.oid = 'livepg.events'::pg_catalog.regclass;
    IF pg_catalog.pg_has_role(session_user, 'livepg_node', 'MEMBER')
       OR pg_catalog.pg_has_role(session_user, owner, 'MEMBER') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'livepg: events of type ''presence'' are written by livepg nodes only (role livepg_node)'
        USING ERRCODE = '42501',
              HINT = 'Pages join a topic''s presence through a node: GET /v1/events?topic=...&presence=...';
END
$$;
-- +goose StatementEnd
DROP FUNCTION livepg.check_presence_writer();
CREATE TRIGGER pending_measure BEFORE INSERT ON livepg.pending
    FOR EACH ROW EXECUTE FUNCTION livepg.measure();
CREATE TRIGGER pending_presence_guard BEFORE INSERT ON livepg.pending
    FOR EACH ROW WHEN (NEW.type = 'presence') EXECUTE FUNCTION livepg.presence_guard();
ALTER TABLE livepg.pending
    ADD CONSTRAINT pending_topic_check CHECK (length(topic) <= 256 AND topic ~ '^[A-Za-z0-9_.:@=+%-]+(/[A-Za-z0-9_.:@=+%-]+)*$'),
    ADD CONSTRAINT pending_type_check CHECK (type ~ '^[A-Za-z0-9_.:-]{1,64}$');

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
