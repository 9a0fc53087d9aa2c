// Package migrations holds livepg's goose SQL migrations, embedded in the
// binary so that `livepg migrate up` needs nothing but a database URL.
package migrations

import "embed"

// FS holds the numbered goose migration files.
//
//go:embed *.sql
var FS embed.FS
