// Package demo is livepg's demo app, a live board: an app on the engine, with
// its own pages (web/), queries (board.go) and migrations (migrations/, their
// version table livepg_demo.goose_db_version), mounted only when enabled
// (LIVEPG_DEMO).
//
// Its pages read their state and the log head in one snapshot (GET /api/...),
// then stream changes from exactly that head over the engine's /v1/events.
// Its handlers only write rows; the tracked tables turn every write into an
// event, so a change made in psql reaches the pages the same way.
//
// With a token key its writes need a token that grants publishing on the
// board's topic (boards/{id} for a card, boards for a new board), and its
// reads honour the private topics, as the engine's own endpoints do. Its
// mutations refuse cross-site requests (guard.go).
package demo

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/cors"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/livepg/livepg/realtime"
)

//go:embed web
var webFS embed.FS

// maxBody bounds a request body.
const maxBody = 64 << 10

// Options configure the app.
type Options struct {
	// Auth checks tokens for the app's reads and writes, as for the engine's
	// streams and publishing. Nil leaves the app open to everyone.
	Auth *realtime.Auth
	// AllowedOrigins may call the mutations from their pages, besides the
	// app's own origin (LIVEPG_CORS_ORIGINS).
	AllowedOrigins []string
	// AnonymousPresence says the node lets pages without a token's sub join
	// presence (LIVEPG_PRESENCE_ANONYMOUS): the board then shows its
	// viewers to everyone; otherwise only to pages whose token has a sub.
	AnonymousPresence bool
	Logger            *slog.Logger
}

// App is the demo's HTTP handlers over its tables.
type App struct {
	boards *Boards
	opts   Options
	log    *slog.Logger
}

// New finds the demo's tables (Migrate must have run) and builds its
// handlers.
func New(ctx context.Context, pool *pgxpool.Pool, opts Options) (*App, error) {
	b, err := NewBoards(ctx, pool)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &App{boards: b, opts: opts, log: log}, nil
}

// Routes mounts the pages, their assets, the read endpoints and the
// mutations on r.
func (a *App) Routes(r chi.Router) {
	web, _ := fs.Sub(webFS, "web")
	r.Get("/", servePage(web, "index.html"))
	r.Get("/boards/{board:[0-9]+}", servePage(web, "board.html"))
	r.Handle("/static/*", http.StripPrefix("/static/", http.FileServerFS(web)))
	r.Get("/api/boards", a.listBoards)
	r.Get("/api/boards/{board}", a.getBoard)

	r.Group(func(m chi.Router) {
		if len(a.opts.AllowedOrigins) > 0 {
			// Pages on the allowed origins may call the API with credentials
			// (the token cookie); they ask first (a preflight), for JSON.
			m.Use(cors.Handler(cors.Options{
				AllowedOrigins:   a.opts.AllowedOrigins,
				AllowedMethods:   []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete},
				AllowedHeaders:   []string{"Authorization", "Content-Type"},
				AllowCredentials: true,
				MaxAge:           600,
			}))
		}
		m.Use(a.guard)
		if len(a.opts.AllowedOrigins) > 0 {
			preflight := func(http.ResponseWriter, *http.Request) {} // answered by cors
			m.Options("/api/boards", preflight)
			m.Options("/api/boards/{board}/cards", preflight)
			m.Options("/api/boards/{board}/cards/{card}", preflight)
		}
		m.Post("/api/boards", a.createBoard)
		m.Post("/api/boards/{board}/cards", a.addCard)
		m.Patch("/api/boards/{board}/cards/{card}", a.updateCard)
		m.Delete("/api/boards/{board}/cards/{card}", a.deleteCard)
	})
}

func servePage(web fs.FS, name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		page, err := fs.ReadFile(web, name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	}
}

// boardTopic is the topic a board's cards' events are on (the tracking
// template 'boards/{board_id}'); boardsTopic is the list's.
func boardTopic(id int64) string { return "boards/" + strconv.FormatInt(id, 10) }

const boardsTopic = "boards"

// canRead checks that the request may read what topic carries: a private
// topic's state is as private as its stream.
func (a *App) canRead(r *http.Request, topic string) error {
	return a.opts.Auth.AuthorizeSubscribe(r, []realtime.Selector{{Topic: topic}})
}

// canWrite checks that the request's token may publish on topic.
func (a *App) canWrite(r *http.Request, topic string) error {
	return a.opts.Auth.AuthorizePublish(r, topic)
}

func (a *App) listBoards(w http.ResponseWriter, r *http.Request) {
	if err := a.canRead(r, boardsTopic); err != nil {
		realtime.WriteAuthError(w, err)
		return
	}
	snap, err := a.boards.List(r.Context())
	if err != nil {
		a.fail(w, err)
		return
	}
	realtime.WriteJSON(w, http.StatusOK, snap)
}

func (a *App) getBoard(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "board")
	if err != nil {
		a.fail(w, err)
		return
	}
	if err := a.canRead(r, boardTopic(id)); err != nil {
		realtime.WriteAuthError(w, err)
		return
	}
	snap, err := a.boards.BoardState(r.Context(), id)
	if err != nil {
		a.fail(w, err)
		return
	}
	// viewers: the page may join the board's presence, so it shows who
	// else is viewing it.
	realtime.WriteJSON(w, http.StatusOK, struct {
		Snapshot[BoardWithCards]
		Viewers bool `json:"viewers"`
	}{snap, a.opts.AnonymousPresence || a.opts.Auth.Subject(r) != ""})
}

func (a *App) createBoard(w http.ResponseWriter, r *http.Request) {
	if err := a.canWrite(r, boardsTopic); err != nil {
		realtime.WriteAuthError(w, err)
		return
	}
	var req struct {
		Name string `json:"name"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		a.fail(w, err)
		return
	}
	b, err := a.boards.CreateBoard(r.Context(), req.Name)
	if err != nil {
		a.fail(w, err)
		return
	}
	realtime.WriteJSON(w, http.StatusCreated, b)
}

func (a *App) addCard(w http.ResponseWriter, r *http.Request) {
	boardID, err := pathID(r, "board")
	if err != nil {
		a.fail(w, err)
		return
	}
	if err := a.canWrite(r, boardTopic(boardID)); err != nil {
		realtime.WriteAuthError(w, err)
		return
	}
	var req struct {
		Text string `json:"text"`
		Col  string `json:"col"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		a.fail(w, err)
		return
	}
	c, err := a.boards.AddCard(r.Context(), boardID, req.Col, req.Text)
	if err != nil {
		a.fail(w, err)
		return
	}
	realtime.WriteJSON(w, http.StatusCreated, c)
}

func (a *App) updateCard(w http.ResponseWriter, r *http.Request) {
	boardID, cardID, err := cardPath(r)
	if err != nil {
		a.fail(w, err)
		return
	}
	if err := a.canWrite(r, boardTopic(boardID)); err != nil {
		realtime.WriteAuthError(w, err)
		return
	}
	var req struct {
		Text *string `json:"text"`
		Col  *string `json:"col"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		a.fail(w, err)
		return
	}
	c, err := a.boards.UpdateCard(r.Context(), boardID, cardID, CardChange{Text: req.Text, Col: req.Col})
	if err != nil {
		a.fail(w, err)
		return
	}
	realtime.WriteJSON(w, http.StatusOK, c)
}

func (a *App) deleteCard(w http.ResponseWriter, r *http.Request) {
	boardID, cardID, err := cardPath(r)
	if err != nil {
		a.fail(w, err)
		return
	}
	if err := a.canWrite(r, boardTopic(boardID)); err != nil {
		realtime.WriteAuthError(w, err)
		return
	}
	if err := a.boards.DeleteCard(r.Context(), boardID, cardID); err != nil {
		a.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// errTooLarge is a request body over maxBody.
var errTooLarge = errors.New("request body too large")

// decodeBody reads exactly one JSON object with known fields only.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("%w: more than %d bytes", errTooLarge, tooBig.Limit)
		}
		return fmt.Errorf("%w: invalid JSON body: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: invalid JSON body: more than one value", ErrInvalid)
	}
	return nil
}

// cardPath reads the board and card ids of /api/boards/{board}/cards/{card}.
func cardPath(r *http.Request) (board, card int64, err error) {
	if board, err = pathID(r, "board"); err != nil {
		return 0, 0, err
	}
	card, err = pathID(r, "card")
	return board, card, err
}

func pathID(r *http.Request, name string) (int64, error) {
	id, err := strconv.ParseInt(chi.URLParam(r, name), 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%s %q: %w", name, chi.URLParam(r, name), ErrNotFound)
	}
	return id, nil
}

// fail maps an error to its status: bad input 400, unknown board or card
// 404, too large 413; anything else is logged and hidden behind a 500.
func (a *App) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrInvalid):
		var r refusal
		if errors.As(err, &r) {
			a.log.Warn("demo request refused by the database", "err", r.db)
			err = r // the client's words, not the database's
		}
		realtime.WriteError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrNotFound):
		realtime.WriteError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, errTooLarge):
		realtime.WriteError(w, http.StatusRequestEntityTooLarge, err.Error())
	default:
		a.log.Error("demo request", "err", err)
		realtime.WriteError(w, http.StatusInternalServerError, "internal error")
	}
}
