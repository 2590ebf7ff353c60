package deploy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// goBuild is one `go build` command, reduced to what decides the binary.
type goBuild struct {
	Env    []string // NAME=VALUE assignments before `go`, sorted
	Flags  []string // every argument but -o and its value, and the package
	Output string   // the base name of -o
}

// goBuilds finds the `go build` commands among shell commands and reduces
// them, keyed by package.
func goBuilds(commands []string) (map[string]goBuild, error) {
	out := map[string]goBuild{}
	for _, command := range commands {
		for segment := range strings.SplitSeq(command, "&&") {
			words, err := shellWords(segment)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", segment, err)
			}
			var b goBuild
			i := 0
			for ; i < len(words) && strings.Contains(words[i], "=") && !strings.HasPrefix(words[i], "-"); i++ {
				b.Env = append(b.Env, words[i])
			}
			if i+1 >= len(words) || words[i] != "go" || words[i+1] != "build" {
				continue
			}
			var pkg string
			args := words[i+2:]
			for j := 0; j < len(args); j++ {
				switch a := args[j]; {
				case a == "-o":
					if j+1 == len(args) {
						return nil, fmt.Errorf("%q: -o without a value", segment)
					}
					b.Output = filepath.Base(args[j+1])
					j++
				case strings.HasPrefix(a, "-o="):
					b.Output = filepath.Base(strings.TrimPrefix(a, "-o="))
				case strings.HasPrefix(a, "-"):
					b.Flags = append(b.Flags, a)
				default:
					if pkg != "" {
						return nil, fmt.Errorf("%q: two packages (%s, %s), or a flag's value this test does not know", segment, pkg, a)
					}
					pkg = a
				}
			}
			if pkg == "" {
				return nil, fmt.Errorf("%q: no package", segment)
			}
			slices.Sort(b.Env)
			out[pkg] = b
		}
	}
	return out, nil
}

// shellWords splits a command as sh would, for the quoting Makefiles,
// Dockerfiles and the docs' commands use (single and double quotes, a
// backslash outside quotes), with variables left as they are.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, escaped := false, false
	var quote rune
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\\':
			escaped, inWord = true, true
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
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
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// dockerfile returns the Dockerfile's instructions, continuation lines
// joined and comments left out, as [instruction, arguments].
func dockerfile(path string) ([][2]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out [][2]string
	cur := ""
	for line := range strings.SplitSeq(string(data), "\n") {
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		cur += line
		if strings.HasSuffix(cur, "\\") {
			cur = strings.TrimSuffix(cur, "\\") + " "
			continue
		}
		instr, args, _ := strings.Cut(strings.TrimSpace(cur), " ")
		out = append(out, [2]string{strings.ToUpper(instr), strings.TrimSpace(args)})
		cur = ""
	}
	return out, nil
}

func dockerRuns(instrs [][2]string) []string {
	var runs []string
	for _, in := range instrs {
		if in[0] == "RUN" {
			runs = append(runs, in[1])
		}
	}
	return runs
}

func TestTheDockerfileBuildsWhatMakeBuildBuilds(t *testing.T) {
	g := NewWithT(t)
	// make build's commands as make runs them (make -n prints them with
	// its variables expanded), the version facts given as a release would
	// give them; the Dockerfile's, with its build args given the same.
	stamp := map[string]string{"VERSION": "v9.9.9-buildtest", "REVISION": "0123abc"}
	printed, err := run([]string{"MAKEFLAGS=", "MAKELEVEL="}, "make", "--no-print-directory", "-n", "build",
		"VERSION="+stamp["VERSION"], "REVISION="+stamp["REVISION"])
	g.Expect(err).NotTo(HaveOccurred())
	fromMake, err := goBuilds(strings.Split(strings.TrimSpace(string(printed)), "\n"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(fromMake).To(HaveKey("./cmd/manager"))
	instrs, err := dockerfile(filepath.Join(root, "Dockerfile"))
	g.Expect(err).NotTo(HaveOccurred())
	var runs []string
	for _, r := range dockerRuns(instrs) {
		runs = append(runs, os.Expand(r, func(name string) string {
			if v, ok := stamp[name]; ok {
				return v
			}
			return "$" + name
		}))
	}
	fromDocker, err := goBuilds(runs)
	g.Expect(err).NotTo(HaveOccurred())

	// The image ships some of what make build builds (not, say, a kubectl
	// plugin); each binary it ships is built as make build builds it.
	g.Expect(fromDocker).To(HaveKey("./cmd/manager"), "the Dockerfile builds no manager")
	for pkg, b := range fromDocker {
		g.Expect(fromMake).To(HaveKey(pkg), "the Dockerfile builds %s, which make build does not", pkg)
		g.Expect(b).To(Equal(fromMake[pkg]),
			"the Dockerfile must build %s as make build does (environment, flags, output name), so the image runs the binary the tests ran", pkg)
		g.Expect(b.Env).To(ContainElement("CGO_ENABLED=0"), "%s must be static (CGO_ENABLED=0): the image's base has no libc", pkg)
	}
	// Every binary is built reproducibly and knows its version.
	for pkg, b := range fromMake {
		g.Expect(b.Flags).To(ContainElement("-trimpath"), "make build builds %s without -trimpath", pkg)
		g.Expect(b.Flags).To(ContainElement(And(
			ContainSubstring("internal/version.version="+stamp["VERSION"]),
			ContainSubstring("internal/version.revision="+stamp["REVISION"]))), "make build does not stamp %s's version", pkg)
	}
	// The image ships the manager alone: kidsim is a test tool.
	g.Expect(fromDocker).To(HaveLen(1))
	// And its entry point is the manager it built.
	var entrypoint string
	for _, in := range instrs {
		if in[0] == "ENTRYPOINT" {
			entrypoint = in[1]
		}
	}
	g.Expect(entrypoint).To(Equal(`["/` + fromDocker["./cmd/manager"].Output + `"]`))
}

// The Dockerfile's builder is pinned by digest or refused, and the final
// stage has no base to pin.
func TestTheDockerfilePinsItsBuilder(t *testing.T) {
	g := NewWithT(t)
	instrs, err := dockerfile(filepath.Join(root, "Dockerfile"))
	g.Expect(err).NotTo(HaveOccurred())
	var froms []string
	for _, in := range instrs {
		if in[0] == "FROM" {
			froms = append(froms, in[1])
		}
	}
	g.Expect(froms).To(HaveLen(2))
	g.Expect(froms[0]).To(Equal("--platform=$BUILDPLATFORM ${GOLANG_IMAGE} AS build"))
	g.Expect(froms[1]).To(Equal("scratch"))
	// The first RUN of the builder refuses a GOLANG_IMAGE without a digest.
	guard := dockerRuns(instrs)[0]
	for image, pinned := range map[string]bool{
		"golang:1.26.8": false,
		"golang:1.26.8@sha256:" + strings.Repeat("ab", 32): true,
	} {
		_, err := run([]string{"GOLANG_IMAGE=" + image}, "sh", "-c", guard)
		g.Expect(err == nil).To(Equal(pinned), "%s: %v", image, err)
	}
	// TARGETOS and TARGETARCH choose what the builder compiles for.
	g.Expect(instrs).To(ContainElement([2]string{"ENV", "GOOS=$TARGETOS GOARCH=$TARGETARCH"}))
}

func TestTheDockerfileCopiesEveryPackageItBuilds(t *testing.T) {
	g := NewWithT(t)
	instrs, err := dockerfile(filepath.Join(root, "Dockerfile"))
	g.Expect(err).NotTo(HaveOccurred())
	builds, err := goBuilds(dockerRuns(instrs))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(builds).NotTo(BeEmpty())

	// What the build stage copies from the context (COPY without --from).
	var copied []string
	for _, in := range instrs {
		if in[0] != "COPY" || strings.HasPrefix(in[1], "--from") {
			continue
		}
		words, err := shellWords(in[1])
		g.Expect(err).NotTo(HaveOccurred())
		for _, src := range words[:len(words)-1] {
			copied = append(copied, strings.TrimSuffix(src, "/"))
		}
	}
	g.Expect(copied).To(ContainElements("go.mod", "go.sum"))

	pkgs := slices.Sorted(func(yield func(string) bool) {
		for p := range builds {
			if !yield(p) {
				return
			}
		}
	})
	module, err := run(nil, "go", "list", "-m")
	g.Expect(err).NotTo(HaveOccurred())
	deps, err := run(nil, "go", append([]string{"list", "-deps", "-f", "{{.ImportPath}}"}, pkgs...)...)
	g.Expect(err).NotTo(HaveOccurred())
	prefix := strings.TrimSpace(string(module)) + "/"
	var missing []string
	for dep := range strings.FieldsSeq(string(deps)) {
		rel, ok := strings.CutPrefix(dep, prefix)
		if !ok {
			continue
		}
		if !slices.ContainsFunc(copied, func(c string) bool { return rel == c || strings.HasPrefix(rel, c+"/") }) {
			missing = append(missing, rel)
		}
	}
	g.Expect(missing).To(BeEmpty(), "the image's binaries import packages the Dockerfile does not COPY (its docker build would fail)")
}

func TestGoBuildsComparesWhatDecidesTheBinary(t *testing.T) {
	parse := func(cmd string) goBuild {
		b, err := goBuilds([]string{cmd})
		if err != nil {
			t.Fatal(err)
		}
		return b["./cmd/manager"]
	}
	base := parse("CGO_ENABLED=0 go build -o $(BIN)/manager ./cmd/manager")
	for _, tc := range []struct {
		name, cmd string
		same      bool
	}{
		{"another output directory is the same binary", "CGO_ENABLED=0 go build -o /out/manager ./cmd/manager", true},
		{"an added flag is a different binary", "CGO_ENABLED=0 go build -trimpath -o /out/manager ./cmd/manager", false},
		{"quoted ldflags are a different binary", "CGO_ENABLED=0 go build -ldflags='-s -w' -o /out/manager ./cmd/manager", false},
		{"cgo on is a different binary", "go build -o /out/manager ./cmd/manager", false},
		{"another name is a different binary", "CGO_ENABLED=0 go build -o /out/kid-operator ./cmd/manager", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(equal(parse(tc.cmd), base)).To(Equal(tc.same), "%+v against %+v", parse(tc.cmd), base)
		})
	}
}

func equal(a, b goBuild) bool {
	return slices.Equal(a.Env, b.Env) && slices.Equal(a.Flags, b.Flags) && a.Output == b.Output
}
