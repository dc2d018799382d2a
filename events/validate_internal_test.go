package events

import (
	"mime"
	"testing"
)

// The content types Validate does not parse are ones mime.ParseMediaType
// accepts. (Its other fast path, plainSource, has TestPlainSource.)
func TestValidateFastPaths(t *testing.T) {
	for _, ct := range []string{ContentTypeJSON, ContentTypeJSONPatch, ContentTypeMergePatch} {
		if !plainContentType(ct) {
			t.Errorf("plainContentType(%q) is false", ct)
		}
		if _, _, err := mime.ParseMediaType(ct); err != nil {
			t.Errorf("%s: %v", ct, err)
		}
	}
}
