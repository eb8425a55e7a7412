package testnet

import (
	"os"
	"testing"
)

// RequireRoot skips the test when the process is not root, and fails it
// instead when the CI environment variable is set, so that CI can never pass
// by skipping the kernel tests.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("privileged test: needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON) and CI is set, so it must run")
	}
	tb.Skip("privileged test: needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON); skipped because not root")
}
