// Package walbus reads livepg's event log from the write-ahead log, for the
// logical bus mode (LIVEPG_BUS=logical).
//
// In that mode writers only insert their events (seq NULL): no NOTIFY, no
// lock. One elected node runs a Decoder: it streams the replication slot
// livepg_bus with the pgoutput plugin (publication livepg_bus: INSERTs into
// livepg.events, id column only), gathers each committed transaction's event
// ids, and hands whole transactions to a Handler in batches, in commit-LSN
// order: the order of the commit records in the WAL, which is commit order
// (a transaction that waited on another's lock writes its commit record
// after it). The Handler numbers a batch durably, recording its last commit
// LSN in the same transaction; only then does the Decoder acknowledge the
// batch to the slot. After a crash the slot replays from its last
// acknowledged position and the Handler's recorded LSN makes the replay
// skip what is already numbered: nothing is lost, nothing numbered twice.
//
// Leadership: the Decoder takes a session advisory lock (LeaderLockKey) on
// its replication connection before it touches the slot, and holds it while
// it streams; when the connection dies, so does the lock, and another node's
// Decoder, retrying every RetryInterval, takes over. (The slot is also
// exclusive by itself: one walsender at a time.)
//
// The slot: created by the Decoder when it is missing, and again when
// PostgreSQL invalidated it (wal_status "lost": max_slot_wal_keep_size was
// exceeded) or it was dropped. A new slot starts at its consistent point;
// events committed before it are never decoded, so the Decoder calls
// Handler.Recover with the snapshot exported by the slot's creation: the
// events pending (seq NULL) in that snapshot are exactly those, and the
// Handler numbers them first. The events table, not the slot, is the truth.
package walbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Names livepg gives its replication objects.
const (
	DefaultSlot        = "livepg_bus"
	DefaultPublication = "livepg_bus"
)

// LeaderLockKey is the session advisory lock the decoding leader holds. It
// differs from livepg's other advisory keys (numbering ...007, prune ...008).
const LeaderLockKey int64 = 7236828372618428014

// LSN is a WAL position.
type LSN = pglogrepl.LSN

// Txn is one committed transaction's events, as decoded.
type Txn struct {
	Xid        uint32    // the writer's transaction id (32 bits, as pgoutput sends it)
	CommitLSN  LSN       // where its commit record is: the order of transactions
	EndLSN     LSN       // the end of its commit record: what to acknowledge
	CommitTime time.Time // its commit timestamp
	IDs        []int64   // livepg.events ids, in insert order
}

// Batch is a run of transactions in commit-LSN order.
type Batch struct {
	Txns []Txn
}

// Events counts the events in the batch.
func (b Batch) Events() int {
	n := 0
	for _, t := range b.Txns {
		n += len(t.IDs)
	}
	return n
}

// Handler numbers what the Decoder decodes.
type Handler interface {
	// Done returns the commit LSN through which transactions are numbered
	// already: the Decoder skips commits at or below it.
	Done(ctx context.Context) (LSN, error)
	// Recover numbers the events pending in snapshot (a snapshot exported
	// by the creation of a new slot, valid only during the call): they were
	// committed before the slot's consistent point and will not be decoded.
	// It records everything before consistentPoint as done (a commit at
	// the consistent point itself is decoded).
	// It returns how many events it numbered.
	Recover(ctx context.Context, snapshot string, consistentPoint LSN) (int64, error)
	// Apply numbers a batch in its order and records its last commit LSN,
	// in one transaction, durably, before it returns.
	Apply(ctx context.Context, b Batch) error
}

// Config sets a Decoder up. URL and Handler are required.
type Config struct {
	// URL is a direct connection (not through a pooler) to the primary, as
	// a role with the REPLICATION attribute; replication=database is added.
	URL         string
	Handler     Handler
	Slot        string // DefaultSlot when empty
	Publication string // DefaultPublication when empty
	Logger      *slog.Logger
	// MaxBatch bounds a batch's events (default 4096); a transaction is
	// never split, so a batch may hold more when one transaction does.
	MaxBatch int
	// Linger is how long the decoder waits for another commit before it
	// applies what it has (default 2ms); MaxDelay bounds a batch's age
	// (default 20ms).
	Linger, MaxDelay time.Duration
	// StatusInterval is how often the slot hears from the leader when idle
	// (default 10s, within wal_sender_timeout's 60s default).
	StatusInterval time.Duration
	// RetryInterval is how often a node that is not the leader, or lost
	// its stream, tries again (default 1s).
	RetryInterval time.Duration
}

// Decoder is the decoding leader's loop (and a candidate's, until elected).
type Decoder struct {
	cfg    Config
	log    *slog.Logger
	leader atomic.Bool
	// Counters, for metrics and tests.
	batches, events, recoveries, recovered atomic.Int64
}

// New checks cfg and returns a Decoder; Run starts it.
func New(cfg Config) (*Decoder, error) {
	if cfg.URL == "" || cfg.Handler == nil {
		return nil, errors.New("walbus: URL and Handler are required")
	}
	if cfg.Slot == "" {
		cfg.Slot = DefaultSlot
	}
	if cfg.Publication == "" {
		cfg.Publication = DefaultPublication
	}
	if !validName(cfg.Slot) || !validName(cfg.Publication) {
		return nil, fmt.Errorf("walbus: slot and publication names must be lower-case letters, digits and _: %q, %q", cfg.Slot, cfg.Publication)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 4096
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 2 * time.Millisecond
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 20 * time.Millisecond
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	return &Decoder{cfg: cfg, log: cfg.Logger.With("component", "walbus", "slot", cfg.Slot)}, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Leader reports whether this Decoder holds the leadership now.
func (d *Decoder) Leader() bool { return d.leader.Load() }

// Stats returns how many batches and events this Decoder applied and how
// many times it created the slot and recovered stranded events.
func (d *Decoder) Stats() (batches, events, recoveries int64) {
	return d.batches.Load(), d.events.Load(), d.recoveries.Load()
}

// Recovered returns how many stranded events (committed while no slot
// existed) this Decoder numbered from the table.
func (d *Decoder) Recovered() int64 { return d.recovered.Load() }

// errNotLeader means another node holds the leadership.
var errNotLeader = errors.New("another node is the decoding leader")

// Run campaigns for leadership and, once elected, decodes until ctx ends or
// the stream fails; then it starts over. It returns when ctx is done.
func (d *Decoder) Run(ctx context.Context) error {
	wasLeader := false
	for {
		err := d.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, errNotLeader):
			if wasLeader {
				d.log.Info("walbus: another node is now the decoding leader")
			}
			wasLeader = false
		case err != nil:
			d.log.Warn("walbus: decoding stopped; retrying", "err", err, "retry_in", d.cfg.RetryInterval)
			wasLeader = true
		}
		t := time.NewTimer(d.cfg.RetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session is one replication connection: election, slot, stream.
func (d *Decoder) session(ctx context.Context) error {
	cfg, err := pgconn.ParseConfig(d.cfg.URL)
	if err != nil {
		return fmt.Errorf("walbus: parse URL: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "livepg walbus"
	connectCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	conn, err := pgconn.ConnectConfig(connectCtx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("walbus: connect for replication: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()

	got, err := queryOne(ctx, conn, fmt.Sprintf("SELECT pg_try_advisory_lock(%d)", LeaderLockKey))
	if err != nil {
		return fmt.Errorf("walbus: campaign: %w", err)
	}
	if got != "t" {
		return errNotLeader
	}
	d.leader.Store(true)
	defer d.leader.Store(false)
	d.log.Info("walbus: this node is the decoding leader")

	start, err := d.prepareSlot(ctx, conn)
	if err != nil {
		return err
	}
	done, err := d.cfg.Handler.Done(ctx)
	if err != nil {
		return fmt.Errorf("walbus: read numbered position: %w", err)
	}
	err = pglogrepl.StartReplication(ctx, conn, d.cfg.Slot, start, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'",
			"publication_names '" + d.cfg.Publication + "'"},
	})
	if err != nil {
		return fmt.Errorf("walbus: start replication on slot %s: %w", d.cfg.Slot, err)
	}
	return d.stream(ctx, conn, done, start)
}

// prepareSlot checks the slot's bounds, (re)creates it when it is missing or
// lost, and returns where to start streaming (0: where the slot is).
func (d *Decoder) prepareSlot(ctx context.Context, conn *pgconn.PgConn) (LSN, error) {
	keep, err := queryOne(ctx, conn, "SELECT current_setting('max_slot_wal_keep_size')")
	if err != nil {
		return 0, fmt.Errorf("walbus: read max_slot_wal_keep_size: %w", err)
	}
	if keep == "-1" {
		d.log.Warn("walbus: max_slot_wal_keep_size is unlimited: while no node decodes, the slot keeps all WAL; set it (e.g. ALTER SYSTEM SET max_slot_wal_keep_size = '4GB') to bound the disk used; a slot lost to it loses no event")
	}
	status, err := queryOne(ctx, conn, "SELECT coalesce((SELECT coalesce(wal_status, 'none') FROM pg_catalog.pg_replication_slots WHERE slot_name = '"+d.cfg.Slot+"'), 'missing')")
	if err != nil {
		return 0, fmt.Errorf("walbus: read slot status: %w", err)
	}
	switch status {
	case "reserved":
		return 0, nil
	case "extended", "unreserved":
		d.log.Warn("walbus: the slot holds more WAL than max_wal_size; it will be invalidated past max_slot_wal_keep_size (no event is lost then: they are numbered from the table)", "wal_status", status)
		return 0, nil
	case "missing":
		d.log.Info("walbus: creating the replication slot")
	default: // lost, or unknown
		d.log.Warn("walbus: the replication slot is unusable; dropping and recreating it, then numbering the events it missed from the table", "wal_status", status)
		if err := pglogrepl.DropReplicationSlot(ctx, conn, d.cfg.Slot, pglogrepl.DropReplicationSlotOptions{}); err != nil {
			return 0, fmt.Errorf("walbus: drop lost slot: %w", err)
		}
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, d.cfg.Slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return 0, fmt.Errorf("walbus: create slot: %w", err)
	}
	point, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return 0, fmt.Errorf("walbus: slot's consistent point: %w", err)
	}
	// The exported snapshot lives until this connection's next command.
	n, err := d.cfg.Handler.Recover(ctx, res.SnapshotName, point)
	if err != nil {
		return 0, fmt.Errorf("walbus: number the events committed before the slot: %w", err)
	}
	if n > 0 {
		d.log.Warn("walbus: numbered the events committed while no slot existed, in commit timestamp order if track_commit_timestamp is on, else xid order", "events", n)
	}
	d.recoveries.Add(1)
	d.recovered.Add(n)
	return point, nil
}

// stream decodes until the stream or ctx ends.
func (d *Decoder) stream(ctx context.Context, conn *pgconn.PgConn, done, ack LSN) error {
	var (
		relID    uint32
		idCol    = -1
		cur      *Txn
		batch    []Txn
		nEvents  int
		oldest   time.Time // when the batch's first transaction arrived
		lastRecv time.Time
		nextStat = time.Now().Add(d.cfg.StatusInterval)
	)
	sendStatus := func() error {
		nextStat = time.Now().Add(d.cfg.StatusInterval)
		if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: ack}); err != nil {
			return fmt.Errorf("walbus: acknowledge %s: %w", ack, err)
		}
		return nil
	}
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		b := Batch{Txns: batch}
		if err := d.cfg.Handler.Apply(ctx, b); err != nil {
			return fmt.Errorf("walbus: apply batch through %s: %w", batch[len(batch)-1].CommitLSN, err)
		}
		last := batch[len(batch)-1]
		done, ack = last.CommitLSN, max(ack, last.EndLSN)
		d.batches.Add(1)
		d.events.Add(int64(nEvents))
		batch, nEvents = nil, 0
		return sendStatus()
	}
	for {
		deadline := nextStat
		if len(batch) > 0 {
			for _, t := range []time.Time{lastRecv.Add(d.cfg.Linger), oldest.Add(d.cfg.MaxDelay)} {
				if t.Before(deadline) {
					deadline = t
				}
			}
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		raw, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !pgconn.Timeout(err) {
				return fmt.Errorf("walbus: receive: %w", err)
			}
			if len(batch) > 0 {
				if err := flush(); err != nil {
					return err
				}
			} else if time.Now().After(nextStat) {
				if err := sendStatus(); err != nil {
					return err
				}
			}
			continue
		}
		switch msg := raw.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("walbus: stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("walbus: the server ended the stream")
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("walbus: keepalive: %w", err)
				}
				// Everything before the keepalive's position was sent; when
				// nothing is held here, the slot may move up to it.
				if cur == nil && len(batch) == 0 && pkm.ServerWALEnd > ack {
					ack = pkm.ServerWALEnd
				}
				if pkm.ReplyRequested {
					if err := sendStatus(); err != nil {
						return err
					}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("walbus: xlogdata: %w", err)
				}
				m, err := pglogrepl.Parse(xld.WALData)
				if err != nil {
					return fmt.Errorf("walbus: parse pgoutput message: %w", err)
				}
				switch m := m.(type) {
				case *pglogrepl.RelationMessage:
					if m.Namespace == "livepg" && m.RelationName == "pending" {
						relID, idCol = m.RelationID, -1
						for i, c := range m.Columns {
							if c.Name == "id" {
								idCol = i
							}
						}
						if idCol < 0 {
							return errors.New("walbus: the publication does not carry livepg.pending.id")
						}
					}
				case *pglogrepl.BeginMessage:
					cur = &Txn{Xid: m.Xid, CommitTime: m.CommitTime}
				case *pglogrepl.InsertMessage:
					if cur == nil || m.RelationID != relID || idCol < 0 {
						continue
					}
					if idCol >= len(m.Tuple.Columns) {
						return errors.New("walbus: an insert without its id column")
					}
					id, err := m.Tuple.Columns[idCol].Int64()
					if err != nil {
						return fmt.Errorf("walbus: event id: %w", err)
					}
					cur.IDs = append(cur.IDs, id)
				case *pglogrepl.CommitMessage:
					if cur == nil {
						continue
					}
					cur.CommitLSN, cur.EndLSN = m.CommitLSN, m.TransactionEndLSN
					switch {
					case len(cur.IDs) == 0 || cur.CommitLSN <= done:
						// Nothing to number (or numbered before a restart).
						if len(batch) == 0 {
							ack = max(ack, cur.EndLSN)
						}
					default:
						if len(batch) == 0 {
							oldest = time.Now()
						}
						batch = append(batch, *cur)
						nEvents += len(cur.IDs)
					}
					cur = nil
					lastRecv = time.Now()
					if nEvents >= d.cfg.MaxBatch {
						if err := flush(); err != nil {
							return err
						}
					}
				}
			}
		}
	}
}

// queryOne runs a one-value query on a replication connection (simple
// protocol only) and returns the value as text.
func queryOne(ctx context.Context, conn *pgconn.PgConn, sql string) (string, error) {
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return "", err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return "", fmt.Errorf("%s: expected one value", strings.Fields(sql)[0])
	}
	return string(res[0].Rows[0][0]), nil
}

// ParseLSN reads a WAL position written as PostgreSQL writes it (16/B374D848).
func ParseLSN(s string) (LSN, error) { return pglogrepl.ParseLSN(s) }
