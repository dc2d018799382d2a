package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// benchWatermill (issue #15, step 3): the mutator round trip through a
// plugin process whose message handling is Watermill's router and
// middleware over watermill-nats (bench/internal/wmplugin), beside the
// same plugin on today's runner (bench/internal/echoplugin, plugins.Start)
// and the raw round trip, one at a time, in blocks of 64 that rotate
// between the three, 634-byte payload, Config.RoundTrips each. Then the
// rate of calls with 16 in flight (the runner's default concurrency) to
// each plugin process, alternating.
func benchWatermill(ctx context.Context, h *Harness, rep int) error {
	bins, err := h.binaries()
	if err != nil {
		return err
	}
	b, err := h.openBus(ctx, bus.Config{})
	if err != nil {
		return err
	}
	defer b.Close()
	raw, err := newRawRoundTrip(ctx, b)
	if err != nil {
		return err
	}
	defer raw.close()
	stopEcho, err := startEchoPlugin(ctx, bins["echoplugin"], b.ClientURL(), "bench-echo", events.TaskExecutorRunTask, "")
	if err != nil {
		return err
	}
	defer stopEcho()
	stopWM, err := startPlugin(ctx, bins["wmplugin"], []string{"--nats-url", b.ClientURL(), "--name", "bench-wm",
		"--version", "1", "--trigger", events.TaskExecutorRunTask})
	if err != nil {
		return err
	}
	defer stopWM()
	var ivs []*invoker
	for _, name := range []string{"bench-echo", "bench-wm"} {
		if err := b.Registry().WaitFor(ctx, name, "1"); err != nil {
			return err
		}
		p, _ := b.Registry().Get(name)
		ivs = append(ivs, &invoker{b: b, p: p, task: uuid.NewString()})
	}
	runner, wm := ivs[0], ivs[1]
	data := resultPayload(factSize)
	sides := []func() (time.Duration, error){
		func() (time.Duration, error) { return raw.once(data) },
		func() (time.Duration, error) { return runner.once(ctx, data) },
		func() (time.Duration, error) { return wm.once(ctx, data) },
	}
	for i := range 3 * 50 { // warm up
		if _, err := sides[i%3](); err != nil {
			return err
		}
	}
	n := h.cfg.RoundTrips
	var lat [3][]time.Duration
	const block = 64
	for done := 0; done < n; done += block {
		k := min(block, n-done)
		for s := range sides {
			s = (s + done/block + rep) % 3
			for range k {
				d, err := sides[s]()
				if err != nil {
					return err
				}
				lat[s] = append(lat[s], d)
			}
		}
	}
	for s, name := range []string{"raw", "runner", "wm"} {
		p50, p99 := percentiles(lat[s])
		h.add("wm.rt."+name+".p50", p50)
		h.add("wm.rt."+name+".p99", p99)
	}
	// Calls per second with 16 in flight, each side twice, alternating.
	const inflight = 16
	calls := max(n/2, 64)
	for round := range 2 {
		for i := range 2 {
			s := (i + round + rep) % 2
			name := []string{"runner", "wm"}[s]
			rate, err := concurrentCalls(ctx, b, ivs[s].p, data, calls, inflight)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			h.add("wm.rate."+name, rate)
		}
	}
	return nil
}

// concurrentCalls makes n bus.Invoke calls to p from inflight goroutines
// and returns calls per second.
func concurrentCalls(ctx context.Context, b *bus.Bus, p events.PluginInfo, data []byte, n, inflight int) (float64, error) {
	var wg sync.WaitGroup
	errs := make(chan error, inflight)
	per := n / inflight
	t0 := time.Now()
	for range inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			iv := &invoker{b: b, p: p, task: uuid.NewString()}
			for range per {
				if _, err := iv.once(ctx, data); err != nil {
					errs <- err
					return
				}
			}
			wctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			if err := iv.acks.Wait(wctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	select {
	case err := <-errs:
		return 0, err
	default:
	}
	return float64(per*inflight) / el.Seconds(), nil
}
