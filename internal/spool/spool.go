// Package spool is the receiver's durable, bounded queue on disk: where a
// verified delivery goes when the API server cannot store it in time, so
// that k-ID can be answered 200 and the event is stored once the API server
// answers again (design.md, "Failure modes").
//
// A spool is a directory of segment files, NNNNNNNNNNNNNNNNNNNN.spool, each
// an append-only run of records:
//
//	uint32 length of the rest | uint32 CRC-32C of the rest | int64 unix nanos spooled | data
//
// (big-endian). An append writes one record and fsyncs the file (and the
// directory, when it made the file) before it returns, so a record that
// Append accepted survives a crash of the process or the node. A crash in
// the middle of an append leaves a torn record at a segment's tail: Open
// drops it (the append had not returned, so nobody was told it was kept).
//
// Drain seals the segment being appended to, replays the sealed segments
// oldest first, and removes each once every record in it was accepted; a
// segment cut short by an error or a crash is replayed from its first
// record next time, so a record may be replayed more than once and the
// consumer must make a repeat harmless (the receiver's KidEvent names are
// their identity).
//
// The spool is bounded twice: by the bytes its segments hold, and by the age
// of its oldest record. Past either, Append refuses with ErrFull, and the
// receiver answers 503 as it would without a spool.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// headerBytes is a record's length, checksum and time.
const headerBytes = 4 + 4 + 8

// maxRecordBytes bounds one record, so that a corrupt length cannot make
// Open allocate gigabytes.
const maxRecordBytes = 16 << 20

const suffix = ".spool"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Errors of Append.
var (
	// ErrFullBytes: the record would take the spool past MaxBytes.
	ErrFullBytes = errors.New("spool full: byte limit reached")
	// ErrFullAge: the oldest record is older than MaxAge (the spool is
	// not draining).
	ErrFullAge = errors.New("spool full: oldest entry past the age limit")
)

// IsFull reports whether err says the spool is full (by bytes or by age).
func IsFull(err error) bool { return errors.Is(err, ErrFullBytes) || errors.Is(err, ErrFullAge) }

// Options configure a Spool.
type Options struct {
	// Dir is the spool's directory; it is created (0700) if need be.
	Dir string
	// MaxBytes bounds the bytes the segments hold, headers included.
	MaxBytes int64
	// MaxAge bounds the age of the oldest record: past it, the spool is
	// full until a drain removes that record.
	MaxAge time.Duration
	// Clock stamps records and ages them; nil means the real clock.
	Clock clock.PassiveClock
	// Observe, if set, is called with the spool's Stats after every
	// change (an append, a record accepted by Drain, a segment removed),
	// for metrics. It must not call the spool.
	Observe func(Stats)
}

// Stats is what the spool holds.
type Stats struct {
	// Entries counts the records waiting: appended, and not yet accepted
	// by a Drain.
	Entries int
	// Bytes is the size of the segment files: a segment's records stay
	// on disk until all of them were accepted.
	Bytes int64
	// Oldest is the time the oldest record was spooled; zero when empty.
	Oldest time.Time
}

// segment is one file of the spool.
type segment struct {
	seq     uint64
	bytes   int64
	entries int
	// first is the time of the segment's first record.
	first time.Time
}

// Spool is a durable, bounded queue of records. Append is safe for
// concurrent use, and with one Drain at a time.
type Spool struct {
	opts Options

	// mu guards the fields below and serialises appends.
	mu sync.Mutex
	// sealed are the segments no longer appended to, oldest first.
	sealed []*segment
	// active is the segment appended to (nil until the first append
	// after Open or a seal), and f its open file.
	active *segment
	f      *os.File
	next   uint64
	// torn counts the torn records Open dropped.
	torn int
	// replayed counts the records of the segment being drained that the
	// consumer accepted: no longer waiting, though still on disk until
	// their segment is removed.
	replayed int

	// drainMu lets one Drain run at a time.
	drainMu sync.Mutex
}

// Open opens (or creates) the spool in opts.Dir. Every segment found there
// is kept for the next Drain, its torn tail (if any) cut off.
func Open(opts Options) (*Spool, error) {
	if opts.Dir == "" {
		return nil, errors.New("spool: no directory")
	}
	if opts.MaxBytes <= 0 || opts.MaxAge <= 0 {
		return nil, errors.New("spool: MaxBytes and MaxAge must be positive")
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the spool directory: %w", err)
	}
	s := &Spool{opts: opts}
	entries, err := os.ReadDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("reading the spool directory: %w", err)
	}
	for _, e := range entries {
		seq, ok := parseName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		seg, torn, err := s.recover(seq)
		if err != nil {
			return nil, err
		}
		s.torn += torn
		s.next = max(s.next, seq+1)
		if seg.entries == 0 {
			if err := s.remove(seg); err != nil {
				return nil, err
			}
			continue
		}
		s.sealed = append(s.sealed, seg)
	}
	slices.SortFunc(s.sealed, func(a, b *segment) int { return cmpSeq(a.seq, b.seq) })
	s.observeLocked()
	if s.torn > 0 {
		if err := syncDir(opts.Dir); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Torn is how many torn records Open dropped.
func (s *Spool) Torn() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.torn
}

// Dir is the spool's directory.
func (s *Spool) Dir() string { return s.opts.Dir }

// Stats is what the spool holds now.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statsLocked()
}

func (s *Spool) statsLocked() Stats {
	var st Stats
	for _, seg := range s.segmentsLocked() {
		st.Entries += seg.entries
		st.Bytes += seg.bytes
		if st.Oldest.IsZero() && seg.entries > 0 {
			st.Oldest = seg.first
		}
	}
	st.Entries -= s.replayed
	return st
}

// observeLocked reports the stats to Options.Observe (s.mu held).
func (s *Spool) observeLocked() {
	if s.opts.Observe != nil {
		s.opts.Observe(s.statsLocked())
	}
}

// segmentsLocked is every segment, oldest first (s.mu held).
func (s *Spool) segmentsLocked() []*segment {
	if s.active == nil {
		return s.sealed
	}
	return append(slices.Clip(s.sealed), s.active)
}

// Append adds a record and returns once it is on disk (file and directory
// fsynced). It refuses with ErrFullBytes or ErrFullAge when the spool is
// full; any other error means the record may not be kept.
func (s *Spool) Append(data []byte) error {
	if len(data)+headerBytes > maxRecordBytes {
		return fmt.Errorf("spool: record of %d bytes is too large", len(data))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Clock.Now()
	st := s.statsLocked()
	size := int64(len(data) + headerBytes)
	if st.Bytes+size > s.opts.MaxBytes {
		return ErrFullBytes
	}
	if !st.Oldest.IsZero() && now.Sub(st.Oldest) > s.opts.MaxAge {
		return ErrFullAge
	}
	if s.active == nil {
		if err := s.startSegment(); err != nil {
			return err
		}
	}
	rec := encode(now, data)
	if _, err := s.f.Write(rec); err != nil {
		// A part may be written (a full disk): cut it off, so that the
		// next append does not follow a torn record.
		_ = s.f.Truncate(s.active.bytes)
		_, _ = s.f.Seek(s.active.bytes, io.SeekStart)
		return fmt.Errorf("appending to the spool: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		// The record's fate on disk is unknown; Open will keep it if
		// it is whole, and the consumer makes a repeat harmless.
		return fmt.Errorf("syncing the spool: %w", err)
	}
	if s.active.entries == 0 {
		s.active.first = now
	}
	s.active.entries++
	s.active.bytes += size
	s.observeLocked()
	return nil
}

// startSegment creates the next segment file, 0600, and fsyncs the
// directory so that the file's name survives a crash too (s.mu held).
func (s *Spool) startSegment() error {
	seg := &segment{seq: s.next}
	f, err := os.OpenFile(s.path(seg.seq), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("creating a spool segment: %w", err)
	}
	if err := syncDir(s.opts.Dir); err != nil {
		return errors.Join(err, f.Close())
	}
	s.next++
	s.active, s.f = seg, f
	return nil
}

// Drain replays every record appended before it was called, oldest first,
// to fn (with the time the record was spooled), and removes each segment
// once fn accepted all its records. It stops at fn's first error and
// returns it; that segment stays whole and is replayed from its start by
// the next Drain. Records appended while it runs wait for the next Drain.
func (s *Spool) Drain(fn func(data []byte, spooledAt time.Time) error) error {
	s.drainMu.Lock()
	defer s.drainMu.Unlock()
	if err := s.seal(); err != nil {
		return err
	}
	for {
		s.mu.Lock()
		if len(s.sealed) == 0 {
			s.mu.Unlock()
			return nil
		}
		seg := s.sealed[0]
		s.mu.Unlock()
		if err := s.replay(seg, fn); err != nil {
			s.mu.Lock()
			s.replayed = 0
			s.mu.Unlock()
			return err
		}
		s.mu.Lock()
		s.sealed = s.sealed[1:]
		s.replayed = 0
		err := s.remove(seg)
		s.observeLocked()
		s.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// seal closes the active segment, so that Drain replays it and appends go
// to a new one.
func (s *Spool) seal() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		return nil
	}
	err := s.f.Close()
	s.sealed = append(s.sealed, s.active)
	s.active, s.f = nil, nil
	if err != nil {
		return fmt.Errorf("closing a spool segment: %w", err)
	}
	return nil
}

// replay hands a sealed segment's records to fn in order.
func (s *Spool) replay(seg *segment, fn func([]byte, time.Time) error) error {
	f, err := os.Open(s.path(seg.seq))
	if err != nil {
		return fmt.Errorf("opening a spool segment: %w", err)
	}
	defer f.Close()
	r := &reader{r: f}
	for range seg.entries {
		at, data, err := r.next()
		if err != nil {
			return fmt.Errorf("reading spool segment %d: %w", seg.seq, err)
		}
		if err := fn(data, at); err != nil {
			return err
		}
		s.mu.Lock()
		s.replayed++
		s.observeLocked()
		s.mu.Unlock()
	}
	return nil
}

// recover reads a segment found by Open, cuts off a torn tail, and returns
// it with the number of torn records dropped (0 or 1).
func (s *Spool) recover(seq uint64) (*segment, int, error) {
	path := s.path(seq)
	f, err := os.OpenFile(path, os.O_RDWR, 0) //nolint:gosec // G304: a segment of the spool's own directory
	if err != nil {
		return nil, 0, fmt.Errorf("opening spool segment: %w", err)
	}
	defer f.Close()
	seg := &segment{seq: seq}
	r := &reader{r: f}
	for {
		at, _, err := r.next()
		if errors.Is(err, io.EOF) {
			return seg, 0, nil
		}
		if err != nil {
			// A torn or corrupt record ends the segment: an append
			// that never returned. Cut it off.
			if err := f.Truncate(seg.bytes); err != nil {
				return nil, 0, fmt.Errorf("cutting a torn spool record: %w", err)
			}
			if err := f.Sync(); err != nil {
				return nil, 0, fmt.Errorf("syncing a spool segment: %w", err)
			}
			return seg, 1, nil
		}
		if seg.entries == 0 {
			seg.first = at
		}
		seg.entries++
		seg.bytes = r.off
	}
}

// remove deletes a segment's file and fsyncs the directory.
func (s *Spool) remove(seg *segment) error {
	if err := os.Remove(s.path(seg.seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing a drained spool segment: %w", err)
	}
	return syncDir(s.opts.Dir)
}

func (s *Spool) path(seq uint64) string {
	return filepath.Join(s.opts.Dir, fmt.Sprintf("%020d%s", seq, suffix))
}

func parseName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, suffix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// encode is one record.
func encode(at time.Time, data []byte) []byte {
	rec := make([]byte, headerBytes+len(data))
	binary.BigEndian.PutUint32(rec[0:4], uint32(8+len(data))) //nolint:gosec // G115: bounded by maxRecordBytes
	binary.BigEndian.PutUint64(rec[8:16], uint64(at.UnixNano()))
	copy(rec[16:], data)
	binary.BigEndian.PutUint32(rec[4:8], crc32.Checksum(rec[8:], crcTable))
	return rec
}

// reader reads records one after another, tracking its offset.
type reader struct {
	r   io.Reader
	off int64
}

// errTorn: a record cut short or whose checksum does not match.
var errTorn = errors.New("torn record")

// next returns the next record; io.EOF at a clean end, errTorn for a torn
// one.
func (r *reader) next() (time.Time, []byte, error) {
	var head [8]byte
	switch _, err := io.ReadFull(r.r, head[:]); {
	case errors.Is(err, io.EOF):
		return time.Time{}, nil, io.EOF
	case err != nil:
		return time.Time{}, nil, errTorn
	}
	length := binary.BigEndian.Uint32(head[0:4])
	if length < 8 || length > maxRecordBytes {
		return time.Time{}, nil, errTorn
	}
	rest := make([]byte, length)
	if _, err := io.ReadFull(r.r, rest); err != nil {
		return time.Time{}, nil, errTorn
	}
	if crc32.Checksum(rest, crcTable) != binary.BigEndian.Uint32(head[4:8]) {
		return time.Time{}, nil, errTorn
	}
	r.off += int64(8 + len(rest))
	at := time.Unix(0, int64(binary.BigEndian.Uint64(rest[0:8]))) //nolint:gosec // G115: written by encode
	return at, rest[8:], nil
}

// syncDir fsyncs a directory, so that a file created or removed in it stays
// so after a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir) //nolint:gosec // G304: the spool's own directory
	if err != nil {
		return fmt.Errorf("opening the spool directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing the spool directory: %w", err)
	}
	return nil
}
