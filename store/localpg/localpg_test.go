package localpg

import (
	"context"
	"errors"
	"strings"
	"testing"
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
