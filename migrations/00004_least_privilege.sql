-- Least privilege, enforced by PostgreSQL.
--
-- The log (livepg.events), its state (livepg.state) and its sequence
-- (livepg.events_seq) belong to the role that runs the migrations, livepg's
-- owner, and to nobody else: no other role holds any privilege on them. They
-- are written only through functions that run as the owner (SECURITY
-- DEFINER, with a fixed search_path and every livepg name qualified), and
-- those functions bound what a caller can do: publish an event, which gets
-- its seq at commit.
--
-- Two roles, NOLOGIN, are created when missing (roles belong to the whole
-- cluster: a second database in it finds them there). Grant them to login
-- roles:
--
--   livepg_writer  publish, publish_batch, head; track and untrack its own
--                  tables (PostgreSQL checks its TRIGGER privilege and
--                  ownership of the table); its writes to tracked tables
--                  produce events (every role that writes to a tracked
--                  table needs it). It cannot read the log, nor change it
--                  but through those functions.
--   livepg_node    what a livepg node needs: read the log, its state and
--                  the version table, prune, and (as a member of
--                  livepg_writer) publish over HTTP. LISTEN and NOTIFY need
--                  no grant.
--
-- livepg.tracked becomes a view over pg_trigger: the tracked tables are the
-- tables that have livepg's capture trigger, so there is no list to tamper
-- with or to fall out of step.
--
-- A function added to schema livepg by a later migration must be revoked
-- from PUBLIC there (PostgreSQL grants EXECUTE to PUBLIC by default).

-- +goose Up

-- +goose StatementBegin
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['livepg_writer', 'livepg_node'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'livepg: role % does not exist, and role % may not create it', r, current_user
                        USING ERRCODE = '42501',
                              HINT = format('Create it as a superuser (CREATE ROLE %I NOLOGIN;) or give %I the CREATEROLE attribute, then run livepg migrate up again.', r, current_user);
                WHEN duplicate_object OR unique_violation THEN
                    NULL; -- a migration of another database created it meanwhile
            END;
        END IF;
    END LOOP;
    IF NOT pg_catalog.pg_has_role('livepg_node', 'livepg_writer', 'MEMBER') THEN
        BEGIN
            GRANT livepg_writer TO livepg_node;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'livepg: role livepg_node must be a member of livepg_writer, and role % may not grant it', current_user
                    USING ERRCODE = '42501',
                          HINT = 'Run GRANT livepg_writer TO livepg_node; as a superuser, then run livepg migrate up again.';
            WHEN unique_violation THEN
                NULL; -- a migration of another database granted it meanwhile
        END;
    END IF;
END
$$;
-- +goose StatementEnd

-- Take back every privilege anyone but the owner holds on livepg's tables,
-- sequences and functions (the README's old recipe granted INSERT, UPDATE
-- and SELECT on the log and USAGE and UPDATE on its sequence), and CREATE on
-- the schema.
-- +goose StatementBegin
DO $$
DECLARE
    obj record;
    grantee text;
BEGIN
    FOR obj IN
        SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
               format('%I.%I', n.nspname, c.relname) AS name, c.relowner AS owner, c.relacl AS acl
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'livepg' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
        UNION ALL
        SELECT 'FUNCTION', p.oid::pg_catalog.regprocedure::text, p.proowner, p.proacl
          FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'livepg'
    LOOP
        FOR grantee IN
            SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::pg_catalog.regrole::text END
              FROM pg_catalog.aclexplode(obj.acl) a
             WHERE a.grantee <> obj.owner
        LOOP
            EXECUTE format('REVOKE ALL ON %s %s FROM %s', obj.kind, obj.name, grantee);
        END LOOP;
    END LOOP;
    FOR grantee IN
        SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::pg_catalog.regrole::text END
          FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
         WHERE n.nspname = 'livepg' AND a.grantee <> n.nspowner AND a.privilege_type = 'CREATE'
    LOOP
        EXECUTE format('REVOKE CREATE ON SCHEMA livepg FROM %s', grantee);
    END LOOP;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON livepg.events, livepg.state, livepg.tracked FROM PUBLIC;
REVOKE ALL ON SEQUENCE livepg.events_seq FROM PUBLIC;

-- The tracked tables are those with livepg's capture trigger; the template
-- is the trigger's argument.
DROP TABLE livepg.tracked;
CREATE VIEW livepg.tracked AS
SELECT t.tgrelid::pg_catalog.regclass AS tbl,
       pg_catalog.convert_from(pg_catalog.substr(t.tgargs, 1, pg_catalog.length(t.tgargs) - 1),
                               pg_catalog.getdatabaseencoding()) AS topic
  FROM pg_catalog.pg_trigger t
 WHERE t.tgname = 'livepg_capture'
   AND t.tgfoid = 'livepg.capture()'::pg_catalog.regprocedure
   AND t.tgnargs = 1;

-- The functions that write the log run as its owner. livepg.sequence is the
-- deferred constraint trigger: it fires at commit as whoever commits.
ALTER FUNCTION livepg.sequence() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
-- The capture trigger runs as the writer and records through livepg.publish:
-- to_jsonb(NEW) runs the application's own code (a cast to json of a type of
-- its own), which must never run with the owner's rights. So a role that
-- writes to a tracked table needs livepg_writer.
ALTER FUNCTION livepg.capture() SECURITY INVOKER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION livepg.publish(text, jsonb, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION livepg.publish_batch(text[], text[], jsonb[]) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION livepg.head() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION livepg.prune(interval) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION livepg.render_topic(text, jsonb) SET search_path = pg_catalog, pg_temp;

-- track and untrack run as their caller: creating a trigger needs the TRIGGER
-- privilege on the table, dropping one its ownership, which only the
-- table's owner decides.
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
    -- Check the template's fixed parts by rendering it with a sample value.
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
CREATE OR REPLACE FUNCTION livepg.untrack(tbl regclass) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS livepg_capture ON %s', tbl);
END
$$;
-- +goose StatementEnd

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA livepg FROM PUBLIC;
REVOKE ALL ON livepg.tracked FROM PUBLIC;

GRANT USAGE ON SCHEMA livepg TO livepg_writer, livepg_node;
GRANT EXECUTE ON FUNCTION
    livepg.publish(text, jsonb, text),
    livepg.publish_batch(text[], text[], jsonb[]),
    livepg.head(),
    livepg.capture(),
    livepg.track(regclass, text),
    livepg.untrack(regclass),
    livepg.render_topic(text, jsonb)
    TO livepg_writer;
GRANT SELECT ON livepg.tracked TO livepg_writer, livepg_node;
GRANT SELECT ON livepg.events, livepg.state, livepg.goose_db_version TO livepg_node;
GRANT EXECUTE ON FUNCTION livepg.prune(interval) TO livepg_node;

-- +goose Down
-- The roles stay: they belong to the cluster, and other databases may use them.
REVOKE ALL ON ALL TABLES IN SCHEMA livepg FROM livepg_writer, livepg_node;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA livepg FROM livepg_writer, livepg_node;
REVOKE USAGE ON SCHEMA livepg FROM livepg_writer, livepg_node;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA livepg TO PUBLIC;

ALTER FUNCTION livepg.sequence() SECURITY INVOKER RESET search_path;
ALTER FUNCTION livepg.capture() SECURITY INVOKER RESET search_path;
ALTER FUNCTION livepg.publish(text, jsonb, text) SECURITY INVOKER RESET search_path;
ALTER FUNCTION livepg.publish_batch(text[], text[], jsonb[]) SECURITY INVOKER RESET search_path;
ALTER FUNCTION livepg.head() SECURITY INVOKER RESET search_path;
ALTER FUNCTION livepg.prune(interval) SECURITY INVOKER RESET search_path;
ALTER FUNCTION livepg.render_topic(text, jsonb) RESET search_path;

CREATE TABLE livepg.tracked_table (
    tbl   regclass PRIMARY KEY,
    topic text NOT NULL
);
INSERT INTO livepg.tracked_table SELECT tbl, topic FROM livepg.tracked;
DROP VIEW livepg.tracked;
ALTER TABLE livepg.tracked_table RENAME TO tracked;
ALTER INDEX livepg.tracked_table_pkey RENAME TO tracked_pkey;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION livepg.track(tbl regclass, topic text) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER AS $$
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
CREATE OR REPLACE FUNCTION livepg.untrack(tbl regclass) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS livepg_capture ON %s', tbl);
    DELETE FROM livepg.tracked t WHERE t.tbl = untrack.tbl;
END
$$;
-- +goose StatementEnd
