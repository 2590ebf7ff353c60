package actions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// A cloudEvent action is an http action whose body is a CloudEvent: the same
// document (the id, the event, the user) as its data, the same attempts,
// retries, signature and outbound guard, to a URL resolved on each attempt.
// The SDK encodes the event, so what goes out is what any CloudEvents
// receiver reads.

// The CloudEvent extension attributes of a cloudEvent action, for routing
// without reading the data (a Knative Trigger filters on attributes).
// CloudEvents allows lower-case letters and digits only in their names.
const (
	// ExtensionProduct is the KidProduct's name.
	ExtensionProduct = "kidproduct"
	// ExtensionNamespace is the KidProduct's namespace.
	ExtensionNamespace = "kidnamespace"
	// ExtensionConsent is the user's consent state after the fold
	// (None, Pending, Granted, Denied); absent for an event folded into
	// no user.
	ExtensionConsent = "kidconsent"
)

// CloudEventType is the CloudEvent type of a k-ID eventType.
func CloudEventType(eventType string) string { return "dev.kid." + eventType }

// CloudEventSource is the CloudEvent source of a product's events: the
// KidProduct's API path.
func CloudEventSource(namespace, product string) string {
	return "/apis/kid.dev/v1alpha1/namespaces/" + namespace + "/kidproducts/" + product
}

// HTTPOf is the http side of an action: an http action's own, or the http
// action a cloudEvent action's attempts make (its headers, signature,
// timeout, attempts and data template; its URL is resolved per attempt and
// empty here). Nil for a resource action.
func HTTPOf(a *kidv1.KidAction) *kidv1.HTTPAction {
	switch {
	case a.Spec.HTTP != nil:
		return a.Spec.HTTP
	case a.Spec.CloudEvent != nil:
		return cloudEventHTTP(a.Spec.CloudEvent, "")
	}
	return nil
}

func cloudEventHTTP(ce *kidv1.CloudEventAction, url string) *kidv1.HTTPAction {
	return &kidv1.HTTPAction{
		URL: url, Headers: ce.Headers, BodyTemplate: ce.DataTemplate,
		SigningSecretRef: ce.SigningSecretRef, Timeout: ce.Timeout, MaxAttempts: ce.MaxAttempts,
	}
}

// NewCloudEvent builds the CloudEvent of an event's run: id is the run's
// webhook-id, data the rendered document.
func NewCloudEvent(e *kidv1.KidEvent, id string, in *Input, data []byte) (*cloudevents.Event, error) {
	ev := cloudevents.New(cloudevents.CloudEventsVersionV1)
	ev.SetID(id)
	ev.SetType(CloudEventType(e.Spec.EventType))
	ev.SetSource(CloudEventSource(e.Namespace, e.Spec.ProductRef.Name))
	if in.UserName != "" {
		ev.SetSubject(in.UserName)
	}
	// When k-ID signed it; an event recovered from k-ID's API carries no
	// signature, and its time is when it was received.
	at := e.Spec.ReceivedAt.Time
	if e.Spec.SignedAt != nil {
		at = e.Spec.SignedAt.Time
	}
	ev.SetTime(at.UTC())
	ev.SetExtension(ExtensionProduct, e.Spec.ProductRef.Name)
	ev.SetExtension(ExtensionNamespace, e.Namespace)
	if consent := consentState(in); consent != "" {
		ev.SetExtension(ExtensionConsent, consent)
	}
	// The document is JSON already: set as it is, not as SetData sets
	// bytes (base64, which a structured event would carry as data_base64,
	// out of reach of the consumers' filters on data).
	ev.SetDataContentType(cloudevents.ApplicationJSON)
	ev.DataEncoded = data
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("the CloudEvent is invalid: %w", err)
	}
	return &ev, nil
}

// consentState is the user's consent state in the input, "" when none.
func consentState(in *Input) string {
	consent, _ := in.User["consent"].(map[string]any)
	state, _ := consent["state"].(string)
	return state
}

// EncodeCloudEvent writes ev as the CloudEvents HTTP binding does, in mode
// (Binary unless Structured): the body and the headers that carry it.
func EncodeCloudEvent(ctx context.Context, ev *cloudevents.Event, mode kidv1.CloudEventContentMode) ([]byte, http.Header, error) {
	if mode == kidv1.ContentModeStructured {
		ctx = binding.WithForceStructured(ctx)
	} else {
		ctx = binding.WithForceBinary(ctx)
	}
	req := &http.Request{Header: http.Header{}}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(ev), req); err != nil {
		return nil, nil, fmt.Errorf("encoding the CloudEvent: %w", err)
	}
	if req.Body == nil {
		return nil, req.Header, nil
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the CloudEvent: %w", err)
	}
	return body, req.Header, nil
}

// DeliverCloudEvent makes one attempt of a cloudEvent action, from resolving
// its sink to the answer, all within its timeout; the answer is classified
// as an http action's (Post). A sink that does not resolve is retried: it
// may become ready. The attempt is signed when secret is given.
func DeliverCloudEvent(ctx context.Context, c *http.Client, imp *Impersonator, a *kidv1.KidAction, e *kidv1.KidEvent, id string, in *Input, secret []byte, now time.Time) Outcome {
	ce := a.Spec.CloudEvent
	ctx, cancel := context.WithTimeout(ctx, Timeout(HTTPOf(a)))
	defer cancel()
	url, err := ResolveSink(ctx, imp, a)
	if err != nil {
		return Outcome{Err: fmt.Errorf("%s: %w", kidv1.SinkNotResolvedReason, err)}
	}
	h := cloudEventHTTP(ce, url)
	data, err := renderDocument(ctx, "dataTemplate", ce.DataTemplate, id, in)
	if err != nil {
		return renderFailed(ctx, err)
	}
	if !json.Valid(data) {
		// datacontenttype says JSON, and a structured event embeds the
		// data as it is: anything else would break the envelope.
		return Outcome{Err: errors.New("dataTemplate did not render JSON"), Permanent: true}
	}
	ev, err := NewCloudEvent(e, id, in, data)
	if err != nil {
		return Outcome{Err: err, Permanent: true}
	}
	body, header, err := EncodeCloudEvent(ctx, ev, ce.ContentMode)
	if err != nil {
		return Outcome{Err: err, Permanent: true}
	}
	return post(ctx, c, h, id, body, header, secret, now)
}
