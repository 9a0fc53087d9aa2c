-- +goose Up
CREATE TABLE cards (id serial PRIMARY KEY, board int REFERENCES boards, body text);
-- +goose Down
DROP TABLE cards;
