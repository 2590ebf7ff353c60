package operator_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/cmd/manager/operator"
)

var _ = Describe("The cache sync timeout (--cache-sync-timeout)", func() {
	It("is the one the controllers wait with: one shorter than a first list stops the start, saying why", func() {
		// controller-runtime's own 2 minutes is shorter than a start at
		// 250,000 players; the option must reach every controller. Only a
		// timeout no list can meet shows that it does.
		opts := h.OperatorOptions()
		opts.Webhook.Addr = "0"
		opts.CacheSyncTimeout = time.Nanosecond
		op, err := operator.New(h.Config, opts)
		Expect(err).NotTo(HaveOccurred())
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		err = op.Start(ctx)
		Expect(err).To(MatchError(ContainSubstring("timed out waiting")))
		Expect(ctx.Err()).NotTo(HaveOccurred(), "the start ended on its own, not at the test's deadline")
	})
})
