-- The demo app: boards with cards in columns, in a schema of its own
-- (livepg_demo), so that a database with its own boards and cards takes the
-- demo with no collision. Its tables are ordinary tables; livepg.track makes
-- every change to them an event, whoever writes it (the app's handlers, psql,
-- a cron job).
--
-- A database made before the demo had a schema of its own keeps its tables
-- where they are: public.boards and public.cards, both already tracked by
-- livepg (their trigger is livepg_capture). There this migration creates
-- nothing and is only recorded as applied; the app finds the tables in public
-- (see demo.go's resolveSchema).

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    -- A node serves the demo: where livepg has its node role (livepg_node,
    -- made by the engine's migrations), the role may read the demo's
    -- version table (a node checks that nothing is pending) and, below, use
    -- its tables, whoever ran this migration. Its writes produce events
    -- because livepg_node is a livepg_writer.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'livepg_node') THEN
        GRANT USAGE ON SCHEMA livepg_demo TO livepg_node;
        GRANT SELECT ON livepg_demo.goose_db_version TO livepg_node;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_trigger
                WHERE tgname = 'livepg_capture' AND tgrelid = to_regclass('public.boards'))
       AND EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgname = 'livepg_capture' AND tgrelid = to_regclass('public.cards')) THEN
        RAISE NOTICE 'livepg demo: keeping the tracked public.boards and public.cards of an earlier livepg';
        RETURN;
    END IF;

    CREATE TABLE livepg_demo.boards (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
        created_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE livepg_demo.cards (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        board_id   bigint NOT NULL REFERENCES livepg_demo.boards ON DELETE CASCADE,
        col        text NOT NULL CHECK (col IN ('todo', 'doing', 'done')),
        text       text NOT NULL CHECK (length(text) BETWEEN 1 AND 500),
        -- Order within a column; a moved or new card goes last.
        position   bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX cards_board_id ON livepg_demo.cards (board_id);

    PERFORM livepg.track('livepg_demo.boards', 'boards');
    PERFORM livepg.track('livepg_demo.cards', 'boards/{board_id}');

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'livepg_node') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON livepg_demo.boards, livepg_demo.cards TO livepg_node;
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- Only the demo's own schema is dropped from: adopted public tables stay.
-- +goose StatementBegin
DO $$
BEGIN
    IF to_regclass('livepg_demo.cards') IS NOT NULL THEN
        PERFORM livepg.untrack('livepg_demo.cards');
        DROP TABLE livepg_demo.cards;
    END IF;
    IF to_regclass('livepg_demo.boards') IS NOT NULL THEN
        PERFORM livepg.untrack('livepg_demo.boards');
        DROP TABLE livepg_demo.boards;
    END IF;
END
$$;
-- +goose StatementEnd
