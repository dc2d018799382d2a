package jsondiff_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/internal/jsondiff"
)

// op renders an operation compactly for the tables.
func op(o jsondiff.Op) string {
	switch o.Op {
	case jsondiff.OpAdd:
		return "+" + o.Path + "=" + string(o.New)
	case jsondiff.OpRemove:
		return "-" + o.Path + "=" + string(o.Old)
	}
	return "~" + o.Path + "=" + string(o.Old) + ">" + string(o.New)
}

func TestDiff(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name          string
		a, b          string
		leaves, patch []string
	}{
		{"Equal", `{"a":1,"b":[1,{"c":null}]}`, ` {"b":[1,{"c":null}],"a":1}`, nil, nil},
		{"NumbersByValue", `{"a":1,"b":[2e0]}`, `{"a":1.0,"b":[2]}`, nil, nil},
		{"Replace", `{"a":1}`, `{"a":"1"}`, []string{`~/a=1>"1"`}, []string{`~/a=1>"1"`}},
		{
			"KeyOrder", `{"a":1,"c":true,"d":1}`, `{"a":1,"b":null,"d":2}`,
			[]string{`+/b=null`, `-/c=true`, `~/d=1>2`},
			[]string{`-/c=true`, `~/d=1>2`, `+/b=null`},
		},
		{"Nested", `{"kw":{"x":{"y":"1"}}}`, `{"kw":{"x":{"y":"2"}}}`, []string{`~/kw/x/y="1">"2"`}, []string{`~/kw/x/y="1">"2"`}},
		{"ArraySameLength", `[1,2,3]`, `[1,5,3]`, []string{`~/1=2>5`}, []string{`~/1=2>5`}},
		{
			"ArrayShrinks", `{"a":[1,2,3,4]}`, `{"a":[1,5]}`,
			[]string{`~/a=[1,2,3,4]>[1,5]`},
			[]string{`~/a/1=2>5`, `-/a/3=4`, `-/a/2=3`},
		},
		{"ArrayGrows", `[1]`, `[1,[2],3]`, []string{`~=[1]>[1,[2],3]`}, []string{`+/1=[2]`, `+/2=3`}},
		{"TypeChange", `{"a":{"b":1}}`, `{"a":[1]}`, []string{`~/a={"b":1}>[1]`}, []string{`~/a={"b":1}>[1]`}},
		{"NullAndMissing", `{"a":null}`, `{}`, []string{`-/a=null`}, []string{`-/a=null`}},
		{"EscapedKeys", `{"a/b":1,"m~n":1}`, `{"a/b":2,"m~n":2}`, []string{`~/a~1b=1>2`, `~/m~0n=1>2`}, []string{`~/a~1b=1>2`, `~/m~0n=1>2`}},
		{"Root", `1`, `"x"`, []string{`~=1>"x"`}, []string{`~=1>"x"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			for _, s := range []struct {
				style jsondiff.Style
				want  []string
			}{{jsondiff.Leaves, c.leaves}, {jsondiff.Patch, c.patch}} {
				ops, err := jsondiff.Diff([]byte(c.a), []byte(c.b), s.style)
				require.NoError(t, err)
				var got []string
				for _, o := range ops {
					got = append(got, op(o))
				}
				require.Equal(t, s.want, got, "style %d", s.style)
			}
		})
	}
	for _, bad := range [][2]string{{`{`, `{}`}, {`{}`, `[1,`}, {``, `1`}} {
		_, err := jsondiff.Diff([]byte(bad[0]), []byte(bad[1]), jsondiff.Leaves)
		require.Error(t, err, "%q", bad)
	}
}

func TestEqual(t *testing.T) {
	t.Parallel()
	dec := func(s string) any {
		v, err := jsondiff.Decode([]byte(s))
		require.NoError(t, err)
		return v
	}
	require.True(t, jsondiff.Equal(dec(`{"a":[1,true,null,"x"]}`), dec(`{"a":[1.00,true,null,"x"]}`)))
	for _, pair := range [][2]string{
		{`1`, `2`},
		{`1`, `"1"`},
		{`null`, `false`},
		{`[1]`, `[1,1]`},
		{`{"a":1}`, `{"b":1}`},
		{`{"a":1}`, `{"a":1,"b":1}`},
		{`{"a":1}`, `[1]`},
		{`"x"`, `"y"`},
	} {
		require.False(t, jsondiff.Equal(dec(pair[0]), dec(pair[1])), "%s = %s", pair[0], pair[1])
	}
}

func TestEscape(t *testing.T) {
	t.Parallel()
	require.Equal(t, "a", jsondiff.Escape("a"))
	require.Equal(t, "a~1b~0c~01", jsondiff.Escape("a/b~c~1"))
}
