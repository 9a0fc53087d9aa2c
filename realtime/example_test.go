package realtime_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/livepg/livepg/realtime"
	"github.com/livepg/livepg/store"
	"github.com/livepg/livepg/store/storetest"
)

// An application mounts the engine's streams and publish endpoint in its
// own net/http mux, beside its own routes. Here one subscriber opens a
// stream, the application publishes over HTTP (a writer in SQL would call
// livepg.publish, or write a tracked table), and the subscriber prints what
// it received.
func ExampleNode_Handler() {
	ctx := context.Background()
	databaseURL, dropDatabase := exampleDatabase() // the application's DATABASE_URL
	defer dropDatabase()

	st, err := store.Open(ctx, databaseURL)
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	if err := st.MigrateUp(ctx); err != nil { // livepg's schema, once
		log.Fatal(err)
	}
	node, err := realtime.NewNode(st, realtime.Config{
		ListenURL: databaseURL, // a direct session on the primary
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := node.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer node.Stop()

	mux := http.NewServeMux()
	mux.Handle("/v1/", node.Handler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "the application's own page")
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.RegisterOnShutdown(node.CloseStreams)
	srv.Start()
	defer srv.Close()

	// A subscriber, as a browser's EventSource would be: once it has the
	// response headers, it receives every event committed after.
	stream, err := http.Get(srv.URL + "/v1/events?topic=greetings")
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Body.Close()

	published, err := http.Post(srv.URL+"/v1/publish", "application/json",
		strings.NewReader(`{"topic":"greetings","type":"hello","data":{"text":"hi"}}`))
	if err != nil {
		log.Fatal(err)
	}
	published.Body.Close()
	fmt.Println("publish:", published.Status)

	lines := bufio.NewScanner(stream.Body)
	for lines.Scan() {
		line := lines.Text()
		if strings.HasPrefix(line, "event:") || strings.HasPrefix(line, "data:") {
			fmt.Println(line)
		}
		if strings.HasPrefix(line, "data:") {
			break
		}
	}
	// Output:
	// publish: 200 OK
	// event: hello
	// data: {"topic":"greetings","data":{"text": "hi"}}
}

// exampleDatabase is a throwaway migrated database from storetest, which
// wants a testing.TB that an Example does not have: this one panics on
// failure, and the returned drop runs the cleanups.
func exampleDatabase() (url string, drop func()) {
	tb := &exampleTB{}
	return storetest.NewDatabase(tb), func() {
		for i := len(tb.cleanups) - 1; i >= 0; i-- {
			tb.cleanups[i]()
		}
	}
}

type exampleTB struct {
	testing.TB // nil: storetest calls only the methods below
	cleanups   []func()
}

func (*exampleTB) Helper()                      {}
func (*exampleTB) Name() string                 { return "ExampleNode_Handler" }
func (*exampleTB) Log(args ...any)              {}
func (*exampleTB) Logf(string, ...any)          {}
func (*exampleTB) Error(args ...any)            { panic(fmt.Sprint(args...)) }
func (*exampleTB) Errorf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }
func (*exampleTB) Fatal(args ...any)            { panic(fmt.Sprint(args...)) }
func (*exampleTB) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }
func (tb *exampleTB) Cleanup(f func())          { tb.cleanups = append(tb.cleanups, f) }
