package replay

import (
	"context"
	"sync"
)

// pipeline runs work concurrently and hands the results to consume in the
// order the work was submitted. produce submits work; submit blocks while
// window pieces of work are waiting to be consumed, so memory stays bounded
// however much is produced. The first error of work or consume cancels the
// rest and is returned; otherwise produce's error.
func pipeline[T any](ctx context.Context, window int,
	produce func(ctx context.Context, submit func(func(context.Context) (T, error)) error) error,
	consume func(T) error,
) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type slot struct {
		done chan struct{}
		v    T
		err  error
	}
	slots := make(chan *slot, max(window, 1))
	var wg sync.WaitGroup
	consumed := make(chan error, 1)
	go func() {
		var err error
		for s := range slots {
			<-s.done // work ends when ctx does
			if err != nil {
				continue
			}
			if s.err != nil {
				err = s.err
			} else {
				err = consume(s.v)
			}
			if err != nil {
				cancel(err)
			}
		}
		consumed <- err
	}()
	submit := func(work func(context.Context) (T, error)) error {
		s := &slot{done: make(chan struct{})}
		select {
		case slots <- s:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		wg.Go(func() {
			defer close(s.done)
			s.v, s.err = work(ctx)
		})
		return nil
	}
	perr := produce(ctx, submit)
	close(slots)
	cerr := <-consumed
	wg.Wait()
	if cerr != nil {
		return cerr
	}
	return perr
}
