// Package localpg runs a PostgreSQL server from the machine's own server
// binaries in a data folder of ours: the database behind `go run ./cmd/livepg`
// with no configuration, and behind the test suite.
package localpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// InstallHint is the one command that installs the server binaries on the
// Debian machines livepg is developed on.
const InstallHint = "apt-get update && apt-get install -y postgresql"

// debianBinDirs is where Debian's packages put each major version's server
// binaries.
var debianBinDirs = "/usr/lib/postgresql/*/bin"

// ErrNoServer means no PostgreSQL server binaries were found on the machine.
var ErrNoServer = errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install them with: " + InstallHint)

// Options tune a cluster. The zero value is a durable developer database.
type Options struct {
	// Settings are extra server settings (name → value), such as fsync=off
	// for a throwaway test cluster.
	Settings map[string]string
}

// Cluster is a running PostgreSQL server owned by this process.
type Cluster struct {
	Dir  string // data folder
	Port int

	bin     string
	opts    Options
	cred    *syscall.Credential // the postgres user's, when we run as root
	started bool                // we started it (rather than found it running)
}

// BinDir finds the folder holding initdb, pg_ctl and postgres: the PATH
// first, then `pg_config --bindir`, then Debian's versioned folders.
func BinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("pg_ctl"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if fileExists(filepath.Join(dir, "initdb")) && fileExists(filepath.Join(dir, "pg_ctl")) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob(debianBinDirs)
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, dir := range dirs {
		if fileExists(filepath.Join(dir, "initdb")) && fileExists(filepath.Join(dir, "pg_ctl")) {
			return dir, nil
		}
	}
	return "", ErrNoServer
}

// Start initialises dir if it holds no cluster yet and starts a server on it,
// listening on 127.0.0.1 only. A server already running on dir is reused.
// When the process runs as root, the server runs as the postgres user (initdb
// and postgres refuse root) and dir is handed to that user.
func Start(ctx context.Context, dir string, opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local postgres: %w", err)
	}
	c := &Cluster{Dir: dir, bin: bin, opts: opts}
	if os.Geteuid() == 0 {
		if c.cred, err = postgresUser(); err != nil {
			return nil, err
		}
	}
	// The parent stays readable: the server's user must pass through it.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("local postgres: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
		return nil, fmt.Errorf("local postgres: %w", err)
	}
	if c.cred != nil {
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return nil, fmt.Errorf("local postgres: hand %s to the postgres user: %w", dir, err)
		}
	}
	if !fileExists(filepath.Join(dir, "PG_VERSION")) {
		if err := c.run(ctx, "initdb", "-D", dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"); err != nil {
			if c.cred != nil {
				err = fmt.Errorf("%w\nrunning as root, the server runs as the postgres user, which must be able to reach %s; choose a folder it can reach with LIVEPG_DATA_DIR", err, dir)
			}
			return nil, err
		}
	}
	if c.Port, err = c.port(); err != nil {
		return nil, err
	}
	if c.run(ctx, "pg_ctl", "status", "-D", dir) == nil {
		return c, nil // already running on this folder: reuse it
	}
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Restart starts the server again after Stop or Kill, on the same folder and
// port: a database restart as clients see it.
func (c *Cluster) Restart(ctx context.Context) error {
	return c.start(ctx)
}

func (c *Cluster) start(ctx context.Context) error {
	dir, opts := c.Dir, c.opts
	serverOpts := []string{
		"-p", strconv.Itoa(c.Port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=",
	}
	names := make([]string, 0, len(opts.Settings))
	for name := range opts.Settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		serverOpts = append(serverOpts, "-c", name+"="+opts.Settings[name])
	}
	if err := c.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", dir,
		"-l", filepath.Join(dir, "server.log"), "-o", strings.Join(serverOpts, " ")); err != nil {
		logTail, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		return fmt.Errorf("%w\nserver.log:\n%s", err, tail(logTail, 2000))
	}
	c.started = true
	return nil
}

// URL is the connection string of the cluster's postgres database.
func (c *Cluster) URL() string {
	return c.DatabaseURL("postgres")
}

// DatabaseURL is the connection string of one database of the cluster.
func (c *Cluster) DatabaseURL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// Stop shuts the server down (fast mode: sessions are disconnected) if this
// process started it.
func (c *Cluster) Stop(ctx context.Context) error {
	if !c.started {
		return nil
	}
	c.started = false
	return c.run(ctx, "pg_ctl", "stop", "-w", "-m", "fast", "-D", c.Dir)
}

// Kill stops the server immediately, as a crash would, leaving the data
// folder for Restart. Tests use it to cut every connection at once.
func (c *Cluster) Kill(ctx context.Context) error {
	c.started = false
	return c.run(ctx, "pg_ctl", "stop", "-w", "-m", "immediate", "-D", c.Dir)
}

// port returns the cluster's port, chosen once and kept in the data folder
// so that a restarted server comes back on the same address.
func (c *Cluster) port() (int, error) {
	file := filepath.Join(c.Dir, "livepg.port")
	if b, err := os.ReadFile(file); err == nil {
		if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return p, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("local postgres: pick a port: %w", err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := os.WriteFile(file, []byte(strconv.Itoa(p)+"\n"), 0o600); err != nil {
		return 0, fmt.Errorf("local postgres: %w", err)
	}
	if c.cred != nil {
		_ = os.Chown(file, int(c.cred.Uid), int(c.cred.Gid))
	}
	return p, nil
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Own process group: a Ctrl-C meant for livepg must not reach the server
	// before livepg has drained its streams and stopped it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.cred}
	cmd.Dir = os.TempDir()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("local postgres: %s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out.Bytes(), 2000))
	}
	return nil
}

// ChownToServer hands path to the user the server runs as (a no-op unless
// this process is root), so the server may use a folder we created.
func ChownToServer(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	cred, err := postgresUser()
	if err != nil {
		return err
	}
	return os.Chown(path, int(cred.Uid), int(cred.Gid))
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("local postgres: running as root, and PostgreSQL refuses root; need the postgres user (%v): %s", err, InstallHint)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
