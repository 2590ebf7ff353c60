// Package browser drives a real Chromium (Debian's chromium package)
// from Go tests with chromedp, for the specs of the browser module
// (webhookserver/browser) and of the demo page (cmd/localrun/browserdemo).
//
// Chromium is a prerequisite of `make test`: without it Start fails with the
// command that installs it, and the suite fails. It never skips.
package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/chromedp/chromedp"
)

// InstallCommand installs Chromium on Debian and Ubuntu (as root).
const InstallCommand = "apt-get update && apt-get install -y chromium"

// ExecPathEnv names a Chromium or Chrome binary to use instead of the one
// found on PATH.
const ExecPathEnv = "KID_CHROMIUM"

// ExecPath returns the Chromium to run: $KID_CHROMIUM, else the first of
// chromium, chromium-browser, google-chrome on PATH.
func ExecPath() (string, error) {
	if p := os.Getenv(ExecPathEnv); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", ExecPathEnv, p, err)
		}
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("chromium is not installed; the browser tests need it. Install it with:\n\n    %s\n\n(or set %s to a Chromium or Chrome binary)", InstallCommand, ExecPathEnv)
}

// Browser is one headless Chromium; each tab is a context of its own.
type Browser struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// Start starts a headless Chromium with a 1280x1000 window.
func Start() (*Browser, error) {
	path, err := ExecPath()
	if err != nil {
		return nil, err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.WindowSize(1280, 1000),
	)
	if os.Geteuid() == 0 {
		// Chromium refuses to run as root with its sandbox (CI runs as
		// root in a container). The tests load only their own local pages.
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	b := &Browser{ctx: ctx, cancel: func() { cancelCtx(); cancelAlloc() }}
	// The first Run starts the browser; a timeout on it would stop the
	// browser, so the wait is bounded from outside.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			b.cancel()
			return nil, fmt.Errorf("starting %s: %w", path, err)
		}
	case <-time.After(60 * time.Second):
		b.cancel()
		return nil, errors.New("chromium did not start within 60s")
	}
	return b, nil
}

// Stop stops the browser.
func (b *Browser) Stop() { b.cancel() }

// NewTab opens a tab; close it with the returned func.
func (b *Browser) NewTab() (*Tab, context.CancelFunc) {
	ctx, cancel := chromedp.NewContext(b.ctx)
	return &Tab{ctx: ctx}, cancel
}

// Tab is one browser tab.
type Tab struct{ ctx context.Context }

// Context is the tab's chromedp context, for actions this type has no
// method for.
func (t *Tab) Context() context.Context { return t.ctx }

// Do runs actions in the tab with a timeout.
func (t *Tab) Do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	if err := chromedp.Do(t.ctx); err != nil { // opens the tab once, unbounded
		return err
	}
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// Eval evaluates a JavaScript expression in the page (promises awaited) and
// decodes its value into T.
func Eval[T any](t *Tab, expression string) (T, error) {
	var zero T
	if err := chromedp.Do(t.ctx); err != nil {
		return zero, err
	}
	ctx, cancel := context.WithTimeout(t.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expression, chromedp.EvalAwaitPromise))
}

// Navigate loads a URL and waits for its load event.
func (t *Tab) Navigate(url string) error {
	return t.Do(30*time.Second, chromedp.Navigate(url))
}

// ClickInFrame clicks the element matching selector inside the iframe that
// frameSelector finds in the page, once it is visible. The iframe must be
// of the page's site (any port of 127.0.0.1 is), which Chromium runs in the
// page's process.
func (t *Tab) ClickInFrame(frameSelector, selector string) error {
	if err := chromedp.Do(t.ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(t.ctx, 15*time.Second)
	defer cancel()
	frames, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSS(frameSelector)))
	if err != nil {
		return fmt.Errorf("finding %s: %w", frameSelector, err)
	}
	if err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(selector), chromedp.FromNode(frames[0])),
		chromedp.Click(chromedp.CSS(selector), chromedp.FromNode(frames[0])),
	); err != nil {
		return fmt.Errorf("clicking %s in %s: %w", selector, frameSelector, err)
	}
	return nil
}

// SetValueInFrame sets the value of a form field inside an iframe.
func (t *Tab) SetValueInFrame(frameSelector, selector, value string) error {
	if err := chromedp.Do(t.ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(t.ctx, 15*time.Second)
	defer cancel()
	frames, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSS(frameSelector)))
	if err != nil {
		return fmt.Errorf("finding %s: %w", frameSelector, err)
	}
	return chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(selector), chromedp.FromNode(frames[0])),
		chromedp.SetValue(chromedp.CSS(selector), value, chromedp.FromNode(frames[0])),
	)
}

// TextInFrame returns the text of the element matching selector inside the
// iframe that frameSelector finds, once it is visible.
func (t *Tab) TextInFrame(frameSelector, selector string) (string, error) {
	if err := chromedp.Do(t.ctx); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(t.ctx, 15*time.Second)
	defer cancel()
	frames, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSS(frameSelector)))
	if err != nil {
		return "", fmt.Errorf("finding %s: %w", frameSelector, err)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(selector), chromedp.FromNode(frames[0]))); err != nil {
		return "", err
	}
	return chromedp.Run(ctx, chromedp.Text(chromedp.CSS(selector), chromedp.FromNode(frames[0])))
}

// Screenshot returns a PNG of the whole page.
func (t *Tab) Screenshot() ([]byte, error) {
	if err := chromedp.Do(t.ctx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(t.ctx, 30*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.FullScreenshot(100))
}
