package localpg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// On a machine without the server binaries, starting a local cluster says so
// and names the command that installs them.
func TestMissingServerBinariesAreNamedWithTheInstallCommand(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no initdb, no pg_config
	saved := debianBinDirs
	debianBinDirs = t.TempDir() + "/*/bin"
	defer func() { debianBinDirs = saved }()

	_, err := Start(context.Background(), t.TempDir(), Options{})
	if !errors.Is(err, ErrNoServer) {
		t.Fatalf("err = %v, want ErrNoServer", err)
	}
	if !strings.Contains(err.Error(), "apt-get install -y postgresql") {
		t.Fatalf("error %q does not name the install command", err)
	}
}

// testDir is a folder for one test's cluster that the server's user (the
// postgres user when the tests run as root) can reach: t.TempDir is private
// to the test's user.
func testDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "localpg-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func start(t *testing.T, dir string, opts Options) *Cluster {
	t.Helper()
	c, err := Start(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return c
}

func connect(url string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return pgx.Connect(ctx, url)
}

func query(t *testing.T, url, sql string) string {
	t.Helper()
	conn, err := connect(url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(context.Background())
	var out string
	if err := conn.QueryRow(context.Background(), sql).Scan(&out); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

// checkPrivate fails unless dir is a 0700 folder owned by the server's user.
func checkPrivate(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Lstat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket folder %s: mode %v, want a 0700 folder", dir, fi.Mode())
	}
	want := os.Geteuid()
	if want == 0 {
		cred, err := postgresUser()
		if err != nil {
			t.Fatal(err)
		}
		want = int(cred.Uid)
	}
	if uid := int(fi.Sys().(*syscall.Stat_t).Uid); uid != want {
		t.Fatalf("socket folder %s: owner %d, want the server's user %d", dir, uid, want)
	}
}

// refusesTCP fails if anything accepts a PostgreSQL connection on the
// loopback port.
func refusesTCP(t *testing.T, port int) {
	t.Helper()
	for _, host := range []string{"127.0.0.1", "[::1]"} {
		u := fmt.Sprintf("postgres://postgres@%s:%d/postgres?sslmode=disable", host, port)
		if conn, err := connect(u); err == nil {
			conn.Close(context.Background())
			t.Fatalf("%s accepted a connection with no password", u)
		}
	}
}

// A developer's cluster takes connections only through its socket, in a
// folder only the server's user can reach; nothing listens on TCP.
func TestClusterListensOnlyOnAPrivateSocket(t *testing.T) {
	t.Parallel()
	dir := testDir(t) + "/data"
	c := start(t, dir, Options{})
	if c.SocketDir != dir {
		t.Fatalf("socket folder %s, want the data folder %s", c.SocketDir, dir)
	}
	checkPrivate(t, c.SocketDir)
	if got := query(t, c.URL(), `SHOW listen_addresses`); got != "" {
		t.Fatalf("listen_addresses = %q, want none", got)
	}
	refusesTCP(t, c.Port)
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.running(context.Background()) {
		t.Fatal("the server still runs after its only user stopped")
	}
}

// A cluster made by an older livepg (trust on 127.0.0.1, its port in
// livepg.port) left running is restarted socket-only, its data kept.
func TestOlderLocalModeClusterIsRestartedSocketOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := testDir(t) + "/data"
	old := &Cluster{Dir: dir}
	var err error
	if old.bin, err = BinDir(); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if old.cred, err = postgresUser(); err != nil {
			t.Fatal(err)
		}
	}
	// What the older Start did.
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := old.chown(dir); err != nil {
		t.Fatal(err)
	}
	if err := old.run(ctx, "initdb", "-D", dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := old.writeFile(dir+"/livepg.port", fmt.Sprintln(port)); err != nil {
		t.Fatal(err)
	}
	if err := old.run(ctx, "pg_ctl", "start", "-w", "-D", dir, "-l", dir+"/server.log", "-o",
		fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=''", port)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = old.run(ctx, "pg_ctl", "stop", "-m", "immediate", "-D", dir) })
	tcp := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	conn, err := connect(tcp)
	if err != nil {
		t.Fatalf("the older cluster does not answer on TCP: %v", err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE kept AS SELECT 'still here' AS v`); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	c := start(t, dir, Options{})
	if c.Reused {
		t.Fatal("the cluster listening on TCP with trust was reused as it was")
	}
	refusesTCP(t, port)
	checkPrivate(t, c.SocketDir)
	if got := query(t, c.URL(), `SELECT v FROM kept`); got != "still here" {
		t.Fatalf("kept = %q", got)
	}
}

// Several users of one data folder share its server: each Start registers,
// and only the last Stop stops the server.
func TestLastUserOutStopsTheServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := testDir(t) + "/data"
	a := start(t, dir, Options{})
	b := start(t, dir, Options{})
	if a.Reused || !b.Reused {
		t.Fatalf("Reused: first %v, second %v; want false, true", a.Reused, b.Reused)
	}
	conn, err := connect(b.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("the first user's Stop took the server from under the second: %v", err)
	}
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if b.running(ctx) {
		t.Fatal("the server still runs after its last user stopped")
	}
	if err := b.Stop(ctx); err != nil {
		t.Fatalf("a second Stop: %v", err)
	}
}

// A data folder whose socket path would pass the kernel's limit gets a
// private socket folder under the temp dir, remembered across starts, and
// replaced if someone else could reach it.
func TestLongDataFolderGetsAPrivateSocketFolder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := testDir(t) + "/" + strings.Repeat("long-folder-name-", 6) + "data"
	c := start(t, dir, Options{})
	first := c.SocketDir
	t.Cleanup(func() { os.RemoveAll(first) })
	if !strings.HasPrefix(first, os.TempDir()) || len(first)+len("/.s.PGSQL.5432") > maxSocketPath {
		t.Fatalf("socket folder %s: want a short one under %s", first, os.TempDir())
	}
	checkPrivate(t, first)
	query(t, c.URL(), `SELECT 'ok'`)
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	c = start(t, dir, Options{})
	if c.SocketDir != first {
		t.Fatalf("socket folder %s after a restart, want the remembered %s", c.SocketDir, first)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	if err := os.Chmod(first, 0o777); err != nil {
		t.Fatal(err)
	}
	c = start(t, dir, Options{})
	t.Cleanup(func() { os.RemoveAll(c.SocketDir) })
	if c.SocketDir == first {
		t.Fatalf("the socket folder %s, opened to everyone, is still used", first)
	}
	checkPrivate(t, c.SocketDir)
	query(t, c.URL(), `SELECT 'ok'`)
}

// A test cluster's TCP side wants the generated password: no local user
// gets in on trust.
func TestTCPWantsThePassword(t *testing.T) {
	t.Parallel()
	c := start(t, testDir(t)+"/data", Options{TCP: true})
	if got := query(t, c.TCPURL("postgres"), `SELECT 'in'`); got != "in" {
		t.Fatal(got)
	}
	refusesTCP(t, c.Port)
	checkPrivate(t, c.SocketDir)
}

// Two users starting on a new folder at the same moment get one cluster:
// one initialises and starts it, the other reuses it.
func TestSimultaneousFirstStartsShareOneCluster(t *testing.T) {
	t.Parallel()
	dir := testDir(t) + "/data"
	clusters := make([]*Cluster, 2)
	errs := make(chan error, 2)
	for i := range clusters {
		go func() {
			var err error
			clusters[i], err = Start(context.Background(), dir, Options{})
			errs <- err
		}()
	}
	for range clusters {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clusters {
		t.Cleanup(func() { _ = c.Stop(context.Background()) })
	}
	if clusters[0].Reused == clusters[1].Reused {
		t.Fatalf("Reused: %v and %v, want one started and one reused", clusters[0].Reused, clusters[1].Reused)
	}
	for _, c := range clusters {
		query(t, c.URL(), `SELECT 'ok'`)
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), ".data.initdb-*"))
	if len(leftovers) != 0 {
		t.Fatalf("initdb folders left behind: %v", leftovers)
	}
}
