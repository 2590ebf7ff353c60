// Command image builds kid-operator's image without a container engine:
// the manager binary `make build` built, on a base made of files this
// repository and the machine's Debian packages provide, written as an OCI
// image layout (a directory that crane, skopeo, oras or regctl push as
// they are, and that a test can read). It is the image the Dockerfile
// builds: FROM scratch, the same files, user 65532, the same entrypoint
// and labels.
//
//	make image                     # bin/manager, then bin/image
//	go -C hack/image run . -binary $PWD/bin/manager -out $PWD/bin/image -version v0.2.0 -revision $(git rev-parse HEAD)
//
// The platform is read from the binary's build information (GOOS/GOARCH),
// and the version and revision the labels carry must be the ones make
// build stamped into it, so the labels cannot disagree with what
// `manager --version` prints. Every timestamp is
// -created (make image passes the commit's time, SOURCE_DATE_EPOCH), so
// the same binary and CA bundle give the same image digest.
package main

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// rootfs holds /etc/passwd and /etc/group, naming user and group 65532
// (nonroot, as distroless names it); the Dockerfile copies the same files.
//
//go:embed rootfs/etc/passwd rootfs/etc/group
var rootfs embed.FS

// The image's user and entrypoint, as the Dockerfile's USER and ENTRYPOINT.
const (
	user       = "65532:65532"
	entrypoint = "/manager"
	versionPkg = "github.com/kid-operator/kid-operator/internal/version"
)

func main() {
	var o options
	flag.StringVar(&o.binary, "binary", "bin/manager", "the manager binary make build built (static, -trimpath, its version stamped)")
	flag.StringVar(&o.out, "out", "bin/image", "the OCI image layout to write (replaced)")
	flag.StringVar(&o.caCerts, "ca-certs", "/etc/ssl/certs/ca-certificates.crt", "the CA bundle to ship, from Debian's ca-certificates package (the manager calls k-ID's API over HTTPS)")
	flag.StringVar(&o.version, "version", "", "the version make build stamped in the binary (the org.opencontainers.image.version label)")
	flag.StringVar(&o.revision, "revision", "", "the commit make build stamped in the binary (the org.opencontainers.image.revision label)")
	flag.StringVar(&o.source, "source", "https://github.com/kid-operator/kid-operator", "the org.opencontainers.image.source label")
	flag.StringVar(&o.tag, "tag", "", "the tag recorded in the layout's index (org.opencontainers.image.ref.name); default: the version")
	flag.Int64Var(&o.created, "created", sourceDateEpoch(), "the image's creation time and every file's, in seconds since 1970 (default $SOURCE_DATE_EPOCH, else 0)")
	flag.Parse()
	digest, err := build(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("%s: %s\n", o.out, digest)
}

type options struct {
	binary, out, caCerts, source, tag string
	version, revision                 string
	created                           int64
}

func sourceDateEpoch() int64 {
	n, _ := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64)
	return n
}

// readPlatform reads the binary's build information and refuses a binary the
// image must not ship: one with cgo (the base has no libc), one built
// without -trimpath (not reproducible), one not built for linux.
func readPlatform(path string) (v1.Platform, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return v1.Platform{}, fmt.Errorf("%s: %w (run make build)", path, err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	p := v1.Platform{OS: settings["GOOS"], Architecture: settings["GOARCH"]}
	if p.Architecture == "arm" {
		p.Variant = "v" + settings["GOARM"]
	}
	var problems []string
	if settings["CGO_ENABLED"] != "0" {
		problems = append(problems, "built with cgo (CGO_ENABLED=0 makes it static: the image has no libc)")
	}
	if settings["-trimpath"] != "true" {
		problems = append(problems, "built without -trimpath (its paths would differ from machine to machine)")
	}
	if p.OS != "linux" {
		problems = append(problems, fmt.Sprintf("built for %s, not linux", p.OS))
	}
	if len(problems) > 0 {
		return v1.Platform{}, fmt.Errorf("%s: %s", path, strings.Join(problems, "; "))
	}
	return p, nil
}

// checkStamped refuses a binary that does not hold the version and the
// revision the labels will carry. A -trimpath build records no -ldflags in
// its build information, and a binary of another architecture cannot be
// run here, so it looks for the strings -X put in the binary's data.
func checkStamped(binary []byte, version, revision string) error {
	for _, v := range []struct{ flag, value string }{{"-version", version}, {"-revision", revision}} {
		if v.value == "" {
			return fmt.Errorf("%s is required (make image passes make build's)", v.flag)
		}
		if !bytes.Contains(binary, []byte(v.value)) {
			return fmt.Errorf("the binary does not hold %s %q: it was not built with make build's -ldflags -X %s...=%s", v.flag, v.value, versionPkg, v.value)
		}
	}
	return nil
}

// file is one entry of a layer.
type file struct {
	name string
	mode int64
	data []byte // nil for a directory
}

func build(o options) (v1.Hash, error) {
	platform, err := readPlatform(o.binary)
	if err != nil {
		return v1.Hash{}, err
	}
	manager, err := os.ReadFile(o.binary)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := checkStamped(manager, o.version, o.revision); err != nil {
		return v1.Hash{}, err
	}
	ca, err := os.ReadFile(o.caCerts)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("the CA bundle: %w (apt-get install ca-certificates)", err)
	}
	passwd, _ := rootfs.ReadFile("rootfs/etc/passwd")
	group, _ := rootfs.ReadFile("rootfs/etc/group")
	created := time.Unix(o.created, 0).UTC()

	// Two layers, as the Dockerfile's two COPY: the base, which changes
	// with the CA bundle only, and the manager.
	base, err := layer(created, []file{
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, data: group},
		{name: "etc/passwd", mode: 0o644, data: passwd},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: ca},
		// Sticky and world-writable, as /tmp is; nothing writes there
		// today, but a library that does must not fail.
		{name: "tmp/", mode: 0o1777},
	})
	if err != nil {
		return v1.Hash{}, err
	}
	bin, err := layer(created, []file{{name: "manager", mode: 0o755, data: manager}})
	if err != nil {
		return v1.Hash{}, err
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{Created: v1.Time{Time: created}, CreatedBy: "hack/image: /etc/passwd, /etc/group, CA certificates, /tmp", Comment: "the Dockerfile's COPY --from=build /rootfs/ /"}},
		mutate.Addendum{Layer: bin, History: v1.History{Created: v1.Time{Time: created}, CreatedBy: "hack/image: /manager", Comment: "the Dockerfile's COPY --from=build /out/manager /manager"}},
	)
	if err != nil {
		return v1.Hash{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: created}
	cf.OS, cf.Architecture, cf.Variant = platform.OS, platform.Architecture, platform.Variant
	cf.Config.User = user
	cf.Config.Entrypoint = []string{entrypoint}
	cf.Config.Labels = Labels(o.version, o.revision, o.source)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return v1.Hash{}, err
	}

	if err := os.RemoveAll(o.out); err != nil {
		return v1.Hash{}, err
	}
	p, err := layout.Write(o.out, empty.Index)
	if err != nil {
		return v1.Hash{}, err
	}
	tag := o.tag
	if tag == "" {
		tag = o.version
	}
	if err := p.AppendImage(img, layout.WithPlatform(platform), layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

// Labels are the image's OCI annotations, as the Dockerfile's LABEL sets
// them.
func Labels(version, revision, source string) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "kid-operator",
		"org.opencontainers.image.description": "Receives k-ID's signed webhooks into Kubernetes and runs the controllers (the manager alone)",
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.revision":    revision,
		"org.opencontainers.image.source":      source,
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
}

// layer is an uncompressed tar of files, owned by root, every time
// created, compressed by go-containerregistry as an OCI layer.
func layer(created time.Time, files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: created, Uname: "root", Gname: "root"}
		if f.data == nil {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	if len(data) == 0 {
		return nil, errors.New("empty layer")
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}
