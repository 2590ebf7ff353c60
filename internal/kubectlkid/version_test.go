package kubectlkid

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kid-operator/kid-operator/internal/version"
)

// kubectl kid version needs no cluster: no kubeconfig is given here.
func TestVersionPrintsThePluginsBuild(t *testing.T) {
	g := NewWithT(t)
	runVersion := func(args ...string) (string, error) {
		var out bytes.Buffer
		cmd := NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &out}, nil)
		cmd.SetArgs(append([]string{"version", "--kubeconfig=/nonexistent"}, args...))
		err := cmd.Execute()
		return out.String(), err
	}
	out, err := runVersion()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(out).To(Equal(version.Get().String() + "\n"))

	out, err = runVersion("-o", "json")
	g.Expect(err).NotTo(HaveOccurred())
	var info version.Info
	g.Expect(json.Unmarshal([]byte(out), &info)).To(Succeed())
	g.Expect(info).To(Equal(version.Get()))

	_, err = runVersion("-o", "yaml")
	g.Expect(err).To(MatchError(ContainSubstring(`want json`)))
}
