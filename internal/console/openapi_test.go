package console_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"
)

// The OpenAPI document (docs/openapi.json, OpenAPI 3.1) is checked with a
// JSON Schema validator, not an OpenAPI library: in 3.1 a schema object is
// a JSON Schema 2020-12 schema, so compiling the document's response
// schemas by JSON Pointer is the whole job (ARCHITECTURE.md, "The operator
// console").
const openAPIPath = "../../docs/openapi.json"

var openAPI struct {
	once sync.Once
	err  error
	doc  struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	routes   []route
	compiler *jsonschema.Compiler
	mu       sync.Mutex
	schemas  map[string]*jsonschema.Schema
	seen     map[string]bool // "GET /api/v1/tasks 200" of every answer checked
}

type route struct {
	template string
	re       *regexp.Regexp
}

const openAPIURL = "file:///openapi.json"

func loadOpenAPI() error {
	openAPI.once.Do(func() {
		raw, err := os.ReadFile(openAPIPath)
		if err != nil {
			openAPI.err = err
			return
		}
		if err := json.Unmarshal(raw, &openAPI.doc); err != nil {
			openAPI.err = fmt.Errorf("%s: %w", openAPIPath, err)
			return
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			openAPI.err = err
			return
		}
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		c.AssertFormat()
		if err := c.AddResource(openAPIURL, doc); err != nil {
			openAPI.err = err
			return
		}
		openAPI.compiler = c
		openAPI.schemas = map[string]*jsonschema.Schema{}
		openAPI.seen = map[string]bool{}
		param := regexp.MustCompile(`\\\{[a-z]+\\\}`)
		for tpl := range openAPI.doc.Paths {
			re := "^" + param.ReplaceAllString(regexp.QuoteMeta(tpl), `[^/]+`) + "$"
			openAPI.routes = append(openAPI.routes, route{tpl, regexp.MustCompile(re)})
		}
		// Literal paths before templated ones: /tasks/{id} must not take
		// what a more specific path names.
		sort.Slice(openAPI.routes, func(i, j int) bool {
			return strings.Count(openAPI.routes[i].template, "{") < strings.Count(openAPI.routes[j].template, "{")
		})
	})
	return openAPI.err
}

// pointerToken escapes s as one JSON Pointer token.
func pointerToken(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// checkSchema fails t unless the OpenAPI document lists the status code
// for the request and body matches its schema.
func checkSchema(t *testing.T, method, rawPath string, code int, body []byte) {
	t.Helper()
	require.NoError(t, loadOpenAPI())
	u, err := url.Parse(rawPath)
	require.NoError(t, err)
	tpl := ""
	for _, r := range openAPI.routes {
		if r.re.MatchString(u.Path) {
			tpl = r.template
			break
		}
	}
	if tpl == "" {
		// An unknown path's 404 is the only answer a path not in the
		// document may get.
		require.Equal(t, 404, code, "%s %s is not in %s", method, u.Path, openAPIPath)
		tpl = "/api/v1/tasks/{id}" // any operation documents the error body
		method = "GET"
	}
	op := strings.ToLower(method)
	var oper struct {
		Responses map[string]json.RawMessage `json:"responses"`
	}
	rawOp, ok := openAPI.doc.Paths[tpl][op]
	require.True(t, ok, "%s %s (%s) is not in %s", method, u.Path, tpl, openAPIPath)
	require.NoError(t, json.Unmarshal(rawOp, &oper))
	_, ok = oper.Responses[strconv.Itoa(code)]
	require.True(t, ok, "%s %s answered %d, which %s does not list for it: %s", method, u.Path, code, openAPIPath, body)
	ptr := "#/paths/" + pointerToken(tpl) + "/" + op + "/responses/" + strconv.Itoa(code) + "/content/application~1json/schema"
	openAPI.mu.Lock()
	sch := openAPI.schemas[ptr]
	if sch == nil {
		sch, err = openAPI.compiler.Compile(openAPIURL + ptr)
		if err == nil {
			openAPI.schemas[ptr] = sch
		}
	}
	openAPI.seen[fmt.Sprintf("%s %s %d", strings.ToUpper(op), tpl, code)] = true
	openAPI.mu.Unlock()
	require.NoError(t, err, "compiling %s", ptr)
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	require.NoError(t, err, "%s", body)
	require.NoError(t, sch.Validate(inst), "%s %s → %d does not match %s:\n%s", method, rawPath, code, ptr, body)
}

// seenAnswers lists the answers checked so far ("GET /api/v1/tasks 200").
func seenAnswers() map[string]bool {
	openAPI.mu.Lock()
	defer openAPI.mu.Unlock()
	return maps.Clone(openAPI.seen)
}
