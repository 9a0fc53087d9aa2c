-- An application's own migrations, with goose's default version table
-- (public.goose_db_version) and tables named like livepg's demo's.
-- +goose Up
CREATE TABLE boards (id serial PRIMARY KEY, title text NOT NULL);
-- +goose Down
DROP TABLE boards;
