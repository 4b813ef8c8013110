// Package caddycallhook plugs callhook into Caddy: build with
//
//	xcaddy build --with github.com/callhook/caddy-callhook
//
// It registers the `callhook` app, the `http.handlers.callhook` handler, the
// `callhook.queues.embedded` queue and their Caddyfile syntax.
package caddycallhook

import (
	_ "github.com/callhook/caddy-callhook/module"
)
