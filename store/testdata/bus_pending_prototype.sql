-- A prototype, for BenchmarkBus only (LIVEPG_BENCH_SETUP_FILE), not a
-- migration: livepg.publish writes a narrow row into livepg.pending (its
-- own statement trigger NOTIFYs), and the numbering step moves committed
-- pending rows into livepg.events with their seq (one DELETE ... RETURNING
-- feeding one INSERT), instead of updating event rows in place. It leaves
-- out what a real change needs (the size check and the presence guard on
-- pending, commit-timestamp order, head(), the commit_lock and logical
-- modes, the mode switch): BENCHMARKS.md, "The bus: where the writers'
-- time goes", says what it measured and what is missing.
--
--   LIVEPG_BENCH_SETUP_FILE=testdata/bus_pending_prototype.sql \
--     go test ./store -run '^$' -bench 'BenchmarkBus/bus=/sync=/writers=16$' -benchtime 3s
CREATE TABLE livepg.pending (id bigint PRIMARY KEY, topic text NOT NULL, type text NOT NULL, data jsonb NOT NULL);
CREATE TRIGGER pending_notify AFTER INSERT ON livepg.pending FOR EACH STATEMENT EXECUTE FUNCTION livepg.notify();
ALTER TABLE livepg.events DISABLE TRIGGER events_notify;
CREATE OR REPLACE FUNCTION livepg.publish(topic text, data jsonb, type text DEFAULT 'message')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
        RAISE EXCEPTION 'livepg.publish: invalid topic %', quote_literal(topic) USING ERRCODE = '22023';
    END IF;
    IF type !~ '^[A-Za-z0-9_.:-]{1,64}$' THEN
        RAISE EXCEPTION 'livepg.publish: invalid type %', quote_literal(type) USING ERRCODE = '22023';
    END IF;
    INSERT INTO livepg.pending (id, topic, type, data)
    VALUES (nextval(pg_get_serial_sequence('livepg.events', 'id')), topic, type, coalesce(data, 'null'::jsonb))
    RETURNING id INTO event_id;
    RETURN event_id;
END
$$;
CREATE OR REPLACE FUNCTION livepg.number_pending(max_rows integer DEFAULT 10000, OUT numbered integer, OUT head bigint)
RETURNS record LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    numbered := 0;
    IF EXISTS (SELECT 1 FROM livepg.pending) THEN
        PERFORM pg_advisory_xact_lock(7236828372618428007);
        WITH moved AS (
            DELETE FROM livepg.pending p
             WHERE p.id IN (SELECT q.id FROM livepg.pending q ORDER BY q.id LIMIT max_rows)
            RETURNING p.id, p.topic, p.type, p.data)
        INSERT INTO livepg.events (id, seq, topic, type, data, committed_at) OVERRIDING SYSTEM VALUE
        SELECT m.id, nextval('livepg.events_seq'), m.topic, m.type, m.data, now() FROM moved m;
        GET DIAGNOSTICS numbered = ROW_COUNT;
    END IF;
    SELECT coalesce((SELECT max(e.seq) FROM livepg.events e), s.pruned_through) INTO head FROM livepg.state s;
END
$$;
