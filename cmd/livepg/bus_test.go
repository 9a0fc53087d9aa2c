package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime/walbus"
	"github.com/livepg/livepg/store/storetest"
)

// `livepg bus logical|default|status` switches the database's bus mode and
// says which it is; back to the default mode it drops the logical mode's
// replication slot, so that it retains no WAL.
func TestBusSubcommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := storetest.NewLogicalCluster(t)
	db := storetest.NewDatabaseOn(t, c.URL())
	env := func(k string) string { return map[string]string{"DATABASE_URL": db}[k] }
	step := func(want string, args ...string) {
		t.Helper()
		var out bytes.Buffer
		if err := run(ctx, args, env, &out, io.Discard); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.Contains(out.String(), want) {
			t.Fatalf("%v printed %q, want it to mention %q", args, out.String(), want)
		}
	}
	step("bus: commit_", "bus", "status")
	step("bus: logical (was default)", "bus", "logical")
	step("bus: logical", "bus", "status")
	// A slot as the decoding leader leaves it.
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, walbus.DefaultSlot); err != nil {
		t.Fatal(err)
	}
	step("dropped the replication slot "+walbus.DefaultSlot, "bus", "default")
	var slots int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots`).Scan(&slots); err != nil {
		t.Fatal(err)
	}
	if slots != 0 {
		t.Fatalf("%d replication slots left after `livepg bus default`", slots)
	}
	step("bus: commit_", "bus", "status")
	for _, bad := range [][]string{{"bus"}, {"bus", "fast"}, {"bus", "logical", "now"}} {
		if err := run(ctx, bad, env, io.Discard, io.Discard); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}
