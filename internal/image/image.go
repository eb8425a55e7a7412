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
	"path"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Paths in the image.
const (
	BinaryPath  = "/otelcol-ebpfnet"
	CACertsPath = "/etc/ssl/certs/ca-certificates.crt"
	ConfigPath  = "/conf/config.yaml"
)

// Spec is the collector's image.
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

// Build makes the collector's image.
func Build(s Spec) (v1.Image, error) {
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return nil, fmt.Errorf("collector binary: %w", err)
	}
	ca, err := os.ReadFile(s.CACerts)
	if err != nil {
		return nil, fmt.Errorf("CA certificates: %w", err)
	}
	return BuildFiles(Files{
		Files:      []File{{Path: CACertsPath, Mode: 0o644, Data: ca}, {Path: BinaryPath, Mode: 0o755, Data: bin}},
		Dirs:       []string{"/conf", "/tmp"},
		Entrypoint: []string{BinaryPath}, Cmd: []string{"--config=" + ConfigPath},
		Arch: s.Arch, Created: s.Created,
		Labels: map[string]string{
			"org.opencontainers.image.title":       "otelcol-ebpfnet",
			"org.opencontainers.image.description": "OpenTelemetry Collector with the ebpfnet eBPF network receiver",
			"org.opencontainers.image.source":      s.Source,
			"org.opencontainers.image.version":     s.Version,
			"org.opencontainers.image.revision":    s.Revision,
			"org.opencontainers.image.created":     s.Created.UTC().Format(time.RFC3339),
			"org.opencontainers.image.licenses":    "Apache-2.0",
		},
	})
}

// File is a regular file of an image.
type File struct {
	Path string // absolute
	Mode int64
	Data []byte
}

// Files is a one-layer image: its files (their parent directories are
// made), extra directories, and its config.
type Files struct {
	Files      []File
	Dirs       []string // absolute; /tmp is world-writable (sticky)
	Entrypoint []string
	Cmd        []string
	Labels     map[string]string
	Arch       string
	Created    time.Time
}

// BuildFiles makes an image of one layer.
func BuildFiles(f Files) (v1.Image, error) {
	data, err := f.rootfs()
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	// OCI media types (go-containerregistry's default is Docker's schema 2).
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, MediaType: types.OCILayer})
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", f.Arch, v1.Time{Time: f.Created}
	cf.Config.Entrypoint, cf.Config.Cmd, cf.Config.Labels = f.Entrypoint, f.Cmd, f.Labels
	return mutate.ConfigFile(img, cf)
}

// rootfs is the layer's tar: every directory once, before what it holds,
// owned by root, stamped with Created.
func (f Files) rootfs() ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	seen := map[string]bool{}
	var dir func(string) error
	dir = func(d string) error {
		if d == "/" || d == "." || seen[d] {
			return nil
		}
		if err := dir(path.Dir(d)); err != nil {
			return err
		}
		seen[d] = true
		mode := int64(0o755)
		if d == "/tmp" {
			mode = 0o1777
		}
		return tw.WriteHeader(&tar.Header{Name: d[1:] + "/", Mode: mode, ModTime: f.Created, Typeflag: tar.TypeDir, Format: tar.FormatPAX})
	}
	for _, d := range f.Dirs {
		if err := dir(d); err != nil {
			return nil, err
		}
	}
	for _, e := range f.Files {
		if err := dir(path.Dir(e.Path)); err != nil {
			return nil, err
		}
		h := &tar.Header{Name: e.Path[1:], Mode: e.Mode, ModTime: f.Created, Size: int64(len(e.Data)), Typeflag: tar.TypeReg,
			Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.Data); err != nil {
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
