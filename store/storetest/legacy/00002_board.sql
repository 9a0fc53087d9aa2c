-- The demo app: boards with cards in columns. Its tables are ordinary
-- tables; livepg.track makes every change to them an event, whoever writes
-- it (the app's handlers, psql, a cron job).

-- +goose Up
CREATE TABLE boards (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cards (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    board_id   bigint NOT NULL REFERENCES boards ON DELETE CASCADE,
    col        text NOT NULL CHECK (col IN ('todo', 'doing', 'done')),
    text       text NOT NULL CHECK (length(text) BETWEEN 1 AND 500),
    -- Order within a column; a moved or new card goes last.
    position   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cards_board_id ON cards (board_id);

SELECT livepg.track('boards', 'boards');
SELECT livepg.track('cards', 'boards/{board_id}');

-- +goose Down
SELECT livepg.untrack('cards');
SELECT livepg.untrack('boards');
DROP TABLE cards;
DROP TABLE boards;
