package main

import (
	"bytes"
	"context"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/internal/version"
)

func TestVersionPrintsTheBuild(t *testing.T) {
	g := NewWithT(t)
	var out bytes.Buffer
	g.Expect(run(context.Background(), []string{"version"}, &out)).To(Succeed())
	g.Expect(out.String()).To(Equal(version.Get().String() + "\n"))
}
