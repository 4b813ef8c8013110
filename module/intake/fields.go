package intake

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// fieldKind is how a canonical field's value is coerced.
type fieldKind uint8

const (
	kindID     fieldKind = iota // call_id: string or number, trimmed
	kindString                  // *string
	kindEnum                    // *string restricted to a few values
	kindInt                     // *int64, whole seconds
	kindFloat                   // *float64
	kindBool                    // *bool
	kindTime                    // *time.Time
	kindTags                    // []string
)

// field is one canonical call field: its expr tag name, where it lives in
// Call and how a value for it is coerced.
type field struct {
	name  string
	index int // position in Call: its reflect field index, and a stable error order
	kind  fieldKind
	slot  int // index into the builder's backing slice for this kind
	enum  *enumSpec
}

// enumSpec lists the values an enum field accepts.
type enumSpec struct {
	values  map[string]string // normalized form -> canonical value
	allowed string            // "a, b, c" for messages
}

func newEnum(values []string, aliases map[string]string) *enumSpec {
	e := &enumSpec{values: make(map[string]string, len(values)+len(aliases)), allowed: strings.Join(values, ", ")}
	for _, v := range values {
		e.values[v] = v
	}
	for a, v := range aliases {
		e.values[a] = v
	}
	return e
}

// enums are the fields of kindEnum. Values are compared after lower-casing
// and turning '-' and ' ' into '_' (so "NO ANSWER" and "no-answer" both
// match no_answer).
var enums = map[string]*enumSpec{
	"direction":      newEnum([]string{"incoming", "outgoing", "callback"}, nil),
	"insertion_type": newEnum([]string{"dynamic", "static", "callback"}, nil),
	"disposition":    newEnum([]string{"answered", "no_answer", "busy", "failed", "voicemail"}, map[string]string{"noanswer": "no_answer"}),
}

// fieldTable is built once, from Call's struct tags.
type fieldTable struct {
	fields []*field
	byName map[string]*field
	names  []string
	counts [kindTags + 1]int // fields per kind, sizes the builder's slices
}

var fields = buildFieldTable()

// goTypes is the Go type each kind is stored as in Call; buildFieldTable
// checks it, so the typed stores in builder.set always match the field.
var goTypes = [...]reflect.Type{
	kindID:     reflect.TypeFor[*string](),
	kindString: reflect.TypeFor[*string](),
	kindEnum:   reflect.TypeFor[*string](),
	kindInt:    reflect.TypeFor[*int64](),
	kindFloat:  reflect.TypeFor[*float64](),
	kindBool:   reflect.TypeFor[*bool](),
	kindTime:   reflect.TypeFor[*time.Time](),
	kindTags:   reflect.TypeFor[[]string](),
}

func buildFieldTable() *fieldTable {
	rt := reflect.TypeFor[Call]()
	t := &fieldTable{byName: make(map[string]*field, rt.NumField())}
	for i := range rt.NumField() {
		sf := rt.Field(i)
		name := sf.Tag.Get("expr")
		if name == "" {
			panic(fmt.Sprintf("intake: Call.%s has no expr tag", sf.Name))
		}
		f := &field{name: name, index: i}
		switch {
		case name == "call_id":
			f.kind = kindID
		case enums[name] != nil:
			f.kind, f.enum = kindEnum, enums[name]
		default:
			k, ok := kindOf(sf.Type)
			if !ok {
				panic(fmt.Sprintf("intake: Call.%s has type %s, which has no coercion", sf.Name, sf.Type))
			}
			f.kind = k
		}
		if sf.Type != goTypes[f.kind] {
			panic(fmt.Sprintf("intake: Call.%s has type %s, want %s", sf.Name, sf.Type, goTypes[f.kind]))
		}
		if t.byName[name] != nil {
			panic(fmt.Sprintf("intake: expr tag %q is used twice in Call", name))
		}
		f.slot = t.counts[f.kind]
		t.counts[f.kind]++
		t.fields = append(t.fields, f)
		t.byName[name] = f
		t.names = append(t.names, name)
	}
	return t
}

func kindOf(rt reflect.Type) (fieldKind, bool) {
	for k, gt := range goTypes {
		if fieldKind(k) == kindID || fieldKind(k) == kindEnum {
			continue
		}
		if gt == rt {
			return fieldKind(k), true
		}
	}
	return 0, false
}

// FieldNames returns the canonical call field names (Call's expr tags), in
// struct order. The slice is a copy.
func FieldNames() []string { return slices.Clone(fields.names) }

// IsField reports whether name is a canonical call field.
func IsField(name string) bool {
	_, ok := fields.byName[name]
	return ok
}

// builder assembles one Call. The values the Call points to live in a few
// per-kind slices, so a decoded call costs a handful of allocations rather
// than one per field.
type builder struct {
	call   Call
	loc    *time.Location
	strs   []string
	ints   []int64
	floats []float64
	bools  []bool
	times  []time.Time
}

// set coerces v into field f of the call. It returns nil without touching the
// call when v means "no value" (null, or "" for a non-string field).
//
// The stores go through a typed pointer to the field, found by reflection
// and checked by a type assertion (buildFieldTable has checked the types
// already, so none fails): no unsafe on the input path.
func (b *builder) set(f *field, v any) error {
	p := reflect.ValueOf(&b.call).Elem().Field(f.index).Addr().Interface()
	switch f.kind {
	case kindID, kindString, kindEnum:
		var s string
		var ok bool
		var err error
		switch f.kind {
		case kindID:
			s, ok, err = coerceID(v)
		case kindString:
			s, ok, err = coerceString(v)
		default:
			s, ok, err = coerceEnum(f.enum, v)
		}
		if err != nil || !ok {
			return err
		}
		if b.strs == nil {
			b.strs = make([]string, fields.counts[kindID]+fields.counts[kindString]+fields.counts[kindEnum])
		}
		i := b.strSlot(f)
		b.strs[i] = s
		*p.(**string) = &b.strs[i]
	case kindInt:
		n, ok, err := coerceInt(v)
		if err != nil || !ok {
			return err
		}
		if b.ints == nil {
			b.ints = make([]int64, fields.counts[kindInt])
		}
		b.ints[f.slot] = n
		*p.(**int64) = &b.ints[f.slot]
	case kindFloat:
		x, ok, err := coerceFloat(v)
		if err != nil || !ok {
			return err
		}
		if b.floats == nil {
			b.floats = make([]float64, fields.counts[kindFloat])
		}
		b.floats[f.slot] = x
		*p.(**float64) = &b.floats[f.slot]
	case kindBool:
		x, ok, err := coerceBool(v)
		if err != nil || !ok {
			return err
		}
		if b.bools == nil {
			b.bools = make([]bool, fields.counts[kindBool])
		}
		b.bools[f.slot] = x
		*p.(**bool) = &b.bools[f.slot]
	case kindTime:
		t, ok, err := coerceTime(v, b.loc)
		if err != nil || !ok {
			return err
		}
		if b.times == nil {
			b.times = make([]time.Time, fields.counts[kindTime])
		}
		b.times[f.slot] = t
		*p.(**time.Time) = &b.times[f.slot]
	case kindTags:
		tags, err := coerceTags(v)
		if err != nil {
			return err
		}
		*p.(*[]string) = tags
	}
	return nil
}

// strSlot maps the three string-backed kinds onto one shared slice.
func (b *builder) strSlot(f *field) int {
	switch f.kind {
	case kindString:
		return fields.counts[kindID] + f.slot
	case kindEnum:
		return fields.counts[kindID] + fields.counts[kindString] + f.slot
	}
	return f.slot
}
