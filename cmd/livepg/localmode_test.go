package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/realtime/ssetest"
)

// localNode is the real livepg binary in the no-configuration local mode.
type localNode struct {
	*process
	out    *syncBuffer // its standard output and error
	output *os.File    // the read end of their pipe
}

// startLocal runs livepg with no DATABASE_URL on dataDir and waits until it
// serves.
func startLocal(t *testing.T, dataDir string) *localNode {
	t.Helper()
	cmd := exec.Command(livepgBinary(t))
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "DATABASE_URL", "LISTEN_DATABASE_URL", "PORT", "LIVEPG_ADDR", "LIVEPG_TOKEN_KEY", "LIVEPG_TOKEN_KEY_FILE", "LIVEPG_PRIVATE_TOPICS":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, "PORT=0", "LIVEPG_DATA_DIR="+dataDir, "LIVEPG_SHUTDOWN_TIMEOUT=5s")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	n := &localNode{process: &process{cmd: cmd, done: make(chan struct{})}, out: &syncBuffer{}, output: r}
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			fmt.Fprintln(n.out, sc.Text())
		}
		n.err = cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-n.done
		}
	})
	deadline := time.After(90 * time.Second)
	for n.URL == "" {
		if m := servingRE.FindStringSubmatch(n.out.String()); m != nil {
			n.URL = m[1]
			break
		}
		select {
		case <-n.done:
			t.Fatalf("livepg exited at start: %v\n%s", n.err, n.out.String())
		case <-deadline:
			t.Fatalf("livepg did not start:\n%s", n.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	waitReady(t, n.URL)
	return n
}

// psqlLine is the command the node printed for the developer to paste.
func (n *localNode) psqlLine(t *testing.T) string {
	t.Helper()
	for _, line := range strings.Split(n.out.String(), "\n") {
		if cmd, ok := strings.CutPrefix(line, "local PostgreSQL: "); ok && strings.HasPrefix(cmd, "psql ") {
			return cmd
		}
	}
	t.Fatalf("no psql line in:\n%s", n.out.String())
	return ""
}

// postmaster reads the local server's postmaster.pid: its PID, port and
// first listen address; pid 0 when no server runs.
func postmaster(t *testing.T, dataDir string) (pid, port int, listen string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "pgdata", "postmaster.pid"))
	if os.IsNotExist(err) {
		return 0, 0, ""
	}
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 6 {
		t.Fatalf("postmaster.pid: %q", b)
	}
	pid, _ = strconv.Atoi(lines[0])
	port, _ = strconv.Atoi(lines[3])
	return pid, port, strings.TrimSpace(lines[5])
}

// alive reports whether pid runs (a zombie, exited but not reaped, does
// not).
// exits reports whether process pid is gone within d. pg_ctl stop -w
// returns once the server has removed its postmaster.pid, a moment before
// the process itself has exited.
func exits(pid int, d time.Duration) bool {
	for deadline := time.Now().Add(d); alive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if pid <= 0 || err != nil {
		return false
	}
	_, state, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(state, "Z")
}

// listeners returns the local addresses of the machine's listening TCP
// sockets on port, as `ss -ltn` shows them (hex, from /proc/net/tcp*).
func listeners(t *testing.T, port int) []string {
	t.Helper()
	var out []string
	suffix := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 3 && fields[3] == "0A" && strings.HasSuffix(fields[1], suffix) {
				out = append(out, strings.TrimSuffix(fields[1], suffix))
			}
		}
	}
	return out
}

// The local mode is one developer's: the HTTP server listens on 127.0.0.1
// only; PostgreSQL takes no TCP connection, only its socket, in a folder
// only the server's user can reach; the printed psql line, pasted into bash
// or zsh, connects; the server stops with the node.
func TestLocalModeIsPrivate(t *testing.T) {
	t.Parallel()
	dataDir := localDataDir(t)
	n := startLocal(t, dataDir)

	u, _ := url.Parse(n.URL)
	port, _ := strconv.Atoi(u.Port())
	addrs := listeners(t, port)
	if len(addrs) == 0 {
		t.Fatalf("no listening socket on port %d", port)
	}
	for _, a := range addrs {
		if a != "0100007F" { // 127.0.0.1, little-endian hex
			t.Fatalf("the HTTP server listens on %s (hex), not on 127.0.0.1 only", a)
		}
	}
	ifaces, _ := net.InterfaceAddrs()
	for _, a := range ifaces {
		ipnet, ok := a.(*net.IPNet)
		if !ok || ipnet.IP.IsLoopback() || ipnet.IP.IsLinkLocalUnicast() {
			continue
		}
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(ipnet.IP.String(), u.Port()), 5*time.Second); err == nil {
			c.Close()
			t.Fatalf("the HTTP server answers on %s", ipnet.IP)
		}
	}

	// PostgreSQL: no TCP, a private socket folder.
	pid, pgPort, listen := postmaster(t, dataDir)
	if !alive(pid) || listen != "" {
		t.Fatalf("postmaster %d (alive %v) listens on %q, want a running server on no address", pid, alive(pid), listen)
	}
	for _, host := range []string{"127.0.0.1", "::1"} {
		tcp := fmt.Sprintf("postgres://postgres@%s/livepg?sslmode=disable", net.JoinHostPort(host, strconv.Itoa(pgPort)))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := pgx.Connect(ctx, tcp)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			t.Fatalf("%s accepted a connection", tcp)
		}
	}
	line := n.psqlLine(t)
	pgURL, err := url.Parse(strings.TrimSuffix(strings.TrimPrefix(line, "psql '"), "'"))
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	socketDir := pgURL.Query().Get("host")
	fi, err := os.Lstat(socketDir)
	if err != nil {
		t.Fatalf("socket folder of %s: %v", line, err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket folder %s: %v, want 0700", socketDir, fi.Mode())
	}
	if os.Geteuid() == 0 {
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid == 0 {
			t.Fatalf("socket folder %s belongs to root, not to the server's user", socketDir)
		}
	}

	// The printed line, pasted into the shells.
	shells := []string{"bash"}
	if _, err := exec.LookPath("zsh"); err == nil {
		shells = append(shells, "zsh")
	}
	for _, sh := range shells {
		out, err := exec.Command(sh, "-c", line+` -XtAc 'SELECT 6 * 7'`).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "42" {
			t.Fatalf("%s -c %q: %v\n%s", sh, line, err, out)
		}
	}

	n.signal(t, syscall.SIGTERM, 30*time.Second)
	if !exits(pid, 30*time.Second) {
		t.Fatal("the local PostgreSQL still runs after its only node stopped")
	}
}

// Two local nodes on one data folder share its PostgreSQL: stopping the
// first leaves the second serving and publishing. A node killed outright
// leaves the server running; the next node finds and reuses it, and stops
// it when it stops.
func TestLocalNodesShareTheirPostgres(t *testing.T) {
	t.Parallel()
	dataDir := localDataDir(t)
	a := startLocal(t, dataDir)
	b := startLocal(t, dataDir)
	if !strings.Contains(b.out.String(), "using the local PostgreSQL already running") {
		t.Fatalf("the second node did not say it reused the server:\n%s", b.out.String())
	}
	pid, _, _ := postmaster(t, dataDir)
	// The local cluster is created with track_commit_timestamp on: the bus
	// runs at NOTIFY's cost (migrations/00008_bus.sql).
	waitReady(t, a.URL)
	if resp, err := http.Get(a.URL + "/readyz"); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "bus: commit_timestamp") {
			t.Errorf("/readyz of a local node: %q, want bus: commit_timestamp", body)
		}
	}

	s := ssetest.Open(t, b.URL+"/v1/events?topic=shared", "")
	a.signal(t, syscall.SIGTERM, 30*time.Second)
	waitReady(t, b.URL)
	publishLocal(t, b.URL, "shared", 1)
	if ev := s.Next(t, 30*time.Second); !strings.Contains(strings.ReplaceAll(ev.Data, " ", ""), `"n":1`) {
		t.Fatalf("after the first node stopped, the second's stream got %+v", ev)
	}

	b.signal(t, syscall.SIGKILL, 30*time.Second)
	if !alive(pid) {
		t.Fatal("the local PostgreSQL died with a node killed outright")
	}
	c := startLocal(t, dataDir)
	if again, _, _ := postmaster(t, dataDir); again != pid || !strings.Contains(c.out.String(), "using the local PostgreSQL already running") {
		t.Fatalf("the server left by the killed node (pid %d) was not reused (now %d):\n%s", pid, again, c.out.String())
	}
	s = ssetest.Open(t, c.URL+"/v1/events?topic=shared", "")
	publishLocal(t, c.URL, "shared", 2)
	if ev := s.Next(t, 30*time.Second); !strings.Contains(strings.ReplaceAll(ev.Data, " ", ""), `"n":2`) {
		t.Fatalf("the node on the reused server streamed %+v", ev)
	}
	c.signal(t, syscall.SIGTERM, 30*time.Second)
	if !exits(pid, 30*time.Second) {
		t.Fatal("the reused server still runs after its last node stopped")
	}
}

// publishLocal publishes {"n": n} on topic through a local node's open
// publish endpoint.
func publishLocal(t *testing.T, base, topic string, n int) {
	t.Helper()
	body := fmt.Sprintf(`{"topic":%q,"data":{"n":%d}}`, topic, n)
	resp, err := http.Post(base+"/v1/publish", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("publish: %s", resp.Status)
	}
}

// Ctrl-C in a pipeline (livepg 2>&1 | tee log) ends the reader first: a
// node whose output has gone still shuts down in order and stops its
// PostgreSQL, rather than dying of SIGPIPE on its next log line.
func TestLocalNodeWithItsOutputGoneStillStopsItsPostgres(t *testing.T) {
	t.Parallel()
	dataDir := localDataDir(t)
	n := startLocal(t, dataDir)
	pid, _, _ := postmaster(t, dataDir)
	n.output.Close()
	n.signal(t, syscall.SIGTERM, 30*time.Second)
	if !exits(pid, 30*time.Second) {
		t.Fatalf("the local PostgreSQL still runs after its node stopped (%v)", n.err)
	}
}
