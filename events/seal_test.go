package events_test

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
)

type logMsg struct {
	seq     uint64
	subject string
	h       events.Headers
	data    []byte
}

// sealEvery is how many facts sealedLog writes between seals.
const sealEvery = 5

// sealedLog writes n facts with a seal after every sealEvery of them, as the
// sealer does: each seal covers everything since the previous seal's range,
// the previous seal included.
func sealedLog(t *testing.T, n int, skip ...uint64) []logMsg {
	t.Helper()
	var log []logMsg
	var prevSeq uint64
	var prev [32]byte
	first := uint64(1)
	seq := uint64(0)
	seal := func() {
		var msgs []events.SealedMsg
		for _, m := range log {
			if m.seq >= first {
				msgs = append(msgs, events.SealedMsg{Seq: m.seq, Hash: events.MsgHash(m.seq, m.subject, m.h, m.data)})
			}
		}
		s, err := events.NewSeal(prevSeq, prev, first, seq, msgs)
		require.NoError(t, err)
		seq++
		log = append(log, sealMsg(t, seq, s))
		d, _ := hex.DecodeString(s.Digest)
		copy(prev[:], d)
		prevSeq, first = seq, s.Last+1
	}
	for i := range n {
		seq++
		h := events.Headers{}
		ev := events.Event{ID: fmt.Sprint("e", i), Source: "qtasks/test", Type: events.TypeTask, Time: time.Unix(int64(i), 0)}
		ev.Encode(h)
		m := logMsg{seq: seq, subject: "qtasks.trigger.storage_add.default", h: h, data: []byte(fmt.Sprintf(`{"n":%d}`, i))}
		if !slices.Contains(skip, seq) {
			log = append(log, m)
		}
		if (i+1)%sealEvery == 0 {
			seal()
		}
	}
	return log
}

func sealMsg(t *testing.T, seq uint64, s events.Seal) logMsg {
	t.Helper()
	data, err := json.Marshal(s)
	require.NoError(t, err)
	h := events.Headers{}
	ev := events.Event{
		ID: fmt.Sprint("seal-", seq), Source: "qtasks/test", Type: events.TypeSeal, Time: time.Unix(1, 0),
		DataContentType: events.ContentTypeJSON,
	}
	ev.Encode(h)
	return logMsg{seq: seq, subject: events.SealSubject("n1"), h: h, data: data}
}

func verify(log []logMsg) events.VerifyReport {
	v := events.Verifier{StreamFirst: 1}
	if len(log) > 0 {
		v.StreamFirst = log[0].seq
	}
	for _, m := range log {
		v.Add(m.seq, m.subject, m.h, m.data)
	}
	return v.Report()
}

func TestVerifierCleanLog(t *testing.T) {
	t.Parallel()
	log := sealedLog(t, 25) // 5 seals; the last one covers 23..28
	r := verify(log)
	require.Empty(t, r.Findings)
	require.Equal(t, 5, r.Seals)
	require.Equal(t, uint64(1), r.Start)
	require.Equal(t, log[len(log)-1].seq-1, r.Through)
	require.Zero(t, r.Unsealed) // the last seal is after its range, proven by its digest
}

func TestVerifierFindsTampering(t *testing.T) {
	t.Parallel()
	without := func(log []logMsg, seq uint64) []logMsg {
		var out []logMsg
		for _, m := range log {
			if m.seq != seq {
				out = append(out, m)
			}
		}
		return out
	}
	tests := []struct {
		name   string
		tamper func([]logMsg) []logMsg
		seq    uint64
		kind   string
	}{
		{"deleted", func(l []logMsg) []logMsg { return without(l, 8) }, 8, events.FindingDeleted},
		{"altered data", func(l []logMsg) []logMsg { l[9].data = []byte(`{"n":99}`); return l }, 10, events.FindingAltered},
		{"altered header", func(l []logMsg) []logMsg {
			h := maps.Clone(l[2].h)
			h["ce-source"] = []string{"qtasks/other"}
			l[2].h = h
			return l
		}, 3, events.FindingAltered},
		{"a seal deleted", func(l []logMsg) []logMsg { return without(l, 12) }, 12, events.FindingDeleted},
		{"a seal altered", func(l []logMsg) []logMsg {
			l[5].data = []byte(`{"nonsense":1}`) // the first seal, at 6
			return l
		}, 6, events.FindingInserted},
		{"a forged seal", func(l []logMsg) []logMsg {
			s, err := events.NewSeal(0, [32]byte{}, 1, 3, nil)
			require.NoError(t, err)
			return append(l, sealMsg(t, l[len(l)-1].seq+1, s))
		}, 31, events.FindingInserted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			log := sealedLog(t, 25)
			r := verify(tt.tamper(log))
			require.NotEmpty(t, r.Findings)
			require.Equal(t, tt.seq, r.Findings[0].Seq, "%+v", r.Findings)
			require.Equal(t, tt.kind, r.Findings[0].Kind, "%+v", r.Findings)
		})
	}
}

func TestVerifierGapsAndInsertion(t *testing.T) {
	t.Parallel()
	log := sealedLog(t, 10, 3) // 3 was deleted before the seal at 6 was made
	r := verify(log)
	require.Len(t, r.Findings, 1)
	require.Equal(t, events.Finding{Seq: 3, Kind: events.FindingGap, Seal: 6, Detail: "sequences 3 to 3 were absent when the seal was made"}, r.Findings[0])

	// A message put back where the seal recorded none.
	h := events.Headers{}
	ev := events.Event{ID: "forged", Source: "qtasks/test", Type: events.TypeTask}
	ev.Encode(h)
	log = slices.Insert(log, 2, logMsg{seq: 3, subject: "qtasks.trigger.storage_add.default", h: h, data: []byte(`{}`)})
	r = verify(log)
	require.Equal(t, uint64(3), r.Findings[0].Seq)
	require.Equal(t, events.FindingInserted, r.Findings[0].Kind)
}

func TestVerifierHeadAged(t *testing.T) {
	t.Parallel()
	log := sealedLog(t, 25)
	// The first 8 messages aged out: the seal at 12 covers 6..11, not all
	// present; verification starts at the next one.
	aged := log[8:]
	v := events.Verifier{StreamFirst: aged[0].seq, HeadMayAge: true}
	for _, m := range aged {
		v.Add(m.seq, m.subject, m.h, m.data)
	}
	r := v.Report()
	require.Empty(t, r.Findings)
	require.Equal(t, uint64(12), r.Start)
	// Without limits, the same head is a deletion.
	r = verify(aged)
	require.NotEmpty(t, r.Findings)
	require.Equal(t, uint64(6), r.Findings[0].Seq) // the seal the seal at 12 continues
	require.Equal(t, events.FindingDeleted, r.Findings[0].Kind)
}

// FuzzDecodeSeal: any seal data either fails to decode or verifies without
// panicking or looping, wherever it sits in a log.
func FuzzDecodeSeal(f *testing.F) {
	good, err := events.NewSeal(0, [32]byte{}, 1, 4, []events.SealedMsg{{Seq: 1}, {Seq: 3}})
	require.NoError(f, err)
	data, err := json.Marshal(good)
	require.NoError(f, err)
	f.Add(data)
	f.Add([]byte(`{"version":1,"first":1,"last":18446744073709551615,"count":0,"missing":[[1,18446744073709551615]],"marks":"","digest":"` + good.Digest + `"}`))
	f.Add([]byte(`{"version":1,"first":2,"last":3,"count":1,"missing":[[2,2]],"prev_seq":2,"prev":"` + good.Digest + `","marks":"AAAAAAAAAAA=","digest":"` + good.Digest + `"}`))
	f.Fuzz(func(_ *testing.T, data []byte) {
		s, err := events.DecodeSeal(data)
		if err != nil {
			return
		}
		h := events.Headers{}
		ev := events.Event{ID: "s", Source: "qtasks/x", Type: events.TypeSeal, DataContentType: events.ContentTypeJSON}
		ev.Encode(h)
		v := events.Verifier{StreamFirst: 1}
		for q := uint64(1); q <= 5; q++ {
			v.Add(q, "qtasks.dead.x", nil, nil)
		}
		v.Add(min(s.Last+1, 1<<62), events.SealSubject("x"), h, data)
		_ = v.Report()
	})
}
