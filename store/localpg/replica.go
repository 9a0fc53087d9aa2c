package localpg

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// The files of ours that name one server (its port, socket folder, locks
// and log): a copy of the data folder that is to run as another server
// starts without them.
var perServerFiles = []string{lockFile, nodesFile, socketDirFile, portFile, "server.log"}

// NewReplica makes an asynchronous streaming replica of c in dir (which must
// not exist) with `pg_basebackup -R`, and starts it on a port of its own: a
// standby that follows c until promoted (Promote). It is a Cluster like
// any other: Stop it when done.
func (c *Cluster) NewReplica(ctx context.Context, dir string) (*Cluster, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local postgres: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local postgres: replica folder: %w", err)
	}
	if err := c.chown(dir); err != nil {
		return nil, fmt.Errorf("local postgres: %w", err)
	}
	// Over the socket, as the postgres user: pg_hba.conf trusts local
	// replication connections.
	if err := c.run(ctx, "pg_basebackup", "-D", dir, "-R", "-X", "stream", "-c", "fast", "--no-sync",
		"-d", fmt.Sprintf("host=%s port=%d user=postgres", c.SocketDir, c.Port)); err != nil {
		return nil, err
	}
	return c.startCopy(ctx, dir)
}

// CopyTo copies the data folder of a stopped cluster to dir (which must not
// exist), as a cold backup does.
func (c *Cluster) CopyTo(ctx context.Context, dir string) error {
	if c.running(ctx) {
		return fmt.Errorf("local postgres: copy %s: the server is running; stop it first", c.Dir)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("local postgres: %w", err)
	}
	// cp -a keeps owners and modes; as root that keeps the postgres user's.
	if out, err := exec.CommandContext(ctx, "cp", "-a", c.Dir, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("local postgres: cp -a %s %s: %w\n%s", c.Dir, dir, err, out)
	}
	return nil
}

// RestoreFrom replaces the data folder of a stopped cluster with a copy of
// backup (made by CopyTo), keeping the files that name this server: a
// restore of a cold backup. Restart starts it.
func (c *Cluster) RestoreFrom(ctx context.Context, backup string) error {
	if c.running(ctx) {
		return fmt.Errorf("local postgres: restore %s: the server is running; stop it first", c.Dir)
	}
	keep := map[string][]byte{}
	for _, name := range perServerFiles {
		if b, err := os.ReadFile(filepath.Join(c.Dir, name)); err == nil {
			keep[name] = b
		}
	}
	tmp := c.Dir + ".restoring"
	if out, err := exec.CommandContext(ctx, "cp", "-a", backup, tmp).CombinedOutput(); err != nil {
		return fmt.Errorf("local postgres: cp -a %s %s: %w\n%s", backup, tmp, err, out)
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		return fmt.Errorf("local postgres: %w", err)
	}
	if err := os.Rename(tmp, c.Dir); err != nil {
		return fmt.Errorf("local postgres: %w", err)
	}
	for name, b := range keep {
		if err := c.writeFile(filepath.Join(c.Dir, name), string(b)); err != nil {
			return err
		}
	}
	return nil
}

// Promote ends a replica's recovery (pg_ctl promote): it becomes a primary
// on a new timeline, and takes writes.
func (c *Cluster) Promote(ctx context.Context) error {
	return c.run(ctx, "pg_ctl", "promote", "-w", "-t", "60", "-D", c.Dir)
}

// startCopy starts a copy of a data folder as a server of its own.
func (c *Cluster) startCopy(ctx context.Context, dir string) (*Cluster, error) {
	for _, name := range perServerFiles {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("local postgres: %w", err)
		}
	}
	r := &Cluster{Dir: dir, bin: c.bin, opts: c.opts, cred: c.cred}
	unlock, err := r.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := r.prepare(); err != nil {
		return nil, err
	}
	if err := r.register(); err != nil {
		return nil, err
	}
	if err := r.start(ctx); err != nil {
		r.unregister()
		return nil, err
	}
	return r, nil
}
