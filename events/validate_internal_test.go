package events

import (
	"mime"
	"net/url"
	"testing"
)

// The fast paths of Validate accept only what the parsers they skip accept.
func TestValidateFastPaths(t *testing.T) {
	sources := []string{
		"qtasks/vm-6236-53d7eec8", "qtasks/plugin/scale", "a", "/", "./x", "~u/_v.w", "",
		"//host/x", "a:b", "1a:b", "%zz", "x y", "a\x00b", "a\x7f", "http://x/y", "qtasks/é",
	}
	for _, s := range sources {
		if plainSource(s) {
			if _, err := url.Parse(s); err != nil {
				t.Errorf("plainSource(%q) is true; url.Parse: %v", s, err)
			}
		}
	}
	for _, s := range []string{"qtasks/vm-1", "qtasks/plugin/scale"} {
		if !plainSource(s) {
			t.Errorf("plainSource(%q) is false", s)
		}
	}
	for _, ct := range []string{ContentTypeJSON, ContentTypeJSONPatch, ContentTypeMergePatch} {
		if !plainContentType(ct) {
			t.Errorf("plainContentType(%q) is false", ct)
		}
		if _, _, err := mime.ParseMediaType(ct); err != nil {
			t.Errorf("%s: %v", ct, err)
		}
	}
}

func FuzzPlainSource(f *testing.F) {
	f.Add("qtasks/vm-1")
	f.Add("//x")
	f.Fuzz(func(t *testing.T, s string) {
		if plainSource(s) {
			if _, err := url.Parse(s); err != nil {
				t.Fatalf("plainSource(%q) is true; url.Parse: %v", s, err)
			}
		}
	})
}
