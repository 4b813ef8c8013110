package integration

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The browser tests drive Debian's chromium (CI installs it; see .ci/run)
// through chromedp. One Chromium is started for the whole package, on the
// first test that asks for a tab, with a fresh profile; each test gets its
// own tab. TestMain stops it.
var browser struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
	dir    string
	err    error
}

// chromiumPath finds the browser, or "" when none is installed.
func chromiumPath() string {
	if p := os.Getenv("CALLHOOK_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// newTab opens a tab in the package's Chromium; the test is skipped with a
// clear message when no Chromium is installed.
func newTab(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed but CI is set: .ci/run installs it with apt-get")
		}
		t.Skip("chromium is not installed (apt-get install -y chromium; CI installs it): skipping the browser tests")
	}
	browser.once.Do(func() {
		browser.dir, browser.err = os.MkdirTemp("", "callhook-chromium-")
		if browser.err != nil {
			return
		}
		alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
			chromedp.ExecPath(path),
			chromedp.Headless,
			chromedp.NoSandbox,
			chromedp.DisableGPU,
			chromedp.NoFirstRun,
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.Flag("disable-dev-shm-usage", true),
			chromedp.UserDataDir(browser.dir),
			chromedp.WindowSize(1280, 900),
		)
		ctx, cancelBrowser := chromedp.NewContext(alloc)
		// The first Run starts the browser; it lives as long as ctx.
		if browser.err = chromedp.Do(ctx); browser.err != nil {
			cancelBrowser()
			cancelAlloc()
			return
		}
		browser.ctx = ctx
		browser.cancel = func() { cancelBrowser(); cancelAlloc() }
	})
	if browser.err != nil {
		t.Fatalf("starting chromium (%s): %v", path, browser.err)
	}
	tab, cancelTab := chromedp.NewContext(browser.ctx)
	if err := chromedp.Do(tab); err != nil {
		cancelTab()
		t.Fatalf("opening a tab: %v", err)
	}
	t.Cleanup(cancelTab)
	return tab
}

// stopBrowser ends the package's Chromium and removes its profile.
func stopBrowser() {
	if browser.cancel != nil {
		browser.cancel()
	}
	if browser.dir != "" {
		os.RemoveAll(browser.dir)
	}
}

// within bounds one browser step.
func within(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

// pageHelpers returns must, which fails the test with the page's body when a
// browser step failed, and text, which reads an element's trimmed text.
func pageHelpers(t *testing.T, ctx context.Context) (must func(what string, err error), text func(sel string) string) {
	must = func(what string, err error) {
		t.Helper()
		if err != nil {
			html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("body")))
			t.Fatalf("%s: %v\npage: %s", what, err, html)
		}
	}
	text = func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		must("reading "+sel, err)
		return strings.TrimSpace(s)
	}
	return must, text
}
