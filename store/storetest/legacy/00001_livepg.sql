-- livepg's event log: capture, commit-ordered sequence and wake-up signal.
--
-- How an event gets its seq: every writer inserts its events with seq NULL.
-- A DEFERRABLE INITIALLY DEFERRED constraint trigger fires at commit, takes a
-- transaction-scoped advisory lock and numbers the transaction's events from
-- livepg.events_seq. The lock is released only after the commit is visible to
-- other sessions, so whoever takes it next numbers its events after every
-- event already visible: seq order is commit order, and a reader that has
-- seen seq N can never later find a committed seq below N. An aborted
-- transaction leaves no visible row and no seq.

-- +goose Up
CREATE SCHEMA livepg;

CREATE TABLE livepg.events (
    -- Provisional id, taken at insert time; only used to find the row again.
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Commit-ordered position; set by livepg.sequence() at commit.
    seq          bigint UNIQUE,
    topic        text NOT NULL,
    type         text NOT NULL,
    data         jsonb NOT NULL,
    committed_at timestamptz,
    CONSTRAINT events_topic_check CHECK (
        length(topic) <= 256 AND topic ~ '^[A-Za-z0-9_.:@=+-]+(/[A-Za-z0-9_.:@=+-]+)*$'),
    CONSTRAINT events_type_check CHECK (type ~ '^[A-Za-z0-9_.:-]{1,64}$')
);

CREATE SEQUENCE livepg.events_seq AS bigint;

-- One row: how far the log has been pruned. A resume point below it may have
-- missed events that are gone, so the client is told to reset.
CREATE TABLE livepg.state (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through bigint NOT NULL DEFAULT 0
);
INSERT INTO livepg.state DEFAULT VALUES;

-- Tables captured by livepg.track, with their topic templates.
CREATE TABLE livepg.tracked (
    tbl   regclass PRIMARY KEY,
    topic text NOT NULL
);

-- +goose StatementBegin
CREATE FUNCTION livepg.sequence() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Re-entrant: the first event of the transaction takes the lock, the
    -- others find it already held.
    PERFORM pg_advisory_xact_lock(7236828372618428007);
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

CREATE CONSTRAINT TRIGGER events_sequence
    AFTER INSERT ON livepg.events
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION livepg.sequence();

-- +goose StatementBegin
CREATE FUNCTION livepg.publish(topic text, data jsonb, type text DEFAULT 'message')
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    event_id bigint;
BEGIN
    IF topic IS NULL THEN
        RAISE EXCEPTION 'livepg.publish: topic must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF type IS NULL THEN
        RAISE EXCEPTION 'livepg.publish: type must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF length(topic) > 256 OR topic !~ '^[A-Za-z0-9_.:@=+-]+(/[A-Za-z0-9_.:@=+-]+)*$' THEN
        RAISE EXCEPTION 'livepg.publish: invalid topic %', quote_literal(topic)
            USING ERRCODE = '22023',
                  HINT = 'A topic is 1-256 characters: segments of letters, digits and _.:@=+- separated by single slashes.';
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
$$;
-- +goose StatementEnd

-- livepg.head() is the highest seq committed in the caller's snapshot: read it
-- in the same REPEATABLE READ transaction as a page's state and resume the
-- page's stream from it.
-- +goose StatementBegin
CREATE FUNCTION livepg.head() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT max(seq) FROM livepg.events),
                    (SELECT pruned_through FROM livepg.state))
$$;
-- +goose StatementEnd

-- livepg.render_topic fills a template such as 'boards/{board_id}' from a row.
-- +goose StatementBegin
CREATE FUNCTION livepg.render_topic(template text, row_data jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    m text[];
    result text := template;
    value text;
BEGIN
    FOR m IN SELECT regexp_matches(template, '\{([^{}]+)\}', 'g') LOOP
        value := row_data ->> m[1];
        IF value IS NULL THEN
            RAISE EXCEPTION 'livepg: topic template % needs column %, which is NULL in this row',
                quote_literal(template), quote_ident(m[1])
                USING ERRCODE = '22004';
        END IF;
        result := replace(result, '{' || m[1] || '}', value);
    END LOOP;
    RETURN result;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION livepg.capture() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    new_row jsonb;
    old_row jsonb;
    op text := lower(TG_OP);
    new_topic text;
    old_topic text;
    data jsonb;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        new_row := to_jsonb(NEW);
        new_topic := livepg.render_topic(TG_ARGV[0], new_row);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_row := to_jsonb(OLD);
        old_topic := livepg.render_topic(TG_ARGV[0], old_row);
    END IF;
    data := jsonb_build_object('op', op, 'table', TG_TABLE_NAME);
    IF new_row IS NOT NULL THEN
        data := data || jsonb_build_object('new', new_row);
    END IF;
    IF old_row IS NOT NULL THEN
        data := data || jsonb_build_object('old', old_row);
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

-- +goose StatementBegin
CREATE FUNCTION livepg.track(tbl regclass, topic text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    col text;
BEGIN
    IF tbl IS NULL OR topic IS NULL THEN
        RAISE EXCEPTION 'livepg.track: table and topic must not be NULL' USING ERRCODE = '22004';
    END IF;
    FOR col IN SELECT (regexp_matches(topic, '\{([^{}]+)\}', 'g'))[1] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_attribute
                        WHERE attrelid = tbl AND attname = col AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION 'livepg.track: table % has no column %', tbl, quote_ident(col)
                USING ERRCODE = '42703';
        END IF;
    END LOOP;
    -- Check the template's fixed parts by rendering it with a sample value.
    IF length(regexp_replace(topic, '\{[^{}]+\}', 'x', 'g')) > 256
       OR regexp_replace(topic, '\{[^{}]+\}', 'x', 'g') !~ '^[A-Za-z0-9_.:@=+-]+(/[A-Za-z0-9_.:@=+-]+)*$' THEN
        RAISE EXCEPTION 'livepg.track: invalid topic template %', quote_literal(topic)
            USING ERRCODE = '22023',
                  HINT = 'Use segments of letters, digits and _.:@=+- and {column} placeholders, separated by slashes.';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS livepg_capture ON %s', tbl);
    EXECUTE format('CREATE TRIGGER livepg_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION livepg.capture(%L)', tbl, topic);
    INSERT INTO livepg.tracked (tbl, topic) VALUES (tbl, topic)
        ON CONFLICT ON CONSTRAINT tracked_pkey DO UPDATE SET topic = EXCLUDED.topic;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION livepg.untrack(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS livepg_capture ON %s', tbl);
    DELETE FROM livepg.tracked t WHERE t.tbl = untrack.tbl;
END
$$;
-- +goose StatementEnd

-- livepg.prune deletes events committed longer ago than keep. It runs in one
-- session at a time (other callers return NULL at once) and returns the seq
-- through which the log is now pruned.
-- +goose StatementBegin
CREATE FUNCTION livepg.prune(keep interval) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    horizon bigint;
    through bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(7236828372618428008) THEN
        RETURN NULL;
    END IF;
    -- seq and committed_at grow together, so walking seq upwards touches only
    -- the rows to delete and the first one to keep.
    SELECT e.seq INTO horizon FROM livepg.events e
     WHERE e.seq IS NOT NULL AND e.committed_at >= now() - keep
     ORDER BY e.seq LIMIT 1;
    IF horizon IS NULL THEN
        SELECT max(e.seq) + 1 INTO horizon FROM livepg.events e;
    END IF;
    IF horizon IS NOT NULL THEN
        DELETE FROM livepg.events e WHERE e.seq < horizon;
        UPDATE livepg.state SET pruned_through = greatest(pruned_through, horizon - 1);
    END IF;
    SELECT pruned_through INTO through FROM livepg.state;
    RETURN through;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP SCHEMA livepg CASCADE;
