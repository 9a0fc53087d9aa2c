package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// publisher sends the run's events one at a time; publish is called from
// several goroutines, worker being the caller's index.
type publisher interface {
	// prepare returns the topics the streams subscribe to.
	prepare(ctx context.Context, topics int) ([]string, error)
	publish(ctx context.Context, worker, topic int, name string, stamp []byte) error
	close()
}

func newPublisher(ctx context.Context, cfg *loadConfig) (publisher, error) {
	base := func(n int) ([]string, error) {
		names := make([]string, n)
		for i := range names {
			names[i] = cfg.TopicBase + "/" + strconv.Itoa(i)
		}
		return names, nil
	}
	switch cfg.Mode {
	case "sql", "table":
		pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
		if err != nil {
			return nil, fmt.Errorf("database url: %w", err)
		}
		pcfg.MaxConns = int32(cfg.Publishers)
		pcfg.MinConns = int32(cfg.Publishers)
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return nil, fmt.Errorf("database: %w", err)
		}
		if err := pool.Ping(ctx); err != nil {
			pool.Close()
			return nil, fmt.Errorf("database: %w", err)
		}
		if cfg.Mode == "sql" {
			return &sqlPublisher{pool: pool, topics: base}, nil
		}
		return &tablePublisher{pool: pool}, nil
	case "http":
		return &httpPublisher{
			url:    cfg.PublishURL + "/v1/publish",
			topics: base,
			client: &http.Client{
				Timeout:   30 * time.Second,
				Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Publishers, MaxConnsPerHost: cfg.Publishers},
			},
		}, nil
	case "feed":
		p := &feedPublisher{topics: base, conns: make([]net.Conn, cfg.Publishers)}
		for i := range p.conns {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", cfg.Feed)
			if err != nil {
				p.close()
				return nil, fmt.Errorf("feed: %w", err)
			}
			p.conns[i] = conn
		}
		return p, nil
	default: // none
		return &httpPublisher{topics: base, client: http.DefaultClient}, nil
	}
}

// feedPublisher writes each event as a line to the ceiling's feed, one
// connection per publisher; a publish is done once written (the feed does
// not answer).
type feedPublisher struct {
	topics func(int) ([]string, error)
	conns  []net.Conn
	bufs   [][]byte
}

func (p *feedPublisher) prepare(_ context.Context, n int) ([]string, error) {
	p.bufs = make([][]byte, len(p.conns))
	return p.topics(n)
}

func (p *feedPublisher) publish(ctx context.Context, worker, _ int, topic string, stamp []byte) error {
	b := p.bufs[worker][:0]
	b = append(b, topic...) // topics here hold no space or line break
	b = append(b, ` bench {"b":"`...)
	b = append(b, stamp...)
	b = append(b, "\"}\n"...)
	p.bufs[worker] = b
	conn := p.conns[worker]
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetWriteDeadline(dl)
	}
	_, err := conn.Write(b)
	return err
}

func (p *feedPublisher) close() {
	for _, c := range p.conns {
		if c != nil {
			c.Close()
		}
	}
}

// sqlPublisher commits one livepg.publish per transaction, as any SQL
// writer would.
type sqlPublisher struct {
	pool   *pgxpool.Pool
	topics func(int) ([]string, error)
}

func (p *sqlPublisher) prepare(_ context.Context, n int) ([]string, error) { return p.topics(n) }

func (p *sqlPublisher) publish(ctx context.Context, _, _ int, topic string, stamp []byte) error {
	data := make([]byte, 0, len(stamp)+8)
	data = append(append(append(data, `{"b":"`...), stamp...), `"}`...)
	_, err := p.pool.Exec(ctx, `SELECT livepg.publish($1, $2::jsonb, 'bench')`, topic, string(data))
	return err
}

func (p *sqlPublisher) close() { p.pool.Close() }

// tablePublisher updates a card of the demo board, whose table is tracked on
// boards/{board_id}: one board and one card per topic, made by prepare.
type tablePublisher struct {
	pool  *pgxpool.Pool
	cards []int64
	// update is the UPDATE of a card, its table named with its schema.
	update string
}

// demoSchema finds the demo's tables: in livepg_demo, or in public on a
// database made before the demo had a schema of its own.
const demoSchema = `SELECT CASE WHEN to_regclass('livepg_demo.cards') IS NOT NULL THEN 'livepg_demo'
	WHEN to_regclass('public.cards') IS NOT NULL THEN 'public' END`

func (p *tablePublisher) prepare(ctx context.Context, n int) ([]string, error) {
	var schema *string
	if err := p.pool.QueryRow(ctx, demoSchema).Scan(&schema); err != nil {
		return nil, fmt.Errorf("find the demo's tables: %w", err)
	}
	if schema == nil {
		return nil, errors.New("the demo's tables are missing: start livepg once on this database with LIVEPG_DEMO=on")
	}
	boards, cards := pgx.Identifier{*schema, "boards"}.Sanitize(), pgx.Identifier{*schema, "cards"}.Sanitize()
	p.update = `UPDATE ` + cards + ` SET text = $1, updated_at = now() WHERE id = $2`
	names := make([]string, n)
	p.cards = make([]int64, n)
	for i := range n {
		var board int64
		err := p.pool.QueryRow(ctx, `INSERT INTO `+boards+` (name) VALUES ('livepg-bench') RETURNING id`).Scan(&board)
		if err != nil {
			return nil, fmt.Errorf("create a board: %w", err)
		}
		err = p.pool.QueryRow(ctx, `INSERT INTO `+cards+` (board_id, col, text) VALUES ($1, 'todo', 'livepg-bench') RETURNING id`, board).Scan(&p.cards[i])
		if err != nil {
			return nil, fmt.Errorf("create a card: %w", err)
		}
		names[i] = "boards/" + strconv.FormatInt(board, 10)
	}
	return names, nil
}

func (p *tablePublisher) publish(ctx context.Context, _, topic int, _ string, stamp []byte) error {
	_, err := p.pool.Exec(ctx, p.update, string(stamp), p.cards[topic])
	return err
}

func (p *tablePublisher) close() { p.pool.Close() }

// httpPublisher POSTs each event to /v1/publish (livepg's or the ceiling's).
type httpPublisher struct {
	url    string
	topics func(int) ([]string, error)
	client *http.Client
}

func (p *httpPublisher) prepare(_ context.Context, n int) ([]string, error) { return p.topics(n) }

func (p *httpPublisher) publish(ctx context.Context, _, _ int, topic string, stamp []byte) error {
	body := make([]byte, 0, 64+len(topic)+len(stamp))
	body = append(body, `{"topic":"`...)
	body = append(body, topic...) // topics here never need escaping
	body = append(body, `","type":"bench","data":{"b":"`...)
	body = append(body, stamp...)
	body = append(body, `"}}`...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s: %s", p.url, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

func (p *httpPublisher) close() { p.client.CloseIdleConnections() }
