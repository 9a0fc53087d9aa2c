package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/jackc/pgx/v5"

	"github.com/livepg/livepg/store/storetest"
)

// These tests hold the Dockerfile and fly.toml to the code, so that they
// cannot drift apart: no Docker engine and no Fly.io are at hand, so each
// fact is checked here against what the code does.

// repoRoot is the module's root, two levels above this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// dockerfile is what the tests read from the Dockerfile.
type dockerfile struct {
	goVersion string            // ARG GO_VERSION
	buildEnv  map[string]string // ENV of the build stage, ARGs expanded
	buildArgs []string          // the go build command's words, after "go"
	buildOut  string            // its -o path
	buildPkg  string            // the package it builds
	final     string            // the final stage's base image
	copyDest  string            // where the final stage puts the binary
	user      string            // USER of the final stage
	expose    []string          // EXPOSE of the final stage
	cmd       []string          // CMD of the final stage (exec form)
	entry     []string          // ENTRYPOINT of the final stage, if any
}

// parseDockerfile reads the two stages: the one named "build" and the last
// one. It understands what this Dockerfile uses: ARG, FROM, ENV, RUN, COPY,
// USER, EXPOSE, CMD, ENTRYPOINT, line continuations, ${VAR} expansion and
// shell words in double or single quotes.
func parseDockerfile(t testing.TB, text string, buildArgs map[string]string) dockerfile {
	t.Helper()
	var d dockerfile
	vars := map[string]string{}
	d.buildEnv = map[string]string{}
	text = strings.ReplaceAll(text, "\\\n", " ")
	stage := ""
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "ARG":
			name, def, _ := strings.Cut(rest, "=")
			if v, ok := buildArgs[name]; ok {
				def = v
			}
			vars[name] = expand(def, vars)
			if name == "GO_VERSION" {
				d.goVersion = vars[name]
			}
		case "FROM":
			words := shellWords(t, expand(rest, vars))
			stage = ""
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				stage = words[2]
			}
			d.final = words[0]
			d.copyDest, d.user, d.expose, d.cmd, d.entry = "", "", nil, nil, nil
		case "ENV":
			for _, kv := range shellWords(t, expand(rest, vars)) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("Dockerfile: ENV %q: want KEY=value pairs", rest)
				}
				vars[k] = v
				if stage == "build" {
					d.buildEnv[k] = v
				}
			}
		case "RUN":
			words := shellWords(t, expand(rest, vars))
			if stage == "build" && len(words) > 2 && words[0] == "go" && words[1] == "build" {
				for i := 1; i < len(words); i++ {
					switch {
					case words[i] == "-o" && i+1 < len(words):
						d.buildOut = words[i+1]
						i++
					case strings.HasPrefix(words[i], "./"):
						d.buildPkg = words[i]
					default:
						d.buildArgs = append(d.buildArgs, words[i])
					}
				}
			}
		case "COPY":
			words := shellWords(t, rest)
			if len(words) == 3 && words[0] == "--from=build" {
				d.copyDest = words[2]
				if words[1] != d.buildOut {
					t.Fatalf("Dockerfile: the final stage copies %s, the build writes %s", words[1], d.buildOut)
				}
			}
		case "USER":
			d.user = rest
		case "EXPOSE":
			d.expose = strings.Fields(rest)
		case "CMD", "ENTRYPOINT":
			var words []string
			if err := json.Unmarshal([]byte(rest), &words); err != nil {
				t.Fatalf("Dockerfile: %s %s: want the exec form (a JSON array): there is no shell in the image", instr, rest)
			}
			if strings.EqualFold(instr, "CMD") {
				d.cmd = words
			} else {
				d.entry = words
			}
		}
	}
	return d
}

var varRE = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`)

func expand(s string, vars map[string]string) string {
	return varRE.ReplaceAllStringFunc(s, func(m string) string {
		name := strings.Trim(m, "${}")
		return vars[name]
	})
}

// shellWords splits s as a POSIX shell would split a simple command: on
// blanks, with "..." and '...' quoting.
func shellWords(t testing.TB, s string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func readDockerfile(t testing.TB, buildArgs map[string]string) dockerfile {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	return parseDockerfile(t, string(text), buildArgs)
}

// imagePath is the PATH of distroless and Debian images: where the image
// looks up a command named without a slash (CMD, Fly's release_command).
var imagePath = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// builtBinary is the binary built once per test run as the Dockerfile
// builds it, with the version stamped below.
var (
	buildOnce    sync.Once
	builtBinary  string
	builtErr     error
	builtVersion = "deploy-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
)

// buildAsDockerfile runs the Dockerfile's go build step on this machine:
// the same flags and environment, for this machine's architecture.
func buildAsDockerfile(t *testing.T) (string, dockerfile) {
	t.Helper()
	d := readDockerfile(t, map[string]string{"VERSION": builtVersion})
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "livepg-image-build-")
		if err != nil {
			builtErr = err
			return
		}
		out := filepath.Join(dir, "livepg")
		args := append([]string{"build"}, d.buildArgs[1:]...)
		args = append(args, "-o", out, d.buildPkg)
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		}
		cmd := exec.Command(goTool, args...)
		cmd.Dir = repoRoot(t)
		cmd.Env = os.Environ()
		for k, v := range d.buildEnv {
			if k == "GOARCH" || k == "GOOS" {
				continue // the image's platform; this test runs the binary here
			}
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if output, err := cmd.CombinedOutput(); err != nil {
			builtErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, output)
			return
		}
		builtBinary = out
	})
	if builtErr != nil {
		t.Fatal(builtErr)
	}
	return builtBinary, d
}

// The build step is the one this test can hold to its promises: a static,
// trimmed binary with its version stamped, and the final stage a minimal
// image that runs it as a user other than root.
func TestDockerfileBuildsAStaticBinary(t *testing.T) {
	t.Parallel()
	bin, d := buildAsDockerfile(t)

	if d.buildEnv["CGO_ENABLED"] != "0" {
		t.Errorf("the build stage sets CGO_ENABLED=%q, want 0", d.buildEnv["CGO_ENABLED"])
	}
	if d.buildArgs[0] != "build" || !contains(d.buildArgs, "-trimpath") {
		t.Errorf("go %v: want go build -trimpath", d.buildArgs)
	}
	if d.buildPkg != "./cmd/livepg" {
		t.Errorf("the build stage builds %q, want ./cmd/livepg", d.buildPkg)
	}
	goMod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if want := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(goMod); want == nil || d.goVersion != string(want[1]) {
		t.Errorf("Dockerfile builds with Go %q; go.mod says %q", d.goVersion, want)
	}
	if !strings.HasPrefix(d.final, "gcr.io/distroless/static") && d.final != "scratch" {
		t.Errorf("final stage FROM %s: want distroless static (or scratch with CA certificates)", d.final)
	}
	if u := strings.Split(d.user, ":")[0]; u == "" || u == "root" || u == "0" {
		t.Errorf("final stage USER %q: want a user other than root", d.user)
	}
	if len(d.entry) != 0 {
		t.Errorf("ENTRYPOINT %v: fly.toml's release_command replaces CMD and would be passed to it", d.entry)
	}
	if len(d.cmd) != 2 || d.cmd[1] != "serve" || lookInImage(d, d.cmd[0]) == "" {
		t.Errorf("CMD %v: want [<the binary on the image PATH> serve]", d.cmd)
	}

	// Static: no program interpreter (the dynamic loader), no shared library.
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has a PT_INTERP program header: it is dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) != 0 {
		t.Errorf("binary needs shared libraries %v (%v)", libs, err)
	}
	if f.Section(".symtab") != nil {
		t.Error("binary has a symbol table: -ldflags -s was lost")
	}
	// Trimmed: no path of this machine's source tree is left in it.
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(repoRoot(t))) {
		t.Errorf("binary contains the source path %s: -trimpath was lost", repoRoot(t))
	}
	fi, _ := os.Stat(bin)
	t.Logf("static binary: %.1f MB", float64(fi.Size())/(1<<20))
}

// lookInImage resolves a command as the image would: a path as is, a bare
// name on the image's PATH, given where the Dockerfile puts the binary.
func lookInImage(d dockerfile, name string) string {
	if strings.Contains(name, "/") {
		if name == d.copyDest {
			return name
		}
		return ""
	}
	for _, dir := range imagePath {
		if path.Join(dir, name) == d.copyDest {
			return d.copyDest
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// emptyRoot lays out a root file system like the final image's, with
// nothing but the binary (where the Dockerfile puts it) and CA
// certificates, and returns its directory.
func emptyRoot(t *testing.T, bin string, d dockerfile) string {
	t.Helper()
	root, err := os.MkdirTemp("", "livepg-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil { // the nonroot user must enter it
		t.Fatal(err)
	}
	dest := filepath.Join(root, d.copyDest)
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dest, data, 0o755); err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")
	if err := os.MkdirAll(filepath.Dir(certs), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certs, caBundle(t), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// caBundle is this machine's CA bundle, or a certificate made here when it
// has none: the image carries one, so the empty root does too.
func caBundle(t *testing.T) []byte {
	if b, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		return b
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "livepg test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// inRoot runs argv (resolved as the image would) inside root, with nothing
// in the environment but env: chrooted, as the unprivileged user the image
// runs as (distroless' nonroot is uid 65532) when the test runs as root,
// else as root of a new user namespace.
func inRoot(t *testing.T, root string, d dockerfile, env []string, argv ...string) (string, error) {
	t.Helper()
	exe := lookInImage(d, argv[0])
	if exe == "" {
		t.Fatalf("%s is not on the image's PATH %v", argv[0], imagePath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env = append([]string{}, env...) // empty, not inherited
	cmd.Dir = "/"
	attr := &syscall.SysProcAttr{Chroot: root}
	if os.Geteuid() == 0 {
		attr.Credential = &syscall.Credential{Uid: 65532, Gid: 65532}
	} else {
		attr.Cloneflags = syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	cmd.SysProcAttr = attr
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// The binary starts in an empty root: no shell, no libc, no /etc/passwd,
// only itself and the CA certificates. It prints its stamped version and
// help, and runs fly.toml's release command against a database.
func TestImageRunsInAnEmptyRoot(t *testing.T) {
	t.Parallel()
	bin, d := buildAsDockerfile(t)
	root := emptyRoot(t, bin, d)

	out, err := inRoot(t, root, d, nil, "livepg", "version")
	if err != nil || !strings.Contains(out, "livepg "+builtVersion+" ") {
		t.Fatalf("livepg version in an empty root: %v\n%s\nwant the stamped version %s", err, out, builtVersion)
	}
	out, err = inRoot(t, root, d, nil, "livepg", "help")
	if err != nil || !strings.Contains(out, "LISTEN_DATABASE_URL") {
		t.Fatalf("livepg help in an empty root: %v\n%s", err, out)
	}

	// Fly runs release_command in a machine made from the image, with the
	// app's secrets (DATABASE_URL) in its environment.
	fly := readFlyToml(t)
	release := strings.Fields(fly.Deploy.ReleaseCommand)
	// The chrooted process cannot reach the test cluster's socket folder.
	db := storetest.OverTCP(t, emptyDatabase(t))
	env := []string{"DATABASE_URL=" + db}
	if out, err := inRoot(t, root, d, env, release...); err != nil {
		t.Fatalf("release command %q in an empty root: %v\n%s", fly.Deploy.ReleaseCommand, err, out)
	}
	out, err = inRoot(t, root, d, env, "livepg", "migrate", "status")
	if err != nil || strings.Contains(out, "Pending") || !strings.Contains(out, "00001_livepg.sql") {
		t.Fatalf("after the release command, migrate status: %v\n%s", err, out)
	}
}

// emptyDatabase is a database with nothing in it yet, as a new Fly Postgres
// database is before the first release command.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	db := storetest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DROP SCHEMA livepg CASCADE; DROP SCHEMA public CASCADE; CREATE SCHEMA public`); err != nil {
		t.Fatalf("empty the database: %v", err)
	}
	return db
}

// flyToml is fly.toml; every key in the file must be known here, so that
// a misspelt key fails the test instead of being ignored by Fly.
type flyToml struct {
	App           string `toml:"app"`
	PrimaryRegion string `toml:"primary_region"`
	KillSignal    string `toml:"kill_signal"`
	KillTimeout   any    `toml:"kill_timeout"`
	Build         struct {
		Dockerfile string `toml:"dockerfile"`
	} `toml:"build"`
	Deploy struct {
		ReleaseCommand string `toml:"release_command"`
		Strategy       string `toml:"strategy"`
	} `toml:"deploy"`
	Env         map[string]string `toml:"env"`
	HTTPService struct {
		InternalPort      int  `toml:"internal_port"`
		ForceHTTPS        bool `toml:"force_https"`
		AutoStopMachines  any  `toml:"auto_stop_machines"`
		AutoStartMachines bool `toml:"auto_start_machines"`
		Concurrency       struct {
			Type      string `toml:"type"`
			SoftLimit int    `toml:"soft_limit"`
			HardLimit int    `toml:"hard_limit"`
		} `toml:"concurrency"`
		HTTPOptions struct {
			H2Backend bool `toml:"h2_backend"`
		} `toml:"http_options"`
		Checks []struct {
			Method      string `toml:"method"`
			Path        string `toml:"path"`
			GracePeriod string `toml:"grace_period"`
			Interval    string `toml:"interval"`
			Timeout     string `toml:"timeout"`
		} `toml:"checks"`
	} `toml:"http_service"`
	Metrics struct {
		Port int    `toml:"port"`
		Path string `toml:"path"`
	} `toml:"metrics"`
	VM []struct {
		Size   string `toml:"size"`
		Memory string `toml:"memory"`
	} `toml:"vm"`
}

func readFlyToml(t testing.TB) flyToml {
	t.Helper()
	var f flyToml
	md, err := toml.DecodeFile(filepath.Join(repoRoot(t), "fly.toml"), &f)
	if err != nil {
		t.Fatalf("fly.toml: %v", err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Fatalf("fly.toml: keys this test does not know (misspelt?): %v", u)
	}
	return f
}

// flyDuration reads a fly.toml duration: a string such as "15s", or an
// integer number of seconds.
func flyDuration(t testing.TB, name string, v any) time.Duration {
	t.Helper()
	switch v := v.(type) {
	case int64:
		return time.Duration(v) * time.Second
	case string:
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("fly.toml %s = %q: %v", name, v, err)
		}
		return d
	}
	t.Fatalf("fly.toml %s = %v: want a duration", name, v)
	return 0
}

var signalNames = map[string]os.Signal{
	"SIGINT": syscall.SIGINT, "SIGTERM": syscall.SIGTERM, "SIGQUIT": syscall.SIGQUIT,
	"SIGHUP": syscall.SIGHUP, "SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2, "SIGKILL": syscall.SIGKILL,
}

// fly.toml's facts, each against the code.
func TestFlyTomlMatchesTheCode(t *testing.T) {
	t.Parallel()
	f := readFlyToml(t)
	d := readDockerfile(t, nil)
	defaults, err := loadConfig(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}

	// The port: the server's default, the one the image exposes.
	if strconv.Itoa(f.HTTPService.InternalPort) != defaults.Port {
		t.Errorf("internal_port = %d, the server's default PORT is %s", f.HTTPService.InternalPort, defaults.Port)
	}
	if p, ok := f.Env["PORT"]; ok && p != defaults.Port {
		t.Errorf("[env] PORT = %s, internal_port %d", p, f.HTTPService.InternalPort)
	}
	if !contains(d.expose, strconv.Itoa(f.HTTPService.InternalPort)) {
		t.Errorf("Dockerfile EXPOSE %v, fly.toml internal_port %d", d.expose, f.HTTPService.InternalPort)
	}
	metricsPort := strconv.Itoa(f.HTTPService.InternalPort)
	if addr := f.Env["LIVEPG_METRICS_ADDR"]; addr != "" {
		_, metricsPort, _ = net.SplitHostPort(addr)
	}
	if strconv.Itoa(f.Metrics.Port) != metricsPort {
		t.Errorf("[metrics] port = %d: the server serves /metrics on %s", f.Metrics.Port, metricsPort)
	}

	// Shutdown: the signal starts a graceful shutdown, and Fly waits for it.
	sig, ok := signalNames[f.KillSignal]
	if !ok || !containsSignal(shutdownSignals, sig) {
		t.Errorf("kill_signal = %q: livepg shuts down gracefully on %v", f.KillSignal, shutdownSignals)
	}
	if kt := flyDuration(t, "kill_timeout", f.KillTimeout); kt <= defaults.ShutdownTimeout {
		t.Errorf("kill_timeout = %s: not more than LIVEPG_SHUTDOWN_TIMEOUT's default %s; Fly would kill the node mid-shutdown", kt, defaults.ShutdownTimeout)
	}

	// Streams: connection limits sized for long-lived streams, and
	// machines that are never stopped for want of requests.
	c := f.HTTPService.Concurrency
	if c.Type != "connections" {
		t.Errorf("concurrency type = %q: every stream holds a connection; want connections", c.Type)
	}
	if c.SoftLimit < 1000 || c.HardLimit < c.SoftLimit {
		t.Errorf("concurrency soft_limit %d, hard_limit %d: want at least 1000 streams a machine, hard >= soft", c.SoftLimit, c.HardLimit)
	}
	if v := f.HTTPService.AutoStopMachines; v != false && v != "off" {
		t.Errorf("auto_stop_machines = %v: machines with open streams must not be stopped; want \"off\"", v)
	}

	// h2_backend: the proxy speaks h2c, which the node must serve.
	if f.HTTPService.HTTPOptions.H2Backend && (!defaults.H2C || f.Env["LIVEPG_H2C"] == "off") {
		t.Error("[http_service.http_options] h2_backend = true, but the node does not serve h2c (LIVEPG_H2C)")
	}

	// Deploys: rolling, migrations first.
	if f.Deploy.Strategy != "rolling" {
		t.Errorf("[deploy] strategy = %q, want rolling", f.Deploy.Strategy)
	}
	if f.PrimaryRegion == "" {
		t.Error("primary_region is empty: Fly sets PRIMARY_REGION from it, and writes are replayed there")
	}
	if f.Build.Dockerfile != "" {
		if _, err := os.Stat(filepath.Join(repoRoot(t), f.Build.Dockerfile)); err != nil {
			t.Errorf("[build] dockerfile: %v", err)
		}
	}
	if len(f.HTTPService.Checks) == 0 {
		t.Fatal("no [[http_service.checks]]")
	}
	for _, ch := range f.HTTPService.Checks {
		if ch.Path != "/readyz" || (ch.Method != "" && !strings.EqualFold(ch.Method, "GET")) {
			t.Errorf("check %s %s: want GET /readyz", ch.Method, ch.Path)
		}
		// /readyz bounds its own database ping at 2s.
		if to := flyDuration(t, "check timeout", ch.Timeout); to <= 2*time.Second {
			t.Errorf("check timeout %s: /readyz may take up to 2s to answer", to)
		}
	}
}

func containsSignal(list []os.Signal, s os.Signal) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// The paths fly.toml names are real routes of a running server, answering
// 200 once it is ready; the release command is a real subcommand that
// migrates an empty database.
func TestFlyTomlRoutesAndReleaseCommandWork(t *testing.T) {
	t.Parallel()
	f := readFlyToml(t)
	db := emptyDatabase(t)

	release := strings.Fields(f.Deploy.ReleaseCommand)
	if len(release) < 2 || release[0] != "livepg" {
		t.Fatalf("release_command %q: want livepg <subcommand>", f.Deploy.ReleaseCommand)
	}
	var out bytes.Buffer
	env := map[string]string{"DATABASE_URL": db, "PORT": "0"}
	getenv := func(k string) string { return env[k] }
	if err := run(context.Background(), release[1:], getenv, &out, &out); err != nil {
		t.Fatalf("release command %q: %v\n%s", f.Deploy.ReleaseCommand, err, out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"migrate", "status"}, getenv, &out, &out); err != nil || strings.Contains(out.String(), "Pending") {
		t.Fatalf("after the release command: %v\n%s", err, out.String())
	}

	// /metrics where fly.toml's [env] puts it (on a port of the test's
	// choosing), and not on the service port then.
	metricsBase := ""
	if addr := f.Env["LIVEPG_METRICS_ADDR"]; addr != "" {
		env["LIVEPG_METRICS_ADDR"] = "127.0.0.1:0"
	}
	base, _, output := startServerOutput(t, env)
	paths := []string{}
	if env["LIVEPG_METRICS_ADDR"] != "" {
		m := regexp.MustCompile(`metrics serving on (http://\S+)/metrics`).FindStringSubmatch(output.String())
		if m == nil {
			t.Fatalf("no metrics address in the output:\n%s", output.String())
		}
		metricsBase = m[1]
		if code, _ := get(t, base+f.Metrics.Path); code != http.StatusNotFound {
			t.Errorf("GET %s on the service port = %d with LIVEPG_METRICS_ADDR set, want 404", f.Metrics.Path, code)
		}
		if code, body := get(t, metricsBase+f.Metrics.Path); code != http.StatusOK || !strings.Contains(body, "livepg_streams_open") {
			t.Errorf("GET %s on LIVEPG_METRICS_ADDR = %d %.200q", f.Metrics.Path, code, body)
		}
	} else {
		paths = append(paths, f.Metrics.Path)
	}
	for _, ch := range f.HTTPService.Checks {
		paths = append(paths, ch.Path)
	}
	for _, p := range paths {
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, body := get(t, base+p)
			if code == http.StatusOK {
				break
			}
			if code == http.StatusNotFound || code == http.StatusMethodNotAllowed || time.Now().After(deadline) {
				t.Fatalf("GET %s = %d %q", p, code, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// The build context leaves out the local database and git history, and
// keeps every file the build needs.
func TestDockerignoreKeepsTheSourcesOnly(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	text, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(text), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, strings.TrimPrefix(line, "/"))
		}
	}
	ignored := func(p string) bool {
		// A pattern excludes a path and everything under it.
		for {
			for _, pat := range patterns {
				if ok, _ := filepath.Match(pat, p); ok {
					return true
				}
			}
			if p = path.Dir(p); p == "." || p == "/" {
				return false
			}
		}
	}
	for _, p := range []string{".livepg/pgdata/PG_VERSION", ".git/HEAD"} {
		if !ignored(p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}
	needed := []string{"go.mod", "go.sum"}
	for _, dir := range []string{"cmd", "realtime", "store", "migrations"} {
		_ = filepath.WalkDir(filepath.Join(root, dir), func(p string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() && !strings.HasSuffix(p, "_test.go") {
				rel, _ := filepath.Rel(root, p)
				needed = append(needed, filepath.ToSlash(rel))
			}
			return nil
		})
	}
	for _, p := range needed {
		if ignored(p) {
			t.Errorf(".dockerignore leaves out %s, which the build needs", p)
		}
	}
}
