// Command livepg-bench is livepg's load generator, and the minimal fan-out
// server it is compared with.
//
//	livepg-bench [run] [flags]   open N SSE streams, publish at a fixed rate, report
//	livepg-bench ceiling [flags] the minimal fan-out server (no database), the ceiling
//
// A run opens --streams SSE streams, spread over the --url nodes and over
// --sources loopback source addresses (127.0.0.1, 127.0.0.2, ...), on
// --topics topics; publishes --events events at --rate per second through SQL
// (livepg.publish), POST /v1/publish, or an UPDATE of the demo's tracked
// cards table; each event carries its send time. It reports connect time,
// delivered events/s, publish-to-receipt latency, lost, duplicated and
// out-of-order events and, given the servers' --pid, server memory per
// stream and CPU seconds per million deliveries. It is bounded in time and
// count, stops by itself, and prints a one-line summary last. More streams
// than one process may hold open are opened and read by worker processes
// (livepg-bench worker, started by the run itself).
//
// See BENCHMARKS.md beside this file for the commands and the figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return // the usage is printed
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "livepg-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && (args[0] == "run" || args[0] == "ceiling" || args[0] == "worker") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "worker": // started by a run with more streams than one process holds
		return runWorker(ctx, args, os.Stdin, stdout, stderr)
	case "ceiling":
		cfg, err := parseCeilingFlags(args, stderr)
		if err != nil {
			return err
		}
		return serveCeiling(ctx, cfg, stdout)
	default:
		cfg, err := parseLoadFlags(args, stderr)
		if err != nil {
			return err
		}
		_, err = runLoad(ctx, cfg, stdout)
		return err
	}
}
