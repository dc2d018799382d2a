package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// CanonicalJSON re-encodes a JSON value with object keys sorted and no
// insignificant space, numbers kept as written: two encodings of one
// value (a struct's field order, a map's, spaces) give the same bytes.
func CanonicalJSON(v json.RawMessage) (json.RawMessage, error) {
	d := json.NewDecoder(bytes.NewReader(v))
	d.UseNumber()
	var x any
	if err := d.Decode(&x); err != nil {
		return nil, fmt.Errorf("canonical JSON: %w", err)
	}
	b, err := json.Marshal(x) // maps encode with sorted keys
	if err != nil {
		return nil, fmt.Errorf("canonical JSON: %w", err)
	}
	return b, nil
}

// digestHexLen is the length of each part's hash in a submit digest: 64
// bits, ample to tell a caller's two submissions of one key apart.
const digestHexLen = 16

// SubmitDigest is the Task.SubmitDigest of a submission of task name to
// queue with args and kw: each of SubmitParts, hashed, as
// "task_name=<hex>;queue=<hex>;args=<hex>;kw=<hex>". args and kw are
// hashed in canonical form (CanonicalJSON), so key order and spacing do not
// count; values do, numbers as written (1 and 1.0 differ).
func SubmitDigest(name, queue string, args, kw json.RawMessage) (string, error) {
	ca, err := CanonicalJSON(args)
	if err != nil {
		return "", fmt.Errorf("args: %w", err)
	}
	ck, err := CanonicalJSON(kw)
	if err != nil {
		return "", fmt.Errorf("kw: %w", err)
	}
	var b strings.Builder
	for i, v := range [][]byte{[]byte(name), []byte(queue), ca, ck} {
		if i > 0 {
			b.WriteByte(';')
		}
		h := sha256.Sum256(v)
		b.WriteString(SubmitParts[i])
		b.WriteByte('=')
		b.WriteString(hex.EncodeToString(h[:digestHexLen/2]))
	}
	return b.String(), nil
}

// DigestDiffers lists the parts in which two submit digests differ, in
// SubmitParts order; nil when they are equal or either is empty (a record
// written before digests, which cannot be compared).
func DigestDiffers(a, b string) []string {
	if a == "" || b == "" || a == b {
		return nil
	}
	pa, pb := strings.Split(a, ";"), strings.Split(b, ";")
	var out []string
	for i, part := range SubmitParts {
		if i >= len(pa) || i >= len(pb) || pa[i] != pb[i] {
			out = append(out, part)
		}
	}
	return out
}
