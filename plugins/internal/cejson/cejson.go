// Package cejson converts qtasks events to the CloudEvents SDK's form, for
// the newline-delimited CloudEvents JSON that the audit sink writes and the
// replay export reads and writes.
package cejson

import (
	"strconv"
	"strings"

	ce "github.com/cloudevents/sdk-go/v2/event"

	"github.com/qtasks/qtasks-go/events"
)

// ExtStreamSeq is the extension attribute holding an event's stream
// sequence in a file.
const ExtStreamSeq = "streamseq"

// Attributes returns the SDK event carrying ev's attributes, one for one
// with the headers of the NATS binding (extensions as strings), and
// streamseq when seq > 0. The data is left for the caller, whose rules for
// it differ.
func Attributes(ev *events.Event, seq uint64) ce.Event {
	h := events.Headers{}
	ev.Encode(h)
	c := ce.New()
	c.SetID(ev.ID)
	c.SetSource(ev.Source)
	c.SetType(ev.Type)
	if ev.Subject != "" {
		c.SetSubject(ev.Subject)
	}
	if !ev.Time.IsZero() {
		c.SetTime(ev.Time)
	}
	if ev.DataContentType != "" {
		c.SetDataContentType(ev.DataContentType)
	}
	for k, v := range h {
		name, ok := strings.CutPrefix(k, events.HeaderPrefix)
		if !ok || len(v) == 0 {
			continue
		}
		switch name {
		case "specversion", "id", "source", "type", "subject", "time":
			continue
		}
		// The header holds the value percent-encoded (the NATS binding);
		// the JSON format holds it as it is.
		val, err := events.DecodeHeaderValue(v[0])
		if err != nil {
			val = v[0] // Encode wrote it: unreachable
		}
		c.SetExtension(name, val)
	}
	if seq > 0 {
		c.SetExtension(ExtStreamSeq, strconv.FormatUint(seq, 10))
	}
	return c
}
