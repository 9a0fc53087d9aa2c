-- Tracked tables record their events through a checked view instead of a
-- call to livepg.publish, and render their topic without a function call.
--
-- Why (cmd/livepg-bench/BENCHMARKS.md, "The ceiling of a trigger"): a write
-- to a tracked table paid, per row, for livepg.capture, then
-- livepg.render_topic and livepg.topic_segment (each a PL/pgSQL call with
-- its own search_path), then livepg.publish (a SECURITY DEFINER call: a
-- search_path swap and a security context around it) and its checks.
-- Measured per row in one statement of 50,000 inserts: capture 34 us, of
-- which the topic 6 us and the definer call with its checks 9 us; an
-- insert into livepg.pending written inline 17 us.
--
-- What changes:
--   * livepg.captured is a view of livepg.pending that the writers of
--     tracked tables (livepg_writer) may INSERT into, WITH CHECK OPTION: a
--     row gets in only if it is what livepg.publish would have written for
--     a row change (type insert, update or delete; a valid topic; size the
--     data's bytes as JSON text, within livepg.limits.max_event_size, whose
--     breach raises publish's own error, SQLSTATE 54000), and only while
--     track_commit_timestamp is on (the commit_lock mode writes the log
--     itself, through publish). A row it refuses changes nothing.
--     Inserting through the view draws ids from livepg.events_id_seq as the
--     writer: livepg_writer gets USAGE on it (nextval, currval; not setval).
--   * livepg.capture renders the topic itself when the template has the
--     shape livepg.track accepts ({column} placeholders, no other braces),
--     escaping a value only when it is not already a plain segment (else
--     livepg.topic_segment, as before); any other template still goes
--     through livepg.render_topic and publish, as before. It writes through
--     the view when the mode writes livepg.pending and the topic is valid,
--     else through livepg.publish (the same errors as before).
-- Unchanged: what is written (topic, type, data, size), the NOTIFY
-- (livepg.pending's statement trigger fires for rows inserted through the
-- view), capture running as the writer (to_jsonb(NEW) may run the table's
-- own casts), every signature.

-- +goose Up
-- livepg.event_too_large raises the error livepg.publish raises for data
-- over the limit; the view's check calls it for a row that breaks it, so
-- that the writer reads why. Internal.
-- +goose StatementBegin
CREATE FUNCTION livepg.event_too_large(topic text, size integer, limit_bytes integer) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'livepg: event data on topic % is % bytes as JSON text, more than the limit of % bytes',
        quote_literal(topic), size, limit_bytes
        USING ERRCODE = '54000',
              HINT = 'The limit is livepg.limits.max_event_size. Numbers count as PostgreSQL prints them: 1e1000 is 1,001 bytes.';
END
$$;
-- +goose StatementEnd
REVOKE EXECUTE ON FUNCTION livepg.event_too_large(text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION livepg.event_too_large(text, integer, integer) TO livepg_writer;

-- The same rules as livepg.publish and livepg.events' constraints, for a
-- row change's event. Relations in a view's query are read with the
-- view's owner's rights: the writer needs no privilege on livepg.limits.
CREATE VIEW livepg.captured AS
SELECT p.topic, p.type, p.data, p.size
  FROM livepg.pending p
 WHERE p.type IN ('insert', 'update', 'delete')
   AND length(p.topic) <= 256
   AND p.topic ~ '^[A-Za-z0-9_.:@=+%-]+(/[A-Za-z0-9_.:@=+%-]+)*$'
   AND p.size = octet_length(p.data::text)
   AND CASE WHEN p.size <= (SELECT l.max_event_size FROM livepg.limits l) THEN true
            ELSE livepg.event_too_large(p.topic, p.size, (SELECT l.max_event_size FROM livepg.limits l)) END
   AND current_setting('track_commit_timestamp') = 'on'
  WITH CASCADED CHECK OPTION;
REVOKE ALL ON livepg.captured FROM PUBLIC;
GRANT INSERT ON livepg.captured TO livepg_writer;
GRANT USAGE ON SEQUENCE livepg.events_id_seq TO livepg_writer;

-- livepg.capture has no SET search_path any more (a search_path swap on
-- every row cost tracked writes 4%): it runs as the writer, so a
-- search_path, which only the writer's own session can set, changes only
-- that writer's own events, and those the view checks like any other. The
-- built-in functions it calls are named with their schema.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER AS $$
DECLARE
    new_row jsonb;
    old_row jsonb;
    op text := pg_catalog.lower(TG_OP);
    new_topic text;
    old_topic text;
    data jsonb;
    size integer;
    -- 'boards/{board_id}/cards' -> {'boards/', 'board_id}/cards'}
    parts text[] := pg_catalog.string_to_array(TG_ARGV[0], '{');
    part text;
    close integer;
    value text;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        new_row := pg_catalog.to_jsonb(NEW);
        new_topic := parts[1];
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_row := pg_catalog.to_jsonb(OLD);
        old_topic := parts[1];
    END IF;
    -- The topic, for the shape livepg.track accepts: each part after the
    -- first is a column name, '}', then fixed text without braces.
    IF parts[1] IS NULL OR pg_catalog.strpos(parts[1], '}') > 0 THEN
        parts := NULL;
    END IF;
    FOR i IN 2 .. coalesce(pg_catalog.cardinality(parts), 0) LOOP
        part := parts[i];
        close := pg_catalog.strpos(part, '}');
        IF close < 2 OR pg_catalog.strpos(pg_catalog.substr(part, close + 1), '}') > 0 THEN
            parts := NULL;
            EXIT;
        END IF;
        -- A value that is already a plain segment of at most 64 characters,
        -- not starting with a dot, is its own encoding (livepg.topic_segment).
        IF new_row IS NOT NULL THEN
            value := new_row ->> pg_catalog.left(part, close - 1);
            new_topic := new_topic
                || CASE WHEN pg_catalog.length(value) <= 64 AND value ~ '^[A-Za-z0-9_:@=+-][A-Za-z0-9_.:@=+-]*$'
                        THEN value ELSE livepg.topic_segment(value) END
                || pg_catalog.substr(part, close + 1);
        END IF;
        IF old_row IS NOT NULL THEN
            value := old_row ->> pg_catalog.left(part, close - 1);
            old_topic := old_topic
                || CASE WHEN pg_catalog.length(value) <= 64 AND value ~ '^[A-Za-z0-9_:@=+-][A-Za-z0-9_.:@=+-]*$'
                        THEN value ELSE livepg.topic_segment(value) END
                || pg_catalog.substr(part, close + 1);
        END IF;
    END LOOP;
    IF parts IS NULL THEN
        -- Any other template (a trigger made by hand): the general parse.
        new_topic := CASE WHEN new_row IS NOT NULL THEN livepg.render_topic(TG_ARGV[0], new_row) END;
        old_topic := CASE WHEN old_row IS NOT NULL THEN livepg.render_topic(TG_ARGV[0], old_row) END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        data := pg_catalog.jsonb_build_object('op', op, 'table', TG_TABLE_NAME, 'new', new_row);
    ELSIF TG_OP = 'UPDATE' THEN
        data := pg_catalog.jsonb_build_object('op', op, 'table', TG_TABLE_NAME, 'new', new_row, 'old', old_row);
    ELSE
        data := pg_catalog.jsonb_build_object('op', op, 'table', TG_TABLE_NAME, 'old', old_row);
    END IF;
    new_topic := coalesce(new_topic, old_topic);
    -- Through the view when the mode writes livepg.pending and the topics
    -- are valid; else through livepg.publish, for its clear errors and the
    -- commit_lock mode.
    IF parts IS NOT NULL
       AND pg_catalog.current_setting('track_commit_timestamp') = 'on'
       AND pg_catalog.length(new_topic) <= 256 AND new_topic ~ '^[A-Za-z0-9_.:@=+%-]+(/[A-Za-z0-9_.:@=+%-]+)*$'
       AND (old_topic IS NULL OR old_topic = new_topic
            OR (pg_catalog.length(old_topic) <= 256 AND old_topic ~ '^[A-Za-z0-9_.:@=+%-]+(/[A-Za-z0-9_.:@=+%-]+)*$')) THEN
        size := pg_catalog.octet_length(data::text);
        INSERT INTO livepg.captured (topic, type, data, size) VALUES (new_topic, op, data, size);
        -- A row that moved to another topic (a card to another board) is also
        -- announced where it was, so those subscribers see it leave.
        IF old_topic IS NOT NULL AND old_topic <> new_topic THEN
            INSERT INTO livepg.captured (topic, type, data, size) VALUES (old_topic, op, data, size);
        END IF;
    ELSE
        PERFORM livepg.publish(new_topic, data, op);
        IF old_topic IS NOT NULL AND old_topic <> new_topic THEN
            PERFORM livepg.publish(old_topic, data, op);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_row jsonb;
    old_row jsonb;
    op text := lower(TG_OP);
    new_topic text;
    old_topic text;
    data jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        new_row := to_jsonb(NEW);
        new_topic := livepg.render_topic(TG_ARGV[0], new_row);
        data := jsonb_build_object('op', op, 'table', TG_TABLE_NAME, 'new', new_row);
    ELSIF TG_OP = 'UPDATE' THEN
        new_row := to_jsonb(NEW);
        old_row := to_jsonb(OLD);
        new_topic := livepg.render_topic(TG_ARGV[0], new_row);
        old_topic := livepg.render_topic(TG_ARGV[0], old_row);
        data := jsonb_build_object('op', op, 'table', TG_TABLE_NAME, 'new', new_row, 'old', old_row);
    ELSE
        old_row := to_jsonb(OLD);
        old_topic := livepg.render_topic(TG_ARGV[0], old_row);
        data := jsonb_build_object('op', op, 'table', TG_TABLE_NAME, 'old', old_row);
    END IF;
    PERFORM livepg.publish(coalesce(new_topic, old_topic), data, op);
    -- A row that moved to another topic (a card to another board) is also
    -- announced where it was, so those subscribers see it leave.
    IF new_topic IS NOT NULL AND old_topic IS NOT NULL AND new_topic <> old_topic THEN
        PERFORM livepg.publish(old_topic, data, op);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
REVOKE USAGE ON SEQUENCE livepg.events_id_seq FROM livepg_writer;
DROP VIEW livepg.captured;
DROP FUNCTION livepg.event_too_large(text, integer, integer);
