// Package localpg runs a PostgreSQL server from the machine's own server
// binaries in a data folder of ours: the database behind `go run ./cmd/livepg`
// with no configuration, and behind the test suite.
//
// The server is private to the user it runs as: it accepts connections only
// through a Unix socket in a folder only that user can reach (the data folder
// itself, or a private folder under the temp dir when the data folder's path
// is too long for a socket), never on TCP with `trust`. Test clusters may
// also listen on 127.0.0.1, with a generated password (Options.TCP).
//
// Several processes may use one data folder at once. Each registers itself
// by holding a shared lock on a file in the folder while it uses the server;
// start and stop decisions are taken under an exclusive lock, and the last
// one out stops the server. A lock dies with its process, so a server left
// running by a killed process is simply reused by the next one, which then
// stops it when it leaves.
package localpg

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// InstallHint is the one command that installs the server binaries on the
// Debian machines livepg is developed on.
const InstallHint = "apt-get update && apt-get install -y postgresql"

// debianBinDirs is where Debian's packages put each major version's server
// binaries.
var debianBinDirs = "/usr/lib/postgresql/*/bin"

// ErrNoServer means no PostgreSQL server binaries were found on the machine.
var ErrNoServer = errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install them with: " + InstallHint)

// Files we keep in the data folder, beside PostgreSQL's own.
const (
	lockFile      = "livepg.lock"      // held exclusively while starting or stopping
	nodesFile     = "livepg.nodes"     // held shared by every process using the server
	socketDirFile = "livepg.socketdir" // the private socket folder, when not the data folder
	passwordFile  = "livepg.password"  // the postgres user's password, with Options.TCP
	portFile      = "livepg.port"      // the TCP port, with Options.TCP
)

// socketPort names the socket file (.s.PGSQL.5432) when there is no TCP
// port: the socket folder is the cluster's own, so no other server shares it.
const socketPort = 5432

// maxSocketPath is the longest Unix socket path the kernel takes
// (sun_path is 108 bytes with its terminating NUL).
const maxSocketPath = 107

// Options tune a cluster. The zero value is a durable developer database
// reachable only through its socket.
type Options struct {
	// Settings are extra server settings (name → value), such as fsync=off
	// for a throwaway test cluster.
	Settings map[string]string
	// InitSettings are written to postgresql.conf when the cluster is
	// created, and only then: the cluster's own configuration, which its
	// owner may change afterwards (ALTER SYSTEM, or by editing the file).
	InitSettings map[string]string
	// TCP also listens on 127.0.0.1, where every user must give the postgres
	// user's password, generated when the cluster is created (see TCPURL):
	// for clients that cannot reach the socket folder, such as a process
	// chrooted by a test. Only a cluster created with TCP can be started
	// with it.
	TCP bool
}

// Cluster is a PostgreSQL server this process uses, and has registered
// itself with, until Stop.
type Cluster struct {
	Dir       string // data folder
	SocketDir string // the folder holding the server's socket, 0700
	Port      int    // the socket's number (.s.PGSQL.Port), and the TCP port with Options.TCP
	// Reused reports that Start found the server already running (another
	// process's, or one left by a process that was killed) and did not
	// start it.
	Reused bool

	bin      string
	opts     Options
	cred     *syscall.Credential // the postgres user's, when we run as root
	password string              // with Options.TCP
	nodes    *os.File            // our registration: a shared lock on nodesFile
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

// Start initialises dir if it holds no cluster yet, registers this process
// as one of the server's users and starts the server unless it is already
// running. A running server that does not listen as Options ask (one started
// by an older livepg, with TCP open) is restarted so that it does. When the
// process runs as root, the server runs as the postgres user (initdb and
// postgres refuse root) and dir is handed to that user.
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
	if err := c.initdb(ctx); err != nil {
		return nil, err
	}
	unlock, err := c.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := c.prepare(); err != nil {
		return nil, err
	}
	if err := c.register(); err != nil {
		return nil, err
	}
	if err := c.startLocked(ctx); err != nil {
		c.unregister()
		return nil, err
	}
	return c, nil
}

// initdb creates the cluster if dir holds none. It runs initdb in a fresh
// folder beside dir and renames it into place, so that two processes
// starting on a new folder at once cannot both initialise it.
func (c *Cluster) initdb(ctx context.Context) error {
	if fileExists(filepath.Join(c.Dir, "PG_VERSION")) {
		return nil
	}
	// The parent stays readable: the server's user must pass through it.
	parent := filepath.Dir(c.Dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("local postgres: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(c.Dir)+".initdb-")
	if err != nil {
		return fmt.Errorf("local postgres: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := c.chown(tmp); err != nil {
		return fmt.Errorf("local postgres: hand %s to the postgres user: %w", tmp, err)
	}
	args := []string{"-D", tmp, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"}
	password := randomHex(18)
	if c.opts.TCP {
		// initdb wants an empty folder: the password file goes elsewhere.
		f, err := os.CreateTemp("", "livepg-initdb-pw-")
		if err != nil {
			return fmt.Errorf("local postgres: %w", err)
		}
		f.Close()
		defer os.Remove(f.Name())
		if err := c.writeFile(f.Name(), password+"\n"); err != nil {
			return err
		}
		args = append(args, "--pwfile="+f.Name())
	}
	if err := c.run(ctx, "initdb", args...); err != nil {
		if c.cred != nil {
			err = fmt.Errorf("%w\nrunning as root, the server runs as the postgres user, which must be able to reach %s; choose a folder it can reach with LIVEPG_DATA_DIR", err, c.Dir)
		}
		return err
	}
	if c.opts.TCP {
		if err := c.writeFile(filepath.Join(tmp, passwordFile), password+"\n"); err != nil {
			return err
		}
	}
	if len(c.opts.InitSettings) > 0 {
		conf := filepath.Join(tmp, "postgresql.conf")
		b, err := os.ReadFile(conf)
		if err != nil {
			return fmt.Errorf("local postgres: %w", err)
		}
		names := make([]string, 0, len(c.opts.InitSettings))
		for name := range c.opts.InitSettings {
			names = append(names, name)
		}
		sort.Strings(names)
		b = append(b, "\n# Set by livepg when it created this cluster.\n"...)
		for _, name := range names {
			b = append(b, fmt.Sprintf("%s = %s\n", name, quoteConf(c.opts.InitSettings[name]))...)
		}
		if err := c.writeFile(conf, string(b)); err != nil {
			return err
		}
	}
	// rename(2) replaces dir only if it is missing or empty (os.Rename
	// refuses every existing folder).
	if err := syscall.Rename(tmp, c.Dir); err != nil && !fileExists(filepath.Join(c.Dir, "PG_VERSION")) {
		return fmt.Errorf("local postgres: %s exists and holds no PostgreSQL cluster: %w", c.Dir, err)
	}
	return nil
}

// quoteConf quotes a value for postgresql.conf.
func quoteConf(v string) string {
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// lock takes the folder's start/stop lock until unlock.
func (c *Cluster) lock() (unlock func(), err error) {
	f, err := c.openLockFile(lockFile)
	if err != nil {
		return nil, err
	}
	if err := flock(f, syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("local postgres: lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

// register holds a shared lock on the nodes file until unregister: while any
// process holds one, the server is in use.
func (c *Cluster) register() error {
	if c.nodes != nil {
		return nil
	}
	f, err := c.openLockFile(nodesFile)
	if err != nil {
		return err
	}
	if err := flock(f, syscall.LOCK_SH); err != nil {
		f.Close()
		return fmt.Errorf("local postgres: register in %s: %w", f.Name(), err)
	}
	c.nodes = f
	return nil
}

func (c *Cluster) unregister() {
	if c.nodes != nil {
		c.nodes.Close()
		c.nodes = nil
	}
}

// inUseByOthers reports whether another process (or another Cluster of
// this one) is registered. Call it under lock, after unregister.
//
// A registration held for a moment longer than its holder keeps it does
// not count: a child this process forks (pg_ctl, from any goroutine)
// shares every descriptor until it execs, this one's closed registration
// among them, so the lock is retried for up to inUseGrace before it says
// another user holds it.
func (c *Cluster) inUseByOthers() (bool, error) {
	f, err := c.openLockFile(nodesFile)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for deadline := time.Now().Add(inUseGrace); ; time.Sleep(10 * time.Millisecond) {
		err = flock(f, syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			break
		}
		if time.Now().After(deadline) {
			return true, nil
		}
	}
	if err != nil {
		return false, fmt.Errorf("local postgres: %w", err)
	}
	return false, nil
}

// inUseGrace bounds how long inUseByOthers waits for a registration that
// only a forked child, not yet exec'd, still holds.
const inUseGrace = 200 * time.Millisecond

func (c *Cluster) openLockFile(name string) (*os.File, error) {
	path := filepath.Join(c.Dir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("local postgres: %w", err)
	}
	_ = c.chown(path)
	return f, nil
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// prepare settles the socket folder, the port, the password and the access
// rules before a start. Call it under lock.
func (c *Cluster) prepare() error {
	c.Port = socketPort
	if c.opts.TCP {
		b, err := os.ReadFile(filepath.Join(c.Dir, passwordFile))
		if err != nil {
			return fmt.Errorf("local postgres: %s was not created for TCP (no password): %w", c.Dir, err)
		}
		c.password = strings.TrimSpace(string(b))
		if c.Port, err = c.tcpPort(); err != nil {
			return err
		}
	}
	var err error
	if c.SocketDir, err = c.socketDir(); err != nil {
		return err
	}
	return c.writeHBA()
}

// writeHBA replaces pg_hba.conf: trust on the socket, which only the
// server's user can reach; with Options.TCP, a password on 127.0.0.1 and
// ::1; nothing else (an older livepg's cluster trusted TCP).
func (c *Cluster) writeHBA() error {
	rules := "# Written by livepg (store/localpg): the socket's folder is private to the server's user.\n" +
		"local all all trust\nlocal replication all trust\n"
	if c.opts.TCP {
		rules += "host all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n"
	}
	return c.writeFile(filepath.Join(c.Dir, "pg_hba.conf"), rules)
}

// socketDir is the data folder when its socket path fits the kernel's limit,
// else a private folder under the temp dir, remembered in the data folder.
// Either way it is 0700 and owned by the server's user.
func (c *Cluster) socketDir() (string, error) {
	if fits(c.Dir, c.Port) {
		if err := os.Chmod(c.Dir, 0o700); err != nil {
			return "", fmt.Errorf("local postgres: %w", err)
		}
		return c.Dir, nil
	}
	remembered := filepath.Join(c.Dir, socketDirFile)
	if b, err := os.ReadFile(remembered); err == nil {
		dir := strings.TrimSpace(string(b))
		if err := os.Mkdir(dir, 0o700); err == nil {
			_ = c.chown(dir)
		}
		if c.private(dir) && fits(dir, c.Port) {
			return dir, nil
		}
		// Gone and taken by someone else, or changed: make another.
	}
	dir, err := os.MkdirTemp("", "livepg-socket-")
	if err != nil {
		return "", fmt.Errorf("local postgres: socket folder: %w", err)
	}
	if !fits(dir, c.Port) {
		os.Remove(dir)
		return "", fmt.Errorf("local postgres: neither %s nor the temp folder %s is short enough for a Unix socket path (%d bytes at most); set TMPDIR to a shorter folder", c.Dir, os.TempDir(), maxSocketPath)
	}
	if err := c.chown(dir); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("local postgres: %w", err)
	}
	if err := c.writeFile(remembered, dir+"\n"); err != nil {
		return "", err
	}
	return dir, nil
}

func fits(dir string, port int) bool {
	return len(dir)+len("/.s.PGSQL.")+len(strconv.Itoa(port)) <= maxSocketPath
}

// private reports whether dir is a real folder (not a link), mode 0700,
// owned by the server's user.
func (c *Cluster) private(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == c.serverUID()
}

func (c *Cluster) serverUID() int {
	if c.cred != nil {
		return int(c.cred.Uid)
	}
	return os.Geteuid()
}

// startLocked starts the server, or reuses it when it already runs as we
// would start it. Call it under lock.
func (c *Cluster) startLocked(ctx context.Context) error {
	c.Reused = false
	if !c.running(ctx) {
		return c.start(ctx)
	}
	pid, err := readPostmasterPID(c.Dir)
	if err == nil && pid.socketDir == c.SocketDir && pid.listenAddr == c.listenAddresses() && pid.port == c.Port {
		c.Reused = true
		return nil
	}
	// Started some other way, such as by an older livepg listening on TCP
	// with trust: restart it our way.
	if err := c.run(ctx, "pg_ctl", "stop", "-w", "-m", "fast", "-D", c.Dir); err != nil {
		return err
	}
	return c.start(ctx)
}

func (c *Cluster) running(ctx context.Context) bool {
	return c.run(ctx, "pg_ctl", "status", "-D", c.Dir) == nil
}

func (c *Cluster) listenAddresses() string {
	if c.opts.TCP {
		return "127.0.0.1"
	}
	return ""
}

func (c *Cluster) start(ctx context.Context) error {
	serverOpts := []string{
		"-p", strconv.Itoa(c.Port),
		"-c", "listen_addresses=" + quoteOpt(c.listenAddresses()),
		"-c", "unix_socket_directories=" + quoteOpt(c.SocketDir),
		"-c", "unix_socket_permissions=0700",
	}
	names := make([]string, 0, len(c.opts.Settings))
	for name := range c.opts.Settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		serverOpts = append(serverOpts, "-c", name+"="+c.opts.Settings[name])
	}
	if err := c.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", c.Dir,
		"-l", filepath.Join(c.Dir, "server.log"), "-o", strings.Join(serverOpts, " ")); err != nil {
		logTail, _ := os.ReadFile(filepath.Join(c.Dir, "server.log"))
		return fmt.Errorf("%w\nserver.log:\n%s", err, tail(logTail, 2000))
	}
	return nil
}

// quoteOpt quotes a value for pg_ctl's -o, which the server splits like a
// shell would.
func quoteOpt(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Restart registers this process again if Stop unregistered it, and starts
// the server after Stop or Kill, on the same folder and port: a database
// restart as clients see it.
func (c *Cluster) Restart(ctx context.Context) error {
	unlock, err := c.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := c.register(); err != nil {
		return err
	}
	return c.startLocked(ctx)
}

// URL is the connection string of the cluster's postgres database.
func (c *Cluster) URL() string {
	return c.DatabaseURL("postgres")
}

// DatabaseURL is the connection string of one database of the cluster,
// through its socket.
func (c *Cluster) DatabaseURL(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/" + db,
		RawQuery: "host=" + escapeQuery(c.SocketDir) + "&port=" + strconv.Itoa(c.Port)}
	return u.String()
}

// escapeQuery percent-encodes a query value, leaving a path's slashes as
// they are so that the URL stays readable.
func escapeQuery(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || strings.IndexByte("-._~/", ch) >= 0 {
			b.WriteByte(ch)
		} else {
			fmt.Fprintf(&b, "%%%02X", ch)
		}
	}
	return b.String()
}

// TCPURL is the connection string of one database of the cluster over TCP
// on 127.0.0.1, with the password; "" unless the cluster has Options.TCP.
func (c *Cluster) TCPURL(db string) string {
	if !c.opts.TCP {
		return ""
	}
	return (&url.URL{Scheme: "postgres", User: url.UserPassword("postgres", c.password),
		Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)), Path: "/" + db, RawQuery: "sslmode=disable"}).String()
}

// Stop unregisters this process and, if no other process uses the server,
// shuts it down (fast mode: sessions are disconnected). It is safe to call
// twice.
func (c *Cluster) Stop(ctx context.Context) error {
	if c.nodes == nil {
		return nil
	}
	unlock, err := c.lock()
	if err != nil {
		return err
	}
	defer unlock()
	c.unregister()
	inUse, err := c.inUseByOthers()
	if err != nil || inUse {
		return err
	}
	if !c.running(ctx) {
		return nil
	}
	return c.run(ctx, "pg_ctl", "stop", "-w", "-m", "fast", "-D", c.Dir)
}

// Kill stops the server immediately, as a crash would, leaving the data
// folder for Restart, whoever else uses it. Tests use it to cut every
// connection at once.
func (c *Cluster) Kill(ctx context.Context) error {
	return c.run(ctx, "pg_ctl", "stop", "-w", "-m", "immediate", "-D", c.Dir)
}

// tcpPort returns the cluster's TCP port, chosen once and kept in the data
// folder so that a restarted server comes back on the same address.
func (c *Cluster) tcpPort() (int, error) {
	file := filepath.Join(c.Dir, portFile)
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
	if err := c.writeFile(file, strconv.Itoa(p)+"\n"); err != nil {
		return 0, err
	}
	return p, nil
}

// postmasterPID is what a running server says of itself in postmaster.pid.
type postmasterPID struct {
	pid        int
	port       int
	socketDir  string
	listenAddr string
}

// readPostmasterPID reads dir/postmaster.pid: PID, data folder, start
// time, port, first socket folder, first listen address, ...
func readPostmasterPID(dir string) (postmasterPID, error) {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return postmasterPID{}, err
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 6 {
		return postmasterPID{}, fmt.Errorf("postmaster.pid: %d lines", len(lines))
	}
	var p postmasterPID
	p.pid, _ = strconv.Atoi(strings.TrimSpace(lines[0]))
	p.port, _ = strconv.Atoi(strings.TrimSpace(lines[3]))
	p.socketDir = strings.TrimSpace(lines[4])
	p.listenAddr = strings.TrimSpace(lines[5])
	return p, nil
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, c.tool(name), args...)
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

// writeFile writes a private file the server's user owns.
func (c *Cluster) writeFile(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("local postgres: %w", err)
	}
	if err := c.chown(path); err != nil {
		return fmt.Errorf("local postgres: %w", err)
	}
	return nil
}

// tool is the path of one of the server's programs: in the folder BinDir
// found, or else beside the program initdb links to there (a PATH folder
// may link only initdb, pg_ctl and postgres, as Debian's wrappers do not
// cover pg_basebackup).
func (c *Cluster) tool(name string) string {
	p := filepath.Join(c.bin, name)
	if fileExists(p) {
		return p
	}
	if real, err := filepath.EvalSymlinks(filepath.Join(c.bin, "initdb")); err == nil {
		if q := filepath.Join(filepath.Dir(real), name); fileExists(q) {
			return q
		}
	}
	return p
}

func (c *Cluster) chown(path string) error {
	if c.cred == nil {
		return nil
	}
	return os.Chown(path, int(c.cred.Uid), int(c.cred.Gid))
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

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
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
