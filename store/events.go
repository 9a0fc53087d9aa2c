package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Event is one committed row of livepg.events.
type Event struct {
	Seq         int64
	Topic       string
	Type        string
	Data        []byte // the payload as JSON text; nil when Omitted
	CommittedAt time.Time
	// Size is the payload's length as JSON text, in bytes, as measured when
	// it was written (0 for an event written before the log measured them).
	Size int64
	// Omitted says why Data was not read: "" (it was), OmittedTooLarge or
	// OmittedUnreadable. Such an event is still delivered, as a placeholder
	// with its id, so that no reader stops at it.
	Omitted string
	// cost is what the event counted against its read's byte budget (see
	// boundedSelect), for FullBatch.
	cost int64
}

// Why an event's data was left out of a read.
const (
	// OmittedTooLarge: its size is over livepg.limits.max_event_size (it
	// was written before the limit was lowered, or before the log measured
	// events). Its data is never loaded.
	OmittedTooLarge = "too_large"
	// OmittedUnreadable: reading its data failed (PostgreSQL ran out of
	// memory printing it, say), so it was skipped.
	OmittedUnreadable = "unreadable"
)

// The reads below share one shape: a query yields the candidate seqs, in
// order, at most limit of them (CTE c); then each candidate's size is read
// (not its data), a running total keeps the batch within maxBytes (the first
// row always goes, so a read always moves on), and data is read only for
// rows within livepg.limits.max_event_size. Each candidate is looked up by
// seq (the LATERAL ... OFFSET 0 keeps the planner from joining the whole log
// by hash or merge instead). A row's cost is its size as
// measured at insert (the stored size for rows older than that); an
// oversized row costs nothing: its data is not read.
const boundedSelect = boundedCTEs + boundedRows

// boundedCTEs and boundedRows are boundedSelect's two halves (ReadNext puts
// the rows in a CTE of their own).
const boundedCTEs = `,
 w AS (
	SELECT c.seq, e.size,
	       coalesce(e.size > l.max_event_size, false) AS too_large,
	       CASE WHEN e.size > l.max_event_size THEN 0
	            ELSE coalesce(e.size, e.stored) END::bigint AS cost
	  FROM c
	  CROSS JOIN LATERAL (SELECT ev.size, pg_column_size(ev.data) AS stored
	                        FROM livepg.events ev WHERE ev.seq = c.seq OFFSET 0) e
	  CROSS JOIN (SELECT max_event_size FROM livepg.limits LIMIT 1) l
 ),
 r AS (
	SELECT w.seq, w.size, w.too_large, w.cost, sum(w.cost) OVER (ORDER BY w.seq) - w.cost AS before FROM w
 )`

const boundedRows = `
SELECT e.seq, e.topic, e.type, CASE WHEN r.too_large THEN NULL ELSE e.data END,
       e.committed_at, coalesce(r.size, 0), r.too_large, r.cost
  FROM r
  CROSS JOIN LATERAL (SELECT ev.seq, ev.topic, ev.type, ev.data, ev.committed_at
                        FROM livepg.events ev WHERE ev.seq = r.seq OFFSET 0) e
 WHERE r.before < $%d
 ORDER BY e.seq`

func scanEvent(row pgx.CollectableRow) (Event, error) {
	var e Event
	var tooLarge bool
	err := row.Scan(&e.Seq, &e.Topic, &e.Type, &e.Data, &e.CommittedAt, &e.Size, &tooLarge, &e.cost)
	if tooLarge {
		e.Omitted = OmittedTooLarge
		e.Data = nil
	}
	return e, err
}

// FullBatch reports whether a read (ReadAfter, ReadMatching) that returned
// events may have stopped at its limits (limit rows, maxBytes bytes, as the
// read counted them) rather than at the end of what it reads: then there
// may be more to read. When it reports false, the read saw everything in
// its window.
func FullBatch(events []Event, limit int, maxBytes int64) bool {
	if len(events) >= limit {
		return true
	}
	var total int64
	for _, e := range events {
		total += e.cost
	}
	return total >= maxBytes
}

// afterSQL is ReadAfter's query: $1 after, $2 limit, $3 maxBytes.
var afterSQL = `WITH c AS (SELECT seq FROM livepg.events WHERE seq > $1 ORDER BY seq LIMIT $2)` +
	fmt.Sprintf(boundedSelect, 3)

// ReadAfter returns up to limit committed events with seq > after, in seq
// order, and no more than maxBytes of data (but always at least one event
// when there is one). Because seqs are assigned in commit order, after the
// commit (NumberPending) or at it under a lock (commit_lock mode), no event
// with a smaller seq can appear after a reader has seen a larger one.
//
// No row stops it: an event over the size limit comes back Omitted
// (OmittedTooLarge) without its data, and when reading the batch fails on
// the database's side (an old row too large to print, say), the events are
// read one at a time and those that still fail come back Omitted
// (OmittedUnreadable).
func (s *Store) ReadAfter(ctx context.Context, after int64, limit int, maxBytes int64) ([]Event, error) {
	events, err := readEvents(ctx, s.Pool, afterSQL, after, limit, maxBytes)
	if err == nil || !rowError(ctx, err) {
		if err != nil {
			return nil, fmt.Errorf("read events after %d: %w", after, err)
		}
		return events, nil
	}
	rows, err := s.Pool.Query(ctx, `SELECT seq FROM livepg.events WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events after %d: %w", after, err)
	}
	return readOneByOne(ctx, s.Pool, rows, maxBytes)
}

// matchingSQL is ReadMatching's query: $1 after, $2 through, $3 exact
// topics, $4 and $5 the prefixes' ranges [lo, hi), $6 limit, $7 maxBytes.
//
// Each selector is a range of the index on (topic COLLATE "C", seq): an
// exact topic one topic's events in seq order, a prefix p/ the topics from
// 'p/' up to 'p0' ('/' + 1). Each is read on its own, ordered by seq and
// limited, and the results are merged by seq: a selector with no events
// costs one index probe, whatever the log holds. (A prefix's range is
// sorted by seq: it costs the matching events in the window, not the log.)
var matchingSQL = matchingCandidates + fmt.Sprintf(boundedSelect, 7)

const matchingCandidates = `WITH c AS (
	SELECT seq FROM (
		SELECT m.seq FROM unnest($3::text[]) AS s(topic)
		CROSS JOIN LATERAL (
			SELECT e.seq FROM livepg.events e
			 WHERE e.topic COLLATE "C" = s.topic COLLATE "C" AND e.seq > $1 AND e.seq <= $2
			 ORDER BY e.seq LIMIT $6) m
		UNION
		SELECT m.seq FROM unnest($4::text[], $5::text[]) AS p(lo, hi)
		CROSS JOIN LATERAL (
			SELECT e.seq FROM livepg.events e
			 WHERE e.topic COLLATE "C" >= p.lo COLLATE "C" AND e.topic COLLATE "C" < p.hi COLLATE "C"
			   AND e.seq > $1 AND e.seq <= $2
			 ORDER BY e.seq LIMIT $6) m
	) u ORDER BY seq LIMIT $6)`

// ReadMatching returns up to limit events with after < seq <= through whose
// topic is one of exact or starts with one of prefixes, in seq order, and
// no more than maxBytes of data (at least one event when one matches): the
// catch-up read of one subscriber. It costs what it returns, not what the
// log holds (see matchingSQL), and omits rows as ReadAfter does.
func (s *Store) ReadMatching(ctx context.Context, after, through int64, exact, prefixes []string, limit int, maxBytes int64) ([]Event, error) {
	lo, hi := prefixRanges(prefixes)
	if exact == nil {
		exact = []string{}
	}
	events, err := readEvents(ctx, s.Pool, matchingSQL, after, through, exact, lo, hi, limit, maxBytes)
	if err == nil || !rowError(ctx, err) {
		if err != nil {
			return nil, fmt.Errorf("read matching events after %d: %w", after, err)
		}
		return events, nil
	}
	rows, err := s.Pool.Query(ctx, matchingCandidates+` SELECT seq FROM c ORDER BY seq`,
		pgx.QueryExecModeExec, after, through, exact, lo, hi, limit)
	if err != nil {
		return nil, fmt.Errorf("read matching events after %d: %w", after, err)
	}
	return readOneByOne(ctx, s.Pool, rows, maxBytes)
}

// prefixRanges are the [lo, hi) ranges of topics that the prefixes match.
func prefixRanges(prefixes []string) (lo, hi []string) {
	lo = make([]string, len(prefixes))
	hi = make([]string, len(prefixes))
	for i, p := range prefixes {
		lo[i], hi[i] = p, prefixEnd(p)
	}
	return lo, hi
}

// prefixEnd is the least string above every string that starts with p (in
// C collation): p with its last byte incremented. Prefixes end with '/'
// (fanout.Selector), so the end of "boards/" is "boards0".
func prefixEnd(p string) string {
	if p == "" {
		return "\x7f"
	}
	b := []byte(p)
	b[len(b)-1]++
	return string(b)
}

// querier is a pool, a connection or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// readEvents runs one of the reads above. Each is planned with its
// arguments every time (QueryExecModeExec: an unnamed statement), never
// from a cached generic plan: PostgreSQL switches a prepared statement to
// its generic plan after five executions, and the generic plan of a
// per-selector read, not knowing the selectors or the window, walks the
// whole log (about a second on a million events, against milliseconds).
func readEvents(ctx context.Context, q querier, sql string, args ...any) ([]Event, error) {
	rows, err := q.Query(ctx, sql, append([]any{pgx.QueryExecModeExec}, args...)...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanEvent)
}

// rowError reports whether err is the database failing to produce a row
// (out of memory printing it, a value it cannot output), as opposed to the
// caller giving up, the connection failing or the query being refused (a
// missing table or grant): then reading the rows one by one can skip the
// bad one. Other errors fail the read: nothing is skipped for them.
func rowError(ctx context.Context, err error) bool {
	var pgErr *pgconn.PgError
	if ctx.Err() != nil || !errors.As(err, &pgErr) || len(pgErr.Code) != 5 {
		return false
	}
	switch pgErr.Code[:2] {
	case "22", // data exception
		"53", // insufficient resources: out of memory
		"54", // program limit exceeded
		"XX": // internal error, data corrupted
		return true
	}
	return false
}

// readOneByOne reads the events whose seqs rows yields one at a time, within
// maxBytes: an event whose read fails comes back Omitted
// (OmittedUnreadable), with its topic, type and commit time.
func readOneByOne(ctx context.Context, q querier, rows pgx.Rows, maxBytes int64) ([]Event, error) {
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("read event seqs: %w", err)
	}
	one := `WITH c AS (SELECT $1::bigint AS seq)` + fmt.Sprintf(boundedSelect, 2)
	readRow := func(seq int64) ([]Event, error) { return readEvents(ctx, q, one, seq, int64(math.MaxInt64)) }
	if tx, ok := q.(pgx.Tx); ok {
		// In a transaction, a failed row would abort it: each row gets a
		// savepoint.
		readRow = func(seq int64) ([]Event, error) {
			return inSavepoint(ctx, tx, func(sp pgx.Tx) ([]Event, error) {
				return readEvents(ctx, sp, one, seq, int64(math.MaxInt64))
			})
		}
	}
	var events []Event
	var total int64
	for _, seq := range seqs {
		if len(events) > 0 && total >= maxBytes {
			break
		}
		got, err := readRow(seq)
		if err != nil && !rowError(ctx, err) {
			return nil, fmt.Errorf("read event %d: %w", seq, err)
		}
		if err == nil && len(got) == 1 {
			got[0].cost = int64(len(got[0].Data))
			events = append(events, got[0])
			total += got[0].cost
			continue
		}
		e := Event{Seq: seq, Omitted: OmittedUnreadable}
		if err := q.QueryRow(ctx,
			`SELECT topic, type, committed_at, coalesce(size, 0) FROM livepg.events WHERE seq = $1`, seq,
		).Scan(&e.Topic, &e.Type, &e.CommittedAt, &e.Size); err != nil {
			return nil, fmt.Errorf("read event %d without its data: %w", seq, err)
		}
		events = append(events, e)
	}
	return events, nil
}

// MaxEventSize is livepg.limits.max_event_size: the largest event data,
// as JSON text, that the database accepts from any writer.
func (s *Store) MaxEventSize(ctx context.Context) (int, error) {
	var n int
	if err := s.Pool.QueryRow(ctx, `SELECT max_event_size FROM livepg.limits`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read livepg.limits: %w", err)
	}
	return n, nil
}

// LogBounds are the ends of the log as one snapshot sees them.
type LogBounds struct {
	// PrunedThrough: events with seq <= PrunedThrough may be gone.
	PrunedThrough int64
	// Head: the highest committed seq.
	Head int64
	// Epoch names the log's current history (see migrations/00006_history.sql):
	// an event id is its seq and an epoch of its history.
	Epoch string
}

// Bounds reads both ends of the log, and its epoch, in one snapshot.
func (s *Store) Bounds(ctx context.Context) (LogBounds, error) {
	h, err := s.Position(ctx, "", -1)
	if err != nil {
		return LogBounds{}, fmt.Errorf("read log bounds: %w", err)
	}
	return h.LogBounds, nil
}

// History is where the log is, and whether an id is in its history.
type History struct {
	LogBounds
	// InHistory: the id asked about names an event of the log's current
	// history (or the head before any event): its epoch is the current one
	// or an ancestor, and its seq is no higher than what the current history
	// inherited from that epoch. It says nothing of pruning: compare the
	// seq with PrunedThrough.
	InHistory bool
}

// Position reads the log's bounds and checks that the id (epoch, seq) is in
// its current history, in one snapshot. An empty epoch is a plain-number id
// from before epochs: a seq of the current history. A negative seq asks
// nothing (InHistory is false).
func (s *Store) Position(ctx context.Context, epoch string, seq int64) (History, error) {
	var h History
	err := s.Pool.QueryRow(ctx, `SELECT epoch, head, pruned_through, valid FROM livepg.position($1, $2)`,
		nullIfEmpty(epoch), nullIfNegative(seq)).Scan(&h.Epoch, &h.Head, &h.PrunedThrough, &h.InHistory)
	if err != nil {
		return h, fmt.Errorf("read log position: %w", err)
	}
	return h, nil
}

// ReadHistory is the node's read of the log when ReadNext's one round trip
// failed on a row (readNextSlowly): in one snapshot, whether its
// place (epoch, after) is still in the log's history (see Position) and, if
// it is, the events after it as ReadAfter reads them (at most limit rows and
// maxBytes of data, no row stopping it). The events belong to the history
// named by the returned Epoch.
//
// One REPEATABLE READ transaction on one connection: a pool whose
// connection moved to another server in between (a failover) can never
// pair one history's place with another's rows. A batch the database fails
// to print is read again one row at a time inside the same snapshot, each
// row in a savepoint of its own.
func (s *Store) ReadHistory(ctx context.Context, epoch string, after int64, limit int, maxBytes int64) (History, []Event, error) {
	var h History
	var events []Event
	err := pgx.BeginTxFunc(ctx, s.Pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT epoch, head, pruned_through, valid FROM livepg.position($1, $2)`,
			nullIfEmpty(epoch), after).Scan(&h.Epoch, &h.Head, &h.PrunedThrough, &h.InHistory); err != nil {
			return err
		}
		if !h.InHistory {
			return nil
		}
		var err error
		events, err = inSavepoint(ctx, tx, func(q pgx.Tx) ([]Event, error) {
			return readEvents(ctx, q, afterSQL, after, limit, maxBytes)
		})
		if err == nil || !rowError(ctx, err) {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT seq FROM livepg.events WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
		if err != nil {
			return err
		}
		events, err = readOneByOne(ctx, tx, rows, maxBytes)
		return err
	})
	if err != nil {
		return History{}, nil, fmt.Errorf("read events after %d: %w", after, err)
	}
	return h, events, nil
}

// nextSQL is ReadNext's read, one statement and so one snapshot (a STABLE
// function such as livepg.position reads in its caller's): the log's bounds,
// whether (epoch $1, seq $2) is in its history, and, if it is, the events
// after $2 as afterSQL reads them ($3 limit, $4 maxBytes). Every row carries
// the bounds; with no events to read, one row whose event columns are NULL.
var nextSQL = `WITH p AS (SELECT epoch, head, pruned_through, valid FROM livepg.position($1, $2)),
 c AS (SELECT ev.seq FROM livepg.events ev
        WHERE ev.seq > $2 AND (SELECT p.valid FROM p) ORDER BY ev.seq LIMIT $3)` + boundedCTEs + `,
 b AS (` + fmt.Sprintf(boundedRows, 4) + `)
SELECT p.epoch, p.head, p.pruned_through, p.valid, b.* FROM p LEFT JOIN b ON true ORDER BY b.seq`

// Next is what a node's read step (ReadNext) found.
type Next struct {
	// History: the log's bounds, and whether the place read from is in its
	// history (when it is not, Events is empty).
	History
	// Events: the events after the place read from.
	Events []Event
	// Numbered: how many pending events the step numbered.
	Numbered int
	// More: events may be left to number or to read; step again.
	More bool
}

// ReadNext is a node's read step in one round trip to the database: when
// number is true it numbers the pending events (livepg.number_pending, as
// NumberPending does: up to numberBatch of them), then reads as ReadHistory
// does, the bounds and the events in one snapshot. Both statements go in
// one pipeline and run in one implicit transaction, and ReadNext returns
// only once it has committed (durably, when it numbered anything): no
// event comes back before its number is safe.
//
// Why one round trip: a node fanning out to thousands of streams is busy,
// and each round trip waits for the scheduler to come back to the reader;
// ReadHistory's transaction costs six and the numbering one more. When the
// database fails on a row (see rowError), ReadNext falls back to
// NumberPending and ReadHistory, which skip it.
func (s *Store) ReadNext(ctx context.Context, number bool, epoch string, after int64, limit int, maxBytes int64) (Next, error) {
	var (
		h        History
		events   []Event
		numbered int
	)
	batch := &pgx.Batch{}
	if number {
		batch.Queue(`SELECT numbered FROM livepg.number_pending($1)`, numberBatch).QueryRow(func(row pgx.Row) error {
			return row.Scan(&numbered)
		})
	}
	// A prepared statement: PostgreSQL's generic plan of it walks the seq
	// index from $2 as a custom plan does (TestReadNextGenericPlan), so it
	// is not planned again on every read.
	batch.Queue(nextSQL, nullIfEmpty(epoch), after, limit, maxBytes).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var seq, size, cost *int64
			var topic, typ *string
			var data []byte
			var at *time.Time
			var tooLarge *bool
			if err := rows.Scan(&h.Epoch, &h.Head, &h.PrunedThrough, &h.InHistory,
				&seq, &topic, &typ, &data, &at, &size, &tooLarge, &cost); err != nil {
				return err
			}
			if seq == nil {
				continue // no events: the bounds alone
			}
			e := Event{Seq: *seq, Topic: *topic, Type: *typ, Data: data, CommittedAt: *at, Size: *size, cost: *cost}
			if *tooLarge {
				e.Omitted = OmittedTooLarge
				e.Data = nil
			}
			events = append(events, e)
		}
		return rows.Err()
	})
	err := s.Pool.SendBatch(ctx, batch).Close()
	if err != nil && rowError(ctx, err) {
		return s.readNextSlowly(ctx, number, epoch, after, limit, maxBytes)
	}
	if err != nil {
		return Next{}, fmt.Errorf("number and read events after %d: %w", after, err)
	}
	return Next{History: h, Events: events, Numbered: numbered,
		More: numbered >= numberBatch || (h.InHistory && FullBatch(events, limit, maxBytes))}, nil
}

// readNextSlowly is ReadNext in several round trips, for a batch the
// database failed to print: ReadHistory reads it again row by row.
func (s *Store) readNextSlowly(ctx context.Context, number bool, epoch string, after int64, limit int, maxBytes int64) (Next, error) {
	var next Next
	if number {
		var err error
		if next.Numbered, err = s.NumberPending(ctx); err != nil { // all of them
			return Next{}, err
		}
	}
	h, events, err := s.ReadHistory(ctx, epoch, after, limit, maxBytes)
	if err != nil {
		return Next{}, err
	}
	next.History, next.Events = h, events
	next.More = h.InHistory && FullBatch(events, limit, maxBytes)
	return next, nil
}

// inSavepoint runs read in a savepoint of tx, so that the database failing
// on a row leaves tx usable.
func inSavepoint(ctx context.Context, tx pgx.Tx, read func(pgx.Tx) ([]Event, error)) ([]Event, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	events, err := read(sp)
	if err != nil {
		_ = sp.Rollback(ctx)
		return nil, err
	}
	return events, sp.Commit(ctx)
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullIfNegative(n int64) *int64 {
	if n < 0 {
		return nil
	}
	return &n
}

// Publish records one event and commits it, returning its seq.
func (s *Store) Publish(ctx context.Context, topic, typ string, data []byte) (int64, error) {
	var id int64
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		id, err = PublishTx(ctx, tx, topic, typ, data)
		return err
	})
	if err != nil {
		return 0, err
	}
	return s.seqOf(ctx, id)
}

// PublishTx records an event inside tx through livepg.publish, as any SQL
// writer would; the event reaches subscribers if and only if tx commits. It
// returns the event's id, which SeqOf turns into its seq after the commit.
func PublishTx(ctx context.Context, tx pgx.Tx, topic, typ string, data []byte) (int64, error) {
	var id int64
	if data == nil {
		data = []byte("null")
	}
	err := tx.QueryRow(ctx, `SELECT livepg.publish($1, $2::jsonb, $3)`, topic, string(data), typ).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("publish: %w", asInvalid(err))
	}
	return id, nil
}

// seqOf reads the seq of the committed event id. In commit_timestamp mode
// a committed event may not be numbered yet: it numbers what is pending
// (NumberPending) and reads again.
func (s *Store) seqOf(ctx context.Context, id int64) (int64, error) {
	seqs := []int64{0}
	if err := s.seqsOf(ctx, []int64{id}, seqs); err != nil {
		return 0, err
	}
	return seqs[0], nil
}

// Prune deletes events committed more than keep ago, if no other node is
// pruning at the moment, and returns how far the log is now pruned (0 when
// another node held the lock).
func (s *Store) Prune(ctx context.Context, keep time.Duration) (int64, error) {
	var through *int64
	if err := s.Pool.QueryRow(ctx, `SELECT livepg.prune($1)`, keep).Scan(&through); err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	if through == nil {
		return 0, nil
	}
	return *through, nil
}
