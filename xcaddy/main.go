// Command xcaddy builds a Caddy binary with the standard modules and callhook,
// so `go build -o caddy ./xcaddy` needs no extra tool.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/callhook/caddy-callhook"
)

func main() {
	caddycmd.Main()
}
