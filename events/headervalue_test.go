package events

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// TestHeaderValueBinding checks header values against the CloudEvents NATS
// protocol binding, §3.1.3.2 "NATS Header Values": space, double quote,
// percent and everything outside printable ASCII (U+0021-U+007E) is
// percent-encoded from its UTF-8 bytes, upper-case hex; decoding takes
// lower-case hex and needless escapes, unquotes an RFC 7230 quoted-string,
// and rejects escapes that decode to invalid UTF-8.
func TestHeaderValueBinding(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		// The binding's own example.
		{"Euro € 😀", "Euro%20%E2%82%AC%20%F0%9F%98%80"},
		{" ", "%20"},
		{`"`, "%22"},
		{"%", "%25"},
		{"100%", "100%25"},
		{"a\tb\r\nc\x00\x7f", "a%09b%0D%0Ac%00%7F"},
		{"\u0085", "%C2%85"}, // a C1 control
		{"é", "%C3%A9"},
		// Printable ASCII other than space, " and % is written as is.
		{"!#$&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~", "!#$&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~"},
		{"", ""},
	} {
		got := EncodeHeaderValue(c.in)
		require.Equal(t, c.want, got, "encoding %q", c.in)
		back, err := DecodeHeaderValue(got)
		require.NoError(t, err, "decoding %q", got)
		require.Equal(t, c.in, back)
	}

	// Invalid UTF-8 cannot be a CloudEvents string: it is written as U+FFFD.
	require.Equal(t, "a%EF%BF%BDb", EncodeHeaderValue("a\xffb"))

	for _, c := range []struct{ in, want string }{
		{"%e2%82%ac", "€"},         // lower-case hex
		{"%41%42c", "ABc"},         // needless escapes
		{`"a b"`, "a b"},           // a quoted-string (older senders)
		{`"a\"b\\c"`, `a"b\c`},     // with quoted-pairs
		{`"50%25"`, "50%"},         // unquoted, then percent-decoded once
		{"%2541", "%41"},           // one round of decoding only
		{`"a"b"`, `"a"b"`},         // not one quoted-string: as is
		{`"a\"`, `"a\"`},           // unterminated: as is
		{`"`, `"`},                 // a lone quote: as is
		{"x\"y", "x\"y"},           // a quote inside: as is
		{"100% sure", "100% sure"}, // v1: % not followed by two hex digits is kept
		{"50%", "50%"},
		{"5%z1", "5%z1"},
		{"%4", "%4"},
		{"héllo wörld", "héllo wörld"}, // v1: verbatim UTF-8 is kept
	} {
		got, err := DecodeHeaderValue(c.in)
		require.NoError(t, err, "decoding %q", c.in)
		require.Equal(t, c.want, got, "decoding %q", c.in)
	}

	for _, bad := range []string{
		"%C0%A0",    // overlong encoding of U+0020 (the binding's example)
		"%FF",       // not UTF-8
		"%E2%82",    // truncated sequence
		"%ED%A0%80", // a surrogate
		"a\xffb",    // raw bytes that are not UTF-8
	} {
		_, err := DecodeHeaderValue(bad)
		require.Error(t, err, "decoding %q", bad)
	}
}

// TestHeaderValuesOnTheWire: Encode writes every ce- value percent-encoded
// and Decode reads it back; content-type, a media type, is not a ce- value.
func TestHeaderValuesOnTheWire(t *testing.T) {
	t.Parallel()
	e := patchEvent()
	e.TaskName = `50%off "deal" é`
	e.PluginError = "line one\nline two: 100% wrong"
	e.PluginVersion = "1.0 beta"
	e.DataContentType = ContentTypeMergePatch + "; charset=utf-8"
	h := encode(e)
	require.Equal(t, []string{"50%25off%20%22deal%22%20%C3%A9"}, h[hTaskName])
	require.Equal(t, []string{"line%20one%0Aline%20two:%20100%25%20wrong"}, h[hPluginError])
	require.Equal(t, []string{"1.0%20beta"}, h[hPluginVersion])
	require.Equal(t, []string{ContentTypeMergePatch + "; charset=utf-8"}, h[HeaderContentType])
	for k, vs := range h {
		if k == HeaderContentType {
			continue
		}
		for i := 0; i < len(vs[0]); i++ {
			c := vs[0][i]
			require.True(t, c > ' ' && c < 0x7f && c != '"', "%s: byte %q written raw in %q", k, c, vs[0])
		}
	}
	got, err := Decode(h, e.Data)
	require.NoError(t, err)
	require.Equal(t, e, got)

	// A v1 value, written verbatim, reads as it did.
	h[hTaskName] = []string{"50%off"}
	h[hPluginError] = []string{"100% wrong"}
	got, err = Decode(h, e.Data)
	require.NoError(t, err)
	require.Equal(t, "50%off", got.TaskName)
	require.Equal(t, "100% wrong", got.PluginError)

	// An escape that is not UTF-8 makes the event invalid, naming the header.
	h[hPluginError] = []string{"%C0%A0"}
	_, err = Decode(h, e.Data)
	require.ErrorIs(t, err, ErrInvalidEvent)
	require.ErrorContains(t, err, hPluginError)

	// HeaderValue decodes as Decode does.
	require.Equal(t, "50%off", HeaderValue(Headers{hTaskName: {"50%25off"}}, hTaskName))
}

// FuzzHeaderValue: whatever a string, its encoding is printable ASCII
// without space, double quote or a bare percent, and decodes back to it
// (invalid UTF-8 to U+FFFD); decoding never panics, and what it accepts is
// valid UTF-8.
func FuzzHeaderValue(f *testing.F) {
	for _, s := range []string{"", "plain", "Euro € 😀", "100%", "%41", `"q"`, "a\xffb", "\x00\r\n\t", "%C0%A0", `"a\"b"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := EncodeHeaderValue(s)
		for i := 0; i < len(enc); i++ {
			c := enc[i]
			require.True(t, c > ' ' && c < 0x7f && c != '"', "byte %q in %q", c, enc)
			if c == '%' {
				require.True(t, i+2 < len(enc) && isHex(enc[i+1]) && isHex(enc[i+2]), "bare %% in %q", enc)
			}
		}
		dec, err := DecodeHeaderValue(enc)
		require.NoError(t, err, "decoding %q", enc)
		require.Equal(t, strings.ToValidUTF8(s, "\uFFFD"), dec)

		// Any input: no panic; an accepted value is UTF-8.
		if v, err := DecodeHeaderValue(s); err == nil {
			require.True(t, utf8.ValidString(v), "%q decoded to invalid UTF-8 %q", s, v)
		} else {
			require.ErrorIs(t, err, ErrInvalidEvent)
		}
	})
}
