package deploy_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"
)

// crdDigestsFile records each state of the CRDs and the chart version that
// first shipped it (its header says how to add one).
const crdDigestsFile = chart + "/crd-digests.txt"

// crdDigest is what `cd dir && sha256sum *.yaml | sha256sum` prints: the
// SHA-256 of the lines "<sha256 of the file>  <name>", sorted by name.
func crdDigest(dir string) (string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		return "", fmt.Errorf("no CRDs in %s (%v)", dir, err)
	}
	sort.Strings(paths)
	var list bytes.Buffer
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(&list, "%s  %s\n", hex.EncodeToString(sum[:]), filepath.Base(p))
	}
	sum := sha256.Sum256(list.Bytes())
	return hex.EncodeToString(sum[:]), nil
}

// chartVersion is a MAJOR.MINOR.PATCH version, comparable.
type chartVersion [3]int

func parseChartVersion(s string) (chartVersion, error) {
	var v chartVersion
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("version %q is not MAJOR.MINOR.PATCH", s)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, fmt.Errorf("version %q is not MAJOR.MINOR.PATCH", s)
		}
		v[i] = n
	}
	return v, nil
}

func (v chartVersion) less(w chartVersion) bool {
	for i := range v {
		if v[i] != w[i] {
			return v[i] < w[i]
		}
	}
	return false
}

type crdRecord struct {
	version string
	digest  string
}

func readCRDRecords(path string) ([]crdRecord, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []crdRecord
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 || len(f[1]) != 64 {
			return nil, fmt.Errorf("%s:%d: want `<chart version> <64 hex digits>`, got %q", path, n, line)
		}
		out = append(out, crdRecord{f[0], f[1]})
	}
	return out, sc.Err()
}

// checkCRDVersion is the rule: the CRDs are in the last recorded state,
// the recorded versions only go up, and Chart.yaml's version is at least
// the last one. So a changed CRD needs a new line, whose version must be
// newer than every earlier one, which Chart.yaml must then reach: a chart
// whose CRDs changed never keeps its version.
func checkCRDVersion(records []crdRecord, digest, chartVer string) error {
	if len(records) == 0 {
		return fmt.Errorf("%s records no CRD state", crdDigestsFile)
	}
	var prev chartVersion
	for i, r := range records {
		v, err := parseChartVersion(r.version)
		if err != nil {
			return fmt.Errorf("%s: %w", crdDigestsFile, err)
		}
		if i > 0 && !prev.less(v) {
			return fmt.Errorf("%s: version %s follows %s: each new state of the CRDs needs a newer chart version", crdDigestsFile, r.version, records[i-1].version)
		}
		prev = v
	}
	last := records[len(records)-1]
	cv, err := parseChartVersion(chartVer)
	if err != nil {
		return fmt.Errorf("Chart.yaml: %w", err)
	}
	if digest != last.digest {
		return fmt.Errorf("the CRDs (config/crd/bases) changed since chart version %s (digest %s, recorded %s): "+
			"bump version in %s/Chart.yaml past %s and add the line `<that version> %s` to %s, so that helm upgrade brings the new CRDs",
			last.version, digest, last.digest, chart, last.version, digest, crdDigestsFile)
	}
	if cv.less(prev) {
		return fmt.Errorf("Chart.yaml's version %s is older than %s, which %s says first shipped these CRDs", chartVer, last.version, crdDigestsFile)
	}
	return nil
}

func TestTheChartVersionChangesWithTheCRDs(t *testing.T) {
	g := NewWithT(t)
	digest, err := crdDigest(filepath.Join(root, "config/crd/bases"))
	g.Expect(err).NotTo(HaveOccurred())
	records, err := readCRDRecords(filepath.Join(root, crdDigestsFile))
	g.Expect(err).NotTo(HaveOccurred())
	raw, err := os.ReadFile(filepath.Join(root, chart, "Chart.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	var meta struct{ Version string }
	g.Expect(yaml.Unmarshal(raw, &meta)).To(Succeed())
	g.Expect(checkCRDVersion(records, digest, meta.Version)).To(Succeed())

	// The rule catches each way of getting it wrong.
	for _, tc := range []struct {
		name    string
		records []crdRecord
		digest  string
		version string
		want    string
	}{
		{"a CRD changed and nothing else", records, strings.Repeat("0", 64), meta.Version, "the CRDs .* changed since chart version"},
		{"a new line that reuses the last version", append(records[:len(records):len(records)], crdRecord{records[len(records)-1].version, strings.Repeat("0", 64)}),
			strings.Repeat("0", 64), meta.Version, "each new state of the CRDs needs a newer chart version"},
		{"a new line whose version Chart.yaml does not reach", append(records[:len(records):len(records)], crdRecord{"99.0.0", strings.Repeat("0", 64)}),
			strings.Repeat("0", 64), meta.Version, "is older than 99.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(checkCRDVersion(tc.records, tc.digest, tc.version)).To(MatchError(MatchRegexp(tc.want)))
		})
	}
}
