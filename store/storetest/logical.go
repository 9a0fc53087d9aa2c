package storetest

import (
	"context"
	"maps"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/store/localpg"
)

// LogicalSettings are the server settings the logical bus mode needs
// (LIVEPG_BUS=logical): logical WAL, and room for a replication slot and its
// walsender.
var LogicalSettings = map[string]string{
	"wal_level":             "logical",
	"max_replication_slots": "8",
	"max_wal_senders":       "8",
}

// NewClusterWith starts a cluster that belongs to the calling test alone, as
// NewCluster does, with extra server settings on top of the test settings
// (for example LogicalSettings). It is stopped and removed at cleanup.
func NewClusterWith(t testing.TB, settings map[string]string) *localpg.Cluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "livepg-test-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions
	opts.Settings = maps.Clone(testSettings)
	maps.Copy(opts.Settings, settings)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := localpg.Start(ctx, dir, opts)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
		os.RemoveAll(dir)
	})
	return c
}

// NewLogicalCluster starts a cluster of the test's own with wal_level=logical
// (LogicalSettings). Its postgres user is a superuser, so it may open
// replication connections through the socket.
func NewLogicalCluster(t testing.TB) *localpg.Cluster {
	t.Helper()
	return NewClusterWith(t, LogicalSettings)
}

// NewLogicalRecipe is NewRecipe on a cluster of its own started with
// wal_level=logical (LogicalSettings).
func NewLogicalRecipe(t testing.TB) *Recipe {
	t.Helper()
	c := NewLogicalCluster(t)
	r := &Recipe{Cluster: c, Admin: NewEmptyDatabaseOn(t, c.URL())}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, r.Admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, RecipeSQL(t)); err != nil {
		t.Fatalf("README recipe: %v", err)
	}
	r.Owner, r.Node, r.App = As(t, r.Admin, OwnerRole), As(t, r.Admin, NodeRole), As(t, r.Admin, AppRole)
	if err := Migrate(ctx, r.Owner); err != nil {
		t.Fatalf("livepg migrate up as %s: %v", OwnerRole, err)
	}
	return r
}
