package kidsim

import (
	"fmt"
	"regexp"
	"slices"
)

// Session faults make /session/get misanswer for one session that exists,
// as k-ID might for a moment (a consistency blip) or for good (a key of
// another environment, a base URL at another fake): a NOT_FOUND for a
// session that was never deleted, or a 200 whose session.status is not
// ACTIVE. They apply however the session is asked for, by sessionId or by
// kuid, and no webhook is sent: nothing happened to the session. Each
// switch is bounded: at most maxSessionFaults sessions, at most
// maxNotFoundReads counted reads, and a status of at most 32 capitals.

// NotFoundPersistent is the SetSessionNotFound count that answers NOT_FOUND
// to every read until the fault is cleared.
const NotFoundPersistent = -1

const (
	// maxSessionFaults bounds the sessions with a fault at once.
	maxSessionFaults = 10000
	// maxNotFoundReads bounds a counted NOT_FOUND fault.
	maxNotFoundReads = 1000
)

// sessionStatusPattern is what SetSessionStatus accepts: k-ID's statuses
// are capitals ("ACTIVE", "DEL…", spec §4.2).
var sessionStatusPattern = regexp.MustCompile(`^[A-Z][A-Z_]{0,31}$`)

// SessionFault is how /session/get misanswers for one session.
type SessionFault struct {
	// NotFoundReads is how many more reads answer 400 NOT_FOUND;
	// NotFoundPersistent for every read, 0 for none.
	NotFoundReads int `json:"notFoundReads,omitempty"`
	// Status, when set, is the session.status a 200 answers in place of
	// the session's own (its etag changes with it, as k-ID's would).
	Status string `json:"status,omitempty"`
}

// SetSessionNotFound makes the next reads of a session answer 400
// NOT_FOUND: 1 once, n for n reads, NotFoundPersistent for every read until
// it is set to 0 again. The session itself is kept.
func (f *Fake) SetSessionNotFound(sessionID string, reads int) error {
	if reads < NotFoundPersistent || reads > maxNotFoundReads {
		return fmt.Errorf("notFoundReads: want %d (persistent), 0 (off) or 1 to %d, got %d", NotFoundPersistent, maxNotFoundReads, reads)
	}
	return f.updateSessionFault(sessionID, func(sf *SessionFault) { sf.NotFoundReads = reads })
}

// SetSessionStatus makes a 200 for the session answer status as its
// session.status ("" goes back to the session's own, ACTIVE).
func (f *Fake) SetSessionStatus(sessionID, status string) error {
	if status != "" && !sessionStatusPattern.MatchString(status) {
		return fmt.Errorf("status: want up to 32 capitals such as DELETED, got %q", status)
	}
	return f.updateSessionFault(sessionID, func(sf *SessionFault) { sf.Status = status })
}

func (f *Fake) updateSessionFault(sessionID string, set func(*SessionFault)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sessions[sessionID]; !ok {
		return fmt.Errorf("session %s: %w", sessionID, ErrNotFound)
	}
	sf, ok := f.sessionFaults[sessionID]
	if !ok {
		if len(f.sessionFaults) >= maxSessionFaults {
			return fmt.Errorf("at most %d sessions may have a fault at once", maxSessionFaults)
		}
		sf = &SessionFault{}
	}
	set(sf)
	if *sf == (SessionFault{}) {
		delete(f.sessionFaults, sessionID)
		return nil
	}
	f.sessionFaults[sessionID] = sf
	return nil
}

// SessionFaults returns the faults set, by session id.
func (f *Fake) SessionFaults() map[string]SessionFault {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]SessionFault, len(f.sessionFaults))
	for id, sf := range f.sessionFaults {
		out[id] = *sf
	}
	return out
}

// faultedLocked applies the session's fault to one read: notFound when the
// read must answer NOT_FOUND (one counted read is spent), otherwise the
// session as the 200 answers it.
func (f *Fake) faultedLocked(s *storedSession) (answered Session, notFound bool) {
	answered = s.copy()
	sf, ok := f.sessionFaults[s.SessionID]
	if !ok {
		return answered, false
	}
	if sf.NotFoundReads != 0 {
		if sf.NotFoundReads > 0 {
			sf.NotFoundReads--
		}
		if *sf == (SessionFault{}) {
			delete(f.sessionFaults, s.SessionID)
		}
		return answered, true
	}
	if sf.Status != "" {
		answered.Status = sf.Status
		answered.Permissions = slices.Clone(answered.Permissions)
		answered.Etag = etag(answered)
	}
	return answered, false
}
