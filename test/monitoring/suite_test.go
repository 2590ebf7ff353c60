package monitoring_test

import (
	"context"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/test/testenv"
)

// The specs start the operator on a local control plane with its metrics
// served on loopback (the harness's operator serves none), drive traffic
// through it, and scrape /metrics as Prometheus would.

var (
	h   = testenv.ControlPlaneSuite()
	ctx = context.Background()
)

func TestMonitoring(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Alerts and dashboard against the running operator")
}
