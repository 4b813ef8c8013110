package callhook

import (
	"context"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// actor is who asked for an operator action, for its log line: the
// dashboard's user as the auth handler in front of it (basic_auth,
// forward_auth) authenticated them, and where from.
type actor struct {
	via, user, remoteIP string
}

type actorKey struct{}

// withActor marks ctx as an action asked for through via, by the user
// Caddy's auth handler set on r (http.auth.user.id), if any.
func withActor(ctx context.Context, via string, r *http.Request) context.Context {
	a := actor{via: via, remoteIP: r.RemoteAddr}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		a.user, _ = repl.GetString("http.auth.user.id")
		if ip, ok := repl.GetString("http.request.remote.host"); ok && ip != "" {
			a.remoteIP = ip
		}
	}
	return context.WithValue(ctx, actorKey{}, a)
}

// log is the service's logger with the actor of ctx, when one is known.
func (s *adminService) log(ctx context.Context) *zap.Logger {
	a, ok := ctx.Value(actorKey{}).(actor)
	if !ok {
		return s.logger
	}
	user := a.user
	if user == "" {
		user = "(not authenticated: no auth handler before the " + a.via + ")"
	}
	return s.logger.With(zap.String("via", a.via), zap.String("user", user), zap.String("remote_ip", a.remoteIP))
}
