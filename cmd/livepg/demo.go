package main

import (
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

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/store"
)

// The demo app: a live board. Its pages read their state and the log head in
// one snapshot (GET /api/...), then stream changes from exactly that head.
// Its handlers only write rows; the tracked tables turn every write into an
// event, so a change made in psql reaches the pages the same way.

//go:embed web
var webFS embed.FS

// maxDemoBody bounds a demo request body.
const maxDemoBody = 64 << 10

type demo struct {
	store *store.Store
	log   *slog.Logger
}

// routes mounts the pages, their assets and the read endpoints on r, and the
// mutation endpoints on mutations (a group that may carry extra middleware).
func (d *demo) routes(r chi.Router, mutations chi.Router) {
	web, _ := fs.Sub(webFS, "web")
	r.Get("/", servePage(web, "index.html"))
	r.Get("/boards/{board:[0-9]+}", servePage(web, "board.html"))
	r.Handle("/static/*", http.StripPrefix("/static/", http.FileServerFS(web)))
	r.Get("/api/boards", d.listBoards)
	r.Get("/api/boards/{board}", d.getBoard)

	mutations.Post("/api/boards", d.createBoard)
	mutations.Post("/api/boards/{board}/cards", d.addCard)
	mutations.Patch("/api/boards/{board}/cards/{card}", d.updateCard)
	mutations.Delete("/api/boards/{board}/cards/{card}", d.deleteCard)
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

func (d *demo) listBoards(w http.ResponseWriter, r *http.Request) {
	snap, err := d.store.Boards(r.Context())
	if err != nil {
		d.fail(w, err)
		return
	}
	realtime.WriteJSON(w, http.StatusOK, snap)
}

func (d *demo) getBoard(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "board")
	if err != nil {
		d.fail(w, err)
		return
	}
	snap, err := d.store.BoardState(r.Context(), id)
	if err != nil {
		d.fail(w, err)
		return
	}
	realtime.WriteJSON(w, http.StatusOK, snap)
}

func (d *demo) createBoard(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		d.fail(w, err)
		return
	}
	b, err := d.store.CreateBoard(r.Context(), req.Name)
	if err != nil {
		d.fail(w, err)
		return
	}
	realtime.WriteJSON(w, http.StatusCreated, b)
}

func (d *demo) addCard(w http.ResponseWriter, r *http.Request) {
	boardID, err := pathID(r, "board")
	if err != nil {
		d.fail(w, err)
		return
	}
	var req struct {
		Text string `json:"text"`
		Col  string `json:"col"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		d.fail(w, err)
		return
	}
	c, err := d.store.AddCard(r.Context(), boardID, req.Col, req.Text)
	if err != nil {
		d.fail(w, err)
		return
	}
	realtime.WriteJSON(w, http.StatusCreated, c)
}

func (d *demo) updateCard(w http.ResponseWriter, r *http.Request) {
	boardID, cardID, err := cardPath(r)
	if err != nil {
		d.fail(w, err)
		return
	}
	var req struct {
		Text *string `json:"text"`
		Col  *string `json:"col"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		d.fail(w, err)
		return
	}
	c, err := d.store.UpdateCard(r.Context(), boardID, cardID, store.CardChange{Text: req.Text, Col: req.Col})
	if err != nil {
		d.fail(w, err)
		return
	}
	realtime.WriteJSON(w, http.StatusOK, c)
}

func (d *demo) deleteCard(w http.ResponseWriter, r *http.Request) {
	boardID, cardID, err := cardPath(r)
	if err != nil {
		d.fail(w, err)
		return
	}
	if err := d.store.DeleteCard(r.Context(), boardID, cardID); err != nil {
		d.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// errTooLarge is a request body over maxDemoBody.
var errTooLarge = errors.New("request body too large")

// decodeBody reads exactly one JSON object with known fields only.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxDemoBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("%w: more than %d bytes", errTooLarge, tooBig.Limit)
		}
		return fmt.Errorf("%w: invalid JSON body: %v", store.ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: invalid JSON body: more than one value", store.ErrInvalid)
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
		return 0, fmt.Errorf("%s %q: %w", name, chi.URLParam(r, name), store.ErrNotFound)
	}
	return id, nil
}

// fail maps an error to its status: bad input 400, unknown board or card
// 404, too large 413; anything else is logged and hidden behind a 500.
func (d *demo) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, store.ErrInvalid):
		realtime.WriteError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, store.ErrNotFound):
		realtime.WriteError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, errTooLarge):
		realtime.WriteError(w, http.StatusRequestEntityTooLarge, err.Error())
	default:
		d.log.Error("demo request", "err", err)
		realtime.WriteError(w, http.StatusInternalServerError, "internal error")
	}
}
