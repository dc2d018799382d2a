package validate_test

import (
	"encoding/json"
	"fmt"

	"github.com/qtasks/qtasks-go/plugins/validate"
)

// Check coerces and validates a task's arguments as the plugin does on its
// triggers.
func ExamplePlugin_Check() {
	type resize struct {
		W    int  `json:"w" jsonschema:"minimum=1"`
		Keep bool `json:"keep,omitempty" jsonschema:"default=true"`
	}
	p, err := validate.New(validate.Schemas{"resize": validate.SchemaFor[resize]()})
	if err != nil {
		panic(err)
	}
	_, kw, changed, err := p.Check("resize", json.RawMessage(`[]`), json.RawMessage(`{"w":"640"}`))
	fmt.Println(string(kw), changed, err)
	_, _, _, err = p.Check("resize", json.RawMessage(`[]`), json.RawMessage(`{"w":0,"h":480}`))
	fmt.Println(err)
	// Output:
	// {"keep":true,"w":640} true <nil>
	// invalid arguments for task resize: /kw/w: minimum: got 0, want 1; /kw: additional properties 'h' not allowed
}
