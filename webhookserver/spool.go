package webhookserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/spool"
)

// The receiver's spool (design.md, "Failure modes"): when the API server
// cannot store a verified delivery within StoreTimeout, the KidEvent it
// would have created (already redacted: the spool holds nothing the event
// would not) is appended to a spool on disk, fsynced, and k-ID is answered
// 200. A drainer replays the spool once the API server answers. The event's
// name is its identity, so a replay that already landed (a crash between a
// create and the removal of its segment, or k-ID's own retry that found the
// API server back) is a harmless AlreadyExists.

// Defaults of the spool's options (the manager's flags).
const (
	// DefaultSpoolMaxBytes bounds the spool: about 30,000 deliveries of
	// k-ID's size.
	DefaultSpoolMaxBytes = 64 << 20
	// DefaultSpoolMaxAge bounds its oldest entry: an outage longer than
	// this gets 503 again, and k-ID's own retries.
	DefaultSpoolMaxAge = time.Hour
	// DefaultSpoolDrainRate is how many spooled events a second the
	// drainer creates: gentle on an API server that has just come back,
	// and far above k-ID's delivery rate, so a backlog shrinks.
	DefaultSpoolDrainRate = 50
	// spoolRetry is how long the drainer waits after a replay failed.
	spoolRetry = time.Second
)

// SpoolOptions configure the receiver's spool.
type SpoolOptions struct {
	// Dir is the spool's directory; empty means no spool (503 when the
	// API server cannot store in time).
	Dir string
	// MaxBytes bounds the spool's files; 0 means DefaultSpoolMaxBytes.
	MaxBytes int64
	// MaxAge bounds the age of its oldest entry; 0 means
	// DefaultSpoolMaxAge.
	MaxAge time.Duration
	// DrainRate is the events a second the drainer replays; 0 means
	// DefaultSpoolDrainRate.
	DrainRate float64
}

func (o *SpoolOptions) setDefaults() {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultSpoolMaxBytes
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultSpoolMaxAge
	}
	if o.DrainRate <= 0 {
		o.DrainRate = DefaultSpoolDrainRate
	}
}

// openSpool opens the spool Options.Spool names, if any.
func (s *Server) openSpool() error {
	o := s.opts.Spool
	if o.Dir == "" {
		return nil
	}
	// The gauges follow every change: the depth falls as a drain goes,
	// not only at its end.
	sp, err := spool.Open(spool.Options{Dir: o.Dir, MaxBytes: o.MaxBytes, MaxAge: o.MaxAge, Clock: s.opts.Clock, Observe: setSpoolGauges})
	if err != nil {
		return fmt.Errorf("opening the spool: %w", err)
	}
	spoolTornTotal.Add(float64(sp.Torn()))
	s.spool = sp
	return nil
}

// spoolEvent appends an event the API server could not store; the error
// is spool.ErrFullBytes or ErrFullAge when the spool is full.
func (s *Server) spoolEvent(event *kidv1.KidEvent) error {
	if s.spool == nil {
		return errors.New("no spool")
	}
	// Marked, so that once it is folded the product's sessions are read
	// again early (kidv1.SpooledAtAnnotation).
	if event.Annotations == nil {
		event.Annotations = map[string]string{}
	}
	event.Annotations[kidv1.SpooledAtAnnotation] = s.opts.Clock.Now().UTC().Format(time.RFC3339Nano)
	data, err := json.Marshal(event)
	if err != nil {
		return err
	}
	err = s.spool.Append(data)
	switch {
	case err == nil:
		spoolAppendsTotal.WithLabelValues("spooled").Inc()
	case errors.Is(err, spool.ErrFullBytes):
		spoolAppendsTotal.WithLabelValues("full_bytes").Inc()
	case errors.Is(err, spool.ErrFullAge):
		spoolAppendsTotal.WithLabelValues("full_age").Inc()
	default:
		spoolAppendsTotal.WithLabelValues("error").Inc()
	}
	return err
}

// drainSpool replays the spool while ctx lasts: every second, or at once
// after a drain that made progress and left entries behind. A replica that
// restarts drains what its predecessor left, once its caches synced (the
// products are read from them).
func (s *Server) drainSpool(ctx context.Context) {
	if s.spool == nil {
		return
	}
	log := ctrl.LoggerFrom(ctx).WithName("spool")
	limiter := rate.NewLimiter(rate.Limit(s.opts.Spool.DrainRate), 1)
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(spoolRetry):
		}
		if !s.synced.Load() || s.spool.Stats().Entries == 0 {
			continue
		}
		before := s.spool.Stats()
		var replayed int
		err := s.spool.Drain(func(data []byte, spooledAt time.Time) error {
			if err := limiter.Wait(ctx); err != nil {
				return err
			}
			if err := s.replay(ctx, data); err != nil {
				return err
			}
			replayed++
			return nil
		})
		switch {
		case err != nil && !failing:
			failing = true
			log.Info("the spool cannot be drained yet; retrying", "entries", before.Entries, "error", err.Error())
		case err == nil:
			if failing || replayed > 0 {
				log.Info("spool drained", "replayed", replayed, "oldestSpooled", before.Oldest)
			}
			failing = false
		}
	}
}

// replay stores one spooled event. An event stored already, an event of a
// product that is gone, and one the API server refuses are done with; any
// other error stops the drain, to be tried again.
func (s *Server) replay(ctx context.Context, data []byte) error {
	log := ctrl.LoggerFrom(ctx).WithName("spool")
	var event kidv1.KidEvent
	if err := json.Unmarshal(data, &event); err != nil {
		// A record that passed its checksum but is not an event:
		// written by another version. Nothing can store it.
		spoolReplaysTotal.WithLabelValues("dropped").Inc()
		log.Error(err, "dropping a spooled record that is not a KidEvent")
		return nil
	}
	key := types.NamespacedName{Namespace: event.Namespace, Name: event.Spec.ProductRef.Name}
	var product kidv1.KidProduct
	if err := s.reader.Get(ctx, key, &product); err != nil {
		if apierrors.IsNotFound(err) {
			spoolReplaysTotal.WithLabelValues("dropped").Inc()
			log.Info("dropping a spooled event of a product that no longer exists", "product", key, "event", event.Name)
			return nil
		}
		return err
	}
	storeCtx, cancel := context.WithTimeout(ctx, s.opts.StoreTimeout)
	defer cancel()
	switch err := s.store(storeCtx, &product, &event); {
	case err == nil:
		spoolReplaysTotal.WithLabelValues("stored").Inc()
	case apierrors.IsAlreadyExists(err):
		spoolReplaysTotal.WithLabelValues("duplicate").Inc()
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		spoolReplaysTotal.WithLabelValues("dropped").Inc()
		log.Error(err, "dropping a spooled event the API server refuses", "product", key, "event", event.Name)
	default:
		return err
	}
	return nil
}

// setSpoolGauges publishes what the spool holds.
func setSpoolGauges(st spool.Stats) {
	spoolEntries.Set(float64(st.Entries))
	spoolBytes.Set(float64(st.Bytes))
	if st.Oldest.IsZero() {
		spoolOldest.Set(0)
	} else {
		spoolOldest.Set(float64(st.Oldest.UnixNano()) / 1e9)
	}
}

// SpoolStats is what the receiver's spool holds (zero without a spool).
func (s *Server) SpoolStats() spool.Stats {
	if s.spool == nil {
		return spool.Stats{}
	}
	return s.spool.Stats()
}
