// Package fanout routes committed events to the streams that want them: the
// hub, its subscribers with their bounded buffers, the SSE framing of an
// event (encoded once, the same bytes for every subscriber), and the topic
// grammar with the selectors streams choose topics by.
//
// It knows nothing of PostgreSQL or HTTP, and imports nothing of livepg's:
// whoever reads the log hands the hub its events in seq order (Hub.Publish),
// and whoever runs a stream joins a Subscriber to the live flow (Hub.Join)
// once it has read the log up to the hub's head. A subscriber whose buffer
// fills is dropped and told (Subscriber.Lagged); it reads the log and joins
// again. The hub never waits for anyone.
//
// The hub can also keep the last events it routed, bounded in bytes
// (Hub.KeepWindow, window.go): a stream whose point is inside that window
// reads from it (Hub.InWindow, Hub.FromWindow) instead of the log.
package fanout
