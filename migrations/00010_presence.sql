-- Presence: who is on a topic now, kept in PostgreSQL alone.
--
-- livepg.presence holds one row per member of a topic: its id (opaque,
-- derived by the node from the member's identity and the page's own key,
-- so it stays the same across the page's reconnects), its identity (sub,
-- the token's subject, or '' for an anonymous member), a small JSON of the
-- page's own (meta) and the node that holds it. livepg.presence_nodes
-- holds each node's lease: a member is present while its node's lease
-- runs. A node renews its lease, for all its members at once, with one
-- statement per interval (livepg.presence_renew); the same statement
-- expires the leases of nodes that stopped renewing (a node killed) and
-- removes their members. A node writes the joins and leaves of its pages
-- in batches, one statement per flush (livepg.presence_flush).
--
-- Every change of the member set is published to the log in the same
-- transaction, on the member's topic, with type 'presence' and data
--   {"op":"join","id":...,"sub":...,"meta":...}   (a new member, or a
--                                                 member's meta changed)
--   {"op":"leave","id":...,"sub":...}
-- so that every node, and every page on the topic, sees them in commit
-- order, and the set as of any position of the log is the set the events
-- through it describe. Only sessions of livepg_node (a node) or of the
-- log's owner may write events of type 'presence': a writer cannot forge
-- a member's join or leave (livepg.presence_guard).
--
-- Reading the current set from SQL (as livepg_writer or livepg_node):
--   SELECT * FROM livepg.presence_members('boards/42');

-- +goose Up
CREATE TABLE livepg.presence_nodes (
    node       text PRIMARY KEY CHECK (length(node) BETWEEN 1 AND 200),
    expires_at timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE livepg.presence (
    topic     text NOT NULL CHECK (length(topic) BETWEEN 1 AND 256),
    id        text NOT NULL CHECK (length(id) BETWEEN 1 AND 64),
    sub       text NOT NULL CHECK (length(sub) <= 256),
    meta      jsonb CHECK (meta IS NULL OR octet_length(meta::text) <= 4096),
    node      text NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, id)
);
CREATE INDEX presence_node ON livepg.presence (node);

-- Events of type 'presence' come from nodes only.
-- +goose StatementBegin
CREATE FUNCTION livepg.presence_guard() RETURNS trigger
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

CREATE TRIGGER events_presence_guard
    BEFORE INSERT ON livepg.events
    FOR EACH ROW WHEN (NEW.type = 'presence') EXECUTE FUNCTION livepg.presence_guard();

-- livepg.presence_renew renews node's lease until now() + ttl and expires
-- every other node's lease that ran out, removing their members and
-- publishing their leaves (once: a node's lease row is deleted by one
-- statement only; a concurrent one waits for it and finds nothing). It
-- returns false when node had no lease: it was expired by another node (or
-- this is the node's first call), so its members were removed and the
-- node must join them again. A node stopping calls it with a short ttl
-- (the reconnect grace), so that its members leave soon unless their pages
-- joined again elsewhere.
-- +goose StatementBegin
CREATE FUNCTION livepg.presence_renew(node text, ttl interval) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    had_lease boolean;
    topics text[];
    types text[];
    data jsonb[];
BEGIN
    IF node IS NULL OR ttl IS NULL OR ttl <= interval '0' OR ttl > interval '1 hour' THEN
        RAISE EXCEPTION 'livepg.presence_renew: want a node and a ttl between 0 and 1 hour' USING ERRCODE = '22023';
    END IF;
    UPDATE livepg.presence_nodes n SET expires_at = pg_catalog.now() + ttl WHERE n.node = presence_renew.node;
    had_lease := FOUND;
    IF NOT had_lease THEN
        INSERT INTO livepg.presence_nodes AS n (node, expires_at) VALUES (presence_renew.node, pg_catalog.now() + ttl)
            ON CONFLICT ON CONSTRAINT presence_nodes_pkey DO UPDATE SET expires_at = EXCLUDED.expires_at;
    END IF;
    WITH dead AS (
        DELETE FROM livepg.presence_nodes n
         WHERE n.expires_at < pg_catalog.now() AND n.node <> presence_renew.node
        RETURNING n.node
    ), gone AS (
        DELETE FROM livepg.presence p USING dead WHERE p.node = dead.node
        RETURNING p.topic, p.id, p.sub
    )
    SELECT pg_catalog.array_agg(g.topic ORDER BY g.topic, g.id),
           pg_catalog.array_agg('presence'::text ORDER BY g.topic, g.id),
           pg_catalog.array_agg(pg_catalog.jsonb_build_object('op', 'leave', 'id', g.id, 'sub', g.sub) ORDER BY g.topic, g.id)
      INTO topics, types, data
      FROM gone g;
    IF topics IS NOT NULL THEN
        PERFORM livepg.publish_batch(topics, types, data);
    END IF;
    RETURN had_lease;
END
$$;
-- +goose StatementEnd

-- livepg.presence_flush writes one batch of a node's joins and leaves and
-- publishes the events they make, in one statement. A join of a member
-- that another node holds (its page reconnected there) moves it to this
-- node without an event (unless its sub or meta changed: then a join event
-- carries the new ones); a leave removes a member only if this node still
-- holds it. It returns false, changing nothing, when node has no lease:
-- the node must renew (livepg.presence_renew) and join its members again.
-- The arrays of joins (j_*) and of leaves (l_*) have equal lengths each.
-- +goose StatementBegin
CREATE FUNCTION livepg.presence_flush(node text, j_topics text[], j_ids text[], j_subs text[], j_metas jsonb[],
                                      l_topics text[], l_ids text[]) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nj int := coalesce(pg_catalog.cardinality(j_topics), 0);
    nl int := coalesce(pg_catalog.cardinality(l_topics), 0);
    topics text[] := '{}';
    types text[] := '{}';
    data jsonb[] := '{}';
    t text[];
    d jsonb[];
    o_topics text[];
    o_ids text[];
    o_subs text[];
    o_metas jsonb[];
BEGIN
    IF coalesce(pg_catalog.cardinality(j_ids), 0) <> nj OR coalesce(pg_catalog.cardinality(j_subs), 0) <> nj
       OR coalesce(pg_catalog.cardinality(j_metas), 0) <> nj OR coalesce(pg_catalog.cardinality(l_ids), 0) <> nl THEN
        RAISE EXCEPTION 'livepg.presence_flush: the arrays of joins, and those of leaves, must have equal lengths'
            USING ERRCODE = '22023';
    END IF;
    -- Holding the lease row until commit: a node expiring this one waits,
    -- then finds it renewed.
    UPDATE livepg.presence_nodes n SET expires_at = greatest(n.expires_at, pg_catalog.now())
     WHERE n.node = presence_flush.node;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    IF nl > 0 THEN
        WITH gone AS (
            DELETE FROM livepg.presence p
             USING (SELECT DISTINCT x.topic, x.id FROM unnest(l_topics, l_ids) AS x(topic, id)) l
             WHERE p.topic = l.topic AND p.id = l.id AND p.node = presence_flush.node
            RETURNING p.topic, p.id, p.sub
        )
        SELECT pg_catalog.array_agg(g.topic ORDER BY g.topic, g.id),
               pg_catalog.array_agg(pg_catalog.jsonb_build_object('op', 'leave', 'id', g.id, 'sub', g.sub) ORDER BY g.topic, g.id)
          INTO t, d FROM gone g;
        IF t IS NOT NULL THEN
            topics := topics || t;
            data := data || d;
        END IF;
    END IF;

    IF nj > 0 THEN
        -- Lock the members that exist (in key order, as every flush does),
        -- so that none leaves between this look and the upsert.
        SELECT pg_catalog.array_agg(o.topic), pg_catalog.array_agg(o.id), pg_catalog.array_agg(o.sub), pg_catalog.array_agg(o.meta)
          INTO o_topics, o_ids, o_subs, o_metas
          FROM (SELECT p.topic, p.id, p.sub, p.meta
                  FROM livepg.presence p
                 WHERE (p.topic, p.id) IN (SELECT x.topic, x.id FROM unnest(j_topics, j_ids) AS x(topic, id))
                 ORDER BY p.topic, p.id
                   FOR UPDATE OF p) o;
        WITH j AS (
            SELECT DISTINCT ON (x.topic, x.id) x.topic, x.id, x.sub, x.meta
              FROM unnest(j_topics, j_ids, j_subs, j_metas) WITH ORDINALITY AS x(topic, id, sub, meta, i)
             ORDER BY x.topic, x.id, x.i DESC
        ), up AS (
            INSERT INTO livepg.presence AS p (topic, id, sub, meta, node)
            SELECT j.topic, j.id, j.sub, j.meta, presence_flush.node FROM j ORDER BY j.topic, j.id
            ON CONFLICT ON CONSTRAINT presence_pkey DO UPDATE
               SET node = EXCLUDED.node, sub = EXCLUDED.sub, meta = EXCLUDED.meta
            RETURNING p.topic, p.id, p.sub, p.meta
        )
        SELECT pg_catalog.array_agg(up.topic ORDER BY up.topic, up.id),
               pg_catalog.array_agg(pg_catalog.jsonb_build_object('op', 'join', 'id', up.id, 'sub', up.sub, 'meta', up.meta) ORDER BY up.topic, up.id)
          INTO t, d
          FROM up LEFT JOIN unnest(o_topics, o_ids, o_subs, o_metas) AS o(topic, id, sub, meta)
            ON o.topic = up.topic AND o.id = up.id
         WHERE o.id IS NULL OR o.sub IS DISTINCT FROM up.sub OR o.meta IS DISTINCT FROM up.meta;
        IF t IS NOT NULL THEN
            topics := topics || t;
            data := data || d;
        END IF;
    END IF;

    IF pg_catalog.cardinality(topics) > 0 THEN
        SELECT pg_catalog.array_agg('presence'::text) INTO types FROM pg_catalog.generate_series(1, pg_catalog.cardinality(topics));
        PERFORM livepg.publish_batch(topics, types, data);
    END IF;
    RETURN true;
END
$$;
-- +goose StatementEnd

-- The current members of a topic, for SQL readers.
-- +goose StatementBegin
CREATE FUNCTION livepg.presence_members(topic text)
RETURNS TABLE (id text, sub text, meta jsonb, node text, joined_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.id, p.sub, p.meta, p.node, p.joined_at
      FROM livepg.presence p
     WHERE p.topic = presence_members.topic
     ORDER BY p.joined_at, p.id
$$;
-- +goose StatementEnd

REVOKE ALL ON livepg.presence, livepg.presence_nodes FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION livepg.presence_guard(), livepg.presence_renew(text, interval),
    livepg.presence_flush(text, text[], text[], text[], jsonb[], text[], text[]),
    livepg.presence_members(text) FROM PUBLIC;
GRANT SELECT ON livepg.presence, livepg.presence_nodes TO livepg_node;
GRANT EXECUTE ON FUNCTION livepg.presence_renew(text, interval),
    livepg.presence_flush(text, text[], text[], text[], jsonb[], text[], text[]) TO livepg_node;
GRANT EXECUTE ON FUNCTION livepg.presence_members(text) TO livepg_writer, livepg_node;

-- +goose Down
DROP FUNCTION livepg.presence_members(text);
DROP FUNCTION livepg.presence_flush(text, text[], text[], text[], jsonb[], text[], text[]);
DROP FUNCTION livepg.presence_renew(text, interval);
DROP TRIGGER events_presence_guard ON livepg.events;
DROP FUNCTION livepg.presence_guard();
DROP TABLE livepg.presence;
DROP TABLE livepg.presence_nodes;
