package demo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The demo app's data: boards with cards in three columns. Every write is an
// ordinary statement on a tracked table, so the events come from the tables'
// triggers, exactly as they do for a writer in psql.

// Errors for the handlers to map to responses.
var (
	// ErrInvalid is bad input (an empty or too long text, an unknown
	// column); the wrapped error says what.
	ErrInvalid  = errors.New("invalid input")
	ErrNotFound = errors.New("not found")
)

// Boards reads and writes the demo's tables in the schema resolved at start
// (see resolveSchema): every statement names its tables with that schema,
// whatever the connection's search_path.
type Boards struct {
	pool *pgxpool.Pool
	// boards and cards are the tables' quoted, schema-qualified names.
	boards, cards string
}

// NewBoards finds the demo's tables (its migrations must have run).
func NewBoards(ctx context.Context, pool *pgxpool.Pool) (*Boards, error) {
	schema, err := resolveSchema(ctx, pool)
	if err != nil {
		return nil, err
	}
	return &Boards{
		pool:   pool,
		boards: pgx.Identifier{schema, "boards"}.Sanitize(),
		cards:  pgx.Identifier{schema, "cards"}.Sanitize(),
	}, nil
}

// Columns a card can be in, in display order.
var Columns = []string{"todo", "doing", "done"}

// Limits on the demo's text, also enforced by CHECK constraints.
const (
	MaxBoardName = 100
	MaxCardText  = 500
)

// Board is one board.
type Board struct {
	ID        int64     `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Card is one card on a board. Its JSON matches the row the tracking trigger
// sends, so a page applies both the same way.
type Card struct {
	ID        int64     `json:"id"`
	BoardID   int64     `json:"board_id"`
	Col       string    `json:"col"`
	Text      string    `json:"text"`
	Position  int64     `json:"position"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Snapshot is state read in one REPEATABLE READ transaction together with
// the log position it reflects: a page that shows it and resumes its stream
// from Head (an event id, livepg.head()) neither misses nor repeats a change.
type Snapshot[T any] struct {
	State T      `json:"state"`
	Head  string `json:"head"`
}

// BoardWithCards is a board page's state.
type BoardWithCards struct {
	Board Board  `json:"board"`
	Cards []Card `json:"cards"`
}

// CleanBoardName trims name and checks it.
func CleanBoardName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return "", fmt.Errorf("%w: board name is empty", ErrInvalid)
	}
	if utf8.RuneCountInString(name) > MaxBoardName {
		return "", fmt.Errorf("%w: board name is longer than %d characters", ErrInvalid, MaxBoardName)
	}
	if !storable(name) {
		return "", fmt.Errorf("%w: board name holds a NUL character or invalid UTF-8", ErrInvalid)
	}
	return name, nil
}

// CleanCardText trims text and checks it.
func CleanCardText(text string) (string, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return "", fmt.Errorf("%w: card text is empty", ErrInvalid)
	}
	if utf8.RuneCountInString(text) > MaxCardText {
		return "", fmt.Errorf("%w: card text is longer than %d characters", ErrInvalid, MaxCardText)
	}
	if !storable(text) {
		return "", fmt.Errorf("%w: card text holds a NUL character or invalid UTF-8", ErrInvalid)
	}
	return text, nil
}

// storable reports whether PostgreSQL's text can hold s: valid UTF-8, no NUL.
func storable(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// CheckColumn checks that col names a column.
func CheckColumn(col string) error {
	for _, c := range Columns {
		if c == col {
			return nil
		}
	}
	return fmt.Errorf("%w: unknown column %q (want one of %s)", ErrInvalid, col, strings.Join(Columns, ", "))
}

// snapshot runs read in a REPEATABLE READ, read-only transaction and adds
// the log head as that transaction sees it.
func snapshot[T any](ctx context.Context, s *Boards, read func(pgx.Tx) (T, error)) (Snapshot[T], error) {
	var snap Snapshot[T]
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		if snap.State, err = read(tx); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT livepg.head()`).Scan(&snap.Head)
	})
	return snap, err
}

// Boards lists every board, newest first, with the log head.
func (s *Boards) List(ctx context.Context) (Snapshot[[]Board], error) {
	snap, err := snapshot(ctx, s, func(tx pgx.Tx) ([]Board, error) {
		rows, err := tx.Query(ctx, `SELECT id, name, created_at FROM `+s.boards+` ORDER BY id DESC`)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, pgx.RowToStructByPos[Board])
	})
	if err != nil {
		return snap, fmt.Errorf("list boards: %w", err)
	}
	return snap, nil
}

// BoardState reads a board and its cards with the log head.
func (s *Boards) BoardState(ctx context.Context, id int64) (Snapshot[BoardWithCards], error) {
	snap, err := snapshot(ctx, s, func(tx pgx.Tx) (BoardWithCards, error) {
		var b BoardWithCards
		err := tx.QueryRow(ctx, `SELECT id, name, created_at FROM `+s.boards+` WHERE id = $1`, id).
			Scan(&b.Board.ID, &b.Board.Name, &b.Board.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return b, fmt.Errorf("board %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return b, err
		}
		rows, err := tx.Query(ctx, `SELECT `+cardColumns+` FROM `+s.cards+` WHERE board_id = $1 ORDER BY position, id`, id)
		if err != nil {
			return b, err
		}
		b.Cards, err = pgx.CollectRows(rows, pgx.RowToStructByPos[Card])
		return b, err
	})
	if err != nil {
		return snap, fmt.Errorf("read board: %w", err)
	}
	return snap, nil
}

// CreateBoard adds a board.
func (s *Boards) CreateBoard(ctx context.Context, name string) (Board, error) {
	name, err := CleanBoardName(name)
	if err != nil {
		return Board{}, err
	}
	var b Board
	err = s.pool.QueryRow(ctx, `INSERT INTO `+s.boards+` (name) VALUES ($1) RETURNING id, name, created_at`, name).
		Scan(&b.ID, &b.Name, &b.CreatedAt)
	if err != nil {
		return b, fmt.Errorf("create board: %w", asInvalid(err))
	}
	return b, nil
}

const cardColumns = `id, board_id, col, text, position, updated_at`

// nextPosition puts a card last in its column.
func (s *Boards) nextPosition() string {
	return `(SELECT coalesce(max(position), 0) + 1 FROM ` + s.cards + ` WHERE board_id = $1 AND col = $2)`
}

// AddCard adds a card at the end of a column.
func (s *Boards) AddCard(ctx context.Context, boardID int64, col, text string) (Card, error) {
	text, err := CleanCardText(text)
	if err != nil {
		return Card{}, err
	}
	if err := CheckColumn(col); err != nil {
		return Card{}, err
	}
	rows, err := s.pool.Query(ctx,
		`INSERT INTO `+s.cards+` (board_id, col, text, position) VALUES ($1, $2, $3, `+s.nextPosition()+`)
		 RETURNING `+cardColumns, boardID, col, text)
	if err != nil {
		return Card{}, fmt.Errorf("add card: %w", err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Card])
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" { // foreign key: no such board
		return c, fmt.Errorf("board %d: %w", boardID, ErrNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("add card: %w", asInvalid(err))
	}
	return c, nil
}

// CardChange is an edit of a card: new text, another column, or both.
type CardChange struct {
	Text *string
	Col  *string
}

// UpdateCard changes a card's text or moves it to the end of another column.
func (s *Boards) UpdateCard(ctx context.Context, boardID, cardID int64, change CardChange) (Card, error) {
	if change.Text == nil && change.Col == nil {
		return Card{}, fmt.Errorf("%w: nothing to change: give text or col", ErrInvalid)
	}
	if change.Text != nil {
		text, err := CleanCardText(*change.Text)
		if err != nil {
			return Card{}, err
		}
		change.Text = &text
	}
	if change.Col != nil {
		if err := CheckColumn(*change.Col); err != nil {
			return Card{}, err
		}
	}
	var c Card
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var col string
		err := tx.QueryRow(ctx, `SELECT col FROM `+s.cards+` WHERE id = $1 AND board_id = $2 FOR UPDATE`, cardID, boardID).Scan(&col)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("card %d on board %d: %w", cardID, boardID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		position := `position`
		if change.Col != nil && *change.Col != col {
			position = s.nextPosition()
		}
		rows, err := tx.Query(ctx,
			`UPDATE `+s.cards+` SET text = coalesce($3, text), col = coalesce($2, col), position = `+position+`, updated_at = now()
			  WHERE id = $4 AND board_id = $1 RETURNING `+cardColumns,
			boardID, coalesce(change.Col, col), change.Text, cardID)
		if err != nil {
			return err
		}
		c, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Card])
		return err
	})
	if err != nil {
		return c, fmt.Errorf("update card: %w", asInvalid(err))
	}
	return c, nil
}

func coalesce(p *string, def string) string {
	if p != nil {
		return *p
	}
	return def
}

// DeleteCard removes a card.
func (s *Boards) DeleteCard(ctx context.Context, boardID, cardID int64) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM `+s.cards+` WHERE id = $1 AND board_id = $2`, cardID, boardID)
	if err != nil {
		return fmt.Errorf("delete card: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("card %d on board %d: %w", cardID, boardID, ErrNotFound)
	}
	return nil
}

// asInvalid wraps errors the database raised about its input (data
// exceptions, check violations) in ErrInvalid so that the handlers answer
// 4xx, not 500. The client is told what is wrong in its own terms; the
// database's words stay in the error's chain, for the log.
func asInvalid(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "22", "23":
			return refusal{err}
		}
	}
	return err
}

// refusal is input the database refused: its message is the client's, its
// chain (ErrInvalid and the database's error) the log's.
type refusal struct{ db error }

func (r refusal) Error() string {
	return ErrInvalid.Error() + ": the database cannot store it (text must be valid UTF-8 without NUL characters)"
}

func (r refusal) Unwrap() []error { return []error{ErrInvalid, r.db} }
