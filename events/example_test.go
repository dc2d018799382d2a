package events_test

import (
	"errors"
	"fmt"

	"github.com/qtasks/qtasks-go/events"
)

// A mutator answers task_executor_args_replace with a merge patch that adds
// a keyword argument. The trigger's contract allows /args and /kw.
func ExampleApplyPatch_mergePatch() {
	trigger, _ := events.Lookup(events.TaskExecutorArgsReplace)
	payload := []byte(`{"args":[],"kw":{}}`)

	out, err := events.ApplyPatch(trigger, payload,
		events.ContentTypeMergePatch, []byte(`{"kw":{"x":1}}`))
	fmt.Println(string(out), err)

	// The task name is outside the contract: the patch is rejected.
	_, err = events.ApplyPatch(trigger, payload,
		events.ContentTypeMergePatch, []byte(`{"task_name":"other"}`))
	fmt.Println(errors.Is(err, events.ErrPathNotAllowed))
	fmt.Println(err)
	// Output:
	// {"args":[],"kw":{"x":1}} <nil>
	// true
	// task_executor_args_replace: patch touches a path the trigger does not allow: "/task_name"
}

// The same change as an RFC 6902 JSON Patch.
func ExampleApplyPatch_jsonPatch() {
	trigger, _ := events.Lookup(events.TaskExecutorArgsReplace)
	payload := []byte(`{"args":[1],"kw":{}}`)

	out, err := events.ApplyPatch(trigger, payload, events.ContentTypeJSONPatch, []byte(`[
		{"op": "add", "path": "/kw/x", "value": 1},
		{"op": "replace", "path": "/args/0", "value": 2}
	]`))
	fmt.Println(string(out), err)

	// Removing a key that is not there does not apply.
	_, err = events.ApplyPatch(trigger, payload, events.ContentTypeJSONPatch,
		[]byte(`[{"op": "remove", "path": "/kw/missing"}]`))
	fmt.Println(errors.Is(err, events.ErrBadPatch))
	// Output:
	// {"args":[2],"kw":{"x":1}} <nil>
	// true
}

// Facts, invocations and patches travel as CloudEvents in binary mode: the
// attributes are NATS headers, the data is the message body.
func ExampleEvent_Encode() {
	e := events.Event{
		ID:              "t1:1:0:storage_add:0",
		Source:          "qtasks/node-1",
		Type:            events.TypeTriggerPrefix + events.StorageAdd,
		DataContentType: events.ContentTypeJSON,
		Data:            []byte(`{"input":{}}`),
		TaskID:          "t1",
		Trigger:         events.StorageAdd,
		Attempt:         1,
	}
	h := events.Headers{}
	e.Encode(h)
	fmt.Println(h["ce-type"], h["ce-taskid"], h["ce-attempt"], h["content-type"])

	back, err := events.Decode(h, e.Data)
	fmt.Println(back.Trigger, back.Attempt, err)
	// Output:
	// [io.qtasks.trigger.storage_add] [t1] [1] [application/json]
	// storage_add 1 <nil>
}
