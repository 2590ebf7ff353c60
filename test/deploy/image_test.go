//go:build linux

package deploy_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
)

// The image make image builds, read as a container runtime reads it (the
// OCI image layout, each blob checked against its digest, the layers
// unpacked in order) and run as the runtime would run it: its entrypoint,
// against the control plane. No container engine is needed, nor used.
var _ = Describe("make image", Ordered, func() {
	// What make image stamps; the test passes its own, so it can tell
	// them from whatever git describe says today.
	const (
		version  = "v9.8.7-imagetest"
		revision = "0123456789abcdef0123456789abcdef01234567"
		epoch    = "1767225600" // 2026-01-01T00:00:00Z
	)
	var (
		dir    string // the run's: bin/, image/, rootfs/
		layout string
		img    ociImage
		rootfs string
	)

	BeforeAll(func() {
		dir = GinkgoT().TempDir()
		layout = filepath.Join(dir, "image")
		makeImage(dir, layout, version, revision, epoch)
		var err error
		img, err = readLayout(layout)
		Expect(err).NotTo(HaveOccurred())
		rootfs = filepath.Join(dir, "rootfs")
		Expect(img.unpack(layout, rootfs)).To(Succeed())
	})

	It("is one linux image of this machine's architecture, with the Dockerfile's user, entrypoint and labels", func() {
		cfg := img.config
		Expect(cfg.OS).To(Equal("linux"))
		Expect(cfg.Architecture).To(Equal(runtime.GOARCH))
		Expect(cfg.Created).To(Equal(time.Unix(1767225600, 0).UTC()), "SOURCE_DATE_EPOCH stamps the image")

		docker, err := dockerfile(filepath.Join(root, "Dockerfile"))
		Expect(err).NotTo(HaveOccurred())
		final := finalStage(docker)
		Expect(final.from).To(Equal("scratch"), "the Dockerfile's image has no base, as make image's has none")
		Expect(cfg.Config.User).To(Equal(final.user))
		Expect(cfg.Config.User).To(Equal("65532:65532"))
		Expect(cfg.Config.Entrypoint).To(Equal(final.entrypoint))
		args := map[string]string{"VERSION": version, "REVISION": revision}
		Expect(cfg.Config.Labels).To(Equal(final.labels(args)), "make image's labels are the Dockerfile's LABEL")
		Expect(cfg.Config.Labels).To(And(
			HaveKeyWithValue("org.opencontainers.image.version", version),
			HaveKeyWithValue("org.opencontainers.image.revision", revision),
			HaveKeyWithValue("org.opencontainers.image.source", "https://github.com/kid-operator/kid-operator"),
			HaveKeyWithValue("org.opencontainers.image.licenses", "Apache-2.0"),
		))
		Expect(filepath.Join(root, "LICENSE")).To(BeAnExistingFile())
	})

	It("ships the manager alone, on passwd and group entries for its user, CA certificates and /tmp", func() {
		var files []string
		Expect(filepath.Walk(rootfs, func(path string, info os.FileInfo, err error) error {
			if err != nil || path == rootfs {
				return err
			}
			rel, _ := filepath.Rel(rootfs, path)
			if info.IsDir() {
				rel += "/"
			}
			files = append(files, rel)
			return nil
		})).To(Succeed())
		Expect(files).To(ConsistOf("etc/", "etc/passwd", "etc/group", "etc/ssl/", "etc/ssl/certs/",
			"etc/ssl/certs/ca-certificates.crt", "tmp/", "manager"))

		uid, gid, _ := strings.Cut(img.config.Config.User, ":")
		passwd, err := os.ReadFile(filepath.Join(rootfs, "etc/passwd"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(passwd)).To(MatchRegexp(`(?m)^nonroot:x:`+uid+`:`+gid+`:`), "the user has a name, as distroless's nonroot")
		group, err := os.ReadFile(filepath.Join(rootfs, "etc/group"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(group)).To(MatchRegexp(`(?m)^nonroot:x:` + gid + `:`))
		ca, err := os.ReadFile(filepath.Join(rootfs, "etc/ssl/certs/ca-certificates.crt"))
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.Count(string(ca), "BEGIN CERTIFICATE")).To(BeNumerically(">", 50), "the manager calls k-ID's API over HTTPS")
		Expect(img.modes["tmp/"] & os.ModePerm).To(Equal(os.FileMode(0o777)))
		Expect(img.modes["tmp/"] & os.ModeSticky).NotTo(BeZero())
		Expect(img.modes["manager"] & 0o111).NotTo(BeZero())
	})

	It("runs its entrypoint: --version prints what make image stamped", func() {
		out, err := exec.Command(filepath.Join(rootfs, img.config.Config.Entrypoint[0]), "--version").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(Equal(fmt.Sprintf("kid-operator %s (revision %s, %s, linux/%s)\n", version, revision, runtime.Version(), runtime.GOARCH)))
	})

	It("starts against the control plane, becomes ready and exports kid_build_info", func() {
		probe, metrics, webhook := freePort(), freePort(), freePort()
		cmd := exec.Command(filepath.Join(rootfs, img.config.Config.Entrypoint[0]),
			"--health-probe-bind-address="+probe, "--metrics-bind-address="+metrics, "--webhook-bind-address="+webhook)
		// As the chart runs it, but for leader election and the address of
		// the API server, which a pod finds in its environment.
		cmd.Env = []string{"KUBECONFIG=" + kubeconfig}
		logs := gbytes.NewBuffer()
		cmd.Stdout, cmd.Stderr = logs, logs
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		Expect(cmd.Start()).To(Succeed())
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		// Whatever happens to the spec, the process does not outlive it.
		DeferCleanup(func() { _ = cmd.Process.Kill() })

		Eventually(func() (int, error) {
			select {
			case err := <-exited:
				return 0, StopTrying(fmt.Sprintf("the manager exited (%v):\n%s", err, logs.Contents()))
			default:
			}
			return httpStatus("http://" + probe + "/readyz")
		}).WithTimeout(90*time.Second).WithPolling(250*time.Millisecond).Should(Equal(http.StatusOK), func() string { return string(logs.Contents()) })

		body, err := httpGet("http://" + metrics + "/metrics")
		Expect(err).NotTo(HaveOccurred())
		Expect(body).To(ContainSubstring(fmt.Sprintf(`kid_build_info{goversion=%q,revision=%q,version=%q} 1`, runtime.Version(), revision, version)))
		Expect(string(logs.Contents())).To(ContainSubstring(version), "the manager logs its version as it starts")

		// And stops as the kubelet stops it.
		Expect(cmd.Process.Signal(syscall.SIGTERM)).To(Succeed())
		Eventually(exited).WithTimeout(60*time.Second).Should(Receive(BeNil()), func() string { return string(logs.Contents()) })
	})

	It("is the same image, digest for digest, when built again", func() {
		again := filepath.Join(dir, "image-again")
		makeImage(dir, again, version, revision, epoch)
		second, err := readLayout(again)
		Expect(err).NotTo(HaveOccurred())
		Expect(second.digest).To(Equal(img.digest))
	})

	It("is pushed by make image-push, as the README says, and the registry serves it by the same digest", func() {
		// A registry on this machine: crane's own, from the crane that
		// make image-push runs.
		crane := filepath.Join(dir, "crane")
		out, err := run(nil, "go", "-C", "hack/image", "build", "-o", crane, "github.com/google/go-containerregistry/cmd/crane")
		Expect(err).NotTo(HaveOccurred(), string(out))
		addr := freePort()
		registry := exec.Command(crane, "registry", "serve", "--address", addr)
		logs := gbytes.NewBuffer()
		registry.Stdout, registry.Stderr = logs, logs
		registry.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		Expect(registry.Start()).To(Succeed())
		DeferCleanup(func() { _ = registry.Process.Kill(); _ = registry.Wait() })
		Eventually(httpStatus).WithArguments("http://"+addr+"/v2/").WithTimeout(30*time.Second).Should(Equal(http.StatusOK), func() string { return string(logs.Contents()) })

		ref := addr + "/games/kid-operator:" + version
		out, err = run([]string{"MAKEFLAGS=", "MAKELEVEL="}, "make", "--no-print-directory", "image-push", "IMAGE_DIR="+layout, "IMG="+ref)
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(strings.TrimSpace(string(out))).To(HaveSuffix(addr+"/games/kid-operator@"+img.digest), "crane prints what it pushed, by digest")
		served, err := run(nil, crane, "digest", ref)
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.TrimSpace(string(served))).To(Equal(img.digest))
	})
})

// makeImage runs make image with the version facts given, its binaries in
// dir/bin and the layout in out.
func makeImage(dir, out, version, revision, epoch string) {
	GinkgoHelper()
	// Not the outer make's jobserver, when make test runs this.
	env := []string{"MAKEFLAGS=", "MFLAGS=", "MAKELEVEL="}
	start := time.Now()
	output, err := run(env, "make", "--no-print-directory", "image",
		"BIN="+filepath.Join(dir, "bin"), "IMAGE_DIR="+out,
		"VERSION="+version, "REVISION="+revision, "SOURCE_DATE_EPOCH="+epoch)
	Expect(err).NotTo(HaveOccurred(), string(output))
	fmt.Fprintf(GinkgoWriter, "make image (%s):\n%s", time.Since(start).Round(time.Second), output)
}

// ociImage is the one image of an OCI layout, as read from its blobs.
type ociImage struct {
	digest   string
	manifest struct {
		MediaType string `json:"mediaType"`
		Config    ociDescriptor
		Layers    []ociDescriptor
	}
	config struct {
		OS           string    `json:"os"`
		Architecture string    `json:"architecture"`
		Created      time.Time `json:"created"`
		Config       struct {
			User       string            `json:"User"`
			Entrypoint []string          `json:"Entrypoint"`
			Cmd        []string          `json:"Cmd"`
			Labels     map[string]string `json:"Labels"`
		} `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	// modes are the unpacked entries' modes, by path (directories end in /).
	modes map[string]os.FileMode
}

type ociDescriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// blob reads a blob of the layout and checks it against its digest and size,
// as a registry and a runtime do.
func blob(layout string, d ociDescriptor) ([]byte, error) {
	hexDigest, ok := strings.CutPrefix(d.Digest, "sha256:")
	if !ok {
		return nil, fmt.Errorf("digest %q is not sha256", d.Digest)
	}
	data, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", hexDigest))
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != hexDigest || int64(len(data)) != d.Size {
		return nil, fmt.Errorf("blob %s: content does not match its descriptor", d.Digest)
	}
	return data, nil
}

func readLayout(layout string) (ociImage, error) {
	var img ociImage
	var marker struct {
		Version string `json:"imageLayoutVersion"`
	}
	if data, err := os.ReadFile(filepath.Join(layout, "oci-layout")); err != nil {
		return img, err
	} else if err := json.Unmarshal(data, &marker); err != nil || marker.Version != "1.0.0" {
		return img, fmt.Errorf("oci-layout: %s (%v)", data, err)
	}
	var index struct {
		Manifests []ociDescriptor `json:"manifests"`
	}
	data, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		return img, err
	}
	if err := json.Unmarshal(data, &index); err != nil {
		return img, err
	}
	if len(index.Manifests) != 1 || index.Manifests[0].MediaType != "application/vnd.oci.image.manifest.v1+json" {
		return img, fmt.Errorf("index.json: want one OCI image manifest, got %s", data)
	}
	img.digest = index.Manifests[0].Digest
	if data, err = blob(layout, index.Manifests[0]); err != nil {
		return img, err
	}
	if err := json.Unmarshal(data, &img.manifest); err != nil {
		return img, err
	}
	if img.manifest.Config.MediaType != "application/vnd.oci.image.config.v1+json" {
		return img, fmt.Errorf("config media type %q", img.manifest.Config.MediaType)
	}
	if data, err = blob(layout, img.manifest.Config); err != nil {
		return img, err
	}
	if err := json.Unmarshal(data, &img.config); err != nil {
		return img, err
	}
	if len(img.config.RootFS.DiffIDs) != len(img.manifest.Layers) {
		return img, fmt.Errorf("%d layers, %d diff_ids", len(img.manifest.Layers), len(img.config.RootFS.DiffIDs))
	}
	return img, nil
}

// unpack extracts the layers in order into dir, checking each against its
// diff_id (the digest of the uncompressed tar), and records the modes.
func (img *ociImage) unpack(layout, dir string) error {
	img.modes = map[string]os.FileMode{}
	for i, l := range img.manifest.Layers {
		if l.MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
			return fmt.Errorf("layer %d: media type %q", i, l.MediaType)
		}
		data, err := blob(layout, l)
		if err != nil {
			return err
		}
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return err
		}
		h := sha256.New()
		if err := untar(io.TeeReader(zr, h), dir, img.modes); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		// The tar's end-of-archive padding, which untar does not read.
		if _, err := io.Copy(h, zr); err != nil {
			return err
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != img.config.RootFS.DiffIDs[i] {
			return fmt.Errorf("layer %d: uncompressed digest %s, diff_id %s", i, got, img.config.RootFS.DiffIDs[i])
		}
	}
	return nil
}

func untar(r io.Reader, dir string, modes map[string]os.FileMode) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if !filepath.IsLocal(name) {
			return fmt.Errorf("entry %q leaves the root", h.Name)
		}
		if h.Uid != 0 || h.Gid != 0 {
			return fmt.Errorf("entry %q is owned by %d:%d, not root", h.Name, h.Uid, h.Gid)
		}
		target := filepath.Join(dir, name)
		mode := h.FileInfo().Mode()
		switch h.Typeflag {
		case tar.TypeDir:
			modes[name+"/"] = mode
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			modes[name] = mode
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode.Perm())
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry %q: type %c, want a directory or a file", h.Name, h.Typeflag)
		}
	}
}

// stage is what the Dockerfile's last stage says about the image.
type stage struct {
	from, user string
	entrypoint []string
	rawLabels  string
}

func finalStage(instrs [][2]string) stage {
	GinkgoHelper()
	var s stage
	for _, in := range instrs {
		switch in[0] {
		case "FROM":
			s = stage{from: strings.Fields(in[1])[0]}
		case "USER":
			s.user = in[1]
		case "ENTRYPOINT":
			Expect(json.Unmarshal([]byte(in[1]), &s.entrypoint)).To(Succeed(), "ENTRYPOINT in exec form")
		case "LABEL":
			s.rawLabels += " " + in[1]
		}
	}
	return s
}

// labels are the stage's LABEL key="value" pairs, with ${ARG} replaced by
// args' values.
func (s stage) labels(args map[string]string) map[string]string {
	GinkgoHelper()
	words, err := shellWords(s.rawLabels)
	Expect(err).NotTo(HaveOccurred())
	out := map[string]string{}
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		Expect(ok).To(BeTrue(), "LABEL %q", w)
		out[k] = os.Expand(v, func(name string) string { return args[name] })
	}
	return out
}

func freePort() string {
	GinkgoHelper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer ln.Close()
	return ln.Addr().String()
}

var probeClient = &http.Client{Timeout: 2 * time.Second}

func httpStatus(url string) (int, error) {
	resp, err := probeClient.Get(url)
	if err != nil {
		return 0, nil //nolint:nilerr // not listening yet
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

func httpGet(url string) (string, error) {
	resp, err := probeClient.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return b.String(), sc.Err()
}
