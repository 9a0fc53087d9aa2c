package storetest

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/localpg"
)

// The login roles of the README's recipe (section "On your own database",
// subsection "Roles"), with the passwords it gives them.
const (
	OwnerRole = "livepg_owner"
	NodeRole  = "livepg_server"
	AppRole   = "myapp"
)

var recipePasswords = map[string]string{
	OwnerRole: "owner-secret",
	NodeRole:  "server-secret",
	AppRole:   "app-secret",
}

// recipeMarker is the line of README.md right above the recipe's SQL block.
const recipeMarker = "<!-- The block below is the tested recipe: store/storetest runs it as is. -->"

// Recipe is a database set up by the README's roles recipe, on a cluster of
// its own (the recipe's roles belong to the whole cluster), and migrated by
// its owner role.
type Recipe struct {
	Cluster *localpg.Cluster
	// Admin is the database's URL as the cluster's superuser.
	Admin string
	// Owner, Node and App are the database's URLs as the recipe's login
	// roles: livepg's owner, the node (livepg_node) and the application
	// (livepg_writer).
	Owner, Node, App string
}

// RecipeSQL returns the SQL block of the README's roles recipe.
func RecipeSQL(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("recipe: cannot locate storetest's source")
	}
	readme := filepath.Join(filepath.Dir(file), "..", "..", "README.md")
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatalf("recipe: %v", err)
	}
	_, after, ok := strings.Cut(string(b), recipeMarker)
	if !ok {
		t.Fatalf("recipe: README.md has no line %q", recipeMarker)
	}
	after = strings.TrimLeft(after, "\n")
	body, ok := strings.CutPrefix(after, "```sql\n")
	if !ok {
		t.Fatal("recipe: the line after the marker in README.md does not open a ```sql block")
	}
	sql, _, ok := strings.Cut(body, "\n```")
	if !ok {
		t.Fatal("recipe: README.md's recipe block is not closed")
	}
	return sql
}

// NewRecipe starts a cluster of its own, creates a database on it, runs the
// README's recipe there as the superuser, then migrates the database as the
// recipe's owner role.
func NewRecipe(t testing.TB) *Recipe {
	t.Helper()
	c := NewCluster(t)
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

// As returns dbURL with its user replaced by one of the recipe's login roles
// (and its password).
func As(t testing.TB, dbURL, role string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil || u.Scheme == "" {
		t.Fatalf("recipe needs a URL, not %q", dbURL)
	}
	pw, ok := recipePasswords[role]
	if !ok {
		t.Fatalf("recipe has no role %q", role)
	}
	u.User = url.UserPassword(role, pw)
	return u.String()
}

// Migrate runs livepg's migrations on dbURL, as `livepg migrate up` does.
func Migrate(ctx context.Context, dbURL string) error {
	s, err := store.Open(ctx, dbURL)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.MigrateUp(ctx)
}
