package kidsim

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// deliverLocked builds the event and delivers it in the background, so that
// a control call never waits for the receiver. The caller holds f.mu.
func (f *Fake) deliverLocked(eventType string, fields Fields) {
	if f.closed || f.opts.WebhookURL == "" {
		return
	}
	body, err := Build(eventType, fields)
	if err != nil {
		panic("kidsim: building " + eventType + ": " + err.Error()) // the fake only builds known types
	}
	f.events++
	event, delay := f.events, f.deliveryDelay
	f.wg.Go(func() { f.send(event, eventType, body, delay) })
}

// send delivers one event with the Sender, on the retry schedule, through a
// transport that applies the fault of the moment to each attempt.
func (f *Fake) send(event int, eventType string, body []byte, delay time.Duration) {
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		}
	}
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	base := f.client.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	ft := &faultTransport{f: f, base: base, drop: cancel}
	client := *f.client
	client.Transport = ft
	s := &Sender{
		URL:      f.opts.WebhookURL,
		Secret:   f.opts.WebhookSecret,
		Client:   &client,
		Schedule: f.opts.Schedule,
		Clock:    f.opts.Clock,
		OnAttempt: func(a Attempt) {
			rec := DeliveryRecord{At: ft.start, Event: event, EventType: eventType, Attempt: a.Number, Status: a.Status, Fault: ft.fault}
			if rec.At.IsZero() {
				rec.At = f.opts.Clock.Now() // the request was never built
			}
			if a.Err != nil {
				rec.Err = a.Err.Error()
			}
			ft.start, ft.fault = time.Time{}, FaultNone
			f.mu.Lock()
			f.deliveries.add(rec)
			f.mu.Unlock()
			if f.opts.OnDelivery != nil {
				f.opts.OnDelivery(rec)
			}
		},
	}
	// The error says the event was not delivered; the attempts are recorded
	// already.
	_, _ = s.Send(ctx, body)
}

// errDropped is the error of an attempt the drop fault stopped.
var errDropped = errors.New("dropped by kidsim: never sent")

// ingress502 is what an nginx ingress answers when its backend is down.
const ingress502 = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"

// faultTransport applies the fault set at the moment of each attempt. One
// serves one event, whose attempts are sequential.
type faultTransport struct {
	f    *Fake
	base http.RoundTripper
	// drop ends the event's delivery: no retry follows a dropped attempt.
	drop func()
	// start and fault describe the attempt in flight.
	start time.Time
	fault DeliveryFault
}

func (t *faultTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.f.mu.Lock()
	t.fault = t.f.fault
	t.f.mu.Unlock()
	t.start = t.f.opts.Clock.Now()
	switch t.fault {
	case FaultDrop:
		closeBody(req)
		t.drop()
		return nil, errDropped
	case Fault5xx:
		closeBody(req)
		return &http.Response{
			Status:        "502 Bad Gateway",
			StatusCode:    http.StatusBadGateway,
			Proto:         "HTTP/1.1",
			ProtoMajor:    1,
			ProtoMinor:    1,
			Header:        http.Header{"Content-Type": {"text/html"}, "Content-Length": {strconv.Itoa(len(ingress502))}},
			Body:          io.NopCloser(strings.NewReader(ingress502)),
			ContentLength: int64(len(ingress502)),
			Request:       req,
		}, nil
	case FaultTimeout:
		// The client's timeout (or Close) ends the request's context.
		closeBody(req)
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	return t.base.RoundTrip(req)
}

// closeBody honours RoundTrip's contract for the requests it does not send.
func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
