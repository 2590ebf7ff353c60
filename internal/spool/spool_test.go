package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	clocktesting "k8s.io/utils/clock/testing"
)

func open(t *testing.T, dir string, clk *clocktesting.FakeClock, maxBytes int64) *Spool {
	t.Helper()
	s, err := Open(Options{Dir: dir, MaxBytes: maxBytes, MaxAge: time.Minute, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// drained returns every record a Drain replays.
func drained(g Gomega, s *Spool) []string {
	var out []string
	g.Expect(s.Drain(func(data []byte, _ time.Time) error {
		out = append(out, string(data))
		return nil
	})).To(Succeed())
	return out
}

func segmentFiles(g Gomega, dir string) []string {
	m, err := filepath.Glob(filepath.Join(dir, "*"+suffix))
	g.Expect(err).NotTo(HaveOccurred())
	return m
}

func TestDrainReplaysInOrderAcrossReopenAndRemovesTheFiles(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	s := open(t, dir, clk, 1<<20)
	for i := range 5 {
		g.Expect(s.Append(fmt.Appendf(nil, "r%d", i))).To(Succeed())
	}
	// A replica that restarts finds what its predecessor left.
	s = open(t, dir, clk, 1<<20)
	g.Expect(s.Stats().Entries).To(Equal(5))
	for i := 5; i < 8; i++ {
		g.Expect(s.Append(fmt.Appendf(nil, "r%d", i))).To(Succeed())
	}
	g.Expect(drained(g, s)).To(Equal([]string{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"}))
	g.Expect(segmentFiles(g, dir)).To(BeEmpty(), "drained segments removed")
	g.Expect(s.Stats()).To(Equal(Stats{}))
	g.Expect(drained(g, s)).To(BeEmpty())
}

func TestFilesAreReadableByTheOwnerOnly(t *testing.T) {
	g := NewWithT(t)
	dir := filepath.Join(t.TempDir(), "spool")
	s := open(t, dir, clocktesting.NewFakeClock(time.Now()), 1<<20)
	g.Expect(s.Append([]byte("x"))).To(Succeed())
	files := segmentFiles(g, dir)
	g.Expect(files).To(HaveLen(1))
	fi, err := os.Stat(files[0])
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(fi.Mode().Perm()).To(Equal(os.FileMode(0o600)))
	di, err := os.Stat(dir)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(di.Mode().Perm()).To(Equal(os.FileMode(0o700)))
}

func TestFullByBytes(t *testing.T) {
	g := NewWithT(t)
	clk := clocktesting.NewFakeClock(time.Now())
	// Room for two 10-byte records and their headers, not three.
	s := open(t, t.TempDir(), clk, 2*(headerBytes+10)+5)
	rec := []byte("0123456789")
	g.Expect(s.Append(rec)).To(Succeed())
	g.Expect(s.Append(rec)).To(Succeed())
	err := s.Append(rec)
	g.Expect(err).To(MatchError(ErrFullBytes))
	g.Expect(IsFull(err)).To(BeTrue())
	g.Expect(s.Stats().Entries).To(Equal(2))
	// A drain makes room again.
	g.Expect(drained(g, s)).To(HaveLen(2))
	g.Expect(s.Append(rec)).To(Succeed())
}

func TestFullByAge(t *testing.T) {
	g := NewWithT(t)
	clk := clocktesting.NewFakeClock(time.Now())
	s := open(t, t.TempDir(), clk, 1<<20)
	g.Expect(s.Append([]byte("old"))).To(Succeed())
	clk.Step(time.Minute)
	g.Expect(s.Append([]byte("at the limit"))).To(Succeed())
	clk.Step(time.Second)
	err := s.Append([]byte("past it"))
	g.Expect(err).To(MatchError(ErrFullAge))
	g.Expect(IsFull(err)).To(BeTrue())
	g.Expect(s.Stats().Oldest).To(Equal(clk.Now().Add(-time.Minute - time.Second)))
	g.Expect(drained(g, s)).To(Equal([]string{"old", "at the limit"}))
	g.Expect(s.Append([]byte("past it"))).To(Succeed())
}

func TestATornTailIsDroppedOnOpen(t *testing.T) {
	for _, cut := range []int{1, 5, headerBytes, headerBytes + 3} {
		t.Run(fmt.Sprintf("cut %d bytes into the last record", cut), func(t *testing.T) {
			g := NewWithT(t)
			dir := t.TempDir()
			clk := clocktesting.NewFakeClock(time.Now())
			s := open(t, dir, clk, 1<<20)
			g.Expect(s.Append([]byte("whole-1"))).To(Succeed())
			g.Expect(s.Append([]byte("whole-2"))).To(Succeed())
			files := segmentFiles(g, dir)
			g.Expect(files).To(HaveLen(1))
			// A crash in the middle of a third append.
			third := encode(clk.Now(), []byte("torn-3"))
			f, err := os.OpenFile(files[0], os.O_WRONLY|os.O_APPEND, 0)
			g.Expect(err).NotTo(HaveOccurred())
			_, err = f.Write(third[:cut])
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(f.Close()).To(Succeed())

			s = open(t, dir, clk, 1<<20)
			g.Expect(s.Torn()).To(Equal(1))
			g.Expect(s.Stats().Entries).To(Equal(2))
			g.Expect(s.Append([]byte("after"))).To(Succeed())
			g.Expect(drained(g, s)).To(Equal([]string{"whole-1", "whole-2", "after"}))
		})
	}
}

func TestACorruptRecordEndsItsSegment(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	clk := clocktesting.NewFakeClock(time.Now())
	s := open(t, dir, clk, 1<<20)
	g.Expect(s.Append([]byte("good"))).To(Succeed())
	g.Expect(s.Append([]byte("flipped"))).To(Succeed())
	files := segmentFiles(g, dir)
	raw, err := os.ReadFile(files[0])
	g.Expect(err).NotTo(HaveOccurred())
	raw[len(raw)-1] ^= 0xff
	g.Expect(os.WriteFile(files[0], raw, 0o600)).To(Succeed())

	s = open(t, dir, clk, 1<<20)
	g.Expect(s.Torn()).To(Equal(1))
	g.Expect(drained(g, s)).To(Equal([]string{"good"}))
}

func TestAFailedDrainReplaysItsSegmentFromTheStart(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	clk := clocktesting.NewFakeClock(time.Now())
	s := open(t, dir, clk, 1<<20)
	for _, r := range []string{"a", "b", "c"} {
		g.Expect(s.Append([]byte(r))).To(Succeed())
	}
	down := errors.New("API server down")
	var seen []string
	err := s.Drain(func(data []byte, _ time.Time) error {
		if string(data) == "b" {
			return down
		}
		seen = append(seen, string(data))
		return nil
	})
	g.Expect(err).To(MatchError(down))
	g.Expect(seen).To(Equal([]string{"a"}))
	g.Expect(s.Stats().Entries).To(Equal(3), "nothing is removed before its segment is accepted whole")
	// Appended meanwhile: after what was sealed.
	g.Expect(s.Append([]byte("d"))).To(Succeed())
	g.Expect(drained(g, s)).To(Equal([]string{"a", "b", "c", "d"}))
	g.Expect(segmentFiles(g, dir)).To(BeEmpty())
}

func TestSpooledAtIsTheAppendTime(t *testing.T) {
	g := NewWithT(t)
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 123))
	s := open(t, t.TempDir(), clk, 1<<20)
	g.Expect(s.Append([]byte("x"))).To(Succeed())
	var at time.Time
	g.Expect(s.Drain(func(_ []byte, t time.Time) error { at = t; return nil })).To(Succeed())
	g.Expect(at.Equal(clk.Now())).To(BeTrue())
}

func TestTheDepthFallsAsTheDrainGoes(t *testing.T) {
	g := NewWithT(t)
	var seen []int
	s, err := Open(Options{Dir: t.TempDir(), MaxBytes: 1 << 20, MaxAge: time.Minute, Observe: func(st Stats) { seen = append(seen, st.Entries) }})
	g.Expect(err).NotTo(HaveOccurred())
	for range 3 {
		g.Expect(s.Append([]byte("x"))).To(Succeed())
	}
	var during []int
	g.Expect(s.Drain(func([]byte, time.Time) error {
		during = append(during, s.Stats().Entries)
		return nil
	})).To(Succeed())
	g.Expect(during).To(Equal([]int{3, 2, 1}))
	g.Expect(seen).To(Equal([]int{0, 1, 2, 3, 2, 1, 0, 0}), "opened, 3 appends, 3 accepted, the segment removed")
}
