package intake

import "time"

// Rebuild makes an event again from what was stored of it: its name, its
// decoded body as JSON (an object) and the request facts. Fields are mapped
// (opts.Remap) and coerced as Decode does, with opts.Location, so an event
// rendered again under a changed config sees what that config would have
// made of it. received is the event's original arrival time.
func Rebuild(name string, data []byte, req RequestInfo, received time.Time, opts Options) (*Event, error) {
	m := map[string]any{}
	var exact map[string]string
	if len(data) > 0 && string(data) != "null" {
		var err error
		if m, exact, err = jsonData(data); err != nil {
			return nil, err
		}
	}
	loc := opts.Location
	if loc == nil {
		loc = time.UTC
	}
	return build(name, opts, received, loc, m, exact, func() RequestInfo { return req })
}
