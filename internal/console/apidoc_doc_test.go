package console_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// docs/API.md and docs/openapi.json describe the same /api/v1: every
// operation of the one is in the other. (TestAPIMatchesOpenAPI holds the
// answers to openapi.json.)
func TestAPIDocMatchesOpenAPI(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(openAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	var inSpec []string
	for path, ops := range spec.Paths {
		for method := range ops {
			switch method {
			case "get", "post", "put", "patch", "delete":
				inSpec = append(inSpec, strings.ToUpper(method)+" "+path)
			}
		}
	}
	doc, err := os.ReadFile("../../docs/API.md")
	if err != nil {
		t.Fatal(err)
	}
	var inDoc []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(GET|POST|PUT|PATCH|DELETE) (/api/v1/[^`?]*)`").FindAllStringSubmatch(string(doc), -1) {
		inDoc = append(inDoc, m[1]+" "+m[2])
	}
	slices.Sort(inSpec)
	slices.Sort(inDoc)
	if !slices.Equal(inSpec, slices.Compact(inDoc)) {
		t.Errorf("docs/API.md's /api/v1 operations differ from openapi.json's:\nAPI.md:  %v\nopenapi: %v", inDoc, inSpec)
	}
}
