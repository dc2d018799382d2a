package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Seals make the event log tamper-evident (docs/PROTOCOL.md §17). A seal is
// an event of type TypeSeal on SealSubject(node), written by qtasksd's
// sealer, that covers a range of stream sequences: it carries a digest that
// chains the previous seal's digest with the hash of every message of the
// range, and an 8-byte mark of each message so that a verifier can tell
// which sequence was deleted, altered or inserted. This file is the pure
// part: hashing, building and checking seals, with no I/O.

// TypeSeal is the type of a seal event.
const TypeSeal = "io.qtasks.seal"

// SubjectSeal prefixes the subjects of seals: qtasks.seal.<node>. Only
// qtasksd writes there; plugins have no right to.
const SubjectSeal = SubjectRoot + ".seal"

// SealSubject is where the sealer of node publishes its seals.
func SealSubject(node string) string { return SubjectSeal + "." + node }

// SealSubjects matches the seals of every node: the chain is one across
// nodes (a seal is published only if the last message on SealSubjects is
// the seal it continues).
const SealSubjects = SubjectSeal + ".>"

// SealVersion is the version of the digest algorithm a seal states.
const SealVersion = 1

// Seal limits: a seal stays well under MaxDataSize.
const (
	// MaxSealMessages bounds the messages one seal covers (its marks are 8
	// bytes each: 80 KiB, 107 KiB in base64).
	MaxSealMessages = 10000
	// MaxSealGaps bounds the ranges of absent sequences one seal records.
	MaxSealGaps = 1000
	// MarkSize is the size of a message's mark: the first bytes of its hash.
	MarkSize = 8
	// maxSealSeq bounds the sequences a seal names, far above any stream's
	// and far enough below 2^64 that range arithmetic cannot wrap.
	maxSealSeq = 1 << 62
)

// Domain separators of the two hashes.
const (
	msgHashDomain  = "qtasks-msg-v1\x00"
	sealHashDomain = "qtasks-seal-v1\x00"
)

// Seal is the data of a seal event.
type Seal struct {
	// Version of the digest algorithm: SealVersion.
	Version int `json:"version"`
	// First and Last bound the stream sequences covered, both included.
	// First is the previous seal's Last plus one, or, at the start of a
	// chain, the first sequence the sealer read.
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
	// Count is how many messages of [First, Last] were in the stream when
	// the seal was made.
	Count int `json:"count"`
	// Missing are the ranges of [First, Last] that held no message when the
	// seal was made (deleted before the sealer read them), in order.
	Missing [][2]uint64 `json:"missing,omitempty"`
	// PrevSeq is the stream sequence of the seal this one continues; 0
	// starts a chain.
	PrevSeq uint64 `json:"prev_seq"`
	// Prev is that seal's digest in hex; empty when PrevSeq is 0.
	Prev string `json:"prev,omitempty"`
	// Marks are the first MarkSize bytes of each present message's hash,
	// in sequence order, concatenated, in standard base64.
	Marks string `json:"marks"`
	// Digest is the seal's digest in hex (SealDigest).
	Digest string `json:"digest"`
}

// lp32 is a length as MsgHash writes it, 4 bytes (PROTOCOL §17.2's lp).
// What it measures is part of one NATS message, and a server's
// max_payload is at most 64 MiB, so the conversion is exact.
func lp32(n int) uint32 { return uint32(n) } //nolint:gosec // G115: see above

// MsgHash hashes one stored message: its stream sequence, subject, headers
// in canonical form and data. See docs/PROTOCOL.md §17.2.
func MsgHash(seq uint64, subject string, h Headers, data []byte) [32]byte {
	// One buffer, hashed at once: a Write per field cost more than the
	// hashing of a small message.
	var nbuf [24]string
	names := nbuf[:0]
	size, n := len(msgHashDomain)+8+4+len(subject)+4+4+len(data), 0
	for k, vs := range h {
		if k == "" {
			continue // NATS drops headers without a name
		}
		names = append(names, k)
		n += len(vs)
		for _, v := range vs {
			size += 8 + len(k) + len(v)
		}
	}
	slices.Sort(names)
	b := make([]byte, 0, size)
	b = append(b, msgHashDomain...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint32(b, lp32(len(subject)))
	b = append(b, subject...)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	for _, k := range names {
		for _, v := range h[k] {
			b = binary.BigEndian.AppendUint32(b, lp32(len(k)))
			b = append(b, k...)
			b = binary.BigEndian.AppendUint32(b, lp32(len(v)))
			b = append(b, v...)
		}
	}
	b = binary.BigEndian.AppendUint32(b, lp32(len(data)))
	b = append(b, data...)
	return sha256.Sum256(b)
}

// SealDigest is the digest of a seal: the previous seal's digest (zero at
// the start of a chain), its sequence, the range, the count and the hash of
// every present message in sequence order. See docs/PROTOCOL.md §17.2.
func SealDigest(prev [32]byte, prevSeq, first, last uint64, hashes [][32]byte) [32]byte {
	d := sha256.New()
	d.Write([]byte(sealHashDomain))
	d.Write(prev[:])
	var b [8]byte
	for _, n := range []uint64{prevSeq, first, last, uint64(len(hashes))} {
		binary.BigEndian.PutUint64(b[:], n)
		d.Write(b[:])
	}
	for i := range hashes {
		d.Write(hashes[i][:])
	}
	var out [32]byte
	d.Sum(out[:0])
	return out
}

// SealedMsg is a message as a seal covers it: its sequence and MsgHash.
type SealedMsg struct {
	Seq  uint64
	Hash [32]byte
}

// NewSeal builds the seal of msgs (in sequence order, all in [first,
// last]) continuing the seal at prevSeq whose digest is prev (prevSeq 0
// starts a chain).
func NewSeal(prevSeq uint64, prev [32]byte, first, last uint64, msgs []SealedMsg) (Seal, error) {
	if first == 0 || last < first {
		return Seal{}, fmt.Errorf("%w: seal range [%d, %d]", ErrInvalidEvent, first, last)
	}
	if len(msgs) > MaxSealMessages {
		return Seal{}, fmt.Errorf("%w: %d messages in one seal, at most %d", ErrInvalidEvent, len(msgs), MaxSealMessages)
	}
	s := Seal{Version: SealVersion, First: first, Last: last, Count: len(msgs), PrevSeq: prevSeq}
	if prevSeq != 0 {
		s.Prev = hex.EncodeToString(prev[:])
	} else {
		prev = [32]byte{}
	}
	marks := make([]byte, 0, len(msgs)*MarkSize)
	hashes := make([][32]byte, len(msgs))
	next := first
	for i, m := range msgs {
		if m.Seq < next || m.Seq > last {
			return Seal{}, fmt.Errorf("%w: message %d out of order or outside [%d, %d]", ErrInvalidEvent, m.Seq, first, last)
		}
		if m.Seq > next {
			s.Missing = append(s.Missing, [2]uint64{next, m.Seq - 1})
		}
		next = m.Seq + 1
		hashes[i] = m.Hash
		marks = append(marks, m.Hash[:MarkSize]...)
	}
	if next <= last {
		s.Missing = append(s.Missing, [2]uint64{next, last})
	}
	if len(s.Missing) > MaxSealGaps {
		return Seal{}, fmt.Errorf("%w: %d gaps in one seal, at most %d", ErrInvalidEvent, len(s.Missing), MaxSealGaps)
	}
	s.Marks = base64.StdEncoding.EncodeToString(marks)
	dg := SealDigest(prev, prevSeq, first, last, hashes)
	s.Digest = hex.EncodeToString(dg[:])
	return s, nil
}

// DecodeSeal reads and checks a seal's data: its fields must agree with
// one another (the range, the gaps, the count and the marks).
func DecodeSeal(data []byte) (Seal, error) {
	var s Seal
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("%w: seal data: %w", ErrInvalidEvent, err)
	}
	bad := func(format string, a ...any) (Seal, error) {
		return s, fmt.Errorf("%w: seal: %s", ErrInvalidEvent, fmt.Sprintf(format, a...))
	}
	if s.Version != SealVersion {
		return bad("version %d, want %d", s.Version, SealVersion)
	}
	if s.First == 0 || s.Last < s.First || s.Last > maxSealSeq {
		return bad("range [%d, %d]", s.First, s.Last)
	}
	if s.Count < 0 || s.Count > MaxSealMessages || len(s.Missing) > MaxSealGaps {
		return bad("%d messages and %d gaps, at most %d and %d", s.Count, len(s.Missing), MaxSealMessages, MaxSealGaps)
	}
	next, absent := s.First, uint64(0)
	for _, g := range s.Missing {
		if g[0] < next || g[1] < g[0] || g[1] > s.Last {
			return bad("gap [%d, %d] out of order or outside the range", g[0], g[1])
		}
		absent += g[1] - g[0] + 1
		next = g[1] + 2 // gaps are maximal: two never touch
	}
	if s.Last-s.First+1-absent != uint64(s.Count) {
		return bad("count %d, but the range less its gaps holds %d", s.Count, s.Last-s.First+1-absent)
	}
	marks, err := base64.StdEncoding.DecodeString(s.Marks)
	if err != nil || len(marks) != s.Count*MarkSize {
		return bad("marks are not %d base64 marks", s.Count)
	}
	if _, err := decodeDigest(s.Digest); err != nil {
		return bad("digest: %v", err)
	}
	if (s.PrevSeq == 0) != (s.Prev == "") {
		return bad("prev_seq %d with prev %q", s.PrevSeq, s.Prev)
	}
	if s.PrevSeq != 0 {
		if _, err := decodeDigest(s.Prev); err != nil {
			return bad("prev: %v", err)
		}
		if s.PrevSeq < s.First {
			// The previous seal was written after the messages it covers,
			// so after First-1.
			return bad("prev_seq %d is not after the previous range, which ends at %d", s.PrevSeq, s.First-1)
		}
	}
	return s, nil
}

func decodeDigest(s string) ([32]byte, error) {
	var d [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(d) {
		return d, errors.New("not 64 hex digits")
	}
	copy(d[:], b)
	return d, nil
}

// present returns the sequences a seal says held a message, in order.
func (s *Seal) present() []uint64 {
	out := make([]uint64, 0, s.Count)
	g := 0
	for q := s.First; q <= s.Last; q++ {
		if g < len(s.Missing) && q >= s.Missing[g][0] {
			q = s.Missing[g][1]
			g++
			continue
		}
		out = append(out, q)
	}
	return out
}

// Anchor is a seal recorded outside the log: its sequence and digest.
type Anchor struct {
	Seq    uint64
	Digest string
}

// ParseAnchor reads an anchor written SEQ:DIGEST (the digest in hex).
func ParseAnchor(s string) (Anchor, error) {
	seqStr, dg, ok := strings.Cut(s, ":")
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if !ok || err != nil || seq == 0 {
		return Anchor{}, fmt.Errorf("anchor %q: want SEQ:DIGEST", s)
	}
	if _, err := decodeDigest(dg); err != nil {
		return Anchor{}, fmt.Errorf("anchor %q: digest %w", s, err)
	}
	return Anchor{Seq: seq, Digest: strings.ToLower(dg)}, nil
}

// Finding kinds: what a verifier found at a sequence.
const (
	// FindingDeleted: a message a seal covers is gone, or a seal that
	// another refers to is gone.
	FindingDeleted = "deleted"
	// FindingAltered: the message at the sequence is not the one sealed.
	FindingAltered = "altered"
	// FindingInserted: a message where the seal recorded none, or a seal
	// that does not continue the chain or does not match what it covers.
	FindingInserted = "inserted"
	// FindingGap: the seal itself records that the sequences were absent
	// when it was made: deleted before the sealer read them.
	FindingGap = "gap"
)

// Finding is one place where the log differs from what its seals say.
type Finding struct {
	Seq    uint64 `json:"seq"`
	Kind   string `json:"kind"`
	Seal   uint64 `json:"seal"` // the sequence of the seal that shows it
	Detail string `json:"detail"`
}

// MaxFindings bounds the findings a Verifier keeps; the first ones are
// kept.
const MaxFindings = 1000

// Verifier recomputes a log's seal chain from its messages, given in
// stream order. It is not safe for concurrent use.
type Verifier struct {
	// StreamFirst is the first sequence the stream held when the read
	// began.
	StreamFirst uint64
	// HeadMayAge says the stream has limits (age, bytes, messages) that
	// remove its oldest messages: seals whose range starts before
	// StreamFirst are then skipped, not reported. Without limits, nothing
	// legitimately leaves the log, and every absent sealed message is a
	// finding.
	HeadMayAge bool

	// Anchor, when set, is a seal recorded earlier (from a report's
	// LastSeal and LastSealDigest, kept outside the log): it must still be
	// in the log with that digest. It is what shows a truncation, or a
	// rewrite of everything after some seal, seals included.
	Anchor Anchor

	anchorSeen bool
	buf        []SealedMsg // messages not yet covered by an adopted seal
	tip        *sealTip
	seen       map[uint64]*sealTip // every valid seal read, by sequence
	rep        VerifyReport
	findings   map[uint64]Finding
}

type sealTip struct {
	seq    uint64
	digest [32]byte
	last   uint64
}

// VerifyReport is what a verification proved.
type VerifyReport struct {
	// Messages read, seals among them.
	Messages int `json:"messages"`
	Seals    int `json:"seals"`
	// Start is the first sequence of the first range checked; 0 when no
	// seal could be checked.
	Start uint64 `json:"start"`
	// Through is the last sequence covered by the last seal of the chain:
	// everything from Start to Through is proven as the seals say (less
	// the findings).
	Through uint64 `json:"through"`
	// LastSeal is the sequence and digest of the last seal of the chain,
	// to keep elsewhere and compare later (an anchor).
	LastSeal       uint64 `json:"last_seal"`
	LastSealDigest string `json:"last_seal_digest,omitempty"`
	// Unsealed counts the messages after Through, the last seal aside
	// (its digest checks its data): nothing proves them.
	Unsealed int `json:"unsealed"`
	// Skipped counts messages before Start: older than the first seal
	// whose range is still fully present, or written before sealing began.
	Skipped int `json:"skipped"`
	// Unverified are ranges between seals that no seal read covers (a
	// seal that covered them is gone).
	Unverified [][2]uint64 `json:"unverified,omitempty"`
	// Findings, in sequence order; at most MaxFindings.
	Findings []Finding `json:"findings"`
}

// Add takes the next message of the log (sequences must increase).
func (v *Verifier) Add(seq uint64, subject string, h Headers, data []byte) {
	if v.findings == nil {
		v.findings = map[uint64]Finding{}
		v.seen = map[uint64]*sealTip{}
	}
	v.rep.Messages++
	if seq == v.Anchor.Seq {
		v.anchorSeen = true
	}
	hash := MsgHash(seq, subject, h, data)
	v.buf = append(v.buf, SealedMsg{Seq: seq, Hash: hash})
	if !isSealSubject(subject) {
		return
	}
	ev, err := Decode(h, data)
	if err == nil && ev.Type != TypeSeal {
		err = fmt.Errorf("type %q on a seal subject", ev.Type)
	}
	var s Seal
	if err == nil {
		s, err = DecodeSeal(data)
	}
	if err == nil && s.Last >= seq {
		err = fmt.Errorf("covers [%d, %d], which does not end before the seal", s.First, s.Last)
	}
	if err != nil {
		v.find(seq, FindingInserted, seq, "not a valid seal: "+err.Error())
		return
	}
	v.rep.Seals++
	v.seal(seq, &s)
}

func isSealSubject(s string) bool {
	return len(s) > len(SubjectSeal)+1 && s[:len(SubjectSeal)+1] == SubjectSeal+"."
}

func (v *Verifier) find(seq uint64, kind string, seal uint64, detail string) {
	if _, ok := v.findings[seq]; ok || len(v.findings) >= MaxFindings {
		return
	}
	v.findings[seq] = Finding{Seq: seq, Kind: kind, Seal: seal, Detail: detail}
}

// seal checks the seal s at sequence seq against the messages read and
// against the chain.
// agedOut reports whether seq may have left the stream legitimately: it
// is before StreamFirst of a stream whose head ages.
func (v *Verifier) agedOut(seq uint64) bool { return v.HeadMayAge && seq < v.StreamFirst }

func (v *Verifier) seal(seq uint64, s *Seal) {
	digest, _ := decodeDigest(s.Digest)
	prev, _ := decodeDigest(s.Prev)
	me := &sealTip{seq: seq, digest: digest, last: s.Last}
	v.seen[seq] = me

	// The link to the chain.
	adopt := true
	switch {
	case v.tip == nil:
		if s.PrevSeq != 0 && !v.agedOut(s.PrevSeq) {
			if _, ok := v.findings[s.PrevSeq]; !ok {
				v.find(s.PrevSeq, FindingDeleted, seq, fmt.Sprintf("the seal this one continues (at %d) is gone", s.PrevSeq))
			}
		}
	case s.PrevSeq == v.tip.seq:
		if s.Prev != hex.EncodeToString(v.tip.digest[:]) || s.First != v.tip.last+1 {
			v.find(seq, FindingInserted, seq, fmt.Sprintf("a seal that claims to continue the seal at %d but does not match it", s.PrevSeq))
			adopt = false
		}
	case s.PrevSeq < v.tip.seq:
		v.find(seq, FindingInserted, seq, fmt.Sprintf("a seal that continues the seal at %d, which the seal at %d already continued", s.PrevSeq, v.tip.seq))
		adopt = false
	default: // s.PrevSeq > v.tip.seq: the seals between are gone or bad
		if p, ok := v.seen[s.PrevSeq]; !ok || p == nil {
			if _, ok := v.findings[s.PrevSeq]; !ok {
				v.find(s.PrevSeq, FindingDeleted, seq, fmt.Sprintf("the seal this one continues (at %d) is gone", s.PrevSeq))
			}
		}
		if s.First > v.tip.last+1 {
			v.rep.Unverified = append(v.rep.Unverified, [2]uint64{v.tip.last + 1, s.First - 1})
		}
	}
	if !adopt {
		return
	}

	// The range. Messages before it are outside any checked seal.
	i := 0
	for i < len(v.buf) && v.buf[i].Seq < s.First {
		i++
	}
	if v.tip == nil {
		v.rep.Skipped += i
	}
	v.buf = v.buf[i:]
	j := 0
	for j < len(v.buf) && v.buf[j].Seq <= s.Last {
		j++
	}
	got := v.buf[:j]
	partial := s.First < v.StreamFirst && v.HeadMayAge
	if !partial {
		hashes := make([][32]byte, len(got))
		for k := range got {
			hashes[k] = got[k].Hash
		}
		base := prev
		if s.PrevSeq == 0 {
			base = [32]byte{}
		}
		if SealDigest(base, s.PrevSeq, s.First, s.Last, hashes) != digest {
			v.locate(seq, s, got)
		}
		for _, g := range s.Missing {
			v.find(g[0], FindingGap, seq, fmt.Sprintf("sequences %d to %d were absent when the seal was made", g[0], g[1]))
		}
		if v.rep.Start == 0 {
			v.rep.Start = s.First
		}
	} else {
		v.rep.Skipped += len(got)
	}
	v.buf = slices.Clone(v.buf[j:])
	v.tip = me
}

// locate finds where the messages got differ from what seal s (at seq)
// recorded, by the marks.
func (v *Verifier) locate(seq uint64, s *Seal, got []SealedMsg) {
	want := s.present()
	marks, _ := base64.StdEncoding.DecodeString(s.Marks) // checked by DecodeSeal
	i, j, found := 0, 0, false
	for i < len(want) || j < len(got) {
		switch {
		case j >= len(got) || i < len(want) && want[i] < got[j].Seq:
			v.find(want[i], FindingDeleted, seq, "sealed, now absent")
			i++
		case i >= len(want) || got[j].Seq < want[i]:
			v.find(got[j].Seq, FindingInserted, seq, "present where the seal recorded no message")
			j++
		default:
			if !bytes.Equal(got[j].Hash[:MarkSize], marks[i*MarkSize:(i+1)*MarkSize]) {
				v.find(got[j].Seq, FindingAltered, seq, "differs from the message sealed")
			}
			i++
			j++
			continue
		}
		found = true
	}
	if !found {
		// Every mark matches but the digest does not: a forged seal, one
		// whose chain link was changed, or a mark that collides.
		v.find(seq, FindingInserted, seq, fmt.Sprintf("the seal's digest does not match the messages of [%d, %d] it covers", s.First, s.Last))
	}
}

// Report ends the verification. The gaps the adopted seals record are
// findings of kind FindingGap.
func (v *Verifier) Report() VerifyReport {
	if v.findings == nil {
		v.findings = map[uint64]Finding{}
	}
	if a := v.Anchor; a.Seq != 0 && !v.agedOut(a.Seq) {
		t := v.seen[a.Seq]
		switch {
		case !v.anchorSeen:
			v.find(a.Seq, FindingDeleted, a.Seq, "the anchored seal is gone: the log was truncated or rewritten from before it")
		case t == nil || hex.EncodeToString(t.digest[:]) != a.Digest:
			v.find(a.Seq, FindingAltered, a.Seq, "the anchored seal is not the one recorded: the log was rewritten")
		}
	}
	r := v.rep
	if v.tip != nil {
		r.Through = v.tip.last
		r.LastSeal = v.tip.seq
		r.LastSealDigest = hex.EncodeToString(v.tip.digest[:])
	}
	for _, m := range v.buf {
		// The last seal's data is checked by its digest (its headers only
		// by the next seal): it is not counted.
		if v.tip == nil || m.Seq != v.tip.seq {
			r.Unsealed++
		}
	}
	r.Findings = make([]Finding, 0, len(v.findings))
	for _, f := range v.findings {
		r.Findings = append(r.Findings, f)
	}
	sort.Slice(r.Findings, func(i, j int) bool { return r.Findings[i].Seq < r.Findings[j].Seq })
	return r
}
