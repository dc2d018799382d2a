package bus_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/minio/highwayhash"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// publishFacts writes n facts and returns their sequences.
func publishFacts(ctx context.Context, t *testing.T, b *bus.Bus, n int) []uint64 {
	t.Helper()
	seqs := make([]uint64, n)
	for i := range n {
		ev := factEvent(events.StorageAdd, "task-"+strconv.Itoa(i), "ev-"+strconv.Itoa(i))
		ack, err := b.Publish(ctx, events.FactSubject(events.StorageAdd, "default"), "", &ev)
		require.NoError(t, err)
		seqs[i] = ack.Sequence
	}
	return seqs
}

func startSealer(ctx context.Context, t *testing.T, b *bus.Bus, node string, every int) *bus.Sealer {
	t.Helper()
	s, err := b.StartSealer(ctx, bus.SealerConfig{Node: node, Every: every, Interval: time.Hour, Logger: bustest.Logger(t)})
	require.NoError(t, err)
	t.Cleanup(s.Stop)
	return s
}

func verifyLog(ctx context.Context, t *testing.T, b *bus.Bus) events.VerifyReport {
	t.Helper()
	return verifyAnchored(ctx, t, b, events.Anchor{})
}

func verifyAnchored(ctx context.Context, t *testing.T, b *bus.Bus, a events.Anchor) events.VerifyReport {
	t.Helper()
	r, _, err := b.VerifyLog(ctx, a)
	require.NoError(t, err)
	return r
}

// sealedBus is a bus whose log holds 20 facts, sealed by seals of at most
// 5 messages each, the last seal flushed.
func sealedBus(ctx context.Context, t *testing.T, dir string) (*bus.Bus, []uint64) {
	t.Helper()
	b := bustest.Open(t, &bus.Config{DataDir: dir})
	s := startSealer(ctx, t, b, "n1", 5)
	seqs := publishFacts(ctx, t, b, 20)
	require.NoError(t, s.Flush(ctx))
	s.Stop()
	return b, seqs
}

func TestSealerCleanLogVerifies(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b, seqs := sealedBus(ctx, t, t.TempDir())
	r := verifyLog(ctx, t, b)
	require.Empty(t, r.Findings)
	require.Equal(t, uint64(1), r.Start)
	require.GreaterOrEqual(t, r.Through, seqs[len(seqs)-1])
	require.GreaterOrEqual(t, r.Seals, 4)
	unsealed := r.Unsealed // seals that came after the last seal's range, if any

	// Facts published later are unsealed until the next seal, and a new
	// sealer continues the chain.
	more := publishFacts(ctx, t, b, 3)
	r = verifyLog(ctx, t, b)
	require.Empty(t, r.Findings)
	require.Equal(t, unsealed+3, r.Unsealed)
	s := startSealer(ctx, t, b, "n2", 5)
	require.NoError(t, s.Flush(ctx))
	r = verifyLog(ctx, t, b)
	require.Empty(t, r.Findings)
	require.GreaterOrEqual(t, r.Through, more[2])
}

func TestVerifyFindsDeletedMessage(t *testing.T) {
	t.Parallel()
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprint("secure=", secure), func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			b, seqs := sealedBus(ctx, t, t.TempDir())
			st, err := b.JetStream().Stream(ctx, bus.StreamEvents)
			require.NoError(t, err)
			victim := seqs[7]
			if secure {
				require.NoError(t, st.SecureDeleteMsg(ctx, victim))
			} else {
				require.NoError(t, st.DeleteMsg(ctx, victim))
			}
			r := verifyLog(ctx, t, b)
			require.NotEmpty(t, r.Findings)
			require.Equal(t, victim, r.Findings[0].Seq, "%+v", r.Findings)
			require.Equal(t, events.FindingDeleted, r.Findings[0].Kind)
		})
	}
}

func TestVerifyFindsDeletedSeal(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b, _ := sealedBus(ctx, t, t.TempDir())
	var seal uint64
	require.NoError(t, b.ReadLog(ctx, 1, []string{events.SealSubjects}, func(s bus.Stored) error {
		if seal == 0 {
			seal = s.Seq
		}
		return nil
	}))
	st, err := b.JetStream().Stream(ctx, bus.StreamEvents)
	require.NoError(t, err)
	require.NoError(t, st.DeleteMsg(ctx, seal))
	r := verifyLog(ctx, t, b)
	require.NotEmpty(t, r.Findings)
	require.Equal(t, seal, r.Findings[0].Seq, "%+v", r.Findings)
	require.Equal(t, events.FindingDeleted, r.Findings[0].Kind)
}

// forgeSeal publishes a seal that starts a chain of its own to vouch for
// the message at seq (with a made-up hash), as someone with the right to
// write on the seal subjects could.
func forgeSeal(ctx context.Context, t *testing.T, b *bus.Bus, seq uint64) uint64 {
	t.Helper()
	s, err := events.NewSeal(0, [32]byte{}, seq, seq, []events.SealedMsg{{Seq: seq, Hash: sha256.Sum256([]byte("x"))}})
	require.NoError(t, err)
	data, err := json.Marshal(s)
	require.NoError(t, err)
	ev := events.Event{ID: "forged", Source: "qtasks/evil", Type: events.TypeSeal, DataContentType: events.ContentTypeJSON, Data: data}
	ack, err := b.Publish(ctx, events.SealSubject("evil"), "", &ev)
	require.NoError(t, err)
	return ack.Sequence
}

// TestVerifyFindsForgedSeal: a seal that does not continue the chain is an
// insertion at its sequence. A running sealer does not follow it (and
// reports a fork); one that starts after it does, and verify then says
// which messages no chain seal proves.
func TestVerifyFindsForgedSeal(t *testing.T) {
	t.Parallel()
	t.Run("while a sealer runs", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		b := bustest.Open(t, nil)
		var mu sync.Mutex
		var anomalies []string
		sealer, err := b.StartSealer(ctx, bus.SealerConfig{
			Node: "n1", Every: 5, Interval: time.Hour, Logger: bustest.Logger(t),
			Anomaly: func(kind string) { mu.Lock(); anomalies = append(anomalies, kind); mu.Unlock() },
		})
		require.NoError(t, err)
		t.Cleanup(sealer.Stop)
		publishFacts(ctx, t, b, 7)
		require.NoError(t, sealer.Flush(ctx))
		forged := forgeSeal(ctx, t, b, publishFacts(ctx, t, b, 1)[0])
		publishFacts(ctx, t, b, 3)
		require.NoError(t, sealer.Flush(ctx))
		r := verifyLog(ctx, t, b)
		require.Len(t, r.Findings, 1, "%+v", r.Findings)
		require.Equal(t, forged, r.Findings[0].Seq)
		require.Equal(t, events.FindingInserted, r.Findings[0].Kind)
		require.Empty(t, r.Unverified)
		require.Greater(t, r.Through, forged)
		mu.Lock()
		require.Equal(t, []string{bus.AnomalyFork}, anomalies)
		mu.Unlock()
	})
	t.Run("while no sealer runs", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		b, _ := sealedBus(ctx, t, t.TempDir())
		fact := publishFacts(ctx, t, b, 1)[0]
		forged := forgeSeal(ctx, t, b, fact)
		sealer := startSealer(ctx, t, b, "n1", 5)
		publishFacts(ctx, t, b, 3)
		require.NoError(t, sealer.Flush(ctx))
		r := verifyLog(ctx, t, b)
		require.Len(t, r.Findings, 1, "%+v", r.Findings)
		require.Equal(t, forged, r.Findings[0].Seq)
		require.Equal(t, events.FindingInserted, r.Findings[0].Kind)
		require.Len(t, r.Unverified, 1)
		require.LessOrEqual(t, r.Unverified[0][0], fact)
		require.GreaterOrEqual(t, r.Unverified[0][1], fact)
		require.Greater(t, r.Through, forged)
	})
}

func TestSealersRacingWriteOneChain(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	b2 := bustest.Connect(t, b, nil)
	s1 := startSealer(ctx, t, b, "n1", 3)
	s2 := startSealer(ctx, t, b2, "n2", 3)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { publishFacts(ctx, t, b, 30) })
	}
	wg.Wait()
	require.NoError(t, s1.Flush(ctx))
	require.NoError(t, s2.Flush(ctx))
	r := verifyLog(ctx, t, b)
	require.Empty(t, r.Findings)
	require.Equal(t, uint64(1), r.Start)
	// Every seal continues the one before it: one chain.
	var seals []events.Seal
	var seqs []uint64
	nodes := map[string]bool{}
	require.NoError(t, b.ReadLog(ctx, 1, []string{events.SealSubjects}, func(st bus.Stored) error {
		s, err := events.DecodeSeal(st.Event.Data)
		require.NoError(t, err)
		seals, seqs = append(seals, s), append(seqs, st.Seq)
		nodes[st.Subject] = true
		return nil
	}))
	require.Len(t, seals, r.Seals)
	for i := 1; i < len(seals); i++ {
		require.Equal(t, seqs[i-1], seals[i].PrevSeq)
		require.Equal(t, seals[i-1].Last+1, seals[i].First)
		require.Equal(t, seals[i-1].Digest, seals[i].Prev)
	}
	t.Logf("%d seals from %d sealers", len(seals), len(nodes))
}

// blockRecord is one message record of a nats-server file store block
// (server/filestore.go, writeMsgRecord): total_len(4, high bit: has
// headers) sequence(8) timestamp(8) subj_len(2) subject [hdr_len(4) hdr]
// msg hash(8); little-endian.
type blockRecord struct {
	off, len int
	seq      uint64 // with the tombstone and erase bits
	msgOff   int    // where the message body starts
	msgLen   int
}

func blockRecords(t *testing.T, buf []byte) []blockRecord {
	t.Helper()
	le := binary.LittleEndian
	var out []blockRecord
	for off := 0; off+22 <= len(buf); {
		rl := le.Uint32(buf[off:])
		hasHdr := rl&(1<<31) != 0
		rl &^= 1 << 31
		r := blockRecord{off: off, len: int(rl), seq: le.Uint64(buf[off+4:])}
		slen := int(le.Uint16(buf[off+20:]))
		p := off + 22 + slen
		if hasHdr {
			p += 4 + int(le.Uint32(buf[p:]))
		}
		r.msgOff, r.msgLen = p, off+int(rl)-8-p
		out = append(out, r)
		require.Positive(t, rl)
		off += int(rl)
	}
	return out
}

// rehash recomputes a record's checksum as the server does: highwayhash-64
// keyed with sha256("<stream>-<block index>"), over sequence and timestamp,
// subject, headers and message.
func rehash(t *testing.T, buf []byte, r blockRecord, block int) {
	t.Helper()
	key := sha256.Sum256([]byte(bus.StreamEvents + "-" + strconv.Itoa(block)))
	hh, err := highwayhash.New64(key[:])
	require.NoError(t, err)
	le := binary.LittleEndian
	rec := buf[r.off : r.off+r.len]
	hasHdr := le.Uint32(rec)&(1<<31) != 0
	slen := int(le.Uint16(rec[20:]))
	_, _ = hh.Write(rec[4:20])         // a hash's Write never fails
	_, _ = hh.Write(rec[22 : 22+slen]) // a hash's Write never fails
	if hasHdr {
		_, _ = hh.Write(rec[22+slen+4 : r.len-8]) // a hash's Write never fails
	} else {
		_, _ = hh.Write(rec[22+slen : r.len-8]) // a hash's Write never fails
	}
	copy(rec[r.len-8:], hh.Sum(nil))
}

func streamDir(dir string) string {
	return filepath.Join(dir, "jetstream", "jetstream", "$G", "streams", bus.StreamEvents, "msgs")
}

// editStore stops b's server, lets edit change the event log's first
// block, deletes the stream state index (so that the server rebuilds it
// from the blocks, as after a crash or a restore), and starts a server on
// the same directory again.
func editStore(t *testing.T, b *bus.Bus, dir string, edit func(buf []byte) []byte) *bus.Bus {
	t.Helper()
	return editStoreIndex(t, b, dir, true, edit)
}

func editStoreIndex(t *testing.T, b *bus.Bus, dir string, removeIndex bool, edit func(buf []byte) []byte) *bus.Bus {
	t.Helper()
	b.Close()
	blk := filepath.Join(streamDir(dir), "1.blk")
	buf, err := os.ReadFile(blk)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(blk, edit(buf), 0o600))
	if removeIndex {
		require.NoError(t, os.Remove(filepath.Join(streamDir(dir), "index.db")))
	}
	return bustest.Open(t, &bus.Config{DataDir: dir})
}

func TestVerifyFindsAlteredMessage(t *testing.T) {
	t.Parallel()
	alter := func(t *testing.T, victim uint64, fixHash bool) func([]byte) []byte {
		t.Helper()
		return func(buf []byte) []byte {
			for _, r := range blockRecords(t, buf) {
				if r.seq != victim {
					continue
				}
				body := buf[r.msgOff : r.msgOff+r.msgLen]
				i := bytes.Index(body, []byte(`"n":1`))
				require.GreaterOrEqual(t, i, 0, "%s", body)
				body[i+4] = '7' // same length: {"input":{"n":7}}
				if fixHash {
					rehash(t, buf, r, 1)
				}
				return buf
			}
			t.Fatalf("no record of sequence %d", victim)
			return nil
		}
	}
	t.Run("checksum recomputed", func(t *testing.T) {
		// An attacker who knows the store's format: the server takes the
		// record as valid, and only the seal shows the change.
		t.Parallel()
		ctx := testCtx(t)
		dir := t.TempDir()
		b, seqs := sealedBus(ctx, t, dir)
		victim := seqs[11]
		b = editStore(t, b, dir, alter(t, victim, true))
		m, err := b.Event(ctx, victim)
		require.NoError(t, err)
		require.JSONEq(t, `{"input":{"n":7}}`, string(m.Event.Data), "the server serves the altered message")
		r := verifyLog(ctx, t, b)
		require.NotEmpty(t, r.Findings)
		require.Equal(t, victim, r.Findings[0].Seq, "%+v", r.Findings)
		require.Equal(t, events.FindingAltered, r.Findings[0].Kind)
	})
	t.Run("checksum left stale", func(t *testing.T) {
		// The server checks a record's checksum when it loads it: it does
		// not serve the altered message, which verify then reports as
		// deleted (it is gone from what the log serves).
		t.Parallel()
		ctx := testCtx(t)
		dir := t.TempDir()
		b, seqs := sealedBus(ctx, t, dir)
		victim := seqs[11]
		b = editStoreIndex(t, b, dir, false, alter(t, victim, false))
		_, err := b.Event(ctx, victim)
		require.ErrorIs(t, err, bus.ErrNoMessage)
		r := verifyLog(ctx, t, b)
		require.NotEmpty(t, r.Findings)
		require.Equal(t, victim, r.Findings[0].Seq, "%+v", r.Findings)
		require.Equal(t, events.FindingDeleted, r.Findings[0].Kind)
	})
	t.Run("checksum left stale, state rebuilt", func(t *testing.T) {
		// Rebuilding its state from the blocks (no index, as after a
		// crash), the server cuts the block at the first bad record: the
		// altered message and every one after it in the block are gone,
		// the seals that covered them too. Nothing left in the log shows
		// it; an anchor recorded before does.
		t.Parallel()
		ctx := testCtx(t)
		dir := t.TempDir()
		b, seqs := sealedBus(ctx, t, dir)
		before := verifyLog(ctx, t, b)
		anchor := events.Anchor{Seq: before.LastSeal, Digest: before.LastSealDigest}
		victim := seqs[11]
		b = editStore(t, b, dir, alter(t, victim, false))
		st, err := b.JetStream().Stream(ctx, bus.StreamEvents)
		require.NoError(t, err)
		require.Equal(t, victim-1, st.CachedInfo().State.LastSeq, "the log ends before the altered message")
		r := verifyLog(ctx, t, b)
		require.Empty(t, r.Findings, "a truncation after the last seal left is not visible in the log")
		r = verifyAnchored(ctx, t, b, anchor)
		require.Len(t, r.Findings, 1)
		require.Equal(t, events.Finding{
			Seq: anchor.Seq, Kind: events.FindingDeleted, Seal: anchor.Seq,
			Detail: "the anchored seal is gone: the log was truncated or rewritten from before it",
		}, r.Findings[0])
	})
}

// TestVerifyFindsResurrectedMessage: a message deleted before it was sealed
// (the seal records the gap) is put back by removing its delete tombstone
// from the store, as restoring an older copy of the store would: verify
// reports an insertion at its sequence.
func TestVerifyFindsResurrectedMessage(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	b := bustest.Open(t, &bus.Config{DataDir: dir})
	seqs := publishFacts(ctx, t, b, 8)
	st, err := b.JetStream().Stream(ctx, bus.StreamEvents)
	require.NoError(t, err)
	victim := seqs[3]
	require.NoError(t, st.DeleteMsg(ctx, victim))
	s := startSealer(ctx, t, b, "n1", 100)
	require.NoError(t, s.Flush(ctx))
	s.Stop()
	r := verifyLog(ctx, t, b)
	require.Len(t, r.Findings, 1, "%+v", r.Findings)
	require.Equal(t, events.Finding{
		Seq: victim, Kind: events.FindingGap, Seal: seqs[7] + 1,
		Detail: fmt.Sprintf("sequences %d to %d were absent when the seal was made", victim, victim),
	}, r.Findings[0])

	const tbit = 1 << 62
	b = editStore(t, b, dir, func(buf []byte) []byte {
		for _, r := range blockRecords(t, buf) {
			if r.seq == victim|tbit {
				return append(buf[:r.off:r.off], buf[r.off+r.len:]...)
			}
		}
		t.Fatalf("no tombstone of sequence %d", victim)
		return nil
	})
	_, err = b.Event(ctx, victim)
	require.NoError(t, err, "the message is back")
	r = verifyLog(ctx, t, b)
	require.NotEmpty(t, r.Findings)
	require.Equal(t, victim, r.Findings[0].Seq, "%+v", r.Findings)
	require.Equal(t, events.FindingInserted, r.Findings[0].Kind)
}

func TestSealerSealsOnInterval(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	var mu sync.Mutex
	var sealed []events.Seal
	s, err := b.StartSealer(ctx, bus.SealerConfig{
		Node: "n1", Every: 1000, Interval: 20 * time.Millisecond, Logger: bustest.Logger(t),
		Sealed: func(_ uint64, s events.Seal) { mu.Lock(); sealed = append(sealed, s); mu.Unlock() },
	})
	require.NoError(t, err)
	t.Cleanup(s.Stop)
	seqs := publishFacts(ctx, t, b, 2)
	bustest.WaitFor(t, wait, "a seal", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(sealed) > 0 && sealed[len(sealed)-1].Last >= seqs[1]
	})
	// A seal alone is not sealed again: the sealer waits for a fact.
	r := verifyLog(ctx, t, b)
	require.Empty(t, r.Findings)
	require.Zero(t, r.Unsealed)
	mu.Lock()
	n := len(sealed)
	mu.Unlock()
	publishFacts(ctx, t, b, 1)
	bustest.WaitFor(t, wait, "another seal", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(sealed) > n
	})
}

// Flush returns when the log's last message was deleted: it waits for the
// last message present, not for the stream's last sequence.
func TestSealerFlushAfterLastMessageDeleted(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	seqs := publishFacts(ctx, t, b, 3)
	st, err := b.JetStream().Stream(ctx, bus.StreamEvents)
	require.NoError(t, err)
	require.NoError(t, st.DeleteMsg(ctx, seqs[2]))
	s := startSealer(ctx, t, b, "n1", 100)
	require.NoError(t, s.Flush(ctx))
	r := verifyLog(ctx, t, b)
	require.Equal(t, uint64(1), r.Start)
	require.Equal(t, seqs[1], r.Through)
	require.Empty(t, r.Findings, "a deletion after the last message sealed is not seen")
}

// With a limit on the stream, its head leaves the log: verification starts
// at the first seal whose range is still whole, and says how much it
// skipped; without the limit, the same loss is a deletion.
func TestVerifyStreamWithLimits(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	st, err := b.JetStream().Stream(ctx, bus.StreamEvents)
	require.NoError(t, err)
	cfg := st.CachedInfo().Config
	cfg.MaxMsgs = 15
	_, err = b.JetStream().UpdateStream(ctx, cfg)
	require.NoError(t, err)
	s := startSealer(ctx, t, b, "n1", 4)
	publishFacts(ctx, t, b, 30)
	require.NoError(t, s.Flush(ctx))

	r, lim, err := b.VerifyLog(ctx, events.Anchor{})
	require.NoError(t, err)
	require.True(t, lim.HeadMayAge())
	require.Greater(t, lim.FirstSeq, uint64(1))
	require.Empty(t, r.Findings)
	require.GreaterOrEqual(t, r.Start, lim.FirstSeq)
	require.Positive(t, r.Seals)
	require.Equal(t, 15, r.Messages)

	cfg.MaxMsgs = -1
	_, err = b.JetStream().UpdateStream(ctx, cfg)
	require.NoError(t, err)
	r, lim, err = b.VerifyLog(ctx, events.Anchor{})
	require.NoError(t, err)
	require.False(t, lim.HeadMayAge())
	require.NotEmpty(t, r.Findings)
	require.Equal(t, events.FindingDeleted, r.Findings[0].Kind)
	require.Less(t, r.Findings[0].Seq, lim.FirstSeq)
}

// A plugin's user, with the least rights, cannot write a seal.
func TestPluginCannotWriteSeals(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	perms := bus.PluginPermissions(events.PluginInfo{Name: "alice", Mode: events.ModeObserver})
	b := bustest.Open(t, &bus.Config{User: "admin", Password: "admin-pw", Users: []bus.User{
		{Name: "admin", Password: "admin-pw"},
		{Name: "alice", Password: "alice-pw", Permissions: &perms},
	}})
	nc, err := b.Dial(nats.UserInfo("alice", "alice-pw"), nats.CustomInboxPrefix(bus.PluginInboxPrefix("alice")))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = js.Publish(pctx, events.SealSubject("alice"), []byte(`{}`))
	require.Error(t, err)
	st, err := b.JetStream().Stream(ctx, bus.StreamEvents)
	require.NoError(t, err)
	_, err = st.GetLastMsgForSubject(ctx, events.SealSubjects)
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound)
}
