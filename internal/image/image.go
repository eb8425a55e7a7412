// Package image builds the OCI image of the ocb collector without a
// container daemon, with go-containerregistry: one layer holding the
// collector and a CA bundle (for TLS exporters), the collector as its
// entrypoint, OCI labels. It writes an archive that `docker load`,
// `ctr images import` and `kind load image-archive` read, and pushes to a
// registry.
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Paths in the image.
const (
	BinaryPath  = "/otelcol-ebpfnet"
	CACertsPath = "/etc/ssl/certs/ca-certificates.crt"
	ConfigPath  = "/conf/config.yaml"
)

// Spec is what goes into the image.
type Spec struct {
	Binary   string // the collector, statically linked
	CACerts  string // a PEM bundle of CA certificates
	Version  string // org.opencontainers.image.version
	Source   string // org.opencontainers.image.source
	Revision string // org.opencontainers.image.revision (the commit)
	Arch     string // GOARCH of the binary: amd64, arm64
	// Created is the image's and its files' time: a fixed one (the
	// commit's) makes the same inputs give the same digest.
	Created time.Time
}

// Build makes the image.
func Build(s Spec) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		b, err := rootfs(s)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", s.Arch, v1.Time{Time: s.Created}
	cf.Config.Entrypoint = []string{BinaryPath}
	cf.Config.Cmd = []string{"--config=" + ConfigPath}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       "otelcol-ebpfnet",
		"org.opencontainers.image.description": "OpenTelemetry Collector with the ebpfnet eBPF network receiver",
		"org.opencontainers.image.source":      s.Source,
		"org.opencontainers.image.version":     s.Version,
		"org.opencontainers.image.revision":    s.Revision,
		"org.opencontainers.image.created":     s.Created.UTC().Format(time.RFC3339),
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
	return mutate.ConfigFile(img, cf)
}

// rootfs is the layer: the collector and the CA bundle, owned by root, with
// their parent directories.
func rootfs(s Spec) ([]byte, error) {
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return nil, fmt.Errorf("collector binary: %w", err)
	}
	ca, err := os.ReadFile(s.CACerts)
	if err != nil {
		return nil, fmt.Errorf("CA certificates: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		name string
		mode int64
		data []byte
	}{
		{"etc/", 0o755, nil}, {"etc/ssl/", 0o755, nil}, {"etc/ssl/certs/", 0o755, nil},
		{CACertsPath[1:], 0o644, ca}, {"conf/", 0o755, nil}, {"tmp/", 0o1777, nil},
		{BinaryPath[1:], 0o755, bin},
	} {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: s.Created, Size: int64(len(e.data)), Typeflag: tar.TypeReg,
			Format: tar.FormatPAX}
		if e.data == nil {
			h.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteArchive writes img, tagged ref, as an image archive (the layout of
// `docker save`, which docker, containerd's ctr and kind import).
func WriteArchive(path, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		return fmt.Errorf("write image archive %s: %w", path, err)
	}
	return nil
}

// Push pushes img to ref (registry/repository:tag) with the credentials of
// the local docker config, if any (anonymous otherwise). insecure allows a
// plain-HTTP registry.
func Push(ref string, img v1.Image, insecure bool) error {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	tag, err := name.NewTag(ref, opts...)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	if err := remote.Write(tag, img, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}
