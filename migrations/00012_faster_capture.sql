-- Cheaper writes to tracked tables: every write to a tracked table runs
-- livepg.capture, which renders the row's topic from the template with
-- livepg.render_topic. The old render_topic parsed the template with two
-- regular expressions and a subquery on every row (one query through SPI
-- per row); the new one walks the template with strpos when it has the
-- shape every template livepg.track accepts (fixed text without braces,
-- and {column} placeholders without braces inside), and falls back to the
-- old parse for anything else, so that its result is the same for every
-- template. capture builds its event's data in one jsonb_build_object.
-- Nothing else changes: capture still runs as the writer and records
-- through livepg.publish (00004 says why).
--
-- Measured (BENCHMARKS.md, "The bus: where the writers' time goes"):
-- tracked-table writes at 16 writers, synchronous_commit off, no node
-- running: 0.40x INSERT+NOTIFY before, see there for after.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.render_topic(template text, row_data jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result text := '';
    rest text := template;
    open int;
    close int;
    name text;
    fixed text[];
    names text[];
BEGIN
    -- The common shape: each '{' opens a placeholder that the next '}'
    -- closes, with no brace in the fixed text or in a column name.
    LOOP
        open := strpos(rest, '{');
        close := strpos(rest, '}');
        IF open = 0 AND close = 0 THEN
            RETURN result || rest;
        END IF;
        EXIT WHEN open = 0 OR close < open + 2;
        name := substr(rest, open + 1, close - open - 1);
        EXIT WHEN strpos(name, '{') > 0;
        result := result || left(rest, open - 1) || livepg.topic_segment(row_data ->> name);
        rest := substr(rest, close + 1);
    END LOOP;
    -- Any other template: the general parse (00005's), placeholders being
    -- the matches of \{[^{}]+\}.
    fixed := regexp_split_to_array(template, '\{[^{}]+\}');
    names := ARRAY(SELECT m.found[1]
                     FROM regexp_matches(template, '\{([^{}]+)\}', 'g') WITH ORDINALITY AS m(found, i)
                    ORDER BY m.i);
    result := fixed[1];
    FOR i IN 1 .. coalesce(cardinality(names), 0) LOOP
        result := result || livepg.topic_segment(row_data ->> names[i]) || fixed[i + 1];
    END LOOP;
    RETURN result;
END
$$;
-- +goose StatementEnd

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

-- +goose Down
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
    IF new_topic IS NOT NULL AND old_topic IS NOT NULL AND new_topic <> old_topic THEN
        PERFORM livepg.publish(old_topic, data, op);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
