package likeness

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	trainerv1 "github.com/likeness-ai/likeness/clients/go/gen/likeness/trainer/v1"
)

// WatchOptions tune WatchTrainingJob's reconnects.
type WatchOptions struct {
	// MaxReconnects is how many consecutive reconnects to try before giving up (0: 10).
	MaxReconnects int
	// Backoff is the first reconnect delay, doubled each try up to 5 s (0: 200 ms).
	Backoff time.Duration
}

// WatchTrainingJob calls handle with each event of a training job after afterSequence, until the job ends
// (returns nil), handle returns an error (returned as is), or the watch fails.
//
// When the connection drops (Unavailable: a restarting or draining server, a broken proxy) it reconnects from
// the last sequence it handled, so no event is lost or repeated. It gives up after MaxReconnects consecutive
// failures; any event received resets the count. Other failures (NotFound, ...) return at once, as an *Error.
// (gRPC's own retries of the service config only cover a watch that fails before its first event; resuming
// part-way needs the last sequence, which only this helper knows.)
func WatchTrainingJob(
	ctx context.Context,
	client trainerv1.TrainerServiceClient,
	jobID string,
	afterSequence int64,
	options WatchOptions,
	handle func(*trainerv1.WatchTrainingJobResponse) error,
) error {
	maxReconnects := options.MaxReconnects
	if maxReconnects <= 0 {
		maxReconnects = 10
	}
	backoff := options.Backoff
	if backoff <= 0 {
		backoff = 200 * time.Millisecond
	}
	last := afterSequence
	failures := 0
	for {
		err := watchOnce(ctx, client, jobID, &last, &failures, handle)
		if err == nil {
			return nil
		}
		var fromHandler *handlerError
		if errors.As(err, &fromHandler) {
			return fromHandler.err
		}
		if status.Code(err) != codes.Unavailable || failures >= maxReconnects || ctx.Err() != nil {
			return err
		}
		delay := backoff << failures
		if delay > 5*time.Second || delay <= 0 {
			delay = 5 * time.Second
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		failures++
	}
}

// watchOnce runs one watch call from *last on, advancing *last and resetting *failures on each event.
func watchOnce(
	ctx context.Context,
	client trainerv1.TrainerServiceClient,
	jobID string,
	last *int64,
	failures *int,
	handle func(*trainerv1.WatchTrainingJobResponse) error,
) error {
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the server-side stream when handle fails or returns early
	stream, err := client.WatchTrainingJob(callCtx, &trainerv1.WatchTrainingJobRequest{JobId: jobID, AfterSequence: *last})
	if err != nil {
		return wrap(err, nil)
	}
	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return wrap(err, stream.Trailer())
		}
		*failures = 0
		if event.GetSequence() <= *last {
			continue // replayed after a reconnect; already handled
		}
		*last = event.GetSequence()
		if err := handle(event); err != nil {
			return &handlerError{err}
		}
	}
}

// handlerError marks an error from the caller's handler so it is never mistaken for a retryable status.
type handlerError struct{ err error }

func (h *handlerError) Error() string { return h.err.Error() }
func (h *handlerError) Unwrap() error { return h.err }
