package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

func TestUserRetentionDefaultsAndBounds(t *testing.T) {
	d := func(v time.Duration) *metav1.Duration { return &metav1.Duration{Duration: v} }
	tenYears := 87600 * time.Hour
	cases := []struct {
		name                    string
		tolerance               *metav1.Duration
		users                   kidv1.UserRetentionSpec
		afterErasure, afterIdle time.Duration
	}{
		{name: "unset keeps erased users 30 days and inactive ones", afterErasure: 720 * time.Hour},
		{name: "as set within the bounds", users: kidv1.UserRetentionSpec{AfterErasure: d(48 * time.Hour), AfterInactivity: d(90 * 24 * time.Hour)}, afterErasure: 48 * time.Hour, afterIdle: 90 * 24 * time.Hour},
		{name: "erased users are kept at least an hour", users: kidv1.UserRetentionSpec{AfterErasure: d(time.Second)}, afterErasure: time.Hour},
		{
			name: "erased users are kept at least the deduplication horizon", tolerance: d(time.Hour),
			users: kidv1.UserRetentionSpec{AfterErasure: d(time.Hour)}, afterErasure: time.Hour + RetryWindow,
		},
		{name: "erased users are kept at most 10 years", users: kidv1.UserRetentionSpec{AfterErasure: d(2 * tenYears)}, afterErasure: tenYears},
		{name: "inactive users are kept at least a day", users: kidv1.UserRetentionSpec{AfterInactivity: d(time.Minute)}, afterErasure: 720 * time.Hour, afterIdle: 24 * time.Hour},
		{name: "inactive users are kept at most 10 years", users: kidv1.UserRetentionSpec{AfterInactivity: d(2 * tenYears)}, afterErasure: 720 * time.Hour, afterIdle: tenYears},
		{name: "a zero inactivity is unset", users: kidv1.UserRetentionSpec{AfterInactivity: d(0)}, afterErasure: 720 * time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			p := &kidv1.KidProduct{}
			p.Spec.Webhook.TimestampTolerance = tc.tolerance
			p.Spec.Retention.Users = tc.users
			r := retentionOf(p)
			g.Expect(r.userAfterErasure).To(Equal(tc.afterErasure))
			g.Expect(r.userAfterInactivity).To(Equal(tc.afterIdle))
		})
	}
}

func TestUserExpiry(t *testing.T) {
	now := time.Unix(1764000000, 0)
	ago := func(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(-d)); return &t }
	day := 24 * time.Hour
	userWith := func(created time.Duration, mutate func(*kidv1.KidUserStatus)) *kidv1.KidUser {
		u := &kidv1.KidUser{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: *ago(created)}}
		if mutate != nil {
			mutate(&u.Status)
		}
		return u
	}
	keepIdle := retention{horizon: 5 * time.Minute, userAfterErasure: 30 * day}
	dropIdle := retention{horizon: 5 * time.Minute, userAfterErasure: 30 * day, userAfterInactivity: 10 * day}
	cases := []struct {
		name   string
		r      retention
		user   *kidv1.KidUser
		reason string
		wait   time.Duration
	}{
		{
			name: "an erased user is kept until afterErasure",
			r:    keepIdle, user: userWith(40*day, func(s *kidv1.KidUserStatus) { s.ErasedAt = ago(29 * day) }),
			wait: day,
		},
		{
			name: "an erased user is due after afterErasure",
			r:    keepIdle, user: userWith(40*day, func(s *kidv1.KidUserStatus) { s.ErasedAt = ago(30 * day) }),
			reason: reasonUserErased,
		},
		{
			name: "an erased user is not deleted for inactivity before afterErasure",
			r:    dropIdle, user: userWith(100*day, func(s *kidv1.KidUserStatus) { s.ErasedAt = ago(20 * day); s.LastEventTime = ago(20 * day) }),
			wait: 10 * day,
		},
		{
			name: "without afterInactivity an idle user is never due",
			r:    keepIdle, user: userWith(1000*day, func(s *kidv1.KidUserStatus) { s.LastEventTime = ago(999 * day) }),
		},
		{
			name: "an idle user is due afterInactivity after its last event",
			r:    dropIdle, user: userWith(30*day, func(s *kidv1.KidUserStatus) { s.LastEventTime = ago(10 * day) }),
			reason: reasonUserInactive,
		},
		{
			name: "a user with no event counts from its creation",
			r:    dropIdle, user: userWith(4*day, nil),
			wait: 6 * day,
		},
		{
			name: "a user created after its (late folded) newest event counts from its creation",
			r:    dropIdle, user: userWith(2*day, func(s *kidv1.KidUserStatus) { s.LastEventTime = ago(20 * day) }),
			wait: 8 * day,
		},
		{
			name: "a change read from k-ID's API keeps a user active",
			r:    dropIdle, user: userWith(30*day, func(s *kidv1.KidUserStatus) { s.LastEventTime = ago(20 * day); s.Session.SyncedAt = ago(3 * day) }),
			wait: 7 * day,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			reason, wait := tc.r.userExpiry(tc.user, now)
			g.Expect(reason).To(Equal(tc.reason))
			g.Expect(wait).To(Equal(tc.wait))
		})
	}
}

func TestSoonest(t *testing.T) {
	g := NewWithT(t)
	g.Expect(soonest()).To(BeZero())
	g.Expect(soonest(0, 0)).To(BeZero())
	g.Expect(soonest(0, 3*time.Second, time.Second)).To(Equal(time.Second))
	g.Expect(soonest(2*time.Second, 0)).To(Equal(2 * time.Second))
}
