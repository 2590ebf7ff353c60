package webhookserver

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/secrets"
)

// receive handles one delivery. The order of the checks is the contract
// (design.md §3): each check is cheaper than the next, nothing is written
// before the signature verified, and 200 is answered only once the KidEvent
// is stored, or, when the API server cannot store it in time, spooled on
// disk (spool.go).
func (s *Server) receive(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	productLabel := "unknown"
	code := s.handle(w, r, &productLabel)
	requestsTotal.WithLabelValues(productLabel, strconv.Itoa(code)).Inc()
	requestDuration.WithLabelValues(strconv.Itoa(code)).Observe(time.Since(start).Seconds())
}

// handle answers the request and returns the status code it wrote.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, productLabel *string) int {
	log := ctrl.LoggerFrom(r.Context())

	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return answer(w, http.StatusMethodNotAllowed, "only POST is accepted")
	}
	if !s.synced.Load() {
		return unavailable(w, "the receiver is starting")
	}

	key := types.NamespacedName{Namespace: r.PathValue("namespace"), Name: r.PathValue("product")}
	if s.namespaces != nil && !s.namespaces[key.Namespace] {
		// Not a namespace this operator serves: as unknown as a product
		// that does not exist.
		return answer(w, http.StatusNotFound, "no such product")
	}
	var product kidv1.KidProduct
	if err := s.reader.Get(r.Context(), key, &product); err != nil {
		if apierrors.IsNotFound(err) {
			return answer(w, http.StatusNotFound, "no such product")
		}
		log.Error(err, "reading product from cache", "product", key)
		return unavailable(w, "product unavailable")
	}
	*productLabel = key.String()

	// Every read on the way to the store has a deadline: the Secret's
	// read could otherwise hang with an API server that does (its cache
	// serves the last good copy meanwhile, secrets.Options.LastGoodFor).
	readCtx, cancelRead := context.WithTimeout(r.Context(), s.opts.StoreTimeout)
	defer cancelRead()
	keys, _, err := s.webhookKeys(readCtx, &product, false)
	if apierrors.IsNotFound(err) || errors.Is(err, kid.ErrNoKeys) || secrets.IsNotLabelled(err) {
		// The Secret may have been fixed since it was read.
		keys, _, err = s.webhookKeys(readCtx, &product, true)
	}
	if err != nil {
		log.Info("refusing delivery: product has no usable webhook secret", "product", key, "reason", err.Error())
		return unavailable(w, "product not ready")
	}

	body, code := s.readBody(w, r)
	if code != 0 {
		return code
	}
	release, ok := s.acquire(endpointWebhook)
	if !ok {
		return unavailable(w, "too many deliveries in flight")
	}
	defer release()

	verifier := kid.NewVerifier(keys, product.TimestampTolerance().Duration, s.opts.Clock)
	timestamp := r.Header.Get(kid.HeaderTimestamp)
	signedAt, keyName, err := verifier.Verify(timestamp, r.Header.Get(kid.HeaderSignature), body)
	if signatureMismatch(err) {
		// No key verified: the Secret may have been rotated since it was
		// read. Read it again and try the keys it holds now; the cache
		// re-reads one Secret at most once a second, so a stream of bad
		// signatures costs the API server nothing more.
		if fresh, reread, ferr := s.webhookKeys(readCtx, &product, true); ferr == nil && reread {
			verifier.Keys = fresh
			signedAt, keyName, err = verifier.Verify(timestamp, r.Header.Get(kid.HeaderSignature), body)
		}
	}
	if err != nil {
		var se *kid.SignatureError
		reason := "error"
		if errors.As(err, &se) {
			reason = string(se.Reason)
		}
		signatureFailuresTotal.WithLabelValues(*productLabel, reason).Inc()
		return answer(w, http.StatusUnauthorized, "invalid signature")
	}
	verifiedTotal.WithLabelValues(*productLabel, keyName).Inc()

	env, err := kid.ParseEnvelope(body)
	if err != nil {
		// The error names what is wrong, never the payload's values.
		return answer(w, http.StatusBadRequest, err.Error())
	}
	event, err := inbox.Build(&product, env, body, signedAt, s.opts.Clock.Now(), kidv1.SourceWebhook)
	if err != nil {
		return answer(w, http.StatusBadRequest, err.Error())
	}

	ctx, cancel := context.WithTimeout(r.Context(), s.opts.StoreTimeout)
	defer cancel()
	switch err := s.store(ctx, &product, event); {
	case err == nil:
	case apierrors.IsAlreadyExists(err):
		duplicatesTotal.WithLabelValues(*productLabel).Inc()
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		// The API server refused the object itself: retrying cannot help.
		return answer(w, http.StatusBadRequest, "event refused by the API server")
	default:
		// The API server did not store it in time: the spool keeps it
		// (on disk, fsynced) for the drainer, and k-ID gets 200. Without
		// a spool, or with a full one, k-ID gets 503 and retries.
		if serr := s.spoolEvent(event); serr != nil {
			log.Error(err, "storing event", "product", key, "eventType", env.EventType, "spool", serr.Error())
			return unavailable(w, "event not stored")
		}
		return answer(w, http.StatusOK, "spooled")
	}
	return answer(w, http.StatusOK, "stored")
}

// webhookKeys returns the product's usable webhook keys, from a copy of its
// Secret at most the secrets cache's TTL old; refresh asks for the Secret to
// be read again (at most once a second per Secret). The bool says whether
// it was.
func (s *Server) webhookKeys(ctx context.Context, product *kidv1.KidProduct, refresh bool) ([]kid.Key, bool, error) {
	keys, reread, err := s.secretKeys(ctx, types.NamespacedName{Namespace: product.Namespace, Name: product.Spec.Webhook.SecretRef.Name}, refresh)
	if err == nil && len(keys) == 0 {
		err = kid.ErrNoKeys
	}
	return keys, reread, err
}

// secretKeys returns the non-empty keys of a Secret a product names, from
// the secrets cache, or read again when refresh asks for it (at most once a
// second per Secret; the bool says whether it was).
func (s *Server) secretKeys(ctx context.Context, key types.NamespacedName, refresh bool) ([]kid.Key, bool, error) {
	var secret *secrets.Secret
	var reread bool
	var err error
	if refresh {
		secret, reread, err = s.secrets.Refresh(ctx, key)
	} else {
		secret, err = s.secrets.Get(ctx, key)
	}
	if err != nil {
		return nil, reread, err
	}
	return kid.KeysFromSecretData(secret.Data), reread, nil
}

// signatureMismatch reports whether err says that no key verified the
// signature (rather than that the headers were missing, malformed or out of
// the time window, which no other key can fix).
func signatureMismatch(err error) bool {
	var se *kid.SignatureError
	return errors.As(err, &se) && se.Reason == kid.FailureMismatch
}

// readBody reads the whole body, at most MaxBodyBytes of it. When it cannot,
// it answers itself and returns the code: 413, before anything is hashed,
// for a larger body; 400 for one that could not be read to its end.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int) {
	limit := s.opts.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, answer(w, http.StatusRequestEntityTooLarge, "body too large")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	switch {
	case int64(len(body)) > limit:
		return nil, answer(w, http.StatusRequestEntityTooLarge, "body too large")
	case err != nil:
		return nil, answer(w, http.StatusBadRequest, "body could not be read")
	}
	return body, 0
}

// answer writes a short plain-text answer and returns its code.
func answer(w http.ResponseWriter, code int, msg string) int {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	// Plain text that a browser must not sniff: never rendered as HTML.
	_, _ = io.WriteString(w, msg+"\n") //nolint:gosec // G705: see above
	return code
}

// unavailable answers 503 with the Retry-After k-ID's schedule implies.
func unavailable(w http.ResponseWriter, msg string) int {
	w.Header().Set("Retry-After", RetryAfterSeconds)
	return answer(w, http.StatusServiceUnavailable, msg)
}
