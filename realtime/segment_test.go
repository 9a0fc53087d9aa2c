package realtime_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/store/storetest"
)

func hashed(value string) string {
	sum := sha256.Sum256([]byte(value))
	return hex.EncodeToString(sum[:])[:32]
}

// segmentCases are values and their segments; a nil value is NULL.
var segmentCases = []struct {
	name  string
	value *string
	want  string
}{
	{"plain", ptr("bob"), "bob"},
	{"every kept byte", ptr("aZ09_.:@=+-"), "aZ09_.:@=+-"},
	{"slash", ptr("/"), "%2F"},
	{"path", ptr("bob/../alice"), "bob%2F..%2Falice"},
	{"dot", ptr("."), "%2E"},
	{"dots", ptr(".."), "%2E%2E"},
	{"dotted", ptr("a.b"), "a.b"},
	{"placeholder", ptr("{other}"), "%7Bother%7D"},
	{"spaces", ptr("a b\tc"), "a%20b%09c"},
	{"unicode", ptr("é日本"), "%C3%A9%E6%97%A5%E6%9C%AC"},
	{"percent", ptr("%"), "%25"},
	{"escape lookalike", ptr("%00"), "%2500"},
	{"star", ptr("*"), "%2A"},
	{"empty", ptr(""), "%%"},
	{"null", nil, realtime.NullTopicSegment},
	{"64 bytes", ptr(strings.Repeat("a", 64)), strings.Repeat("a", 64)},
	{"65 bytes", ptr(strings.Repeat("a", 65)), strings.Repeat("a", 32) + "%%" + hashed(strings.Repeat("a", 65))},
	{"1000 bytes", ptr(strings.Repeat("x/", 500)), "x%2Fx%2Fx%2Fx%2Fx%2Fx%2Fx%2Fx%2F" + "%%" + hashed(strings.Repeat("x/", 500))},
	{"escape at 31", ptr(strings.Repeat("a", 30) + strings.Repeat("/", 20)), strings.Repeat("a", 30) + "%%" + hashed(strings.Repeat("a", 30)+strings.Repeat("/", 20))},
	{"escape at 32", ptr(strings.Repeat("a", 31) + strings.Repeat("/", 20)), strings.Repeat("a", 31) + "%%" + hashed(strings.Repeat("a", 31)+strings.Repeat("/", 20))},
	{"escape at 33", ptr(strings.Repeat("a", 32) + strings.Repeat("/", 20)), strings.Repeat("a", 32) + "%%" + hashed(strings.Repeat("a", 32)+strings.Repeat("/", 20))},
	{"22 dots", ptr(strings.Repeat(".", 22)), strings.Repeat("%2E", 10) + "%%" + hashed(strings.Repeat(".", 22))},
}

func ptr(s string) *string { return &s }

func TestTopicSegmentInGo(t *testing.T) {
	t.Parallel()
	for _, c := range segmentCases {
		if c.value == nil {
			continue // Go has no NULL string; apps use NullTopicSegment
		}
		if got := realtime.TopicSegment(*c.value); got != c.want {
			t.Errorf("%s: TopicSegment(%q) = %q, want %q", c.name, *c.value, got, c.want)
		}
	}
}

// The same values through a tracked table: each fills exactly one segment of
// the topic its row is published on, and no value fails the write.
func TestTrackedTableTopicsEncodeValues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`CREATE TABLE profiles (id int, owner text, other text, data jsonb)`)
	exec(`SELECT livepg.track('profiles', 'users/{owner}/profile')`)
	for i, c := range segmentCases {
		exec(`INSERT INTO profiles (id, owner) VALUES ($1, $2)`, i, c.value)
	}
	// One pass: a value that names another placeholder stays literal.
	exec(`SELECT livepg.track('profiles', '{owner}/x/{other}')`)
	exec(`INSERT INTO profiles (id, owner, other) VALUES (100, '{other}', 'z')`)
	// A JSON null and a value that is not text.
	exec(`SELECT livepg.track('profiles', 'data/{data}')`)
	exec(`INSERT INTO profiles (id, data) VALUES (101, NULL), (102, '{"a": [1, "b/c"]}')`)

	storetest.NumberPending(t, conn)
	rows, err := conn.Query(ctx, `SELECT topic FROM livepg.events ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	topics, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, c := range segmentCases {
		want = append(want, "users/"+c.want+"/profile")
	}
	want = append(want, "%7Bother%7D/x/z", "data/%00", "data/"+realtime.TopicSegment(`{"a": [1, "b/c"]}`))
	if len(topics) != len(want) {
		t.Fatalf("got %d events, want %d: %q", len(topics), len(want), topics)
	}
	for i := range want {
		if topics[i] != want[i] {
			t.Errorf("event %d: topic %q, want %q", i, topics[i], want[i])
		}
		if !realtime.ValidTopic(topics[i]) {
			t.Errorf("event %d: topic %q is not valid in Go", i, topics[i])
		}
	}
}

// segmentRE is the grammar of one segment.
var segmentRE = regexp.MustCompile(`^[A-Za-z0-9_.:@=+%-]+$`)

// decodeSegment inverts TopicSegment for segments that are not shortened:
// ok is false for a shortened one (its value is not recoverable).
func decodeSegment(t testing.TB, seg string) (value string, ok bool) {
	if seg == "%%" {
		return "", true
	}
	if strings.Contains(seg, "%%") {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(seg); i++ {
		if seg[i] != '%' {
			b.WriteByte(seg[i])
			continue
		}
		if i+2 >= len(seg) {
			t.Fatalf("segment %q: escape cut short", seg)
		}
		n, err := strconv.ParseUint(seg[i+1:i+3], 16, 8)
		if err != nil || strings.ToUpper(seg[i+1:i+3]) != seg[i+1:i+3] {
			t.Fatalf("segment %q: bad escape %q", seg, seg[i:i+3])
		}
		b.WriteByte(byte(n))
		i += 2
	}
	return b.String(), true
}

// fuzzSeeds are the fuzz target's seeds, also fed to SQL.
var fuzzSeeds = []string{
	"", "bob", "/", "..", ".", "...", "{x}", "a b", "é", "日本語", "%", "%%", "%00", "%2F",
	strings.Repeat("a", 64), strings.Repeat("a", 65), strings.Repeat("/", 30), strings.Repeat("é", 40),
	"users/bob/../alice/profile", "\x7f", "~", "a\nb",
}

func FuzzTopicSegment(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		seg := realtime.TopicSegment(value)
		if !segmentRE.MatchString(seg) || len(seg) > 66 {
			t.Fatalf("TopicSegment(%q) = %q: not one segment of at most 66 bytes", value, seg)
		}
		if strings.Trim(seg, ".") == "" {
			t.Fatalf("TopicSegment(%q) = %q: only dots", value, seg)
		}
		if !realtime.ValidTopic("users/" + seg + "/profile") {
			t.Fatalf("TopicSegment(%q) = %q makes an invalid topic", value, seg)
		}
		decoded, ok := decodeSegment(t, seg)
		if ok && decoded != value {
			t.Fatalf("TopicSegment(%q) = %q decodes to %q: two values could share it", value, seg, decoded)
		}
		if !ok {
			prefix, sum, _ := strings.Cut(seg, "%%")
			if sum != hashed(value) || len(prefix) > 32 {
				t.Fatalf("TopicSegment(%q) = %q: a shortened segment must be <=32 bytes, %%%% and the value's hash", value, seg)
			}
			if p, ok := decodeSegment(t, prefix); !ok || !strings.HasPrefix(value, p) {
				t.Fatalf("TopicSegment(%q) = %q: prefix %q is not the value's", value, seg, p)
			}
		}
	})
}

// Go and SQL encode alike: the fuzz seeds, the stored fuzz corpus and random
// strings go through livepg.topic_segment and realtime.TopicSegment.
func TestTopicSegmentMatchesSQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, storetest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	values := append([]string(nil), fuzzSeeds...)
	for _, c := range segmentCases {
		if c.value != nil {
			values = append(values, *c.value)
		}
	}
	corpus, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzTopicSegment", "*"))
	for _, file := range corpus {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		// go test fuzz v1, then string("...")
		for _, line := range strings.Split(string(b), "\n") {
			if quoted, ok := strings.CutPrefix(line, "string("); ok {
				if v, err := strconv.Unquote(strings.TrimSuffix(quoted, ")")); err == nil {
					values = append(values, v)
				}
			}
		}
	}
	alphabet := []rune("aZ09_.:@=+-/%{} \t\n*~?#&é日😀\u00a0\u200b")
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		r := make([]rune, rng.IntN(90))
		for i := range r {
			r[i] = alphabet[rng.IntN(len(alphabet))]
		}
		values = append(values, string(r))
	}
	// PostgreSQL text holds valid UTF-8 without NUL.
	var sqlValues []string
	for _, v := range values {
		if utf8.ValidString(v) && !strings.ContainsRune(v, 0) {
			sqlValues = append(sqlValues, v)
		}
	}
	rows, err := conn.Query(ctx, `SELECT livepg.topic_segment(v) FROM unnest($1::text[]) WITH ORDINALITY AS x(v, i) ORDER BY i`, sqlValues)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range sqlValues {
		if want := realtime.TopicSegment(v); got[i] != want {
			t.Errorf("%q: SQL %q, Go %q", v, got[i], want)
		}
	}
	var null string
	if err := conn.QueryRow(ctx, `SELECT livepg.topic_segment(NULL)`).Scan(&null); err != nil || null != realtime.NullTopicSegment {
		t.Errorf("livepg.topic_segment(NULL) = %q, %v; want %q", null, err, realtime.NullTopicSegment)
	}
}
