// Command ebpfnet-image builds the collector's OCI image (internal/image):
// `make image` writes the archive, `make image-push REGISTRY=...` pushes it.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/ebpfnet/ebpfnet/internal/image"
)

func main() {
	var s image.Spec
	var ref, out, push string
	var insecure bool
	flag.StringVar(&s.Binary, "binary", "dist/otelcol-ebpfnet/otelcol-ebpfnet", "the collector built by ocb")
	flag.StringVar(&s.CACerts, "ca-certs", "/etc/ssl/certs/ca-certificates.crt", "PEM bundle of CA certificates")
	flag.StringVar(&s.Version, "version", "0.1.0", "image version label")
	flag.StringVar(&s.Source, "source", "https://github.com/ebpfnet/ebpfnet", "image source label")
	flag.StringVar(&s.Revision, "revision", "", "commit the image is built from")
	flag.StringVar(&s.Arch, "arch", runtime.GOARCH, "architecture of the binary")
	flag.StringVar(&ref, "ref", "ebpfnet/otelcol-ebpfnet:0.1.0", "name and tag in the archive")
	flag.StringVar(&out, "out", "", "write the image archive here")
	flag.StringVar(&push, "push", "", "push to this reference (registry/repository:tag)")
	flag.BoolVar(&insecure, "insecure", false, "the registry of -push speaks plain HTTP")
	flag.Parse()
	s.Created = created()
	if err := run(s, ref, out, push, insecure); err != nil {
		fmt.Fprintln(os.Stderr, "ebpfnet-image:", err)
		os.Exit(1)
	}
}

// created is SOURCE_DATE_EPOCH (the commit's time, from make), else now.
func created() time.Time {
	if v, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		return time.Unix(v, 0).UTC()
	}
	return time.Now().UTC().Truncate(time.Second)
}

func run(s image.Spec, ref, out, push string, insecure bool) error {
	if out == "" && push == "" {
		return fmt.Errorf("nothing to do: give -out or -push")
	}
	img, err := image.Build(s)
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	if out != "" {
		if err := image.WriteArchive(out, ref, img); err != nil {
			return err
		}
		fmt.Printf("%s %s -> %s\n", ref, digest, out)
	}
	if push != "" {
		if err := image.Push(push, img, insecure); err != nil {
			return err
		}
		fmt.Printf("pushed %s@%s\n", push, digest)
	}
	return nil
}
