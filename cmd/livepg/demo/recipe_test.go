// The demo on livepg's least-privilege roles, set up by the README's recipe: the
// demo migrated by livepg_owner, served by a node running as livepg_server.
package demo_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/livepg/livepg/cmd/livepg/demo"
	"github.com/livepg/livepg/store/storetest"
)

func TestDemoOnTheREADMERecipe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := storetest.NewRecipe(t)
	if _, err := openPool(t, r.Admin).Exec(ctx, `CREATE SCHEMA livepg_demo AUTHORIZATION livepg_owner`); err != nil {
		t.Fatal(err)
	}
	if err := demo.Migrate(ctx, openPool(t, r.Owner)); err != nil {
		t.Fatalf("migrate as the owner: %v", err)
	}
	node := openPool(t, r.Node)
	if err := demo.Migrate(ctx, node); err != nil {
		t.Fatalf("start as the node: %v", err)
	}
	app := serveApp(t, r.Node, node, demo.Options{})
	code, b := do(t, "POST", app.URL+"/api/boards", `{"name":"x"}`)
	if code != http.StatusCreated {
		t.Fatalf("create board as the node: %d %v", code, b)
	}
	if code, c := do(t, "POST", fmt.Sprintf("%s/api/boards/%v/cards", app.URL, b["id"]), `{"text":"y","col":"todo"}`); code != http.StatusCreated {
		t.Fatalf("add card as the node: %d %v", code, c)
	}
	if n := app.count(t, `SELECT count(*) FROM (SELECT topic FROM livepg.events UNION ALL SELECT topic FROM livepg.pending) e`); n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
}
