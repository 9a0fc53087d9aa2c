-- The node registry: every node writes a row about itself every few seconds
-- (its id, address, region, start, and a small JSON of its figures: streams,
-- topics, events/s, lag, listener, log), so that the inspector page of any
-- node shows every node it can see through the database.
--
-- A row belongs to the node that writes it, through livepg.node_beat, which
-- runs as livepg's owner and bounds what a caller can store: ids, addresses
-- and regions of bounded length, stats of at most 64 KiB as JSON text. Each
-- beat also forgets rows not written for ten minutes (nodes that died
-- without a word); a node that stops in order removes its own row
-- (livepg.node_leave). A row is stale, its node presumed dead, when it has
-- not been written for three of its own beat intervals (every_ms): readers
-- compute that with the database's clock, so no two nodes' clocks are
-- compared.
--
-- livepg_node may read the registry and call both functions; nothing else may
-- touch it. The rate is a few small rows per node per beat (5 s by default),
-- never per event or per stream: the figures that change by the second stay
-- in the node, which serves them to its own inspector page over its own
-- stream.

-- +goose Up
CREATE TABLE livepg.nodes (
    id         text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    address    text NOT NULL DEFAULT '' CHECK (length(address) <= 256),
    region     text NOT NULL DEFAULT '' CHECK (length(region) <= 64),
    started_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL,
    every_ms   integer NOT NULL CHECK (every_ms BETWEEN 100 AND 3600000),
    stats      jsonb NOT NULL DEFAULT '{}'
);

-- +goose StatementBegin
CREATE FUNCTION livepg.node_beat(node_id text, node_address text, node_region text,
                                 node_started_at timestamptz, every interval, node_stats jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ms integer;
BEGIN
    IF node_id IS NULL OR length(node_id) NOT BETWEEN 1 AND 128 THEN
        RAISE EXCEPTION 'livepg: a node id has 1 to 128 characters' USING ERRCODE = '22023';
    END IF;
    IF every IS NULL OR every < interval '100 milliseconds' OR every > interval '1 hour' THEN
        RAISE EXCEPTION 'livepg: a node beats every 100 ms to 1 hour, not %', every USING ERRCODE = '22023';
    END IF;
    IF node_stats IS NOT NULL AND octet_length(node_stats::text) > 65536 THEN
        RAISE EXCEPTION 'livepg: node stats are % bytes as JSON text, more than 65536', octet_length(node_stats::text)
            USING ERRCODE = '54000';
    END IF;
    ms := (extract(epoch FROM every) * 1000)::integer;
    INSERT INTO livepg.nodes AS n (id, address, region, started_at, seen_at, every_ms, stats)
    VALUES (node_id, left(coalesce(node_address, ''), 256), left(coalesce(node_region, ''), 64),
            coalesce(node_started_at, now()), now(), ms, coalesce(node_stats, '{}'))
    ON CONFLICT (id) DO UPDATE
       SET address = EXCLUDED.address, region = EXCLUDED.region, started_at = EXCLUDED.started_at,
           seen_at = EXCLUDED.seen_at, every_ms = EXCLUDED.every_ms, stats = EXCLUDED.stats;
    DELETE FROM livepg.nodes n WHERE n.seen_at < now() - interval '10 minutes';
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION livepg.node_leave(node_id text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM livepg.nodes n WHERE n.id = node_id;
$$;
-- +goose StatementEnd

REVOKE ALL ON livepg.nodes FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION livepg.node_beat(text, text, text, timestamptz, interval, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION livepg.node_leave(text) FROM PUBLIC;
GRANT SELECT ON livepg.nodes TO livepg_node;
GRANT EXECUTE ON FUNCTION livepg.node_beat(text, text, text, timestamptz, interval, jsonb) TO livepg_node;
GRANT EXECUTE ON FUNCTION livepg.node_leave(text) TO livepg_node;

-- +goose Down
DROP FUNCTION livepg.node_leave(text);
DROP FUNCTION livepg.node_beat(text, text, text, timestamptz, interval, jsonb);
DROP TABLE livepg.nodes;
