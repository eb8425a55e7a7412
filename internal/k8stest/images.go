package k8stest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/internal/image"
)

// ProgramImage builds the Go program in pkg (a directory of this module,
// relative to the module root, e.g. internal/k8stest/pause) statically,
// makes an image of it named ref with the program as entrypoint, and
// returns the archive's path, cached in CacheDir/images (rebuilt each run:
// the build is cached by go).
func ProgramImage(t testing.TB, pkg, ref string) string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(self), "..", "..")
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./"+pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return BinaryImage(t, bin, ref)
}

// BinaryImage makes an image named ref of the static binary bin, its
// entrypoint /<base name of bin>, and returns the archive's path in
// CacheDir/images.
func BinaryImage(t testing.TB, bin, ref string) string {
	t.Helper()
	name := filepath.Base(bin)
	dir := filepath.Join(CacheDir(t), "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	img, err := image.BuildFiles(image.Files{
		Files:      []image.File{{Path: "/" + name, Mode: 0o755, Data: data}},
		Dirs:       []string{"/tmp"},
		Entrypoint: []string{"/" + name},
		Arch:       runtime.GOARCH,
		Created:    time.Unix(0, 0).UTC(),
	})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, name+".tar")
	if err := image.WriteArchive(archive, ref, img); err != nil {
		t.Fatal(err)
	}
	return archive
}
