package validate_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/plugins/validate"
)

type point struct {
	X int `json:"x"`
	Y int `json:"y,omitempty" jsonschema:"default=7"`
}

type shape struct {
	Name   string    `json:"name" jsonschema:"minLength=1"`
	Count  int       `json:"count" jsonschema:"minimum=1"`
	Scale  float64   `json:"scale,omitempty" jsonschema:"default=1.5"`
	Filled bool      `json:"filled,omitempty"`
	Kind   string    `json:"kind,omitempty" jsonschema:"enum=circle,enum=square"`
	Origin *point    `json:"origin,omitempty"`
	Points []point   `json:"points,omitempty"`
	At     time.Time `json:"at,omitzero"`
}

func TestSchemaFor(t *testing.T) {
	t.Parallel()
	var s map[string]any
	require.NoError(t, json.Unmarshal(validate.SchemaFor[shape](), &s))
	require.Equal(t, "object", s["type"])
	require.Equal(t, false, s["additionalProperties"], "unknown keys are refused")
	require.ElementsMatch(t, []any{"name", "count"}, s["required"], "fields without omitempty are required")
	props := s["properties"].(map[string]any)
	require.Equal(t, map[string]any{"type": "integer", "minimum": 1.0}, props["count"])
	require.Equal(t, map[string]any{"$ref": "#/$defs/point"}, props["origin"])
	require.NotContains(t, s, "$id", "anonymous: nothing to fetch")
}

func mustNew(t *testing.T, s validate.Schemas) *validate.Plugin {
	t.Helper()
	p, err := validate.New(s)
	require.NoError(t, err)
	return p
}

func TestCheckCoerces(t *testing.T) {
	t.Parallel()
	p := mustNew(t, validate.Schemas{
		"shape": validate.SchemaFor[shape](),
		"sum":   json.RawMessage(`{"type":"array","items":{"type":"integer"},"minItems":1}`),
		"open":  json.RawMessage(`{"type":"object","properties":{"n":{"type":["integer","null"]},"s":{"type":"string"}}}`),
	})
	tests := []struct {
		name, task, args, kw string
		wantArgs, wantKw     string // "" when unchanged
	}{
		{
			name: "IntegerFromString", task: "shape", args: `[]`, kw: `{"name":"a","count":"5"}`,
			wantKw: `{"name":"a","count":5,"scale":1.5}`,
		},
		{
			name: "IntegralDecimalString", task: "shape", kw: `{"name":"a","count":"5.0","scale":2}`,
			wantKw: `{"name":"a","count":5,"scale":2}`,
		},
		{
			name: "NumberAndBool", task: "shape", kw: `{"name":"a","count":1,"scale":"2.5e1","filled":"true"}`,
			wantKw: `{"name":"a","count":1,"scale":25,"filled":true}`,
		},
		{
			name: "NestedThroughRef", task: "shape", kw: `{"name":"a","count":1,"origin":{"x":"3"},"points":[{"x":"1","y":"2"},{"x":4}]}`,
			wantKw: `{"name":"a","count":1,"scale":1.5,"origin":{"x":3,"y":7},"points":[{"x":1,"y":2},{"x":4,"y":7}]}`,
		},
		{name: "StringStaysString", task: "shape", kw: `{"name":"5","count":1,"scale":1.5}`},
		{name: "NothingToDo", task: "shape", kw: `{"name":"a","count":2,"scale":1}`},
		{name: "PositionalSchema", task: "sum", args: `["1",2,"3"]`, kw: `{}`, wantArgs: `[1,2,3]`},
		{
			name: "SinglePositionalIsTheInput", task: "shape", args: `[{"name":"a","count":"2"}]`, kw: `{}`,
			wantArgs: `[{"name":"a","count":2,"scale":1.5}]`,
		},
		{name: "TypeUnion", task: "open", kw: `{"n":"4","s":"x","extra":true}`, wantKw: `{"n":4,"s":"x","extra":true}`},
		{name: "NoSchema", task: "unknown", args: `["x"]`, kw: `{"anything":"goes"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args, kw := json.RawMessage(tt.args), json.RawMessage(tt.kw)
			gotArgs, gotKw, changed, err := p.Check(tt.task, args, kw)
			require.NoError(t, err)
			require.Equal(t, tt.wantArgs != "" || tt.wantKw != "", changed)
			if tt.wantArgs != "" {
				require.JSONEq(t, tt.wantArgs, string(gotArgs))
			} else {
				require.Equal(t, string(args), string(gotArgs))
			}
			if tt.wantKw != "" {
				require.JSONEq(t, tt.wantKw, string(gotKw))
			} else {
				require.Equal(t, string(kw), string(gotKw))
			}
		})
	}
}

// Each failing location and why, in one line, in a stable order.
func TestCheckRefuses(t *testing.T) {
	t.Parallel()
	p := mustNew(t, validate.Schemas{
		"shape": validate.SchemaFor[shape](),
		"sum":   json.RawMessage(`{"type":"array","items":{"type":"integer"},"minItems":1}`),
	})
	tests := []struct {
		name, task, args, kw, want string
	}{
		{"WrongType", "shape", `[]`, `{"name":"a","count":"five"}`, "/kw/count: got string, want integer"},
		{"Missing", "shape", `[]`, `{"count":1}`, "/kw: missing property 'name'"},
		{
			"Several", "shape", `[]`, `{"name":"","count":0,"kind":"blob","zz":1}`,
			"/kw/count: minimum: got 0, want 1; /kw/kind: value must be one of 'circle', 'square'; " +
				"/kw/name: minLength: got 0, want 1; /kw: additional properties 'zz' not allowed",
		},
		{"Nested", "shape", `[]`, `{"name":"a","count":1,"points":[{"x":1},{"y":2}]}`, "/kw/points/1: missing property 'x'"},
		{"Format", "shape", `[]`, `{"name":"a","count":1,"at":"yesterday"}`, "/kw/at: 'yesterday' is not valid date-time"},
		{"Positional", "sum", `[1,"x"]`, `{}`, "/args/1: got string, want integer"},
		{"EmptyPositional", "sum", `[]`, `{}`, "/args: minItems: got 0, want 1"},
		{"SinglePositional", "shape", `[{"name":"a"}]`, `{}`, "/args/0: missing property 'count'"},
		{"KwNotObject", "shape", `[]`, `[1]`, "kw is not an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, _, err := p.Check(tt.task, json.RawMessage(tt.args), json.RawMessage(tt.kw))
			require.ErrorIs(t, err, validate.ErrInvalidArguments)
			require.ErrorContains(t, err, "invalid arguments for task "+tt.task+": ")
			require.ErrorContains(t, err, tt.want)
			require.NotContains(t, err.Error(), "\n", "errors travel in a NATS header")
		})
	}
}

// A schema that does not compile is an error of New, naming its task.
func TestSchemaRejected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		schemas validate.Schemas
		want    []string
	}{
		{"NotJSON", validate.Schemas{"a": json.RawMessage(`{"type":`)}, []string{`schema of task "a": not JSON`}},
		{
			"BadKeyword",
			validate.Schemas{"a": json.RawMessage(`{"type":"integr"}`)},
			[]string{`schema of task "a":`, "is not valid against metaschema"},
		},
		{
			"BadMinimum",
			validate.Schemas{"a": json.RawMessage(`{"properties":{"n":{"minimum":"one"}}}`)},
			[]string{`schema of task "a":`, "/properties/n/minimum"},
		},
		{
			"ExternalRef",
			validate.Schemas{"a": json.RawMessage(`{"$ref":"https://example.com/s.json"}`)},
			[]string{`schema of task "a":`, "schemas must be self-contained"},
		},
		{"DanglingRef", validate.Schemas{"a": json.RawMessage(`{"$ref":"#/$defs/nope"}`)}, []string{`schema of task "a":`}},
		{"EmptyName", validate.Schemas{"": json.RawMessage(`{}`)}, []string{"empty task name"}},
		{
			"AllReported",
			validate.Schemas{"a": json.RawMessage(`{`), "b": json.RawMessage(`{"type":1}`), "ok": json.RawMessage(`{}`)},
			[]string{`schema of task "a"`, `schema of task "b"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := validate.New(tt.schemas)
			require.Nil(t, p)
			require.ErrorContains(t, err, "validate plugin: ")
			for _, w := range tt.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
	// No schemas at all is a plugin that passes everything.
	p, err := validate.New(nil)
	require.NoError(t, err)
	_, _, changed, err := p.Check("x", json.RawMessage(`[]`), json.RawMessage(`{"a":"1"}`))
	require.NoError(t, err)
	require.False(t, changed)
	require.NotErrorIs(t, err, validate.ErrInvalidArguments)
}
