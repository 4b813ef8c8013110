# Caddy with callhook, built from this checkout on the official builder image.
# Not built by this repository's CI (it has no Docker engine).
#
#   docker build -t caddy-callhook .
#   docker run -p 8080:8080 -v $PWD/Caddyfile:/etc/caddy/Caddyfile caddy-callhook
#
# callhook's embedded queue lives under Caddy's data directory (/data in the
# caddy image): keep /data on a volume, or queued deliveries die with the
# container.
FROM caddy:2.11-builder AS builder
WORKDIR /src/callhook
COPY . .
# callhook is not published yet: build from the local copy. The module proxy
# answers its path with 403, so fall back to the local replace ("|off").
RUN GOPROXY="$(go env GOPROXY | cut -d, -f1)|off" \
	xcaddy build --output /usr/bin/caddy --with github.com/callhook/caddy-callhook=/src/callhook

FROM caddy:2.11
COPY --from=builder /usr/bin/caddy /usr/bin/caddy
