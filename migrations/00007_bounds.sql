-- Bounds on what the log holds and on what reading it costs.
--
-- An event's size is its data as JSON text, as every node delivers it
-- (octet_length(data::text)): jsonb stores the number 1e131071 in a few
-- bytes but prints it as 131,072 digits, so the size of what a writer sent
-- says nothing. livepg.limits holds the one limit that writers and nodes
-- agree on, max_event_size (default 524288 bytes, LIVEPG_MAX_EVENT_SIZE's
-- default); change it as livepg's owner:
--
--   UPDATE livepg.limits SET max_event_size = 1048576;
--
-- A BEFORE INSERT trigger on the log measures every new event — whoever
-- writes it: livepg.publish, livepg.publish_batch, tracked tables — stores
-- the size in events.size and refuses an event larger than the limit with
-- SQLSTATE 54000 (program_limit_exceeded). Measuring renders the text once,
-- in the writer's own backend, and the writer gets the error.
--
-- Nodes read the size first and an event's data only when it is within the
-- limit: a larger one (written before this migration, or before the limit
-- was lowered) is delivered as a placeholder with its id, never loaded. Rows
-- written before this migration have no size (NULL); nodes read them with a
-- fallback that skips a row whose data cannot be read.
--
-- The index on (topic, seq), in C collation, lets a catch-up read each of a
-- subscriber's selectors as a range of it: a selector with no events costs
-- one index probe, whatever the log holds (see store/events.go). On a large
-- log, building it takes a while and holds back writers of events
-- meanwhile: run `livepg migrate up` at a quiet time.

-- +goose Up
CREATE TABLE livepg.limits (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    max_event_size integer NOT NULL DEFAULT 524288 CHECK (max_event_size > 0)
);
INSERT INTO livepg.limits DEFAULT VALUES;

ALTER TABLE livepg.events ADD COLUMN size integer;

-- +goose StatementBegin
CREATE FUNCTION livepg.measure() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    limit_bytes integer;
BEGIN
    SELECT l.max_event_size INTO limit_bytes FROM livepg.limits l;
    NEW.size := octet_length(NEW.data::text);
    IF NEW.size > limit_bytes THEN
        RAISE EXCEPTION 'livepg: event data on topic % is % bytes as JSON text, more than the limit of % bytes',
            quote_literal(NEW.topic), NEW.size, limit_bytes
            USING ERRCODE = '54000',
                  HINT = 'The limit is livepg.limits.max_event_size. Numbers count as PostgreSQL prints them: 1e1000 is 1,001 bytes.';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_measure
    BEFORE INSERT ON livepg.events
    FOR EACH ROW EXECUTE FUNCTION livepg.measure();

CREATE INDEX events_topic_seq ON livepg.events ((topic COLLATE "C"), seq);

REVOKE ALL ON livepg.limits FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION livepg.measure() FROM PUBLIC;
GRANT SELECT ON livepg.limits TO livepg_node;

-- +goose Down
DROP INDEX livepg.events_topic_seq;
DROP TRIGGER events_measure ON livepg.events;
DROP FUNCTION livepg.measure();
ALTER TABLE livepg.events DROP COLUMN size;
DROP TABLE livepg.limits;
