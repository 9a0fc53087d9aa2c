-- +goose Up
INSERT INTO boards (title) VALUES ('the app''s own board');
-- +goose Down
DELETE FROM boards;
