-- Templates cannot reshape topics: a placeholder's value fills exactly one
-- segment, encoded.
--
-- livepg.topic_segment(value) is the encoding (realtime.TopicSegment in Go is
-- the same, byte for byte):
--
--   * The bytes of the value's UTF-8 that are in A-Za-z0-9_.:@=+- are kept;
--     every other byte becomes %XX (uppercase hex). So '/' is %2F, a space
--     %20, '{' %7B, '%' %25, 'é' %C3%A9.
--   * A value made only of dots ('.', '..') is encoded entirely: %2E%2E.
--   * The empty string renders as %%; NULL (SQL NULL, JSON null, a missing
--     column) as %00, which no text value encodes to (text cannot hold NUL).
--     A NULL never fails the application's write.
--   * An encoding longer than 64 bytes renders as its first 32 bytes or
--     fewer (never cutting an escape), then %%, then the first 32 hex digits
--     of the sha256 of the value's UTF-8: at most 66 bytes. An ordinary
--     encoding never contains %%, so distinct values still render apart (up
--     to sha256).
--
-- Placeholders are filled in one pass, left to right, and a value is never
-- scanned again: '{other}' inside a value stays literal (encoded).
--
-- The topic grammar gains % as a segment character (the events table's
-- CHECK, livepg.publish, livepg.track's template check), and livepg.track
-- refuses a template whose longest rendering (its fixed text plus 66 bytes
-- per placeholder) exceeds 256 bytes, so a tracked table's write never fails
-- because of a value.

-- +goose Up
ALTER TABLE livepg.events DROP CONSTRAINT events_topic_check;
ALTER TABLE livepg.events ADD CONSTRAINT events_topic_check CHECK (
    length(topic) <= 256 AND topic ~ '^[A-Za-z0-9_.:@=+%-]+(/[A-Za-z0-9_.:@=+%-]+)*$');

-- +goose StatementBegin
CREATE FUNCTION livepg.topic_segment(value text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    raw bytea;
    encoded text;
    keep int := 32;
BEGIN
    IF value IS NULL THEN
        RETURN '%00';
    END IF;
    IF value = '' THEN
        RETURN '%%';
    END IF;
    raw := convert_to(value, 'UTF8');
    IF value ~ '^\.+$' THEN
        encoded := repeat('%2E', length(value));
    ELSIF value ~ '^[A-Za-z0-9_.:@=+-]+$' THEN
        encoded := value;
    ELSE
        SELECT string_agg(CASE WHEN b BETWEEN 48 AND 57      -- 0-9
                                 OR b BETWEEN 65 AND 90      -- A-Z
                                 OR b BETWEEN 97 AND 122     -- a-z
                                 OR b IN (43, 45, 46, 58, 61, 64, 95) -- + - . : = @ _
                               THEN chr(b)
                               ELSE '%' || upper(lpad(to_hex(b), 2, '0')) END,
                          '' ORDER BY i)
          INTO encoded
          FROM generate_series(0, length(raw) - 1) AS i,
               LATERAL (SELECT get_byte(raw, i) AS b) AS byte;
    END IF;
    IF length(encoded) <= 64 THEN
        RETURN encoded;
    END IF;
    -- Keep 32 bytes, or fewer when an escape would be cut.
    IF substr(encoded, 31, 1) = '%' THEN
        keep := 30;
    ELSIF substr(encoded, 32, 1) = '%' THEN
        keep := 31;
    END IF;
    RETURN left(encoded, keep) || '%%' || left(encode(sha256(raw), 'hex'), 32);
END
$$;
-- +goose StatementEnd

-- livepg.render_topic fills a template such as 'boards/{board_id}' from a
-- row: each {column} becomes livepg.topic_segment of the column's value.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.render_topic(template text, row_data jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fixed text[] := regexp_split_to_array(template, '\{[^{}]+\}');
    names text[] := ARRAY(SELECT m.found[1]
                            FROM regexp_matches(template, '\{([^{}]+)\}', 'g') WITH ORDINALITY AS m(found, i)
                           ORDER BY m.i);
    result text := fixed[1];
BEGIN
    FOR i IN 1 .. coalesce(cardinality(names), 0) LOOP
        result := result || livepg.topic_segment(row_data ->> names[i]) || fixed[i + 1];
    END LOOP;
    RETURN result;
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
    INSERT INTO livepg.events (topic, type, data)
    VALUES (topic, type, coalesce(data, 'null'::jsonb))
    RETURNING id INTO event_id;
    RETURN event_id;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.track(tbl regclass, topic text) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    col text;
    placeholders int := 0;
    fixed_bytes int;
BEGIN
    IF tbl IS NULL OR topic IS NULL THEN
        RAISE EXCEPTION 'livepg.track: table and topic must not be NULL' USING ERRCODE = '22004';
    END IF;
    FOR col IN SELECT (regexp_matches(topic, '\{([^{}]+)\}', 'g'))[1] LOOP
        placeholders := placeholders + 1;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                        WHERE attrelid = tbl AND attname = col AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION 'livepg.track: table % has no column %', tbl, quote_ident(col)
                USING ERRCODE = '42703';
        END IF;
    END LOOP;
    -- Check the template's fixed parts by rendering it with a sample value.
    IF regexp_replace(topic, '\{[^{}]+\}', 'x', 'g') !~ '^[A-Za-z0-9_.:@=+%-]+(/[A-Za-z0-9_.:@=+%-]+)*$' THEN
        RAISE EXCEPTION 'livepg.track: invalid topic template %', quote_literal(topic)
            USING ERRCODE = '22023',
                  HINT = 'Use segments of letters, digits and _.:@=+-% and {column} placeholders, separated by slashes.';
    END IF;
    fixed_bytes := octet_length(regexp_replace(topic, '\{[^{}]+\}', '', 'g'));
    IF fixed_bytes + 66 * placeholders > 256 THEN
        RAISE EXCEPTION 'livepg.track: topic template % may render longer than 256 bytes: % bytes of fixed text and % placeholders of up to 66 bytes each',
            quote_literal(topic), fixed_bytes, placeholders
            USING ERRCODE = '22023',
                  HINT = 'A placeholder renders as at most 66 bytes (a longer value is shortened and hashed); shorten the template or use fewer placeholders.';
    END IF;
    EXECUTE format('CREATE OR REPLACE TRIGGER livepg_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION livepg.capture(%L)', tbl, topic);
END
$$;
-- +goose StatementEnd

REVOKE EXECUTE ON FUNCTION livepg.topic_segment(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION livepg.topic_segment(text) TO livepg_writer;

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.track(tbl regclass, topic text) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    col text;
BEGIN
    IF tbl IS NULL OR topic IS NULL THEN
        RAISE EXCEPTION 'livepg.track: table and topic must not be NULL' USING ERRCODE = '22004';
    END IF;
    FOR col IN SELECT (regexp_matches(topic, '\{([^{}]+)\}', 'g'))[1] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                        WHERE attrelid = tbl AND attname = col AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION 'livepg.track: table % has no column %', tbl, quote_ident(col)
                USING ERRCODE = '42703';
        END IF;
    END LOOP;
    IF length(regexp_replace(topic, '\{[^{}]+\}', 'x', 'g')) > 256
       OR regexp_replace(topic, '\{[^{}]+\}', 'x', 'g') !~ '^[A-Za-z0-9_.:@=+-]+(/[A-Za-z0-9_.:@=+-]+)*$' THEN
        RAISE EXCEPTION 'livepg.track: invalid topic template %', quote_literal(topic)
            USING ERRCODE = '22023',
                  HINT = 'Use segments of letters, digits and _.:@=+- and {column} placeholders, separated by slashes.';
    END IF;
    EXECUTE format('CREATE OR REPLACE TRIGGER livepg_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION livepg.capture(%L)', tbl, topic);
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

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.render_topic(template text, row_data jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
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

DROP FUNCTION livepg.topic_segment(text);

-- Events published with a % in their topic stay; the old grammar holds for
-- new ones.
ALTER TABLE livepg.events DROP CONSTRAINT events_topic_check;
ALTER TABLE livepg.events ADD CONSTRAINT events_topic_check CHECK (
    length(topic) <= 256 AND topic ~ '^[A-Za-z0-9_.:@=+-]+(/[A-Za-z0-9_.:@=+-]+)*$') NOT VALID;
