package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// The node registry as the README's roles use it: a node (livepg_node)
// writes its row, reads everyone's and the log's figures, and leaves; the
// application (livepg_writer) can do none of it, and a node can write the
// registry only through livepg.node_beat, which bounds what it stores.
func TestNodeRegistryAsTheRecipesRoles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := storetest.NewRecipe(t)
	node, err := store.Open(ctx, r.Node)
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	started := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	beat := store.NodeBeat{ID: "n1", Address: "10.0.0.1:8080", Region: "ams", StartedAt: started, Every: 5 * time.Second, Stats: []byte(`{"streams": 3}`)}
	if err := node.Beat(ctx, beat); err != nil {
		t.Fatalf("beat as livepg_node: %v", err)
	}
	rows, err := node.Nodes(ctx, 100)
	if err != nil || len(rows) != 1 {
		t.Fatalf("nodes as livepg_node: %+v, %v", rows, err)
	}
	if got := rows[0]; got.ID != "n1" || got.Address != "10.0.0.1:8080" || got.Region != "ams" || !got.StartedAt.Equal(started) ||
		got.Stale || got.Every != 5*time.Second || !strings.Contains(string(got.Stats), `"streams": 3`) {
		t.Errorf("row: %+v", got)
	}
	if _, err := node.Publish(ctx, "notes/1", "message", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	ls, err := node.LogStats(ctx)
	if err != nil || ls.Head != 1 || ls.OldestSeq != 1 || ls.OldestAt.IsZero() || ls.Epoch == "" {
		t.Errorf("log stats as livepg_node: %+v, %v", ls, err)
	}

	// Bounds: what the function refuses changes nothing.
	for name, bad := range map[string]store.NodeBeat{
		"empty id":      {ID: "", Every: time.Second},
		"long id":       {ID: strings.Repeat("x", 129), Every: time.Second},
		"fast beat":     {ID: "n2", Every: time.Millisecond},
		"huge stats":    {ID: "n2", Every: time.Second, Stats: []byte(`{"x": "` + strings.Repeat("y", 70000) + `"}`)},
		"not an object": {ID: "n2", Every: time.Second, Stats: []byte(`{`)},
	} {
		if err := node.Beat(ctx, bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("beat with %s: %v, want ErrInvalid", name, err)
		}
	}
	if rows, _ := node.Nodes(ctx, 100); len(rows) != 1 {
		t.Errorf("refused beats left rows: %+v", rows)
	}

	nodeConn, appConn := connect(t, r.Node), connect(t, r.App)
	for _, sql := range []string{
		`INSERT INTO livepg.nodes (id, started_at, seen_at, every_ms) VALUES ('x', now(), now(), 1000)`,
		`UPDATE livepg.nodes SET stats = '{}'`,
		`DELETE FROM livepg.nodes`,
	} {
		refused(t, nodeConn, sql)
	}
	for _, sql := range []string{
		`SELECT * FROM livepg.nodes`,
		`SELECT livepg.node_beat('x', '', '', now(), interval '1 second', '{}')`,
		`SELECT livepg.node_leave('n1')`,
	} {
		refused(t, appConn, sql)
	}

	if err := node.Leave(ctx, "n1"); err != nil {
		t.Fatalf("leave as livepg_node: %v", err)
	}
	if rows, _ := node.Nodes(ctx, 100); len(rows) != 0 {
		t.Errorf("after leaving: %+v", rows)
	}
}

// BenchmarkNodeBeat measures what the inspector costs the database per node
// and interval: one beat (a row of about 3 KB of stats, as a node with 20
// topics writes) and one read of a registry of 20 nodes, and the log's
// figures over 20,000 events.
//
//	go test ./store -run '^$' -bench BenchmarkNodeBeat
func BenchmarkNodeBeat(b *testing.B) {
	ctx := context.Background()
	s := storetest.NewStore(b)
	if _, err := s.Pool.Exec(ctx, `SELECT livepg.publish('t/' || (i % 100), jsonb_build_object('i', i)) FROM generate_series(1, 20000) i`); err != nil {
		b.Fatal(err)
	}
	var topics []string
	for i := range 20 {
		topics = append(topics, fmt.Sprintf(`{"selector": "boards/%d/cards/*", "streams": %d}`, i, 1000-i))
	}
	stats := []byte(`{"streams": 4000, "topics": [` + strings.Join(topics, ",") + `], "log": {"head": 20000}, "lag": {"events": 100}, "pad": "` + strings.Repeat("x", 1800) + `"}`)
	for i := range 20 {
		if err := s.Beat(ctx, store.NodeBeat{ID: fmt.Sprintf("node-%d", i), StartedAt: time.Now(), Every: 5 * time.Second, Stats: stats}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("beat", func(b *testing.B) {
		for b.Loop() {
			if err := s.Beat(ctx, store.NodeBeat{ID: "node-0", StartedAt: time.Now(), Every: 5 * time.Second, Stats: stats}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("read-20-nodes", func(b *testing.B) {
		for b.Loop() {
			if rows, err := s.Nodes(ctx, 100); err != nil || len(rows) != 20 {
				b.Fatal(len(rows), err)
			}
		}
	})
	b.Run("log-stats", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.LogStats(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
