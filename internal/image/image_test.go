package image

import (
	"archive/tar"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/require"
)

func testSpec(t *testing.T) Spec {
	dir := t.TempDir()
	bin, ca := filepath.Join(dir, "otelcol"), filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(bin, []byte("\x7fELF collector"), 0o755))
	require.NoError(t, os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644))
	return Spec{Binary: bin, CACerts: ca, Version: "1.2.3", Source: "https://example.com/ebpfnet", Revision: "abc123",
		Arch: "amd64", Created: time.Unix(1_700_000_000, 0).UTC()}
}

// TestArchiveRoundTrip: the archive, read back as an image, has the
// collector as its entrypoint, the labels, and the two files with their
// modes; the same inputs give the same digest.
func TestArchiveRoundTrip(t *testing.T) {
	s := testSpec(t)
	img, err := Build(s)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "image.tar")
	require.NoError(t, WriteArchive(path, "ebpfnet/otelcol-ebpfnet:1.2.3", img))
	tag, err := name.NewTag("ebpfnet/otelcol-ebpfnet:1.2.3")
	require.NoError(t, err)
	back, err := tarball.ImageFromPath(path, &tag)
	require.NoError(t, err)
	cf, err := back.ConfigFile()
	require.NoError(t, err)
	require.Equal(t, []string{BinaryPath}, cf.Config.Entrypoint)
	require.Equal(t, "linux", cf.OS)
	require.Equal(t, "amd64", cf.Architecture)
	require.Equal(t, "1.2.3", cf.Config.Labels["org.opencontainers.image.version"])
	mt, err := img.MediaType()
	require.NoError(t, err)
	require.Equal(t, types.OCIManifestSchema1, mt, "an OCI image")
	require.Equal(t, "abc123", cf.Config.Labels["org.opencontainers.image.revision"])
	files := map[string]*tar.Header{}
	rd := mutate.Extract(back)
	defer rd.Close()
	tr := tar.NewReader(rd)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		files["/"+strings.TrimSuffix(h.Name, "/")] = h
	}
	require.Equal(t, int64(0o755), files[BinaryPath].Mode&0o777)
	require.Equal(t, int64(len("\x7fELF collector")), files[BinaryPath].Size)
	require.Contains(t, files, CACertsPath)
	again, err := Build(s)
	require.NoError(t, err)
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	require.Equal(t, d1, d2, "reproducible")
}

// TestPush pushes to a registry on loopback (go-containerregistry's
// in-memory one) and pulls the same digest back.
func TestPush(t *testing.T) {
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	img, err := Build(testSpec(t))
	require.NoError(t, err)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/ebpfnet/otelcol-ebpfnet:1.2.3"
	require.NoError(t, Push(ref, img, true))
	tag, err := name.NewTag(ref, name.Insecure)
	require.NoError(t, err)
	pulled, err := remote.Image(tag)
	require.NoError(t, err)
	want, _ := img.Digest()
	got, err := pulled.Digest()
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Error(t, Push("not a reference!", img, true))
}
