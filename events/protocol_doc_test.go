package events

import (
	"crypto/sha256"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The tests of this file hold docs/PROTOCOL.md to the code it describes:
// a plugin author in another language has only the page, so a table that
// drifts from the catalog misleads them where no compiler can.

const protocolPath = "../docs/PROTOCOL.md"

// protocolSection returns the text of PROTOCOL.md from the heading that
// starts with heading up to the next heading of the same or a higher level.
func protocolSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile(protocolPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "\n"+heading)
	if start < 0 {
		t.Fatalf("%s: no heading %q", protocolPath, heading)
	}
	level := strings.Index(heading, " ") // the number of '#'
	rest := doc[start+1+len(heading):]
	end, fenced := 0, false
	for line := range strings.SplitAfterSeq(rest, "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		if h := strings.Index(line, " "); !fenced && h > 0 && h <= level && strings.Trim(line[:h], "#") == "" {
			break
		}
		end += len(line)
	}
	return rest[:end]
}

// tableRows returns the cells of the rows of the markdown tables in s,
// header and separator rows left out, each cell trimmed.
func tableRows(s string) [][]string {
	var rows [][]string
	for line := range strings.SplitSeq(s, "\n") {
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	return rows
}

// codeSpans returns the `…` spans of s, without their backticks.
func codeSpans(s string) []string {
	var out []string
	for _, m := range regexp.MustCompile("`([^`]*)`").FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestProtocolCatalogTable checks §6's table against Catalog(): one row per
// trigger, in catalog order, with its position, component, scope,
// returnability, allowed paths, lifecycle mark and note.
func TestProtocolCatalogTable(t *testing.T) {
	t.Parallel()
	var rows [][]string
	for _, r := range tableRows(protocolSection(t, "## 6. The trigger catalog")) {
		if len(r) == 8 && r[1] != "Trigger" {
			rows = append(rows, r)
		}
	}
	cat := Catalog()
	if got, want := len(rows), len(cat); got != want {
		t.Errorf("§6 lists %d triggers, the catalog %d", got, want)
	}
	for i, tr := range cat {
		if i >= len(rows) {
			break
		}
		r := rows[i]
		if got, want := r[1], "`"+tr.Name+"`"; got != want {
			t.Errorf("§6 row %d is %s, the catalog's trigger %d is %s", i+1, got, i+1, want)
			continue
		}
		order := ""
		if tr.Order > 0 {
			order = strconv.Itoa(tr.Order)
		}
		returnable := "no"
		if tr.Returnable {
			returnable = "**yes**"
		}
		paths := "—"
		if len(tr.Paths) > 0 {
			paths = "`" + strings.Join(tr.Paths, "` `") + "`"
		}
		// The page is PROTOCOL.md: its notes name its sections alone.
		note := strings.ReplaceAll(tr.Note, "PROTOCOL.md §", "§")
		if tr.Lifecycle {
			note = strings.TrimSpace("Lifecycle fact. " + note)
		}
		for _, c := range []struct{ col, got, want string }{
			{"#", r[0], order},
			{"Component", r[2], string(tr.Component)},
			{"Scope", r[3], string(tr.Scope)},
			{"Returnable", r[4], returnable},
			{"Patch may touch", r[5], paths},
			{"Notes", r[7], note},
		} {
			if c.got != c.want {
				t.Errorf("§6 %s, %s: the page says %q, the catalog %q", tr.Name, c.col, c.got, c.want)
			}
		}
		if tr.Scope == ScopeNone && r[6] != "—" {
			t.Errorf("§6 %s: a trigger never fired has no payload keys, the page lists %s", tr.Name, r[6])
		}
	}
}

// TestProtocolPhases checks §4.4's table of phases against Phases, and
// that each trigger it names travels in the phase the table says by its
// # (the phase is where the executor's code is, executor/phasebuf.go: this
// checks the page against itself and the catalog's positions; the
// executor's own test of where each fact goes is TestPhaseMessagesAsDocumented).
func TestProtocolPhases(t *testing.T) {
	t.Parallel()
	sec := protocolSection(t, "### 4.4 Phase messages")
	var phases []Phase
	for _, r := range tableRows(sec) {
		if len(r) == 3 && r[0] != "Phase" {
			phases = append(phases, Phase(strings.Trim(r[0], "`")))
		}
	}
	if !slices.Equal(phases, Phases) {
		t.Errorf("§4.4 lists the phases %v, events.Phases is %v", phases, Phases)
	}
	// The Facts column names every position of §6 from 1 to 29 in some
	// phase, the lifecycle triggers (which travel alone) in parentheses,
	// and the final fact (28) as alone.
	named, alone := map[int]bool{}, map[int]bool{}
	for _, r := range tableRows(sec) {
		if len(r) != 3 || r[0] == "Phase" {
			continue
		}
		facts := r[2]
		if i := strings.IndexAny(facts, ":"); i >= 0 {
			facts = facts[:i]
		}
		facts = strings.TrimSuffix(strings.Split(facts, ", after")[0], ",")
		for _, m := range regexp.MustCompile(`(\()?(\d+)(?:–(\d+))?(\))?`).FindAllStringSubmatch(facts, -1) {
			lo, _ := strconv.Atoi(m[2])
			hi := lo
			if m[3] != "" {
				hi, _ = strconv.Atoi(m[3])
			}
			for n := lo; n <= hi; n++ {
				named[n] = true
				if m[1] != "" {
					alone[n] = true
				}
			}
		}
	}
	if !strings.Contains(sec, "(28, alone)") {
		t.Errorf("§4.4 no longer says the final fact (28) travels alone")
	}
	named[28], alone[28] = true, true
	for _, tr := range Catalog() {
		if tr.Scope != ScopeTask {
			continue
		}
		if !named[tr.Order] {
			t.Errorf("§4.4 puts %s (#%d) in no phase", tr.Name, tr.Order)
		}
		if alone[tr.Order] != tr.Lifecycle {
			t.Errorf("§4.4 marks %s (#%d) as travelling alone: %v; it is a lifecycle trigger: %v", tr.Name, tr.Order, alone[tr.Order], tr.Lifecycle)
		}
	}
	// §3's subject row names the same phases.
	subj := protocolSection(t, "## 3. Subjects")
	for _, p := range Phases {
		if !strings.Contains(subj, "`"+string(p)+"`") {
			t.Errorf("§3 does not name the phase %s", p)
		}
	}
}

// TestProtocolSubjects checks that §3's table names every kind of subject
// ParseSubject reads (the kinds of ParsedSubject.Kind), and §2's stream row
// every subject root of QTASKS_EVENTS.
func TestProtocolSubjects(t *testing.T) {
	t.Parallel()
	sec := protocolSection(t, "## 3. Subjects")
	kinds := []string{"trigger", "phase", "invoke", "patch", "dead", "alert", "run", "seal", "operator", "duplicate", "schedule", "state", "chain", "limit"}
	for _, k := range kinds {
		if !strings.Contains(sec, "`qtasks."+k+".") {
			t.Errorf("§3 names no subject qtasks.%s.…", k)
		}
		if _, err := ParseSubject("qtasks." + k + ".x"); err != nil && k != "trigger" && k != "phase" && k != "invoke" && k != "patch" {
			t.Errorf("ParseSubject does not read the kind %s that this test lists: %v", k, err)
		}
	}
	streams := protocolSection(t, "## 2. Streams and buckets")
	for _, k := range kinds {
		if k == "run" {
			continue // QTASKS_TASKS
		}
		if !strings.Contains(streams, "`qtasks."+k+".>`") {
			t.Errorf("§2 does not list qtasks.%s.> among QTASKS_EVENTS's subjects", k)
		}
	}
}

// TestProtocolVersionDoc checks the version §16 and §8 state, and that the
// refusals §8 describes are CheckProtocol's.
func TestProtocolVersionDoc(t *testing.T) {
	t.Parallel()
	ver := protocolSection(t, "## 16. Versioning")
	if want := "**protocol version " + strconv.Itoa(ProtocolVersion) + "**"; !strings.Contains(ver, want) {
		t.Errorf("§16 does not say %s", want)
	}
	reg := protocolSection(t, "## 8. Registering a plugin")
	if want := "**`" + strconv.Itoa(ProtocolVersion) + "`**"; !strings.Contains(reg, want) {
		t.Errorf("§8's protocol field does not say %s", want)
	}
	for _, c := range []struct {
		version      int
		readsBatches bool
		ok           bool
	}{
		{ProtocolVersion, false, true},
		{ProtocolVersion, true, true},
		{2, false, true},
		{2, true, false},
		{0, false, false},
		{1, false, false},
		{4, false, false},
	} {
		if err := CheckProtocol(c.version, c.readsBatches); (err == nil) != c.ok {
			t.Errorf("CheckProtocol(%d, %v) = %v; §8 says accepted: %v", c.version, c.readsBatches, err, c.ok)
		}
	}
	// Every registration the page shows states the current version.
	for _, s := range []string{"## 13. Worked example", "## 14. Writing a plugin"} {
		for _, m := range regexp.MustCompile(`"?protocol"?: ?(\d+)`).FindAllStringSubmatch(protocolSection(t, s), -1) {
			if m[1] != strconv.Itoa(ProtocolVersion) {
				t.Errorf("%s shows a registration with protocol %s, not %d", s, m[1], ProtocolVersion)
			}
		}
	}
}

// TestProtocolPathTypes checks §6's table of the types of allowed paths
// against Trigger.PathType.
func TestProtocolPathTypes(t *testing.T) {
	t.Parallel()
	sec := protocolSection(t, "## 6. The trigger catalog")
	want := map[string]JSONType{}
	for _, tr := range Catalog() {
		for _, p := range tr.Paths {
			name := p[strings.LastIndex(p, "/")+1:]
			want[name] = tr.PathType(p)
		}
	}
	// How the page words each type.
	docType := map[JSONType]string{
		JSONAny: "any JSON value", JSONObject: "object, or `null`", JSONArray: "array, or `null`",
		JSONStringArray: "array of strings, or `null`", JSONString: "string", JSONInteger: "integer: ",
		JSONNonNegative: "integer ≥ 0", JSONStatus: "one of `" + strings.Join(Statuses(), "`, `") + "`",
	}
	seen := map[string]bool{}
	for _, r := range tableRows(sec) {
		if len(r) != 2 || r[0] == "Name" {
			continue
		}
		for _, name := range codeSpans(r[0]) {
			seen[name] = true
			typ, ok := want[name]
			if !ok {
				t.Errorf("§6 types a path %q that no trigger allows", name)
				continue
			}
			if !strings.HasPrefix(r[1], docType[typ]) {
				t.Errorf("§6 says %s is %q, PathType says %q", name, r[1], typ)
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("§6's table of path types leaves out %q", name)
		}
	}
}

// TestProtocolQuotedErrors checks the texts PROTOCOL.md quotes that events
// writes, against what it writes.
func TestProtocolQuotedErrors(t *testing.T) {
	t.Parallel()
	tr, _ := Lookup(TaskExecutorArgsReplace)
	_, err := ApplyPatch(tr, []byte(`{"args":[],"kw":{}}`), ContentTypeMergePatch, []byte(`{"kw":"x"}`))
	const quoted = `"/kw": kw must be an object (or null), not a string` // §9.3
	if err == nil || !strings.Contains(err.Error(), quoted) {
		t.Errorf("§9.3 quotes the reason %s; ApplyPatch says %v", quoted, err)
	}
	if !strings.Contains(protocolSection(t, "### 9.3 Patch rules"), "`"+quoted+"`") {
		t.Errorf("§9.3 no longer quotes %s", quoted)
	}
	failed := (&MutatorError{Plugin: "p", Trigger: "t", Outcome: OutcomeTimeout, Reason: "r"}).Error()
	if want := "plugin p failed on t (timeout): r"; failed != want { // §12.1
		t.Errorf("§12.1 says a failure reads %q, it reads %q", want, failed)
	}
}

// TestProtocolSealDigest computes §17.2's H(m) and D as a verifier in
// another language would, from the page's words alone (a raw header block,
// names before the first ':', leading blanks dropped from values, pairs
// sorted by name and then in line order), and compares them with MsgHash
// and SealDigest.
func TestProtocolSealDigest(t *testing.T) {
	t.Parallel()
	block := "NATS/1.0\r\nce-id: x:1\r\nNats-Msg-Id:\t id-1 \r\nce-id: second\r\n: dropped\r\nA-b:v\r\n\r\n"
	subject, body, seq := "qtasks.trigger.storage_add.default", []byte(`{"input":{}}`), uint64(42)

	type pair struct{ name, value string }
	var pairs []pair
	for _, line := range strings.Split(strings.TrimSuffix(block, "\r\n\r\n"), "\r\n")[1:] {
		name, value, _ := strings.Cut(line, ":")
		if name == "" {
			continue
		}
		pairs = append(pairs, pair{name, strings.TrimLeft(value, " \t")})
	}
	slices.SortStableFunc(pairs, func(a, b pair) int { return strings.Compare(a.name, b.name) })
	// Big-endian, written out as the page says (not encoding/binary, which
	// MsgHash uses).
	u64 := func(n uint64) []byte {
		b := make([]byte, 8)
		for i := range 8 {
			b[i] = byte(n >> (56 - 8*i) & 0xff)
		}
		return b
	}
	u32 := func(n int) []byte {
		return []byte{byte(n >> 24 & 0xff), byte(n >> 16 & 0xff), byte(n >> 8 & 0xff), byte(n & 0xff)}
	}
	lp := func(s []byte) []byte { return append(u32(len(s)), s...) }
	m := append([]byte("qtasks-msg-v1\x00"), u64(seq)...)
	m = append(m, lp([]byte(subject))...)
	m = append(m, u32(len(pairs))...)
	for _, p := range pairs {
		m = append(m, lp([]byte(p.name))...)
		m = append(m, lp([]byte(p.value))...)
	}
	m = append(m, lp(body)...)
	want := sha256Sum(m)

	h := Headers{}
	for _, p := range pairs {
		h[p.name] = append(h[p.name], p.value)
	}
	if got := MsgHash(seq, subject, h, body); got != want {
		t.Fatalf("MsgHash differs from §17.2's H(m)")
	}

	var prev [32]byte
	prev[0] = 7
	d := append([]byte("qtasks-seal-v1\x00"), prev[:]...)
	for _, n := range []uint64{3, 4, 42, 1} {
		d = append(d, u64(n)...)
	}
	d = append(d, want[:]...)
	if got := SealDigest(prev, 3, 4, 42, [][32]byte{want}); got != sha256Sum(d) {
		t.Fatalf("SealDigest differs from §17.2's D")
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// TestProtocolLimits checks the values §15 gives events' limits against the
// constants it names.
func TestProtocolLimits(t *testing.T) {
	t.Parallel()
	rows := map[string]string{} // the Where cell -> the Value cell
	for _, r := range tableRows(protocolSection(t, "## 15. Limits")) {
		if len(r) == 3 {
			rows[r[2]] = r[1]
		}
	}
	for _, c := range []struct{ where, value string }{
		{"`events.MaxDataSize`", "≤ 900 KiB (921 600 bytes)"},
		{"`events.MaxPayloadSize`", "≤ " + strconv.Itoa(MaxPayloadSize>>10) + " KiB"},
		{"`events.MaxPatchSize`", "≤ " + strconv.Itoa(MaxPatchSize>>10) + " KiB (" + strings.ReplaceAll(strconv.Itoa(MaxPatchSize), "262144", "262 144") + " bytes)"},
		{"`events.MaxPatchDepth`", "≤ " + strconv.Itoa(MaxPatchDepth) + " levels"},
		{"`events.DefaultPluginTimeoutMS`", strconv.Itoa(DefaultPluginTimeoutMS/1000) + " s"},
		{"`events.MaxChainSteps`", "1–" + strconv.Itoa(MaxChainSteps)},
		{"`events.MaxStateValueSize`, `events.MaxStateValueInline`", "JSON, ≤ " + strconv.Itoa(MaxStateValueSize>>10) + " KiB; recorded in its event when ≤ " + strconv.Itoa(MaxStateValueInline>>10) + " KiB"},
		{"`events.MaxSealMessages`, `events.MaxSealGaps`", "≤ 10 000; gaps (ranges of absent sequences) one seal records ≤ 1 000"},
		{"`events.DelayTolerance`", DelayTolerance.String()},
		{"`events.MinScheduleInterval`", "≥ " + strings.TrimSuffix(MinScheduleInterval.String(), "s") + " s"},
		{"`events.ScheduleLateness`", "≤ " + strings.TrimSuffix(ScheduleLateness.String(), "s") + " s late"},
		{"`events.MaxCatchUp`, `events.DefaultCatchUpMax`", "1–" + strconv.Itoa(MaxCatchUp) + " (default " + strconv.Itoa(DefaultCatchUpMax) + ")"},
	} {
		v, ok := rows[c.where]
		if !ok {
			t.Errorf("§15 has no row for %s", c.where)
			continue
		}
		if !strings.HasPrefix(strings.ReplaceAll(v, "2 s on", "2s on"), c.value) {
			t.Errorf("§15 %s: the page says %q, the code %q", c.where, v, c.value)
		}
	}
	if MaxDataSize != 921600 || MaxSealMessages != 10000 || MaxSealGaps != 1000 {
		t.Errorf("a limit §15 writes out changed: MaxDataSize %d, MaxSealMessages %d, MaxSealGaps %d", MaxDataSize, MaxSealMessages, MaxSealGaps)
	}
}

// TestProtocolHeaderValueExamples checks the examples §4 gives of header
// values, encoded and decoded.
func TestProtocolHeaderValueExamples(t *testing.T) {
	t.Parallel()
	sec := protocolSection(t, "## 4. Events: CloudEvents in binary mode")
	for _, c := range []struct{ plain, wire string }{
		{"Euro € 😀", "Euro%20%E2%82%AC%20%F0%9F%98%80"},
		{"100%", "100%25"},
		{"\n", "%0A"},
	} {
		if got := EncodeHeaderValue(c.plain); got != c.wire {
			t.Errorf("§4: %q is written %s; EncodeHeaderValue writes %s", c.plain, c.wire, got)
		}
		if !strings.Contains(sec, "`"+c.wire+"`") {
			t.Errorf("§4 no longer shows %s", c.wire)
		}
	}
	for _, c := range []struct{ wire, plain string }{
		{"%2541", "%41"}, {"100% sure", "100% sure"}, {`"a b"`, "a b"}, {`"a\"b"`, `a"b`},
	} {
		if got, err := DecodeHeaderValue(c.wire); err != nil || got != c.plain {
			t.Errorf("§4: %s reads %q; DecodeHeaderValue reads %q, %v", c.wire, c.plain, got, err)
		}
	}
	for _, bad := range []string{"%FF", "%C0%A0"} {
		if _, err := DecodeHeaderValue(bad); err == nil {
			t.Errorf("§4: %s makes the event invalid; DecodeHeaderValue takes it", bad)
		}
	}
}
