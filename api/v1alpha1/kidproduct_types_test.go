package v1alpha1_test

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

func TestTimestampToleranceIsClampedToItsBounds(t *testing.T) {
	cases := []struct {
		name string
		spec *metav1.Duration
		want time.Duration
	}{
		{name: "unset is the default", spec: nil, want: kidv1.DefaultTimestampTolerance},
		{name: "zero is the default", spec: &metav1.Duration{}, want: kidv1.DefaultTimestampTolerance},
		{name: "negative is the default", spec: &metav1.Duration{Duration: -time.Minute}, want: kidv1.DefaultTimestampTolerance},
		{name: "inside the bounds is kept", spec: &metav1.Duration{Duration: 90 * time.Second}, want: 90 * time.Second},
		{name: "a week is an hour", spec: &metav1.Duration{Duration: 7 * 24 * time.Hour}, want: time.Hour},
		{name: "a millisecond is a second", spec: &metav1.Duration{Duration: time.Millisecond}, want: time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &kidv1.KidProduct{}
			p.Spec.Webhook.TimestampTolerance = tc.spec
			NewWithT(t).Expect(p.TimestampTolerance().Duration).To(Equal(tc.want))
		})
	}
}

// The path is pasted into Compliance Studio: a change here breaks every
// configured product, so the test pins the literal rather than rebuilding it.
func TestWebhookPathIsTheDocumentedShape(t *testing.T) {
	NewWithT(t).Expect(kidv1.WebhookPath("games", "my-game")).To(Equal("/webhooks/games/my-game"))
}

// The table is the one design.md §3 ("Session sync") shows: the computed
// resync takes at most a tenth of the product's rate, between an hour and a
// day, and spec.api.sessionResync overrides it.
func TestResyncIntervalFitsATenthOfTheRate(t *testing.T) {
	rate := func(n int32) *int32 { return &n }
	cases := []struct {
		name   string
		env    kidv1.Environment
		rps    *int32
		resync *metav1.Duration
		reads  int
		want   time.Duration
	}{
		{name: "no players is the floor", env: kidv1.EnvironmentTest, reads: 0, want: time.Hour},
		{name: "test default 5 rps, 1,000 reads: the floor", env: kidv1.EnvironmentTest, reads: 1000, want: time.Hour},
		{name: "test default 5 rps, 10,000 reads", env: kidv1.EnvironmentTest, reads: 10000, want: 20000 * time.Second},
		{name: "test default 5 rps, 100,000 reads: the cap", env: kidv1.EnvironmentTest, reads: 100000, want: 24 * time.Hour},
		{name: "live default 100 rps, 10,000 reads: the floor", env: kidv1.EnvironmentLive, reads: 10000, want: time.Hour},
		{name: "live default 100 rps, 100,000 reads", env: kidv1.EnvironmentLive, reads: 100000, want: 10000 * time.Second},
		{name: "live default 100 rps, 1,000,000 reads: the cap", env: kidv1.EnvironmentLive, reads: 1000000, want: 24 * time.Hour},
		{name: "500 rps, 1,000,000 reads", env: kidv1.EnvironmentLive, rps: rate(500), reads: 1000000, want: 20000 * time.Second},
		{name: "sessionResync overrides", env: kidv1.EnvironmentLive, resync: &metav1.Duration{Duration: 30 * time.Minute}, reads: 1000000, want: 30 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			api := &kidv1.APISpec{RequestsPerSecond: tc.rps, SessionResync: tc.resync}
			NewWithT(t).Expect(api.ResyncInterval(tc.env, tc.reads)).To(Equal(tc.want))
		})
	}
}

func TestRateLimitBurstDefaultsWellUnderTheRate(t *testing.T) {
	i32 := func(v int32) *int32 { return &v }
	cases := []struct {
		name               string
		env                kidv1.Environment
		rps, burst         *int32
		wantRPS, wantBurst int
	}{
		{name: "test defaults to 5 a second, a burst of 1", env: kidv1.EnvironmentTest, wantRPS: 5, wantBurst: 1},
		{name: "live defaults to 100 a second, a burst of 10", env: kidv1.EnvironmentLive, wantRPS: 100, wantBurst: 10},
		{name: "k-ID's live limit has a burst of 50", env: kidv1.EnvironmentLive, rps: i32(500), wantRPS: 500, wantBurst: 50},
		{name: "a burst set is kept", env: kidv1.EnvironmentTest, rps: i32(10), burst: i32(4), wantRPS: 10, wantBurst: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &kidv1.APISpec{RequestsPerSecond: tc.rps, Burst: tc.burst}
			rps, burst := a.RateLimit(tc.env)
			NewWithT(t).Expect([]int{rps, burst}).To(Equal([]int{tc.wantRPS, tc.wantBurst}))
		})
	}
}
