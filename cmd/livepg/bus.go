package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/livepg/livepg/realtime/walbus"
	"github.com/livepg/livepg/store"
)

// bus runs `livepg bus default|logical|status`: it switches the database's
// bus mode as livepg's owner (see migrations/00009_logical.sql), or says
// which it is. Back to the default mode, it also drops the logical mode's
// replication slot, so that it retains no WAL.
func bus(ctx context.Context, cfg Config, mode string, stdout io.Writer) error {
	st, closeAll, err := openStore(ctx, &cfg, stdout)
	if err != nil {
		return err
	}
	defer closeAll()
	if err := st.MigrateUp(ctx); err != nil {
		return err
	}
	if mode == "status" {
		cur, err := st.BusMode(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "bus: %s\n", cur)
		return nil
	}
	old, err := st.SetBus(ctx, mode)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bus: %s (was %s)\n", mode, old)
	if mode == store.BusDefault {
		dropped, err := st.DropBusSlot(ctx, walbus.DefaultSlot)
		if err != nil {
			return fmt.Errorf("%w (drop it as a superuser or a REPLICATION role once no node decodes: SELECT pg_drop_replication_slot('%s'))", err, walbus.DefaultSlot)
		}
		if dropped {
			fmt.Fprintf(stdout, "dropped the replication slot %s\n", walbus.DefaultSlot)
		}
	}
	if old != mode {
		fmt.Fprintln(stdout, "restart every node (or set LIVEPG_BUS="+mode+" on them): a node checks the mode when it starts")
	}
	return nil
}

// followBus switches the database to the node's LIVEPG_BUS when it is set,
// differs, and the node's role owns livepg's schema; otherwise the node's
// start reports the difference.
func followBus(ctx context.Context, st *store.Store, want string, logger *slog.Logger) error {
	if want == "" {
		return nil
	}
	cur, err := st.BusMode(ctx)
	if err != nil || (cur == store.BusLogical) == (want == store.BusLogical) {
		return err
	}
	var owner bool
	if err := st.Pool.QueryRow(ctx, `SELECT pg_has_role(current_user, n.nspowner, 'USAGE') FROM pg_namespace n WHERE n.nspname = 'livepg'`).Scan(&owner); err != nil {
		return fmt.Errorf("who owns schema livepg: %w", err)
	}
	if !owner {
		return nil
	}
	if _, err := st.SetBus(ctx, want); err != nil {
		return err
	}
	logger.Info("switched the bus mode to LIVEPG_BUS", "from", cur, "to", want)
	return nil
}
