package validate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	reflector "github.com/invopop/jsonschema"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// SchemaFor derives the JSON Schema of the task input type T (what
// executor.Register decodes a task's arguments into) by reflection: field
// names from json tags; a field without omitempty/omitzero is required;
// unknown keys are rejected; `jsonschema:"minimum=1,default=5,enum=a,enum=b"`
// tags add keywords (github.com/invopop/jsonschema).
func SchemaFor[T any]() json.RawMessage {
	return schemaOf(reflect.TypeFor[T]())
}

func schemaOf(t reflect.Type) json.RawMessage {
	r := &reflector.Reflector{Anonymous: true, ExpandedStruct: true}
	b, err := json.Marshal(r.ReflectFromType(t))
	if err != nil {
		panic(fmt.Sprintf("validate: encoding the schema of %v: %v", t, err)) // a reflected schema always encodes
	}
	return b
}

// schemaURL names task's schema inside the compiler; nothing is fetched.
func schemaURL(task string) string {
	return "qtasks-schema:///tasks/" + url.PathEscape(task) + ".json"
}

// noLoader refuses every external reference: a schema must be whole.
type noLoader struct{}

func (noLoader) Load(u string) (any, error) {
	return nil, fmt.Errorf("external reference %s: schemas must be self-contained (use $defs)", u)
}

// compile compiles the schemas, one resource each.
func compile(schemas Schemas) (map[string]*compiled, error) {
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	c.AssertFormat()
	out := make(map[string]*compiled, len(schemas))
	var errs []error
	names := make([]string, 0, len(schemas))
	for name := range schemas {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		raw := schemas[name]
		if name == "" {
			errs = append(errs, errors.New("a schema has an empty task name"))
			continue
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			errs = append(errs, fmt.Errorf("schema of task %q: not JSON: %w", name, err))
			continue
		}
		if err := c.AddResource(schemaURL(name), doc); err != nil {
			errs = append(errs, fmt.Errorf("schema of task %q: %w", name, err))
			continue
		}
		s, err := c.Compile(schemaURL(name))
		if err != nil {
			errs = append(errs, fmt.Errorf("schema of task %q: %s", name, oneLine(err.Error())))
			continue
		}
		out[name] = &compiled{schema: s, array: isArraySchema(s)}
	}
	return out, errors.Join(errs...)
}

type compiled struct {
	schema *jsonschema.Schema
	// array: the schema describes the positional arguments (type array),
	// not the keyword arguments.
	array bool
}

func isArraySchema(s *jsonschema.Schema) bool {
	for range 8 {
		if s.Types != nil {
			return slices.Contains(s.Types.ToStrings(), "array") && !slices.Contains(s.Types.ToStrings(), "object")
		}
		if s.Ref == nil {
			return false
		}
		s = s.Ref
	}
	return false
}

// maxDepth bounds coercion's walk through nested values and references.
const maxDepth = 64

// coerce converts the values of v that the schema types differently and
// that convert without loss ("5" for an integer, "true" for a boolean),
// and fills in missing properties that have a default. v is changed in
// place where it is a map or slice; the result replaces it.
func coerce(s *jsonschema.Schema, v any, depth int) any {
	if s == nil || depth > maxDepth {
		return v
	}
	if s.Ref != nil {
		v = coerce(s.Ref, v, depth+1)
	}
	for _, a := range s.AllOf {
		v = coerce(a, v, depth+1)
	}
	switch x := v.(type) {
	case string:
		if s.Types != nil {
			return coerceString(s.Types.ToStrings(), x)
		}
	case map[string]any:
		for name, ps := range s.Properties {
			if pv, ok := x[name]; ok {
				x[name] = coerce(ps, pv, depth+1)
			} else if d, ok := defaultOf(ps); ok {
				x[name] = coerce(ps, d, depth+1)
			}
		}
		if as, ok := s.AdditionalProperties.(*jsonschema.Schema); ok {
			for k, pv := range x {
				if _, named := s.Properties[k]; !named {
					x[k] = coerce(as, pv, depth+1)
				}
			}
		}
	case []any:
		for i := range x {
			x[i] = coerce(itemSchema(s, i), x[i], depth+1)
		}
	}
	return v
}

func itemSchema(s *jsonschema.Schema, i int) *jsonschema.Schema {
	if i < len(s.PrefixItems) {
		return s.PrefixItems[i]
	}
	if s.Items2020 != nil {
		return s.Items2020
	}
	switch it := s.Items.(type) {
	case *jsonschema.Schema:
		return it
	case []*jsonschema.Schema:
		if i < len(it) {
			return it[i]
		}
		if ai, ok := s.AdditionalItems.(*jsonschema.Schema); ok {
			return ai
		}
	}
	return nil
}

// defaultOf returns a copy of the default of a property's schema, looking
// through references. A null default fills nothing.
func defaultOf(s *jsonschema.Schema) (any, bool) {
	for range 8 {
		if s.Default != nil {
			if *s.Default == nil {
				return nil, false
			}
			return deepCopy(*s.Default), true
		}
		if s.Ref == nil {
			return nil, false
		}
		s = s.Ref
	}
	return nil, false
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = deepCopy(e)
		}
		return l
	}
	return v
}

var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// coerceString converts s to the first of the schema's types it fits,
// unless the schema allows a string as it is.
func coerceString(types []string, s string) any {
	if slices.Contains(types, "string") {
		return s
	}
	t := strings.TrimSpace(s)
	for _, typ := range types {
		switch typ {
		case "integer":
			if jsonNumber.MatchString(t) {
				if r, ok := new(big.Rat).SetString(t); ok && r.IsInt() {
					return json.Number(r.Num().String())
				}
			}
		case "number":
			if jsonNumber.MatchString(t) {
				return json.Number(t)
			}
		case "boolean":
			if b, err := strconv.ParseBool(t); err == nil {
				return b
			}
		}
	}
	return s
}

// mergeDiff returns the RFC 7386 merge patch that turns a into b, for b
// made from a by coerce (which only adds and replaces).
func mergeDiff(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, bv := range b {
		av, ok := a[k]
		switch {
		case !ok:
			out[k] = bv
		case reflect.DeepEqual(av, bv):
		default:
			am, aok := av.(map[string]any)
			bm, bok := bv.(map[string]any)
			if aok && bok {
				out[k] = mergeDiff(am, bm)
			} else {
				out[k] = bv
			}
		}
	}
	return out
}

// describe turns a validation error into one line: each failing location
// (a JSON Pointer from the payload's root: /kw/a, /args/0) and why.
func describe(err error, prefix string) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return oneLine(err.Error())
	}
	var parts []string
	seen := map[string]bool{}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		var loc strings.Builder
		loc.WriteString(prefix)
		for _, tok := range e.InstanceLocation {
			loc.WriteString("/" + strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1"))
		}
		line := loc.String() + ": " + oneLine(e.ErrorKind.LocalizedString(printer))
		if !seen[line] {
			seen[line] = true
			parts = append(parts, line)
		}
	}
	walk(ve)
	slices.Sort(parts) // the validator's order follows map iteration
	return strings.Join(parts, "; ")
}

var printer = message.NewPrinter(language.English)

// oneLine joins the lines of s: an error travels in a NATS header.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
