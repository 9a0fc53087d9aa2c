// Package realtime is livepg's engine: a Node that LISTENs on PostgreSQL,
// reads every committed event of the log (schema livepg) in commit order,
// fans it out to Server-Sent Events streams, and records events published
// over HTTP. A Go application mounts it in its own router:
//
//	st, _ := store.Open(ctx, databaseURL)
//	node, _ := realtime.NewNode(st, realtime.Config{ListenURL: databaseURL})
//	_ = node.Start(ctx)
//	defer node.Stop()
//	mux.Handle("/v1/", node.Handler()) // GET /v1/events, POST /v1/publish
//	mux.Handle("/livepg.js", node.Handler()) // the page-side client (realtime/client)
//	mux.Handle("/livepg.d.ts", node.Handler())
//
// Its guarantee: every subscriber receives exactly the committed events
// matching its topics, in commit order, each once — across reconnects,
// node switches, listener reconnects and PostgreSQL restarts — or, when its
// resume point is gone (pruned, truncated, or in a history of the log that a
// restored backup or a failover left behind), event: reset before anything
// else. Event ids are '<seq>-<epoch>', the epoch naming the log's history
// (migrations/00006_history.sql); node.go checks the node's own place in it
// at every read of the log.
//
// The node is built from parts that each own one job:
//
//   - pglisten: the one LISTEN connection, and the wiring probe that proves
//     it hears what the pool sends (Ready);
//   - fanout: the hub that routes events to subscribers' bounded buffers,
//     the SSE framing, the topic grammar and selectors;
//   - internal/stream: running one stream — catch-up from the log, the live
//     flow, coalesced writes, lean streams on taken connections;
//   - this package: wiring them (node.go), the configuration and its
//     defaults (config.go), admitting stream requests (events.go),
//     publishing (publish.go, batch.go), tokens (auth.go), presence
//     (presence.go: members under per-node leases in PostgreSQL, joins and
//     leaves batched and published through the log; presence_http.go: the
//     stream's presence parameters and GET /v1/presence), metrics, and
//     the inspector: the node registry and the figures it carries
//     (inspect.go), the page and its endpoints (inspectpage.go).
//
// One event's path from NOTIFY to a socket, file by file:
// pglisten/listener.go (a notification calls the node's handler, a
// wake-up) → bus.go, node.go, store/events.go's ReadNext (in one round
// trip, the reader numbers the events committed without a seq yet, in
// commit order — migrations/00008_bus.sql — and reads the log after the
// hub's head; both connections read promptly however busy the process:
// store/promptconn) →
// fanout/event.go (each row framed once) → fanout/hub.go (queued for each
// matching subscriber; each is woken once per batch the reader hands the
// hub, by the hub's waker, a slice at a time: fanout/waker.go) →
// internal/stream/stream.go (the stream takes everything queued and
// writes it in one system call: write for one frame, writev for several).
// The hub also keeps the last events it routed (fanout/window.go,
// Config.Window): a stream resuming, or one that fell behind, from a point
// inside that window is served from it, the same frames, without a query;
// only older points read the log (internal/stream's catch-up).
package realtime
